"""Ranked incidents: importance (registry or score association), impact, and the order the
engine, the API view, the alerts and the report tell incidents in (seeded streams)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest

from agents.alerts import incident_alert, rank_notices
from schemas import PredictionEvent
from streams import views
from streams.config import DAY, EngineConfig
from streams.engine import DriftEngine
from streams.importance import (
    CategoricalAssociation,
    NumericAssociation,
    ScoreBatch,
    association_from_json,
    impact,
    merge_associations,
    rank_key,
)
from streams.incidents import Incident, IncidentNotice
from streams.keyed_state import MemoryStore
from streams.state import FeatureWindow, StreamState

T0 = 1_767_225_600.0
SHORT = EngineConfig(
    baseline_start_days=14, baseline_end_days=7, min_baseline_windows=5, retention_days=16,
    seasonal_period_days=0, interim_seconds=0,
)  # fmt: skip


def two_feature_stream(
    seed: int, score_from: str = "hot", days: int = 26, shift_day: int = 20, per_day: int = 300
) -> Iterator[PredictionEvent]:
    """Features ``hot`` and ``cold`` both shift by 1 sigma from ``shift_day`` (the same
    effect); the score is a logistic function of ``score_from`` only (plus a little of the
    other, so neither association is exactly 0)."""
    rng = np.random.default_rng(seed)
    other = "cold" if score_from == "hot" else "hot"
    for day in range(days):
        times = np.sort(rng.uniform(0, DAY, per_day))
        shift = 1.0 if day >= shift_day else 0.0
        x = rng.normal(shift, 1.0, (per_day, 2))
        for i in range(per_day):
            values = {"hot": float(x[i, 0]), "cold": float(x[i, 1])}
            features: dict[str, float | str | None] = dict(values)
            z = 2.0 * values[score_from] + 0.05 * values[other]
            yield PredictionEvent(
                event_id=f"e-{day}-{i}", tenant="acme", model="fraud", model_version="v1",
                timestamp=T0 + day * DAY + float(times[i]), features=features,
                score=1.0 / (1.0 + math.exp(-z)),
            )  # fmt: skip


LOOKS = dataclasses.replace(SHORT, interim_seconds=3600)


def run(
    events: Iterator[PredictionEvent],
    registry: Mapping[str, float] | None = None,
    config: EngineConfig = SHORT,
) -> tuple[DriftEngine, MemoryStore]:
    store = MemoryStore()
    engine = DriftEngine(config, store, importances=(lambda t, m: registry) if registry else None)
    for e in events:
        engine.observe(e)
    store.apply(engine.flush())
    return engine, store


def open_incidents(engine: DriftEngine) -> dict[str, Incident]:
    st = engine.stream_state("acme", "fraud")
    assert st is not None
    return dict(st.incidents.open)


@pytest.mark.parametrize("config", [SHORT, LOOKS], ids=["end-of-window", "hourly-looks"])
def test_association_ranks_the_feature_the_score_depends_on_first(config: EngineConfig) -> None:
    engine, store = run(two_feature_stream(seed=3), config=config)
    incidents = open_incidents(engine)
    assert {"hot", "cold"} <= set(incidents)
    hot, cold = incidents["hot"], incidents["cold"]
    assert hot.importance_source == cold.importance_source == "association"
    assert hot.effect_size is not None and cold.effect_size is not None
    assert abs(hot.effect_size - cold.effect_size) < 0.15  # the same shift
    assert hot.importance is not None and cold.importance is not None
    assert hot.importance > 0.8 > 0.05 > cold.importance
    assert hot.impact is not None and cold.impact is not None and hot.impact > cold.impact
    # The API view lists them in that order, with the fields.
    status = views.drift_status(store, MemoryStore(), config, "acme", "fraud")
    assert status is not None
    rows = status["open_incidents"]
    assert [r["feature"] for r in rows][:2] == ["hot", "cold"]
    assert rows[0]["importance_source"] == "association"
    assert rows[0]["impact"] == pytest.approx(hot.impact)
    assert rows[0]["impact"] == pytest.approx(rows[0]["importance"] * rows[0]["effect_size"])


def test_registry_importance_wins_over_the_association() -> None:
    # The score follows `hot`, but the registry says `cold` is what the model uses.
    engine, store = run(two_feature_stream(seed=4), registry={"cold": 0.9, "hot": 0.1})
    incidents = open_incidents(engine)
    hot, cold = incidents["hot"], incidents["cold"]
    assert hot.importance_source == cold.importance_source == "registry"
    assert (hot.importance, cold.importance) == (0.1, 0.9)
    assert cold.impact is not None and hot.impact is not None and cold.impact > hot.impact
    status = views.drift_status(store, MemoryStore(), SHORT, "acme", "fraud")
    assert status is not None
    assert [r["feature"] for r in status["open_incidents"]][:2] == ["cold", "hot"]
    # Read-time registry importances (a newer active version) win over the stored ones.
    again = views.drift_status(
        store, MemoryStore(), SHORT, "acme", "fraud", importances={"hot": 0.95, "cold": 0.05}
    )
    assert again is not None
    assert [r["feature"] for r in again["open_incidents"]][:2] == ["hot", "cold"]


def test_registry_importances_order_the_engine_notices_and_events() -> None:
    store = MemoryStore()
    engine = DriftEngine(SHORT, store, importances=lambda t, m: {"cold": 0.9, "hot": 0.1})
    events = []
    for e in two_feature_stream(seed=4):
        events += engine.observe(e)
    assert events and all(
        d.extra["importance_source"] == "registry" and d.extra["impact"] is not None for d in events
    )
    notices = engine.take_notices()
    opened = [n for n in rank_notices(notices) if n.change == "opened"]
    assert [n.feature for n in opened][:2] == ["cold", "hot"]
    text = incident_alert(opened[0]).text
    assert "impact" in text and "registry" in text


def test_numeric_association_merges_associatively_and_matches_pearson() -> None:
    rng = np.random.default_rng(11)
    x = rng.normal(5e6, 3.0, 900)  # a large offset: the raw-sum form would cancel
    y = 1 / (1 + np.exp(-(x - 5e6))) + rng.normal(0, 0.05, 900)
    parts = [NumericAssociation() for _ in range(3)]
    for k, p in enumerate(parts):
        p.add(x[k * 300 : (k + 1) * 300], y[k * 300 : (k + 1) * 300])
    whole = NumericAssociation()
    whole.add(x, y)
    left = parts[0].merge(parts[1]).merge(parts[2])
    right = parts[0].merge(parts[1].merge(parts[2]))
    swapped = parts[2].merge(parts[0]).merge(parts[1])
    expected = float(np.corrcoef(x, y)[0, 1] ** 2)
    for a in (left, right, swapped, whole):
        assert a.n == 900
        assert a.r2() == pytest.approx(expected, rel=1e-9)
        assert a.mx == pytest.approx(whole.mx, rel=1e-12)
        assert a.cxy == pytest.approx(whole.cxy, rel=1e-9)
    back = association_from_json(json.loads(json.dumps(left.to_json())))
    assert back == left
    assert NumericAssociation().r2() is None  # too few pairs to say


def test_categorical_association_eta2_merges_and_round_trips() -> None:
    rng = np.random.default_rng(12)
    cats = rng.choice(["a", "b", "c", "d"], 1200)
    means = {"a": 0.2, "b": 0.4, "c": 0.6, "d": 0.65}
    y = np.array([means[c] for c in cats]) + rng.normal(0, 0.1, 1200)
    parts = [CategoricalAssociation() for _ in range(3)]
    for k, p in enumerate(parts):
        p.add(list(cats[k * 400 : (k + 1) * 400]), y[k * 400 : (k + 1) * 400])
    left = parts[0].merge(parts[1]).merge(parts[2])
    right = parts[0].merge(parts[1].merge(parts[2]))
    grand = y.mean()
    between = sum((cats == c).sum() * (y[cats == c].mean() - grand) ** 2 for c in means)
    expected = between / ((y - grand) ** 2).sum()
    assert left.eta2() == pytest.approx(expected, rel=1e-9)
    assert right.eta2() == pytest.approx(expected, rel=1e-9)
    back = association_from_json(json.loads(json.dumps(left.to_json())))
    assert isinstance(back, CategoricalAssociation) and back.eta2() == pytest.approx(left.eta2())
    merged = merge_associations([None, parts[0], parts[1], parts[2]])
    assert merged is not None and merged.importance() == pytest.approx(expected, rel=1e-9)


def test_categorical_association_is_bounded() -> None:
    a = CategoricalAssociation(max_categories=8)
    a.add([f"c{i}" for i in range(100)], [i / 100 for i in range(100)])
    assert len(a.groups) <= 16 and a.n == 100
    assert sum(g[0] for g in a.groups.values()) == 100


def test_feature_window_keeps_the_association_and_reads_old_bytes() -> None:
    fw = FeatureWindow.new("numeric")
    fw.apply_many([1.0, None, 3.0, 4.0], [(0, 1), (0, 2), (0, 3), (0, 4)], [0] * 4, [0] * 4,
                  scores=[0.1, 0.9, 0.3, 0.4])  # fmt: skip
    assert isinstance(fw.assoc, NumericAssociation) and fw.assoc.n == 3  # the missing one out
    # A replay adds nothing.
    fw.apply_many([1.0], [(0, 1)], [0], [0], scores=[0.1])
    assert fw.assoc.n == 3
    back = FeatureWindow.from_bytes(fw.to_bytes())
    assert back.assoc == fw.assoc and back.to_bytes() == fw.to_bytes()
    # Bytes written before associations existed: no "a" in the header.
    old = FeatureWindow.new("categorical")
    old.assoc = None
    old.apply_many(["x", "y"], [(0, 1), (0, 2)], [0, 0], [0, 0])
    raw = old.to_bytes()
    assert b'"a":' not in raw
    read = FeatureWindow.from_bytes(raw)
    assert read.assoc is None and read.categorical is not None and read.categorical.count == 2
    read.apply_many(["x"], [(0, 3)], [0], [0], scores=[0.5])  # starts one from then on
    assert isinstance(read.assoc, CategoricalAssociation) and read.assoc.n == 1


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # an infinite score
def test_score_batch_is_bit_identical_to_one_feature_at_a_time() -> None:
    """The engine's bulk path (all of a batch's features at once) stores exactly what each
    feature's own ``add`` of its present pairs would: missing values, non-finite values and
    scores, a window that already has pairs, batches of one."""
    rng = np.random.default_rng(7)
    extended: list[tuple[list[float], list[Any]]] = []  # (handed to a summary, expected)
    handed = 0
    missing: list[tuple[int, int]] = []  # (missing counts handed to a summary, expected)
    mostly: list[tuple[int, int]] = []  # (missing, values) of each summary's column
    non_finite = 0

    class Sink:
        def __init__(self, expected: list[Any], nones: int) -> None:
            self.expected, self.nones, self.got = expected, nones, 0

        def extend(self, arr: np.ndarray) -> None:
            extended.append((arr.tolist(), self.expected))

        def add_missing(self, n: int = 1) -> None:
            self.got += n

    def hand_to(expected: list[Any], nones: int) -> Sink:
        return Sink(expected, nones)

    for trial in range(300):
        n = int(rng.integers(1, 60)) if trial % 10 else int(rng.integers(100, 1200))
        scores = rng.uniform(0, 1, n).tolist()
        if trial % 25 == 3:
            scores[int(rng.integers(n))] = math.inf
        columns: list[tuple[str, list[float | str | None]]] = []
        for f in range(int(rng.integers(1, 12))):
            if f % 4 == 3:
                cats: list[float | str | None] = [f"c{int(k)}" for k in rng.integers(0, 5, n)]
                columns.append(("categorical", cats))
                continue
            scale = 10 ** rng.uniform(-3, 6)
            col: list[float | str | None] = rng.normal(rng.uniform(-1e3, 1e3), scale, n).tolist()
            columns.append(("numeric", col))
        for _, col in columns[: int(rng.integers(0, len(columns) + 1))]:
            for k in rng.integers(0, n, int(rng.integers(0, 3))).tolist():
                col[k] = None
        if trial % 20 == 5 and columns[0][0] == "numeric":
            columns[0][1][0] = math.nan
        if trial % 7 == 2 and columns[0][0] == "numeric":  # non-finite beside missing values
            col = columns[0][1]
            for k in rng.integers(0, n, int(rng.integers(1, 4))).tolist():
                col[k] = [math.inf, -math.inf, math.nan][k % 3]
            col[int(rng.integers(n))] = None
        if trial % 9 == 4 and columns[-1][0] == "numeric":  # mostly missing
            col = columns[-1][1]
            for k in range(n):
                if k % 10:
                    col[k] = None
            if n > 3 and trial % 2:
                col[1] = math.inf
        one = [NumericAssociation() if kind == "numeric" else CategoricalAssociation()
               for kind, _ in columns]  # fmt: skip
        if trial % 3 == 0:  # not the first batch of the window
            for a in one:
                if isinstance(a, NumericAssociation):
                    a.add([1.0, 2.0, 4.0], [0.2, 0.5, 0.1])
                else:
                    a.add(["c1", "c9"], [0.3, 0.6])
        bulk = [dataclasses.replace(a, groups={k: list(g) for k, g in a.groups.items()})
                if isinstance(a, CategoricalAssociation) else dataclasses.replace(a)
                for a in one]  # fmt: skip
        batch = ScoreBatch(scores)
        sinks: list[Sink] = []
        for a, b, (kind, col) in zip(one, bulk, columns, strict=True):
            keep = [k for k, v in enumerate(col) if v is not None]
            present: list[Any] = [col[k] for k in keep]
            if keep:
                a.add(present, [scores[k] for k in keep])
            if kind == "numeric" and trial % 5 == 1 and b is bulk[0]:
                batch.add(b, col)  # no summary to hand its values to (a segment's feature)
            elif kind == "numeric":
                sinks.append(hand_to(present, len(col) - len(keep)))
                batch.add(b, col, sinks[-1])
            else:
                batch.add(b, col)
        batch.finish()
        assert [json.dumps(a.to_json()) for a in one] == [json.dumps(b.to_json()) for b in bulk]
        # A numeric summary is handed its present values, in order, as an array, and the
        # number of its missing ones.
        assert [json.dumps(got) for got, _ in extended] == [json.dumps(p) for _, p in extended]
        assert [s.got for s in sinks] == [s.nones for s in sinks]
        missing += [(s.got, s.nones) for s in sinks if s.nones]
        mostly += [(s.nones, len(s.expected) + s.nones) for s in sinks]
        non_finite += sum(
            1 for s in sinks if s.nones and any(not math.isfinite(v) for v in s.expected)
        )
        handed += len(extended)
        extended.clear()
    assert handed > 300, "the numeric summaries were never handed their values"
    assert len(missing) > 100, "no summary was handed a missing count"
    assert sum(2 * nones > handed_n for nones, handed_n in mostly) > 10, "none mostly missing"
    assert non_finite > 10, "no summary was handed a non-finite value beside missing ones"


def test_incident_ranking_fields_round_trip_and_old_bytes_stay_readable() -> None:
    st = StreamState("acme", "fraud")
    st.incidents.open["x"] = Incident("id-1", 0.0, effect_size=0.4, importance=0.5,
                                      importance_source="association")  # fmt: skip
    st.incidents.open["y"] = Incident("id-2", 0.0)
    back = StreamState.from_bytes(st.to_bytes())
    assert back.incidents.open == st.incidents.open
    assert back.incidents.open["x"].impact == pytest.approx(0.2)
    # The JSON of an incident without an estimate is what it always was.
    assert set(st.incidents.open["y"].to_json()) == {"id", "ow", "p", "c", "ok", "sev", "t", "lw"}
    old = {"id": "id-3", "ow": 0.0, "p": 2, "c": 0, "ok": False, "sev": "HIGH", "t": "ks",
           "lw": 86400.0}  # fmt: skip
    inc = Incident.from_json(old)
    assert inc.importance is None and inc.impact is None and inc.importance_source == ""


def test_rank_key_and_impact() -> None:
    assert impact(0.5, 0.4) == pytest.approx(0.2)
    assert impact(None, 0.4) is None and impact(0.5, float("nan")) is None
    rows = [
        ("perf", None, "CRITICAL"),
        ("b", 0.1, "LOW"),
        ("a", 0.1, "LOW"),
        ("c", 0.1, "HIGH"),
        ("d", 0.3, "LOW"),
        ("e", None, "LOW"),
    ]
    ranked = sorted(rows, key=lambda r: rank_key(r[1], r[2], r[0]))
    assert [r[0] for r in ranked] == ["d", "c", "a", "b", "perf", "e"]


def test_rank_notices_keeps_each_incidents_changes_in_order() -> None:
    def notice(change: str, drift_id: str, feature: str, value: float | None) -> IncidentNotice:
        return IncidentNotice(
            change, drift_id, "statistical", "acme", "fraud", "v1", feature, "ks", "HIGH",
            False, 1, 0.0, 0.0, 0.5, 0.0, 0.3,
            {"importance": value, "importance_source": "association", "impact": value},
        )  # fmt: skip

    notices = [
        notice("opened", "low", "x", 0.05),
        notice("opened", "high", "y", 0.01),
        notice("confirmed", "high", "y", 0.2),  # its latest impact is what ranks it
    ]
    ranked = rank_notices(notices)
    assert [(n.drift_id, n.change) for n in ranked] == [
        ("high", "opened"), ("high", "confirmed"), ("low", "opened"),
    ]  # fmt: skip
