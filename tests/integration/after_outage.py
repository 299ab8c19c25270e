"""What the broker-fault tests do once the broker is back: the rest of the stream, and one
DriftEvent the retrain worker must decide on exactly once."""

from __future__ import annotations

import time
from typing import Any

from bench.retrain_e2e import RetrainWorker, Tail, confirming_drift, send
from tests.integration.test_worker import messages
from tests.integration.worker_harness import WorkerProcess, produce_recorded, wait_committed


def carry_on(
    bootstrap: str,
    worker: WorkerProcess,
    retrain: RetrainWorker,
    prefix: str,
    predictions: str,
    rest: list[Any],
    ends: dict[int, int],
    drift_id: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Produce ``rest`` (``ends`` grows to the new log ends), send a confirming DriftEvent
    named ``drift_id``, wait for the retrain worker's decision on it and for the stream
    worker to commit everything. Returns the decision and every decision seen for it."""
    for p, end in produce_recorded(bootstrap, predictions, messages(rest)).items():
        ends[p] = max(ends.get(p, 0), end)
    tail = Tail(bootstrap, [prefix + "retrain-events"])
    try:
        send(bootstrap, prefix + "drift-events", b"acme:fraud",
             confirming_drift(drift_id=drift_id).to_json())  # fmt: skip
        decided = tail.wait_for(lambda t, v: v.get("drift_id") == drift_id, 120, retrain)
        time.sleep(2.0)  # a second decision, if there were one, would be out by now
        list(tail.poll(1.0))
        decisions = [v for _, v, _ in tail.seen if v.get("drift_id") == drift_id]
    finally:
        tail.close()
    wait_committed(worker, ends, timeout=180)
    time.sleep(1.0)
    return decided, decisions
