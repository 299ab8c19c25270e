"""A broker outage: the broker process is frozen (SIGSTOP) for 30 s while the stream worker
has work and the retrain worker runs, then resumed (SIGCONT).

Both must carry on by themselves: the stream worker's counts exact (nothing lost, nothing
counted twice), the retrain worker deciding on a DriftEvent sent after the outage, once. The
outage must be visible while it lasts: ``driftwatch_broker_reachable`` 0 and a log line.

Runs on its own embedded broker (pausing the session's would stall other tests' topics), so
it is skipped when ``KAFKA_BOOTSTRAP_SERVERS`` names an external cluster.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.retrain_e2e import TOPICS as RETRAIN_TOPICS
from bench.retrain_e2e import RetrainWorker
from driftwatch.devbroker import DevBroker
from runtime.topics import WORKER_TOPICS, ensure_topics
from tests.conftest import KAFKA_BOOTSTRAP_ENV
from tests.integration.after_outage import carry_on
from tests.integration.test_worker import messages, state_counts, steady
from tests.integration.worker_harness import (
    WorkerProcess,
    expected_counts,
    produce_recorded,
)

OUTAGE_SECONDS = 30.0

pytestmark = pytest.mark.skipif(
    bool(os.environ.get(KAFKA_BOOTSTRAP_ENV, "").strip()),
    reason="pauses its own embedded broker; an external cluster cannot be paused from here",
)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[DevBroker]:
    b = DevBroker(port=None, log_path=tmp_path / "tansu.log")
    b.start()
    try:
        yield b
    finally:
        if b.pid is not None:
            os.kill(b.pid, signal.SIGCONT)
        b.stop()


@pytest.mark.timeout(600)
def test_workers_ride_out_a_frozen_broker(broker: DevBroker, tmp_path: Path) -> None:
    assert broker.pid is not None
    prefix = "outage-"
    worker = WorkerProcess(
        bootstrap=broker.bootstrap,
        prefix=prefix,
        data_dir=tmp_path / "state",
        log_path=tmp_path / "worker.log",
        extra_env={"DRIFTWATCH_JOIN_OUTCOMES": "false", "DRIFTWATCH_STALL_SECONDS": "20"},
    )
    ensure_topics(broker.bootstrap, {worker.topic(t): worker.partitions for t in WORKER_TOPICS})
    ensure_topics(broker.bootstrap, {prefix + t: 2 for t in RETRAIN_TOPICS})
    events = steady(days=8, events_per_day=400)
    half = len(events) // 2
    retrain = RetrainWorker(broker.bootstrap, prefix, tmp_path / "retrain",
                            {"DRIFTWATCH_AUTO_RETRAIN": "false"}).start()  # fmt: skip
    worker.start()
    try:
        ends = produce_recorded(broker.bootstrap, worker.topic("predictions"),
                                messages(events[:half]))  # fmt: skip
        worker.wait_processed(half // 4)

        # The outage, while the worker still has work.
        os.kill(broker.pid, signal.SIGSTOP)
        paused = time.monotonic()
        seen_down = False
        while time.monotonic() - paused < OUTAGE_SECONDS:
            worker.assert_alive()
            assert retrain.proc is not None and retrain.proc.poll() is None, "retrain worker died"
            if worker.metrics().get("driftwatch_broker_reachable") == 0.0:
                seen_down = True
            time.sleep(1.0)
        os.kill(broker.pid, signal.SIGCONT)
        assert seen_down, "the outage was not visible in driftwatch_broker_reachable"

        # After it: the rest of the stream, and a DriftEvent for the retrain worker.
        decided, decisions = carry_on(
            broker.bootstrap,
            worker,
            retrain,
            prefix,
            worker.topic("predictions"),
            events[half:],
            ends,
            "after-outage",
        )
    finally:
        retrain.stop()
    assert decided["status"] == "waiting" and len(decisions) == 1, decisions
    log = worker.log_path.read_text(errors="replace")
    assert "the broker does not answer" in log and "the broker answers again" in log
    assert worker.restarts == [], "the outage ended in a stall restart"
    assert worker.read_metrics().get("driftwatch_broker_reachable") == 1.0
    assert worker.stop() == 0
    assert state_counts(worker.data_dir) == expected_counts(events)
