"""Running ``driftwatch worker`` as a real process against the test broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from agents.stall import STALL_EXIT_CODE
from driftwatch.devbroker import free_port
from driftwatch.kafka_io import make_producer, produce_messages
from runtime.kafka_connection import KafkaTarget
from schemas import PredictionEvent

# Small windows of history so a test needs ~25 simulated days, not 90.
FAST_DETECTION = {
    "DRIFTWATCH_BASELINE_START_DAYS": "14",
    "DRIFTWATCH_BASELINE_END_DAYS": "7",
    "DRIFTWATCH_MIN_BASELINE_WINDOWS": "5",
    "DRIFTWATCH_RETENTION_DAYS": "16",
    "DRIFTWATCH_SEASONAL_PERIOD_DAYS": "0",
}


@dataclass
class WorkerProcess:
    bootstrap: str
    prefix: str
    data_dir: Path
    log_path: Path
    partitions: int = 2
    extra_env: dict[str, str] = field(default_factory=dict)
    metrics_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[int] = field(default_factory=list)
    """Exit codes of the worker's watchdog exits this harness restarted it after."""

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "DRIFTWATCH_APP_ID": f"{self.prefix}app",
            "DRIFTWATCH_TOPIC_PREFIX": self.prefix,
            "DRIFTWATCH_PARTITIONS": str(self.partitions),
            "DRIFTWATCH_DATA_DIR": str(self.data_dir),
            "DRIFTWATCH_METRICS_PORT": str(self.metrics_port),
            "DRIFTWATCH_API_PORT": str(self.api_port),
            "DRIFTWATCH_API_ADVERTISED_URL": f"http://127.0.0.1:{self.api_port}",
            "DRIFTWATCH_API_BIND": "127.0.0.1",
            "DRIFTWATCH_API_AUTH": "off",  # tests of the API set their own tokens
            "DRIFTWATCH_SESSION_TIMEOUT": "6",
            "DRIFTWATCH_HEARTBEAT_INTERVAL": "1",
            "DRIFTWATCH_COMMIT_INTERVAL": "1",
            # Stuck workers end themselves sooner than in production (60 s), restarted by
            # assert_alive as a supervisor would.
            "DRIFTWATCH_STALL_SECONDS": "30",
            "DRIFTWATCH_MAX_FUTURE_SECONDS": str(400 * 86400),
            # The embedded broker reports high watermarks low (see README); Kafka does not.
            "DRIFTWATCH_RECOVERY_CONSISTENCY_CHECK": (
                "true" if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") else "false"
            ),
            # ...and recovery stops at that under-reported end: a last changelog batch of one
            # record makes it exact, so a restore from the changelog loses nothing there either.
            "DRIFTWATCH_CHANGELOG_LAST_RECORD_ALONE": (
                "false" if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") else "true"
            ),
            **FAST_DETECTION,
            **self.extra_env,
        }

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "driftwatch.cli", "worker"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def metrics(self) -> dict[str, float]:
        """For polling: a scrape that fails reads as no samples."""
        try:
            return scrape_metrics(self.metrics_port, timeout=2)
        except OSError:
            return {}

    def read_metrics(self, within: float = 60.0) -> dict[str, float]:
        """For an assertion: a scrape that times out (a worker busy with a large batch can
        take seconds to answer) is tried again, never read as no samples."""
        deadline = time.monotonic() + within
        while True:
            self.assert_alive()
            try:
                return scrape_metrics(self.metrics_port, timeout=10)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def processed(self) -> int:
        return int(
            sum(v for k, v in self.metrics().items() if k.startswith("driftwatch_events_total{"))
        )

    def wait_processed(self, n: int, timeout: float = 120.0) -> int:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            self.assert_alive()
            seen = self.processed()
            if seen >= n:
                return seen
            time.sleep(0.25)
        raise AssertionError(f"worker processed {seen}/{n} in {timeout}s; log:\n{self.log_tail()}")

    def assert_alive(self) -> None:
        """Raises if the worker exited, except after a watchdog stall exit: then it is started
        again, as its supervisor (compose ``restart: on-failure``, Kubernetes) would. The
        harness never decides that a worker is stuck: the worker does (agents.watchdog)."""
        assert self.proc is not None
        code = self.proc.poll()
        if code == STALL_EXIT_CODE:
            self.restarts.append(code)
            print(f"worker exited with {code} (watchdog); restarting it", file=sys.stderr)
            self.start()
        elif code is not None:
            raise AssertionError(f"worker exited ({code}); log:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def children(self) -> list[int]:
        """Pids of the worker's child processes (its API front)."""
        if self.proc is None:
            return []
        return child_pids(self.proc.pid)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def stop_all(*workers: WorkerProcess, timeout: float = 30.0) -> None:
    """Stop several workers together: all are signalled, then all waited for, so their
    graceful shutdowns (about two seconds each) overlap instead of adding up."""
    running = [w for w in workers if w.proc is not None and w.proc.poll() is None]
    for w in running:
        assert w.proc is not None
        w.proc.send_signal(signal.SIGTERM)
    for w in running:
        assert w.proc is not None
        try:
            w.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()


def scrape_metrics(port: int, timeout: float = 5.0) -> dict[str, float]:
    """A process's Prometheus samples on ``port``, by series (name and labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def new_worker(
    bootstrap: str, prefix: str, tmp_path: Path, env: dict[str, str] | None = None
) -> WorkerProcess:
    """A worker (not started) with its state and log under ``tmp_path`` and its topics made."""
    from runtime.topics import WORKER_TOPICS, ensure_topics

    w = WorkerProcess(
        bootstrap=bootstrap,
        prefix=prefix,
        data_dir=tmp_path / "state",
        log_path=tmp_path / "worker.log",
        extra_env=dict(env or {}),
    )
    ensure_topics(bootstrap, {w.topic(t): w.partitions for t in WORKER_TOPICS})
    return w


def child_pids(pid: int) -> list[int]:
    """Children of ``pid`` (Linux: from every thread's ``children`` list)."""
    out: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(c) for c in children.read_text().split()]
        except OSError:
            continue
    return sorted(set(out))


def produce_recorded(
    bootstrap: KafkaTarget, topic: str, messages: list[tuple[bytes | None, bytes]]
) -> dict[int, int]:
    """Produce and return, per partition, the offset after the last delivered message."""
    ends: dict[int, int] = {}
    produce_messages(make_producer(bootstrap), topic, messages, ends)
    return ends


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def wait_committed(worker: WorkerProcess, ends: dict[int, int], timeout: float = 120.0) -> None:
    """Until the worker's group has committed past every produced message."""
    deadline = time.monotonic() + timeout
    committed: dict[int, int] = {}
    while time.monotonic() < deadline:
        worker.assert_alive()
        committed = committed_offsets(
            worker.bootstrap, f"{worker.prefix}app", worker.topic("predictions"), worker.partitions
        )
        if all(committed.get(p, -1) >= end for p, end in ends.items()):
            return
        time.sleep(0.5)
    raise AssertionError(f"committed {committed}, want {ends}; log:\n{worker.log_tail()}")


def wait_drained(
    worker: WorkerProcess, topics: list[str], timeout: float = 180.0, settle: float = 3.0
) -> None:
    """Until the worker's group has committed every topic to its end, twice ``settle``
    seconds apart (its agents produce to each other, so one look is not enough). Exact on
    Kafka; the embedded broker reports a topic's end as its last batch's first offset + 1,
    so there the second look, ``settle`` seconds on, is what covers the rest of a last
    batch (see the README)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": worker.bootstrap, "group.id": f"{worker.prefix}app"})
    deadline = time.monotonic() + timeout
    behind: dict[str, int] = {}
    quiet = 0
    try:
        while time.monotonic() < deadline:
            worker.assert_alive()
            behind = {}
            for name in topics:
                tps = [TopicPartition(worker.topic(name), p) for p in range(worker.partitions)]
                for tp in consumer.committed(tps, timeout=10):
                    _, high = consumer.get_watermark_offsets(tp, timeout=10)
                    lag = high - max(tp.offset, 0)
                    if lag > 0:
                        behind[f"{name}[{tp.partition}]"] = lag
            quiet = 0 if behind else quiet + 1
            if quiet >= 2:
                return
            time.sleep(settle if not behind else 0.5)
    finally:
        consumer.close()
    raise AssertionError(f"still behind: {behind}; log:\n{worker.log_tail()}")


DAY = 86_400.0


def expected_counts(events: list[PredictionEvent]) -> dict[str, dict[str, dict[str, int]]]:
    """Per stream, per window start, per feature: values (null included) the state must hold."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for e in events:
        window = str(int(e.timestamp // DAY * DAY))
        per_window = out.setdefault(e.stream_key, {}).setdefault(window, {})
        for name in e.features:
            per_window[name] = per_window.get(name, 0) + 1
    return out
