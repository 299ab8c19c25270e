"""The broker process restarted on its own storage, while the stream worker has work in flight
and the retrain worker runs: stopped (SIGTERM, or SIGKILL), down for 15 s, started again on
the same port and the same storage.

Both workers must carry on by themselves (no restart by the harness): the stream worker's
counts exact (nothing lost, nothing counted twice), the retrain worker deciding on a
DriftEvent sent after the restart, once. The outage must be visible while it lasts
(``driftwatch_broker_reachable`` 0 and the watchdog's log lines), and what the broker held
must have survived it: every record produced before the stop, and the group's committed
offsets.

The embedded broker keeps its data in an S3 bucket here (``tests/integration/s3_server.py``:
moto's server, a process of its own that outlives the broker's; the Tansu build we ship has no
postgres engine). Runs on its own broker, so it is skipped when ``KAFKA_BOOTSTRAP_SERVERS``
names an external cluster.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.retrain_e2e import TOPICS as RETRAIN_TOPICS
from bench.retrain_e2e import RetrainWorker
from driftwatch.devbroker import DevBroker
from retrain.worker import read_topic
from runtime.topics import WORKER_TOPICS, ensure_topics
from tests.conftest import KAFKA_BOOTSTRAP_ENV
from tests.integration.after_outage import carry_on
from tests.integration.s3_server import S3Server
from tests.integration.test_worker import messages, state_counts, steady
from tests.integration.worker_harness import (
    WorkerProcess,
    committed_offsets,
    expected_counts,
    produce_recorded,
)

DOWNTIME_SECONDS = 15.0

pytestmark = pytest.mark.skipif(
    bool(os.environ.get(KAFKA_BOOTSTRAP_ENV, "").strip()),
    reason="restarts its own embedded broker; an external cluster cannot be restarted from here",
)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("s3") / "s3.log") as server:
        yield server


@pytest.fixture
def broker(s3: S3Server, tmp_path: Path) -> Iterator[DevBroker]:
    storage = s3.bucket(f"restart-{uuid.uuid4().hex[:8]}")
    b = DevBroker(port=None, log_path=tmp_path / "tansu.log", storage=storage, env=s3.env)
    assert b.persistent
    b.start()
    try:
        yield b
    finally:
        b.stop()


def wait_first_commit(worker: WorkerProcess, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets on ``topic`` once it has committed something."""
    deadline = time.monotonic() + 60
    while True:
        committed = committed_offsets(worker.bootstrap, group, topic, worker.partitions)
        if max(committed.values()) > 0 or time.monotonic() > deadline:
            return committed
        worker.assert_alive()
        time.sleep(0.1)


def count_records(bootstrap: str, topic: str) -> int:
    return sum(1 for _ in read_topic(bootstrap, topic, timeout=60))


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "sig",
    # The SIGKILL one (no clean shutdown of the broker) in CI, the SIGTERM one in make bench.
    [pytest.param(signal.SIGTERM, marks=pytest.mark.slow, id="sigterm"),
     pytest.param(signal.SIGKILL, id="sigkill")],
)  # fmt: skip
def test_workers_carry_on_after_the_broker_restarts(
    broker: DevBroker, s3: S3Server, tmp_path: Path, sig: signal.Signals,
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    prefix = "restart-"
    worker = WorkerProcess(
        bootstrap=broker.bootstrap,
        prefix=prefix,
        data_dir=tmp_path / "state",
        log_path=tmp_path / "worker.log",
        extra_env={"DRIFTWATCH_JOIN_OUTCOMES": "false", "DRIFTWATCH_STALL_SECONDS": "20"},
    )
    predictions = worker.topic("predictions")
    ensure_topics(broker.bootstrap, {worker.topic(t): worker.partitions for t in WORKER_TOPICS})
    ensure_topics(broker.bootstrap, {prefix + t: 2 for t in RETRAIN_TOPICS})
    events = steady(days=8, events_per_day=400)
    # Most of the stream before the stop, so the worker has plenty in flight when it comes.
    first = len(events) * 3 // 4
    retrain = RetrainWorker(broker.bootstrap, prefix, tmp_path / "retrain",
                            {"DRIFTWATCH_AUTO_RETRAIN": "false"}).start()  # fmt: skip
    request.addfinalizer(retrain.stop)
    worker.start()
    request.addfinalizer(worker.stop)  # also when an assertion fails (a no-op after a stop)
    try:
        ends = produce_recorded(broker.bootstrap, predictions, messages(events[:first]))
        worker.wait_processed(first // 8)
        group = f"{prefix}app"
        committed_before = wait_first_commit(worker, group, predictions)
        processed_before = worker.processed()

        # The broker goes away while the worker still has work, and comes back on its storage.
        broker.stop(sig=sig)
        print(f"broker stopped ({sig.name}) with {processed_before}/{first} processed, "
              f"committed {committed_before} of {ends}")  # fmt: skip
        stopped = time.monotonic()
        seen_down = False
        while time.monotonic() - stopped < DOWNTIME_SECONDS:
            worker.assert_alive()
            assert retrain.proc is not None and retrain.proc.poll() is None, "retrain worker died"
            if worker.metrics().get("driftwatch_broker_reachable") == 0.0:
                seen_down = True
            time.sleep(1.0)
        broker.restart()
        assert seen_down, "the outage was not visible in driftwatch_broker_reachable"

        # What the broker held survived: every record produced before the stop, the commits.
        assert s3.object_count(broker.storage.removeprefix("s3://").rstrip("/")) > 0
        assert count_records(broker.bootstrap, predictions) == first
        committed_after = committed_offsets(broker.bootstrap, group, predictions, 2)
        assert max(committed_before.values()) > 0, committed_before
        assert all(committed_after[p] >= committed_before[p] for p in committed_before), (
            committed_before, committed_after)  # fmt: skip

        # After it: the rest of the stream, and a DriftEvent for the retrain worker.
        decided, decisions = carry_on(
            broker.bootstrap,
            worker,
            retrain,
            prefix,
            predictions,
            events[first:],
            ends,
            "after-restart",
        )
        assert count_records(broker.bootstrap, predictions) == len(events)
    finally:
        retrain.stop()
    assert decided["status"] == "waiting" and len(decisions) == 1, decisions
    log = worker.log_path.read_text(errors="replace")
    assert "the broker does not answer" in log and "the broker answers again" in log
    # ...and not buried: aiokafka's retry errors (every 100 ms while connections are refused)
    # come once per kind per 30 s (agents.client_logs), not ~100 lines a second.
    for line in ("Unable connect to node", "Failed fetch messages", "Unable to update metadata"):
        assert log.count(line) <= 4 + DOWNTIME_SECONDS / 30, (line, log.count(line))
    assert worker.restarts == [], "the restart ended in a stall restart"
    assert worker.read_metrics().get("driftwatch_broker_reachable") == 1.0
    assert worker.stop() == 0
    assert state_counts(worker.data_dir) == expected_counts(events)
