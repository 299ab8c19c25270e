"""``run_retrain_worker`` run in-process, as an embedding service or a test would: stopping it
ends its /metrics server too, so the port is free again and the next run can serve on it."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from bench.retrain_e2e import TOPICS
from driftwatch.devbroker import free_port
from retrain.worker import run_retrain_worker
from runtime.settings import Settings
from runtime.topics import ensure_topics


def _serving() -> set[threading.Thread]:
    """prometheus_client's server threads (``Thread-N (serve_forever)``) alive now."""
    return {t for t in threading.enumerate() if t.name.endswith("(serve_forever)")}


def _scrape(port: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                return str(resp.read().decode())
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def _run_until_scraped(settings: Settings, port: int) -> list[int | BaseException]:
    """Run the worker in a thread until its /metrics answers, then stop it; what it returned
    or raised."""
    stop = threading.Event()
    outcome: list[int | BaseException] = []

    def work() -> None:
        try:
            outcome.append(run_retrain_worker(settings, stop))
        except BaseException as exc:
            outcome.append(exc)

    runner = threading.Thread(
        target=work, name="retrain-worker", daemon=True
    )  # never holds up exit
    runner.start()
    try:
        assert "driftwatch_retrain_messages" in _scrape(port, timeout=60)
        assert not outcome, outcome
    finally:
        stop.set()
        runner.join(60)
    assert not runner.is_alive(), "the retrain worker did not stop"
    return outcome


def test_a_stopped_retrain_worker_frees_its_metrics_port_for_the_next_run(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    prefix = f"{unique_prefix}-"
    ensure_topics(kafka_bootstrap, {prefix + t: 2 for t in TOPICS})
    port = free_port()
    settings = Settings.from_env(environ={
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DRIFTWATCH_APP_ID": f"{prefix}app",
        "DRIFTWATCH_TOPIC_PREFIX": prefix,
        "DRIFTWATCH_PARTITIONS": "2",
        "DRIFTWATCH_REGISTRY_DIR": str(tmp_path / "registry"),
        "DRIFTWATCH_RETRAIN_METRICS_PORT": str(port),
        "DRIFTWATCH_METRICS_BIND": "127.0.0.1",
        "DRIFTWATCH_SESSION_TIMEOUT": "6",
        "DRIFTWATCH_HEARTBEAT_INTERVAL": "1",
    })  # fmt: skip
    before = _serving()
    for run in (1, 2):  # the second run serves on the same port: refused if the first kept it
        assert _run_until_scraped(settings, port) == [0], run
        assert _serving() == before, f"run {run}: its metrics server thread is still running"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
