"""Outcome joins and performance history on seeded traffic with late, missing and odd labels."""

from __future__ import annotations

import heapq

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from driftwatch.simulate import SimulationConfig, generate, generate_outcomes
from schemas import InvalidEvent, OutcomeEvent, PredictionEvent
from streams.config import DAY
from streams.engine import MemoryStore
from streams.join import JoinConfig, LabeledPrediction, OutcomeJoiner, binary_label

T0 = 1_767_225_600.0


def prediction(event_id: str, ts: float = T0, score: float = 0.8) -> PredictionEvent:
    return PredictionEvent(event_id, "acme", "fraud", "v1", ts, {"x": 1.0}, score)


def outcome(event_id: str, ts: float, label: int | str = 1, tenant: str = "acme") -> OutcomeEvent:
    return OutcomeEvent(event_id, tenant, "fraud", ts, label)


def test_outcome_before_prediction_waits_and_joins() -> None:
    j = OutcomeJoiner(JoinConfig(), MemoryStore())
    assert j.on_outcome(outcome("e1", T0 + 10)) is None
    assert j.stats.pending == 1
    joined = j.on_prediction(prediction("e1"))
    assert isinstance(joined, LabeledPrediction) and joined.label == 1
    assert j.stats.pending == 0 and j.stats.joined == 1
    row = joined.to_dict()
    assert row["prediction_timestamp"] < row["outcome_timestamp"] and row["score"] == 0.8


def test_duplicates_expired_and_mismatched_are_rejected_and_never_counted() -> None:
    store = MemoryStore()
    j = OutcomeJoiner(JoinConfig(retention_days=30), store)
    j.on_prediction(prediction("e1"))
    j.on_outcome(outcome("e1", T0 + DAY, 1))
    for bad, reason in (
        (lambda: j.on_outcome(outcome("e1", T0 + 2 * DAY, 0)), "duplicate_outcome"),
        (lambda: j.on_prediction(prediction("e1")), "duplicate_prediction"),
    ):
        with pytest.raises(InvalidEvent) as exc:
            bad()
        assert exc.value.reason == reason
    j.on_prediction(prediction("e2"))
    with pytest.raises(InvalidEvent, match="expired"):
        j.on_outcome(outcome("e2", T0 + 31 * DAY))
    j.on_prediction(prediction("e3"))
    with pytest.raises(InvalidEvent, match="mismatched_outcome"):
        j.on_outcome(outcome("e3", T0 + DAY, tenant="globex"))
    with pytest.raises(InvalidEvent, match="bad_value"):
        j.on_outcome(outcome("e3", T0 + DAY, label=7))
    summary = j.performance("acme", "fraud", "v1", T0)
    assert summary is not None
    assert summary.predictions == 3 and summary.labelled == 1
    assert j.stats.rejected == {
        "duplicate_outcome": 1,
        "duplicate_prediction": 1,
        "expired": 1,
        "mismatched_outcome": 1,
    }


def test_state_survives_a_flush_and_a_new_joiner() -> None:
    store = MemoryStore()
    j = OutcomeJoiner(JoinConfig(), store)
    j.on_prediction(prediction("e1"))
    j.on_outcome(outcome("e2", T0 + 5))
    store.apply(j.flush())
    again = OutcomeJoiner(JoinConfig(), store)
    assert again.on_outcome(outcome("e1", T0 + 60)) is not None
    assert again.on_prediction(prediction("e2")) is not None
    with pytest.raises(InvalidEvent, match="duplicate_outcome"):
        again.on_outcome(outcome("e1", T0 + 70))
    store.apply(again.flush())
    summary = OutcomeJoiner(JoinConfig(), store).performance("acme", "fraud", "v1", T0)
    assert summary is not None and summary.labelled == 2


def test_expiry_sweep_deletes_old_records_only() -> None:
    store = MemoryStore()
    j = OutcomeJoiner(JoinConfig(retention_days=30), store)
    j.on_prediction(prediction("old", T0))
    j.on_prediction(prediction("new", T0 + 20 * DAY))
    store.apply(j.flush())
    keys = [k for k in store.data if k.startswith('["p"')]
    removed = [k for k in keys if j.expire(k, T0 + 40 * DAY)]
    store.apply(j.flush())
    assert removed == ['["p", "old"]']
    assert '["p", "new"]' in store.data and '["p", "old"]' not in store.data


def test_performance_history_matches_sklearn_on_late_partial_labels() -> None:
    cfg = SimulationConfig(
        seed=5,
        tenants=("acme",),
        models=("fraud",),
        days=6,
        events_per_day=800,
        start=T0,
        label_rate=0.8,
        outcome_delay_hours=(2.0, 60.0),
    )
    predictions = list(generate(cfg))
    outcomes = list(generate_outcomes(cfg))
    store = MemoryStore()
    j = OutcomeJoiner(JoinConfig(), store)
    merged = heapq.merge(
        ((p.timestamp, 0, p) for p in predictions), ((o.timestamp, 1, o) for o in outcomes)
    )
    rows: list[LabeledPrediction] = []
    for i, (_, _, event) in enumerate(merged):
        if isinstance(event, PredictionEvent):
            got = j.on_prediction(event)
        else:
            assert isinstance(event, OutcomeEvent)
            got = j.on_outcome(event)
        if got is not None:
            rows.append(got)
        if i % 997 == 0:
            store.apply(j.flush())
    store.apply(j.flush())
    assert len(rows) == len(outcomes) and j.stats.pending == 0
    assert len(rows) == pytest.approx(0.8 * len(predictions), rel=0.05)
    for day in range(cfg.days):
        window = T0 + day * DAY
        summary = OutcomeJoiner(JoinConfig(), store).performance("acme", "fraud", "v1", window)
        assert summary is not None
        day_rows = [r for r in rows if window <= r.prediction.timestamp < window + DAY]
        y = np.array([binary_label(r.label) for r in day_rows])
        s = np.array([r.prediction.score for r in day_rows])
        assert summary.predictions == sum(window <= p.timestamp < window + DAY for p in predictions)
        assert summary.labelled == len(day_rows)
        assert summary.accuracy() == pytest.approx(accuracy_score(y, s >= 0.5))
        auc, bound = summary.roc_auc(), summary.roc_auc_error_bound()
        assert auc is not None and bound is not None
        assert abs(auc - roc_auc_score(y, s)) <= bound + 1e-12
