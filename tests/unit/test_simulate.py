"""Synthetic traffic generator: determinism, ordering, drift injection, outcomes, CLI syntax."""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from driftwatch.simulate import (
    DriftSpec,
    DriftType,
    SimulationConfig,
    feature_names,
    format_drift,
    generate,
    generate_outcomes,
    parse_drift,
    resolve_start,
    write_jsonl,
)
from schemas.events import OutcomeEvent, PredictionEvent

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a Thursday
DAY = 86_400.0


def small(**overrides: object) -> SimulationConfig:
    base = SimulationConfig(days=4, events_per_day=200, start=START)
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def wire(events: Iterable[PredictionEvent | OutcomeEvent]) -> list[bytes]:
    return [e.to_json() for e in events]


def stream(events: Iterable[PredictionEvent], tenant: str, model: str) -> list[PredictionEvent]:
    return [e for e in events if e.tenant == tenant and e.model == model]


def column(events: Iterable[PredictionEvent], name: str) -> np.ndarray:
    values = [e.features[name] for e in events]
    return np.array([v for v in values if v is not None], dtype=float)


def day_of(e: PredictionEvent) -> float:
    return (e.timestamp - START) / DAY


# --- determinism, ordering, counts ----------------------------------------------------------


def test_same_seed_same_events_different_seed_different() -> None:
    cfg = SimulationConfig(days=2, events_per_day=400, start=START)
    first = wire(itertools.islice(generate(cfg), 1000))
    again = wire(itertools.islice(generate(cfg), 1000))
    other = wire(itertools.islice(generate(dataclasses.replace(cfg, seed=8)), 1000))
    assert len(first) == 1000
    assert first == again
    assert first != other
    assert len(set(first) & set(other)) == 0


def test_write_jsonl_is_byte_identical(tmp_path: Path) -> None:
    cfg = small(days=2, events_per_day=50)
    for name in ("a.jsonl", "b.jsonl", "a.jsonl.gz", "b.jsonl.gz"):
        assert write_jsonl(generate(cfg), tmp_path / name) == 2 * 50 * 4
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    plain = (tmp_path / "a.jsonl").read_bytes()
    assert gzip.decompress((tmp_path / "a.jsonl.gz").read_bytes()) == plain
    lines = plain.splitlines()
    assert PredictionEvent.from_json(lines[0]).event_id
    n = write_jsonl(generate_outcomes(cfg), tmp_path / "sub" / "outcomes.jsonl")
    assert n == len((tmp_path / "sub" / "outcomes.jsonl").read_bytes().splitlines())


def test_streams_differ_but_are_fixed() -> None:
    events = list(generate(small()))
    acme = [e.features["amount"] for e in stream(events, "acme", "fraud")[:50]]
    globex = [e.features["amount"] for e in stream(events, "globex", "fraud")[:50]]
    assert acme != globex
    # A stream does not depend on which other tenants/models are generated alongside it.
    alone = list(generate(small(tenants=("globex",), models=("fraud",))))
    assert wire(alone) == wire(stream(events, "globex", "fraud"))


def test_counts_ids_and_order() -> None:
    cfg = small(days=3, events_per_day=250, tenants=("acme", "globex", "initech"))
    events = list(generate(cfg))
    assert len(events) == 3 * 250 * 3 * 2
    ids = [e.event_id for e in events]
    assert len(set(ids)) == len(ids)
    assert "initech-conflict-002-000249" in ids
    stamps = [e.timestamp for e in events]
    assert all(a <= b for a, b in itertools.pairwise(stamps))
    assert stamps[0] >= START and stamps[-1] < START + 3 * DAY
    assert {(e.tenant, e.model) for e in events} == set(cfg.streams)
    # A stream's own day is in time order too, so index i is its i-th event of the day.
    acme = stream(events, "acme", "fraud")
    assert [e.event_id for e in acme[:2]] == ["acme-fraud-000-000000", "acme-fraud-000-000001"]


def test_event_contents() -> None:
    cfg = small(numeric_features=10, categorical_features=5)
    events = list(generate(cfg))
    fraud_num, fraud_cat = feature_names(cfg, "fraud")
    conflict_num, conflict_cat = feature_names(cfg, "conflict")
    assert fraud_num[:4] == ["amount", "velocity_1h", "account_age_days", "distance_km"]
    assert fraud_num[-2:] == ["num_08", "num_09"] and fraud_cat[-1] == "cat_04"
    assert fraud_cat[:2] == ["merchant_category", "channel"]
    assert set(conflict_num).isdisjoint({"amount", "velocity_1h"})
    assert feature_names(cfg) == (fraud_num, fraud_cat)
    for e in events[:500]:
        names = fraud_num + fraud_cat if e.model == "fraud" else conflict_num + conflict_cat
        assert list(e.features) == names
        assert 0.0 <= e.score <= 1.0
        assert e.prediction == int(e.score >= 0.5)
        for name in names[: len(fraud_num)]:
            assert e.features[name] is None or isinstance(e.features[name], float)
    values = [v for e in events for v in e.features.values()]
    missing = sum(v is None for v in values) / len(values)
    assert 0.005 < missing < 0.015
    for name in ("merchant_category", "cat_04"):
        cats = {e.features[name] for e in events if e.model == "fraud"} - {None}
        assert 5 <= len(cats) <= 8


def test_wire_round_trip() -> None:
    events = list(itertools.islice(generate(small()), 300))
    for e in events:
        assert PredictionEvent.from_dict(e.to_dict()) == e
        assert PredictionEvent.from_json(e.to_json()) == e
    for o in itertools.islice(generate_outcomes(small()), 300):
        assert OutcomeEvent.from_json(o.to_json()) == o


def test_default_start_is_utc_midnight() -> None:
    cfg = SimulationConfig(days=3, events_per_day=2, start=None)
    start = resolve_start(cfg)
    assert start % DAY == 0
    events = list(generate(cfg))
    assert all(start <= e.timestamp < start + 3 * DAY for e in events)


def test_by_default_even_the_last_outcomes_are_not_from_the_future() -> None:
    """A worker refuses events from the future: with the stream ending today, outcomes 1-3
    days late were dead-lettered by the worker ``simulate`` fed."""
    import time

    cfg = SimulationConfig(days=2, events_per_day=200, start=None, label_rate=1.0,
                           outcome_delay_hours=(24.0, 72.0))  # fmt: skip
    outcomes = list(generate_outcomes(cfg))
    assert outcomes and max(o.timestamp for o in outcomes) <= time.time()
    assert max(o.timestamp for o in outcomes) > time.time() - 4 * DAY  # still recent
    unlabelled = SimulationConfig(days=2, events_per_day=2, start=None, label_rate=0.0)
    assert resolve_start(unlabelled) - resolve_start(cfg) == 3 * DAY  # no outcomes: to today


# --- drift -----------------------------------------------------------------------------------


def test_mean_shift_visible_only_where_injected() -> None:
    base = SimulationConfig(
        days=10, events_per_day=1000, start=START, tenants=("acme", "globex"), models=("fraud",)
    )
    drift = DriftSpec(DriftType.MEAN_SHIFT, start_day=5, magnitude=1.0, tenants=("acme",))
    clean = list(generate(base))
    drifted = list(generate(dataclasses.replace(base, drifts=(drift,))))

    acme = stream(drifted, "acme", "fraud")
    before = [e for e in acme if day_of(e) < 5]
    after = [e for e in acme if day_of(e) >= 5]
    numeric, _ = feature_names(base, "fraud")
    for name in numeric:
        sigma = column(before, name).std()
        moved = (column(after, name).mean() - column(before, name).mean()) / sigma
        expected = 1.0 if name == numeric[0] else 0.0  # default: the first numeric feature
        assert moved == pytest.approx(expected, abs=0.1), name
    # Other tenant untouched, and the drifting stream is unchanged before the drift starts.
    assert wire(stream(drifted, "globex", "fraud")) == wire(stream(clean, "globex", "fraud"))
    assert wire(before) == wire([e for e in stream(clean, "acme", "fraud") if day_of(e) < 5])
    # The drifted feature feeds the score, so the score distribution moves too.
    assert np.mean([e.score for e in after]) > np.mean([e.score for e in before]) + 0.05


def test_fractional_start_day_and_named_features() -> None:
    base = small(models=("fraud",), tenants=("acme",))
    spec = parse_drift("mean_shift:day=2.5:magnitude=3:features=distance_km,velocity_1h")
    clean = list(generate(base))
    drifted = list(generate(dataclasses.replace(base, drifts=(spec,))))
    noon = START + 2.5 * DAY
    for a, b in zip(clean, drifted, strict=True):
        assert a.event_id == b.event_id
        assert a.features["amount"] == b.features["amount"]
        if a.timestamp < noon:
            assert a == b
        elif a.features["distance_km"] is not None:
            assert b.features["distance_km"] != a.features["distance_km"]


def test_variance_drift() -> None:
    base = SimulationConfig(days=8, events_per_day=1000, start=START, tenants=("acme",))
    spec = DriftSpec(DriftType.VARIANCE, 4, 2.0, features=("order_value",), models=("conflict",))
    events = stream(generate(dataclasses.replace(base, drifts=(spec,))), "acme", "conflict")
    before = column([e for e in events if day_of(e) < 4], "order_value")
    after = column([e for e in events if day_of(e) >= 4], "order_value")
    assert after.std() / before.std() == pytest.approx(2.0, abs=0.15)
    assert abs(after.mean() - before.mean()) / before.std() < 0.1


def test_category_mix_drift() -> None:
    base = SimulationConfig(days=6, events_per_day=1000, start=START, tenants=("acme",))
    spec = parse_drift("category_mix:day=3:magnitude=0.5:models=fraud")
    events = stream(generate(dataclasses.replace(base, drifts=(spec,))), "acme", "fraud")

    def share(evs: list[PredictionEvent], value: str) -> float:
        cats = [e.features["merchant_category"] for e in evs]
        return sum(c == value for c in cats) / len(cats)

    before = [e for e in events if day_of(e) < 3]
    after = [e for e in events if day_of(e) >= 3]
    rare = "crypto"  # the last, rarely used category
    assert share(before, rare) < 0.04
    assert share(after, rare) == pytest.approx(0.5 + 0.5 * share(before, rare), abs=0.04)
    assert share(after, "grocery") == pytest.approx(0.5 * share(before, "grocery"), abs=0.03)
    channel = [e.features["channel"] for e in before], [e.features["channel"] for e in after]
    assert abs(channel[0].count("pos") / len(before) - channel[1].count("pos") / len(after)) < 0.04


def test_weekly_seasonality_moves_daily_means() -> None:
    cfg = SimulationConfig(
        days=7, events_per_day=600, start=START, tenants=("acme",), models=("fraud",)
    )
    flat = list(generate(cfg))
    seasonal = list(generate(dataclasses.replace(cfg, weekly_seasonality=1.0)))

    def daily_means(evs: list[PredictionEvent]) -> np.ndarray:
        return np.array(
            [column([e for e in evs if int(day_of(e)) == d], "amount").mean() for d in range(7)]
        )

    sigma = column(flat, "amount").std()
    assert np.ptp(daily_means(flat)) / sigma < 0.3
    assert np.ptp(daily_means(seasonal)) / sigma > 1.2


# --- outcomes --------------------------------------------------------------------------------


def test_outcomes_match_predictions() -> None:
    cfg = SimulationConfig(days=8, events_per_day=500, start=START)
    predictions = {e.event_id: e for e in generate(cfg)}
    outcomes = list(generate_outcomes(cfg))
    assert outcomes == list(generate_outcomes(cfg))
    assert all(a.timestamp <= b.timestamp for a, b in itertools.pairwise(outcomes))
    ids = [o.event_id for o in outcomes]
    assert len(set(ids)) == len(ids)
    assert set(ids) <= set(predictions)
    assert len(ids) / len(predictions) == pytest.approx(cfg.label_rate, abs=0.02)
    lo, hi = cfg.outcome_delay_hours
    labels, scores = [], []
    for o in outcomes:
        p = predictions[o.event_id]
        assert (o.tenant, o.model) == (p.tenant, p.model)
        assert lo * 3600 <= o.timestamp - p.timestamp <= hi * 3600
        assert o.label in (0, 1)
        labels.append(o.label)
        scores.append(p.score)
    assert 0.06 < np.mean(labels) < 0.15
    assert roc_auc_score(labels, scores) > 0.75
    assert average_precision_score(labels, scores) > 0.7


def test_outcome_options() -> None:
    cfg = small(label_rate=0.3, outcome_delay_hours=(1.0, 2.0))
    predictions = {e.event_id: e.timestamp for e in generate(cfg)}
    outcomes = list(generate_outcomes(cfg))
    assert len(outcomes) / len(predictions) == pytest.approx(0.3, abs=0.03)
    assert all(3600 <= o.timestamp - predictions[o.event_id] <= 7200 for o in outcomes)
    assert all(a.timestamp <= b.timestamp for a, b in itertools.pairwise(outcomes))
    assert list(generate_outcomes(small(label_rate=0.0))) == []


# --- drift syntax and validation -------------------------------------------------------------


def test_parse_drift_example() -> None:
    text = "mean_shift:day=60:magnitude=1.0:features=amount,velocity:tenants=acme:models=fraud"
    spec = parse_drift(text)
    assert spec == DriftSpec(
        DriftType.MEAN_SHIFT,
        start_day=60.0,
        magnitude=1.0,
        features=("amount", "velocity"),
        tenants=("acme",),
        models=("fraud",),
    )
    assert parse_drift(format_drift(spec)) == spec
    assert parse_drift("variance:day=10").magnitude == 1.0
    assert parse_drift("none") == DriftSpec(DriftType.NONE, 0.0)


@pytest.mark.parametrize(
    "text",
    [
        "mean_shift:day=60.5:magnitude=-0.25",
        "variance:day=3:magnitude=2.5:models=conflict",
        "category_mix:day=0:magnitude=0.4:features=channel:tenants=acme,globex",
        "none:day=0:magnitude=1",
    ],
)
def test_format_parse_round_trip(text: str) -> None:
    assert format_drift(parse_drift(text)) == text
    spec = parse_drift(text)
    assert parse_drift(format_drift(spec)) == spec


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "drift:day=3",
        "mean_shift",
        "mean_shift:magnitude=2",
        "mean_shift:day=abc",
        "mean_shift:day=nan",
        "mean_shift:day=-1",
        "mean_shift:day=3:day=4",
        "mean_shift:day=3:colour=red",
        "mean_shift:day=3:features=",
        "mean_shift:day=3:features=a,,b",
        "mean_shift:day=3:magnitude",
        "variance:day=3:magnitude=0",
        "category_mix:day=3:magnitude=1.5",
    ],
)
def test_parse_drift_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_drift(text)


@pytest.mark.parametrize(
    "cfg",
    [
        small(drifts=(DriftSpec(DriftType.MEAN_SHIFT, 1, tenants=("nobody",)),)),
        small(drifts=(DriftSpec(DriftType.MEAN_SHIFT, 1, models=("spam",)),)),
        small(drifts=(DriftSpec(DriftType.MEAN_SHIFT, 1, features=("merchant_category",)),)),
        small(drifts=(DriftSpec(DriftType.CATEGORY_MIX, 1, 0.5, features=("amount",)),)),
        small(drifts=(DriftSpec(DriftType.CATEGORY_MIX, 1, 0.5),), categorical_features=0),
        small(seed=-1),
        small(days=-1),
        small(label_rate=1.5),
        small(outcome_delay_hours=(5.0, 1.0)),
        small(tenants=()),
        small(tenants=("acme", "acme")),
    ],
)
def test_invalid_config_rejected(cfg: SimulationConfig) -> None:
    with pytest.raises(ValueError):
        next(generate(cfg), None)


def test_drift_spec_validation() -> None:
    with pytest.raises(ValueError):
        DriftSpec(DriftType.MEAN_SHIFT, math.inf)
    with pytest.raises(ValueError):
        DriftSpec(DriftType.MEAN_SHIFT, 1, features="amount")  # type: ignore[arg-type]
    assert DriftSpec("variance", 1, 2.0).type is DriftType.VARIANCE  # type: ignore[arg-type]
    # A feature named only in one model drifts there and leaves the other model alone.
    spec = DriftSpec(DriftType.MEAN_SHIFT, 0, 2.0, features=("amount",))
    base = small(days=1, tenants=("acme",))
    clean = stream(generate(base), "acme", "conflict")
    drifted = stream(generate(dataclasses.replace(base, drifts=(spec,))), "acme", "conflict")
    assert wire(clean) == wire(drifted)
