"""The backtest's semi-join: its join keeps only the predictions an outcome names or that come
more than once (``driftwatch.join_keys``), with the same results as a join that keeps all."""

from __future__ import annotations

import pickle
import random
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from driftwatch import backtest
from driftwatch.backtest import BacktestReport, backtest_files, run_backtest
from driftwatch.join_keys import SLOTS_PER_KEY, JoinKeys, JoinKeyScan
from schemas import OutcomeEvent, PredictionEvent
from streams.config import DAY, EngineConfig, PerformanceConfig
from streams.ingest import PredictionValidator
from streams.keyed_state import MemoryStore

ENGINE = EngineConfig(
    baseline_start_days=7, baseline_end_days=1, min_baseline_windows=3, retention_days=30,
    seasonal_period_days=0,
)  # fmt: skip
PERF = PerformanceConfig(engine=ENGINE, join_retention_days=2.0)
START = 1_767_225_600.0


def test_keys_hold_every_outcome_and_every_repeated_prediction_and_few_others() -> None:
    rng = random.Random(5)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(30_000)]
    labelled = rng.sample(ids, 4_000)
    again = rng.sample(ids, 300)
    keys = JoinKeys.of([*ids, *again], [*labelled, "an outcome without a prediction"])
    assert all(i in keys for i in [*labelled, *again, "an outcome without a prediction"])
    assert keys.size == len(set(labelled) | set(again)) + 1
    others = set(ids) - set(labelled) - set(again)
    kept = sum(i in keys for i in others)
    # A bitmap of at least 64 bits a key: about 1 in 64 others falls on a set bit, or fewer.
    assert 0 < kept < 1.5 * len(others) / SLOTS_PER_KEY
    nothing = JoinKeys.of(ids, [])
    assert nothing.size == 0 and not any(i in nothing for i in ids[:1000])
    assert all(i in JoinKeys.everything() for i in ids[:100])
    assert (
        repr(JoinKeys.everything()) == "JoinKeys(every id)"
        and repr(keys) == f"JoinKeys({keys.size:,} keys)"
    )


def _prediction(
    event_id: str, ts: float, rng: random.Random, model: str = "fraud"
) -> PredictionEvent:
    features: dict[str, float | str | None] = {"a": rng.gauss(0, 1), "b": rng.gauss(5, 2)}
    return PredictionEvent(event_id, "acme", model, "v1", ts, features, rng.random())


def _stream() -> tuple[list[PredictionEvent], list[OutcomeEvent]]:
    """Two weeks of one model, 60 predictions a day, with what the join must get right
    whichever predictions it keeps."""
    rng = random.Random(21)
    events: list[PredictionEvent] = []
    outcomes: list[OutcomeEvent] = []
    for k in range(15 * 60):
        ts = START + k * DAY / 60
        event = _prediction(f"p{k}", ts, rng)
        events.append(event)
        day = k // 60
        if day <= 3 and rng.random() < 0.5:  # none after the fourth day
            late = rng.uniform(1, 60) * 3_600  # some past the 2 days' retention
            outcomes.append(OutcomeEvent(event.event_id, "acme", "fraud", ts + late, k % 2))

    def at(days: float) -> float:
        return START + days * DAY

    # An unlabelled prediction sent again 2 hours later, 5 days later (its record expired:
    # a tombstone), and 12 days later (the tombstone gone: new again).
    labelled = {o.event_id for o in outcomes}
    again = next(e for e in events[30:] if e.event_id not in labelled)
    for later in (2 / 24, 5.0, 12.0):
        events.append(_prediction(again.event_id, again.timestamp + later * DAY, rng))
    # An outcome before its prediction; one whose prediction never comes; one for another
    # model's prediction.
    outcomes.append(OutcomeEvent("q1", "acme", "fraud", at(0.5), 1))
    events.append(_prediction("q1", at(0.9), rng))
    outcomes.append(OutcomeEvent("z1", "acme", "fraud", at(5.2), 0))
    events.append(_prediction("m1", at(2.1), rng, model="other"))
    outcomes.append(OutcomeEvent("m1", "acme", "fraud", at(2.4), 1))
    # An outcome whose prediction comes 9 days later, over days without a label. The join
    # gives it up (the stall: its clocks are then past the outcome's day by the retention)
    # at day 13 only if the predictions it does not keep move its clock too; the prediction
    # then meets the tombstone, a duplicate. Else it would join the outcome.
    outcomes.append(OutcomeEvent("x1", "acme", "fraud", at(4.5), 1))
    events.append(_prediction("x1", at(13.5), rng))
    events.sort(key=lambda e: e.timestamp)
    outcomes.sort(key=lambda o: o.timestamp)
    return events, outcomes


def _report(report: BacktestReport) -> dict[str, Any]:
    return {
        "drifts": [d.to_dict() for d in report.drift_events],
        "joined": report.outcomes_joined,
        "rejected": report.rejected,
        "performance": report.performance,
        "stats": report.engine_stats,
        "notices": report.notices,
        "events": (report.events, report.feature_values),
    }


def _records(store: MemoryStore) -> int:
    return sum(key.startswith('["p", ') for key in store.data)


def test_a_backtest_keeping_only_the_joins_keys_reports_what_keeping_all_does(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(backtest, "FLUSH_EVERY", 50)  # the join's records reach its store
    events, outcomes = _stream()
    sent = Counter(e.event_id for e in events)
    (again,) = [i for i, n in sent.items() if n > 1]
    every, some = MemoryStore(), MemoryStore()
    reference = run_backtest(
        events, ENGINE, outcomes=outcomes, performance=PERF, join_store=every,
        join_keys=JoinKeys.everything(),
    )  # fmt: skip
    # The exact ids: the join keeps nothing else.
    exact = {o.event_id for o in outcomes} | {again}
    got = run_backtest(
        events, ENGINE, outcomes=outcomes, performance=PERF, join_store=some, join_keys=exact
    )
    assert _report(got) == _report(reference)
    # Inputs held whole: the keys are found from them (a few more: bits set by others).
    found = run_backtest(events, ENGINE, outcomes=outcomes, performance=PERF)
    assert _report(found) == _report(reference)
    expected = Counter(
        {"duplicate_prediction": 2, "unknown_prediction": 2, "mismatched_outcome": 1}
    )  # the one sent again, twice (x1, whose outcome was given up, is new: no duplicate);
    # x1 and z1; m1
    # (and outcomes past the retention)
    assert reference.rejected - Counter({"expired": reference.rejected["expired"]}) == expected
    assert reference.rejected["expired"] > 0 and reference.outcomes_joined > 80
    # One joiner kept (at most) the few keys' records, the other all of a retention's.
    assert _records(every) > 100 and _records(some) < 0.1 * _records(every)

    # Files: their scans find the keys.
    validator = PredictionValidator(max_future_seconds=None)
    predictions = tmp_path / "p.jsonl"
    predictions.write_bytes(b"".join(e.to_json() + b"\n" for e in events))
    labels = tmp_path / "o.jsonl"
    labels.write_bytes(b"".join(o.to_json() + b"\n" for o in outcomes))
    seen: list[JoinKeys | None] = []
    run = backtest.run_backtest

    def spy(*args: Any, **kw: Any) -> BacktestReport:
        seen.append(kw.get("join_keys"))
        return run(*args, **kw)

    monkeypatch.setattr(backtest, "run_backtest", spy)
    files = backtest_files(
        predictions, ENGINE, validator, outcomes=labels, performance=PERF,
        keep_drift_events=True,
    )  # fmt: skip
    assert _report(files) == _report(reference)
    assert seen[0] is not None and seen[0].size == len({o.event_id for o in outcomes}) + 1


def test_keys_found_by_a_scan_are_those_of_the_events_it_saw() -> None:
    events, outcomes = _stream()
    scan = JoinKeyScan()
    for e in events:
        scan.prediction(e)
    for o in outcomes:
        scan.outcome(o)
    keys = scan.keys()
    expected = JoinKeys.of([e.event_id for e in events], [o.event_id for o in outcomes])
    sent = Counter(e.event_id for e in events)
    again = [i for i, n in sent.items() if n > 1]
    assert len(again) == 1 and again[0] not in {o.event_id for o in outcomes}
    assert keys.size == expected.size == len({o.event_id for o in outcomes}) + 1
    assert [e.event_id in keys for e in events] == [e.event_id in expected for e in events]
    # Asked again, a scan (its hashes let go) gives the same keys; keys stay in-process.
    assert scan.keys() is keys and not scan.predicted and not scan.labelled
    with pytest.raises(TypeError, match="another process"):
        pickle.dumps(keys)
    # Without outcomes only the prediction sent again is a key.
    alone = JoinKeys.of([e.event_id for e in events], [])
    assert alone.size == 1 and again[0] in alone
