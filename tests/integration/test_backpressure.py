"""A backlog through the real worker: the join and the performance monitor keep pace with the
drift agent (agents.faust_compat.backpressure), and every outcome is joined and applied."""

from __future__ import annotations

import time
from pathlib import Path

from driftwatch.kafka_io import outcome_messages, prediction_messages
from driftwatch.simulate import SimulationConfig, generate, generate_outcomes
from tests.integration.worker_harness import new_worker, produce_recorded, wait_drained

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
TRAFFIC = SimulationConfig(
    seed=5,
    tenants=("acme",),
    models=("fraud", "churn"),
    days=20,
    events_per_day=500,
    numeric_features=4,
    categorical_features=1,
    start=START,
    label_rate=1.0,
    outcome_delay_hours=(1.0, 30.0),
)
LIMIT = 4
"""Unprocessed join-input / performance-input messages a partition may hold."""


def test_the_later_stages_keep_pace_with_a_backlog(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    predictions = list(generate(TRAFFIC))
    outcomes = list(generate_outcomes(TRAFFIC))
    worker = new_worker(
        kafka_bootstrap,
        f"{unique_prefix}-",
        tmp_path,
        {"DRIFTWATCH_DOWNSTREAM_BACKLOG": str(LIMIT), "DRIFTWATCH_JOIN_RETENTION_DAYS": "5"},
    )
    # The whole backlog first, then the worker: nothing paces the drift agent but the gate.
    produce_recorded(
        worker.bootstrap, worker.topic("predictions"), list(prediction_messages(predictions, 1))
    )
    produce_recorded(worker.bootstrap, worker.topic("outcomes"), list(outcome_messages(outcomes)))
    inputs = len(predictions) + len(outcomes)
    worker.start()
    try:
        # The moment the inputs are processed: how much of them the join has seen. Each join
        # frame is one prediction or one outcome, counted once whatever became of it.
        deadline = time.monotonic() + 300
        while True:
            worker.assert_alive()
            metrics = worker.metrics()
            done = sum(v for k, v in metrics.items() if k.startswith("driftwatch_events_total{"))
            if done >= inputs:
                break
            assert time.monotonic() < deadline, f"processed {done}/{inputs}"
            time.sleep(0.1)
        joined = sum(v for k, v in metrics.items() if k.startswith("driftwatch_joins_total{"))
        waited = sum(
            v for k, v in metrics.items() if k.startswith("driftwatch_backpressure_wait_seconds")
        )
        # Behind by at most the limit's messages per partition (each up to half a batch of a
        # thousand frames) and a batch in flight from each of the two agents feeding the join
        # (predictions, outcomes): not the backlog. Without the gate the join was 16,267
        # frames behind at this moment (DRIFTWATCH_DOWNSTREAM_BACKLOG=0, 2026-12-05); with it,
        # 5,252 once on a loaded machine, past the single batch in flight this allowed before.
        assert joined >= inputs - (2 * LIMIT * 500 + 2 * 1_000), (joined, inputs)
        assert waited > 0.0  # the drift agent and the router did wait for the join

        wait_drained(worker, ["predictions", "outcomes", "join-input", "performance-input"])
        final = worker.read_metrics()
        assert final['driftwatch_joins_total{result="joined"}'] == len(outcomes)
        assert final['driftwatch_engine_total{what="performance_labels"}'] == len(outcomes)
        assert final.get('driftwatch_dead_letters_total{reason="expired",topic="' + worker.topic(
            "outcomes") + '"}', 0.0) == 0.0  # fmt: skip
    finally:
        worker.stop()
