"""Soak: 90 days of traffic through the real worker, killed with SIGKILL three times on the way.

Slow (a few minutes), so it runs with the benchmarks (`make bench`), not in CI.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from driftwatch.backtest import run_backtest
from driftwatch.simulate import DriftSpec, DriftType, SimulationConfig, generate
from runtime.settings import Settings
from runtime.topics import WORKER_TOPICS as TOPICS
from runtime.topics import ensure_topics
from tests.integration.kafka_helpers import consume_all
from tests.integration.test_worker import messages, state_counts
from tests.integration.worker_harness import (
    WorkerProcess,
    expected_counts,
    produce_recorded,
    wait_committed,
)

pytestmark = pytest.mark.slow

TRAFFIC = SimulationConfig(
    seed=21,
    tenants=("acme", "globex"),
    models=("fraud", "conflict"),
    days=90,
    events_per_day=300,
    numeric_features=4,
    categorical_features=2,
    start=1_767_225_600.0,
    drifts=(DriftSpec(DriftType.MEAN_SHIFT, 70.4, 1.5, ("amount",), ("acme",), ("fraud",)),),
    weekly_seasonality=0.3,
)


def test_ninety_days_with_three_crashes(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    worker = WorkerProcess(
        bootstrap=kafka_bootstrap,
        prefix=f"{unique_prefix}-",
        data_dir=tmp_path / "state",
        log_path=tmp_path / "worker.log",
        extra_env={
            "DRIFTWATCH_SEASONAL_PERIOD_DAYS": "7",
            "DRIFTWATCH_BASELINE_START_DAYS": "60",
            "DRIFTWATCH_BASELINE_END_DAYS": "30",
            "DRIFTWATCH_MIN_BASELINE_WINDOWS": "3",
            "DRIFTWATCH_RETENTION_DAYS": "62",
        },
    )
    ensure_topics(kafka_bootstrap, {worker.topic(t): worker.partitions for t in TOPICS})
    events = list(generate(TRAFFIC))
    ends = produce_recorded(kafka_bootstrap, worker.topic("predictions"), messages(events))
    try:
        worker.start()
        for fraction in (0.25, 0.2, 0.2):
            worker.wait_processed(int(len(events) * fraction), timeout=600)
            worker.stop(signal.SIGKILL)
            worker.start()
        wait_committed(worker, ends, timeout=900)
        time.sleep(2)
    finally:
        assert worker.stop() in (0, None)
    assert state_counts(worker.data_dir) == {
        stream: {w: c for w, c in windows.items() if int(w) >= _retained_from(events)}
        for stream, windows in expected_counts(events).items()
    }
    live = [
        json.loads(r.value or b"")
        for r in consume_all(kafka_bootstrap, worker.topic("drift-events"), min_messages=1)
    ]
    report = run_backtest(events, Settings.from_env(environ={}).engine_config())
    offline = {_identity(d.to_dict()) for d in report.drift_events}
    # A crash may repeat a drift event (same id, same window), never lose or invent one.
    assert {_identity(d) for d in live} == offline
    found = {(d["tenant"], d["model"], d["feature"]) for d in live if d["confirmed"]}
    # The injected drift is confirmed; a chance alarm elsewhere (alpha per window) never is.
    assert found == {("acme", "fraud", "amount")}


def _identity(d: dict[str, Any]) -> tuple[Any, ...]:
    return (
        d["drift_id"],
        d["feature"],
        d["test"],
        d["window_start"],
        d["window_end"],
        d["confirmed"],
    )


def _retained_from(events: list[Any]) -> int:
    """Windows older than the retention were deleted by the worker: compare the rest."""
    last = max(e.timestamp for e in events)
    newest_closed = (last // 86_400 - 1) * 86_400
    return int(newest_closed - 62 * 86_400)
