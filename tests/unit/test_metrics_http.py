"""The /metrics endpoints' address setting and their refusal to start on a port they cannot
have: one line naming the setting, exit status 2, before any broker work."""

from __future__ import annotations

import signal
import socket
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from driftwatch import cli
from runtime.metrics_http import ListenError, serve_metrics


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_metrics_are_served_on_the_address_asked_for() -> None:
    registry = CollectorRegistry()
    Counter("probe", "a counter to find", registry=registry).inc(3)
    port = serve_metrics(0, "127.0.0.1", registry, "DRIFTWATCH_METRICS_PORT")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert "probe_total 3.0" in response.read().decode()


def test_a_port_taken_is_refused_with_the_setting_to_change(taken_port: int) -> None:
    with pytest.raises(ListenError, match=r"DRIFTWATCH_METRICS_PORT.*Address already in use"):
        serve_metrics(taken_port, "127.0.0.1", CollectorRegistry(), "DRIFTWATCH_METRICS_PORT")


def retrain_worker_exit(monkeypatch: pytest.MonkeyPatch, port: int, connect_timeout: int) -> int:
    """``driftwatch retrain-worker``'s exit code, its metrics on ``port`` and its broker at an
    address nobody listens at (the signal handlers it installs put back after)."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setenv("DRIFTWATCH_KAFKA_CONNECT_TIMEOUT", str(connect_timeout))
    monkeypatch.setenv("DRIFTWATCH_RETRAIN_METRICS_PORT", str(port))
    monkeypatch.setenv("DRIFTWATCH_METRICS_BIND", "127.0.0.1")
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return cli.main(["retrain-worker"])
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def test_the_retrain_worker_stops_at_a_taken_port_before_any_broker_work(
    taken_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A broker nobody listens at: reaching it would take the connect timeout and exit 1.
    assert retrain_worker_exit(monkeypatch, taken_port, connect_timeout=30) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"driftwatch: cannot serve metrics on 127.0.0.1:{taken_port} ")
    assert "DRIFTWATCH_RETRAIN_METRICS_PORT" in err[0]


def test_the_retrain_worker_frees_its_port_when_it_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A retrain worker that stops on an error (here: no broker) closes its /metrics server:
    it stayed bound in the process, and a retry in-process found its own port taken."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    assert retrain_worker_exit(monkeypatch, port, connect_timeout=1) == 1
    assert "cannot connect to Kafka" in capsys.readouterr().err
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with socket.socket() as sock:  # as the server binds: only a listener still there refuses
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
