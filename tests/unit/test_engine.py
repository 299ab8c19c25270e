"""The detection engine on seeded streams with known truth (no Kafka)."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from schemas import DriftEvent, InvalidEvent, PredictionEvent, Severity
from streams.config import CUMULATIVE_EVERY, DAY, EngineConfig
from streams.engine import DriftEngine
from streams.interim_looks import InterimLooks
from streams.keyed_state import MemoryStore, Write
from streams.recent_slots import RECENT_LEVELS
from streams.state import FeatureKind, FeatureWindow, KindCheck

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def stream(
    seed: int,
    days: int,
    per_day: int,
    n_numeric: int = 3,
    shift_day: float | None = None,
    shift_feature: str = "x0",
    shift_sigma: float = 1.0,
    categorical: bool = False,
    cat_shift_day: int | None = None,
    tenant: str = "acme",
    model: str = "fraud",
    weekly_amplitude: float = 0.0,
) -> Iterator[PredictionEvent]:
    rng = np.random.default_rng(seed)
    for day in range(days):
        times = np.sort(rng.uniform(0, DAY, per_day))
        values = rng.normal(0.0, 1.0, (per_day, n_numeric))
        # Weekends run high: a weekly pattern, not drift.
        values += weekly_amplitude * (((T0 // DAY + day + 3) % 7) >= 5)
        if shift_day is not None:
            shifted = T0 + day * DAY + times >= T0 + shift_day * DAY
            values[shifted, int(shift_feature[1:])] += shift_sigma
        probs = [0.5, 0.3, 0.2]
        if cat_shift_day is not None and day >= cat_shift_day:
            probs = [0.3, 0.3, 0.4]
        cats = rng.choice(["a", "b", "c"], size=per_day, p=probs)
        for i in range(per_day):
            features: dict[str, float | str | None] = {
                f"x{j}": float(values[i, j]) for j in range(n_numeric)
            }
            if categorical:
                features["cat"] = str(cats[i])
            yield PredictionEvent(
                event_id=f"{tenant}-{day}-{i}",
                tenant=tenant,
                model=model,
                model_version="v1",
                timestamp=T0 + day * DAY + float(times[i]),
                features=features,
                score=0.5,
            )


SHORT = EngineConfig(
    baseline_start_days=14,
    baseline_end_days=7,
    min_baseline_windows=5,
    retention_days=16,
    seasonal_period_days=0,
    interim_seconds=0,
)


def run(events: Iterator[PredictionEvent], config: EngineConfig = SHORT) -> list[DriftEvent]:
    return run_engine(events, config)[0]


def run_engine(
    events: Iterator[PredictionEvent], config: EngineConfig = SHORT
) -> tuple[list[DriftEvent], DriftEngine]:
    """The drift events and the engine (for its counters: a quiet result must have tested)."""
    engine = DriftEngine(config, MemoryStore())
    out = []
    for e in events:
        out.extend(engine.observe(e))
    return out, engine


def assert_tested(engine: DriftEngine, window: float, features: dict[str, set[str]]) -> None:
    """Tests ran, and ``window``'s features hold a result of each test they should have."""
    assert engine.stats["tests"] > 0 and engine.stats["windows_closed"] > 0
    for feature, tests in features.items():
        fw = engine.feature_window("acme", "fraud", window, feature)
        assert fw is not None and set(fw.results) == tests, (feature, fw and fw.results)


def test_mean_shift_found_in_right_window_and_feature() -> None:
    drifts = run(stream(seed=1, days=30, per_day=400, shift_day=20, shift_feature="x1"))
    assert drifts, "a 1 sigma shift must be detected"
    assert {d.feature for d in drifts} == {"x1"}
    first = min(drifts, key=lambda d: d.window_start)
    assert first.window_start == T0 + 20 * DAY
    assert first.test == "ks"
    assert first.p_value is not None and first.p_value < 1e-10
    assert first.effect_size is not None and first.effect_size > 0.3
    assert first.severity == Severity.CRITICAL
    assert first.baseline_end <= first.window_start - 7 * DAY
    # Detected on the clock of the stream: the first event an hour after the window closed.
    assert first.window_end + SHORT.allowed_lateness_seconds <= first.detected_at
    assert first.detected_at < first.window_end + SHORT.allowed_lateness_seconds + 3600


def test_incident_keeps_its_id_and_confirms_after_persistence() -> None:
    drifts = run(stream(seed=2, days=30, per_day=300, shift_day=15, shift_feature="x0"))
    x0 = sorted((d for d in drifts if d.feature == "x0"), key=lambda d: d.window_start)
    assert len({d.drift_id for d in x0}) == 1, "re-detections update one incident"
    assert [d.persistence for d in x0] == list(range(1, len(x0) + 1))
    confirmed = [d.confirmed for d in x0]
    assert confirmed[: SHORT.confirm_windows - 1] == [False] * (SHORT.confirm_windows - 1)
    assert all(confirmed[SHORT.confirm_windows - 1 :])


def test_null_stream_with_many_features_stays_quiet() -> None:
    drifts, engine = run_engine(
        stream(seed=3, days=40, per_day=300, n_numeric=20, categorical=True)
    )
    assert drifts == []
    assert engine.stats["tests"] >= 21 * 25  # 21 features x the ~27 windows with a baseline
    assert_tested(
        engine, T0 + 38 * DAY, {"x0": {"ks", "missing_rate"}, "cat": {"chi2", "missing_rate"}}
    )


def test_categorical_mix_change_detected_with_chi2() -> None:
    drifts = run(stream(seed=4, days=30, per_day=400, categorical=True, cat_shift_day=20))
    assert {d.feature for d in drifts} == {"cat"}
    first = min(drifts, key=lambda d: d.window_start)
    assert first.test == "chi2"
    assert first.window_start == T0 + 20 * DAY


def test_batching_and_cache_do_not_change_results() -> None:
    events = list(stream(seed=5, days=25, per_day=200, shift_day=18))
    reference = run(iter(events))
    assert reference, "nothing to compare: the shift must be found"
    store = MemoryStore()
    engine = DriftEngine(SHORT, store)
    out = []
    for i, e in enumerate(events):
        out.extend(engine.observe(e))
        if i % 137 == 0:  # flush + drop the decoded cache, as the worker does per batch
            store.apply(engine.flush())
    assert [d.to_dict() for d in out] == [d.to_dict() for d in reference]


def test_a_dense_streams_batches_merge_through_their_shared_picks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker catching up on a dense stream applies it in batches of a sample or more
    that meet ring entries the hour's earlier batches began or filled: each batch's values
    that still enter them merge through the batch's own picks, shared by its features,
    never sorted per feature; and the samples are those of one event at a time. (A smaller
    batch's few entering values are sorted per feature: a run's machinery for each feature
    cost a wide model's backtest, whose batches are an hour of ~17 values, more.)"""
    from streams.recent_slots import Picks, RecentSlots

    keep, merged = RecentSlots._keep, Picks.merged
    sorted_alone = merges = 0

    def counted_keep(self: RecentSlots, *args: Any) -> None:
        nonlocal sorted_alone
        sorted_alone += 1
        keep(self, *args)

    def counted_merge(self: Picks, *args: Any) -> Any:
        nonlocal merges
        merges += 1
        return merged(self, *args)

    monkeypatch.setattr(RecentSlots, "_keep", counted_keep)
    monkeypatch.setattr(Picks, "merged", counted_merge)
    config = EngineConfig(interim_seconds=3600.0)
    events = list(stream(seed=8, days=1, per_day=4800, n_numeric=4, categorical=True))
    small, whole = DriftEngine(config, MemoryStore()), DriftEngine(config, MemoryStore())
    for k in range(0, len(events), 80):  # 200 an hour: an hour's second batch overflows
        small.observe_many(events[k : k + 80])
        small.apply_pending()
    assert sorted_alone == 0 and merges > 250, (sorted_alone, merges)  # 320
    for e in events:  # one at a time: RecentSlots.add's way, no merge
        whole.observe_many([e])
        whole.apply_pending()
    for name in ("x0", "x3", "cat"):
        a = small.feature_window("acme", "fraud", T0, name)
        b = whole.feature_window("acme", "fraud", T0, name)
        assert a is not None and b is not None and a.recent is not None
        assert a.recent == b.recent and any(len(h) == 64 for h in a.recent.hashes)


def test_replayed_offsets_are_not_counted_twice() -> None:
    store = MemoryStore()
    engine = DriftEngine(SHORT, store)
    events = list(stream(seed=6, days=1, per_day=100))
    for offset, e in enumerate(events):
        engine.observe(e, (0, offset))
    store.apply(engine.flush())
    # A crash re-delivers everything since the last commit: same offsets again.
    for offset, e in enumerate(events[50:], start=50):
        engine.observe(e, (0, offset))
    store.apply(engine.flush())
    window = DriftEngine(SHORT, store).feature_window("acme", "fraud", T0, "x0")
    assert isinstance(window, FeatureWindow)
    assert window.count == 100
    assert engine.stats["duplicates_skipped"] == 50
    state = engine.stream_state("acme", "fraud")
    assert state is not None and state.events == 100


class PartitionedStore:
    """A store per partition, like Faust's RocksDB tables: a read without a partition goes to
    the "current event's" partition, which a batch's last event may make another one."""

    def __init__(self) -> None:
        self.parts: dict[int, MemoryStore] = {}
        self.current = 0

    def get(self, key: str, partition: int | None = None) -> bytes | None:
        part = self.current if partition is None else partition
        return self.parts.setdefault(part, MemoryStore()).get(key)

    def apply(self, writes: Iterable[Write]) -> None:
        for w in writes:
            part = self.current if w.partition is None else w.partition
            self.parts.setdefault(part, MemoryStore()).apply([w])


def test_windows_are_read_from_their_own_partition_after_the_cache_is_dropped() -> None:
    """After a rebalance (decoded state dropped) a window must be read from its stream's
    partition, not from the partition of the batch's last event; a miss started it afresh
    and lost its counts (found by the scale-out test)."""
    store = PartitionedStore()
    events = list(stream(seed=6, days=1, per_day=100))
    engine = DriftEngine(SHORT, store)
    for offset, e in enumerate(events[:60]):
        engine.observe(e, (3, offset))
    store.apply(engine.flush())
    engine.forget({3})
    store.current = 0  # the batch's last event came from partition 0
    for offset, e in enumerate(events[60:], start=60):
        engine.observe(e, (3, offset))
    store.apply(engine.flush())
    store.current = 3
    window = DriftEngine(SHORT, store).feature_window("acme", "fraud", T0, "x0")
    assert isinstance(window, FeatureWindow) and window.count == 100


def test_type_mismatch_rejected_without_side_effects() -> None:
    engine = DriftEngine(SHORT, MemoryStore())
    first = next(stream(seed=7, days=1, per_day=1))
    engine.observe(first)
    bad = PredictionEvent("e2", "acme", "fraud", "v1", first.timestamp + 1, {"x0": "oops"}, 0.1)
    with pytest.raises(InvalidEvent) as exc:
        engine.observe(bad)
    assert exc.value.reason == "type_mismatch"
    state = engine.stream_state("acme", "fraud")
    assert state is not None and state.events == 1


def test_an_event_shape_seen_before_skips_the_check_but_never_a_mismatch() -> None:
    """Tuples of names that added nothing are remembered per stream with a check of their
    values' kinds; another type for a known feature fails that check, and is refused."""
    engine = DriftEngine(SHORT, MemoryStore())
    first, second = list(stream(seed=7, days=1, per_day=2))[:2]
    engine.observe(first)  # adds the features: not a shape to remember yet
    state = engine.stream_state("acme", "fraud")
    assert state is not None and not state.known_shapes
    engine.observe(second)
    assert len(state.known_shapes) == 1
    bad = replace(second, event_id="e3", features={**second.features, "x0": "oops"})
    with pytest.raises(InvalidEvent) as exc:
        engine.observe(bad)
    assert exc.value.reason == "type_mismatch" and len(state.known_shapes) == 1
    for k in range(40):  # ever other subsets: the memory stays bounded
        names = dict(list(second.features.items())[: k % 10 + 1])
        engine.observe(replace(second, event_id=f"s{k}", features={**names, f"n{k}": 1.0}))
        engine.observe(replace(second, event_id=f"t{k}", features={**names, f"n{k}": 2.0}))
    assert len(state.known_shapes) == 32


def test_a_wide_stream_with_nulls_anywhere_is_checked_by_its_names() -> None:
    """Events that miss a few values at random places all have the same names: one check
    serves them (the names, not the value types, are remembered), and a text value for a
    numeric feature, or a number for a categorical one, is refused wherever it sits."""
    rng = np.random.default_rng(11)
    engine = DriftEngine(SHORT, MemoryStore())
    names = [f"f{k}" for k in range(300)]

    def features(k: int) -> dict[str, float | str | None]:
        out: dict[str, float | str | None] = {
            n: (f"c{j % 3}" if j % 5 == 0 else float(j)) for j, n in enumerate(names)
        }
        for j in rng.choice(len(names), 7, replace=False):
            out[names[j]] = None
        return out

    for k in range(80):
        engine.observe(PredictionEvent(f"e{k}", "acme", "wide", "v1", T0 + k, features(k), 0.1))
    state = engine.stream_state("acme", "wide")
    assert state is not None and state.events == 80
    assert len(state.known_shapes) == 1  # 79 events with nulls in other places: one entry
    for j, value in ((7, "text"), (10, 1.5), (296, "text"), (0, 3)):
        bad = features(0)
        bad[names[j]] = value
        with pytest.raises(InvalidEvent) as exc:
            engine.observe(PredictionEvent(f"b{j}", "acme", "wide", "v1", T0 + 99, bad, 0.1))
        assert exc.value.reason == "type_mismatch" and names[j] in str(exc.value)
    assert state.events == 80
    (check,) = state.known_shapes.values()
    assert check._fits is None  # nulls anywhere: the classes of its events no longer looked up


def test_a_kind_check_answers_from_the_classes_it_kept_as_it_would_by_checking() -> None:
    """The classes of events that fit are kept (the first ``SIGNATURES`` kinds), and no longer
    looked up once most events miss them: the answer is always the check's own, events that
    fit and events that do not in any order."""
    rng = random.Random(5)
    names = tuple(f"f{k}" for k in range(12))
    kinds: dict[str, FeatureKind] = {
        n: ("categorical" if k % 4 == 0 else "numeric") for k, n in enumerate(names)
    }
    check = KindCheck(names, kinds)
    classes: list[Any] = [lambda: 1.5, lambda: None, lambda: "x", lambda: 3, lambda: True]
    # A dense stream: a few kinds of events, fitting or not.
    dense = [tuple(rng.choice(classes)() for _ in names) for _ in range(3)]
    dense += [
        tuple(rng.choice(["c", None] if k % 4 == 0 else [0.5, None, 2]) for k in range(12))
        for _ in range(4)
    ]
    kept = hits = refused = 0
    for trial in range(3000):
        # Then nulls and mistakes anywhere: a new kind of event nearly every time.
        values = rng.choice(dense) if trial < 1500 else tuple(rng.choice(classes)() for _ in names)
        signature = tuple(map(type, values))
        known = check._fits is not None and signature in check._fits
        answer = check(values)
        assert answer == check._check_classes(signature)
        hits += known
        refused += not answer
        kept = max(kept, len(check._fits or ()))
    assert 1 <= kept <= KindCheck.SIGNATURES and hits > 500 and refused > 500
    assert check._fits is None  # most events missed them: no longer looked up
    # A run's check answers as each event's would, looked up or not.
    assert check.fits_all(dense[3:]) and check._fits is None
    assert not check.fits_all([*dense[3:], tuple(["x"] * 12)])
    # ... until RETRY checks later: a stream that settled is looked up again.
    settled = dense[3]
    assert check(settled) and check._fits is None
    checks = 0
    while check._fits is None:
        assert check(settled)
        checks += 1
    assert 0 < checks <= KindCheck.RETRY and check._fits == set()  # started again
    assert check(settled) and check._fits == {tuple(map(type, settled))}
    # Exactly RETRY checks after the lookups stopped (64 events of kinds that do not fit).
    fresh = KindCheck(names, kinds)
    for k in range(KindCheck.MISSES):
        assert not fresh(tuple(["x"] * 12)[: k % 12] + tuple([1.5] * (12 - k % 12)))
    assert fresh._fits is None
    for _ in range(KindCheck.RETRY - 1):
        fresh(settled)
    assert fresh._fits is None and fresh(settled) and fresh._fits == set()
    assert check(settled) and check._hits == 1  # the settled stream's events hit again
    # 1 % of values null at random (the simulator's): dozens of kinds of events that fit,
    # four in five of them without a null, which stay looked up.
    numeric = KindCheck(names, dict.fromkeys(names, "numeric"))
    hits = 0
    for _ in range(2000):
        values = tuple(None if rng.random() < 0.01 else 0.5 for _ in names)
        hits += numeric._fits is not None and tuple(map(type, values)) in numeric._fits
        assert numeric(values)
    assert numeric._fits is not None and len(numeric._fits) == KindCheck.SIGNATURES
    assert hits > 0.8 * 2000


def test_late_events_update_baseline_but_not_the_closed_test() -> None:
    engine = DriftEngine(SHORT, MemoryStore())
    events = list(stream(seed=8, days=3, per_day=50))
    for e in events:
        engine.observe(e)
    late = PredictionEvent("late", "acme", "fraud", "v1", T0 + 10.0, {"x0": 0.0}, 0.1)
    engine.observe(late)
    state = engine.stream_state("acme", "fraud")
    assert state is not None and state.late_events == 1
    window = engine.feature_window("acme", "fraud", T0, "x0")
    assert window is not None and window.count == 51
    ancient = PredictionEvent("old", "acme", "fraud", "v1", T0 - 40 * DAY, {"x0": 0.0}, 0.1)
    with pytest.raises(InvalidEvent) as exc:
        engine.observe(ancient)
    assert exc.value.reason == "too_late"


def test_quiet_stream_closes_windows_on_advance() -> None:
    events = list(stream(seed=9, days=22, per_day=300, shift_day=21))
    engine = DriftEngine(SHORT, MemoryStore())
    for e in events:
        engine.observe(e)
    assert engine.stats["windows_closed"] == 21  # day 21's window is still open
    drifts = engine.advance("acme", "fraud", T0 + 22 * DAY + 2 * 3600)
    assert [d.feature for d in drifts] == ["x0"]
    assert engine.advance("nobody", "none", T0) == []


def test_incident_resolves_after_clean_windows_and_old_windows_expire() -> None:
    events = list(stream(seed=10, days=40, per_day=300, shift_day=15, shift_sigma=1.0))
    engine = DriftEngine(SHORT, MemoryStore())
    drifts = []
    for e in events:
        drifts.extend(engine.observe(e))
    # The baseline catches up with the shift 7..14 days later: the incident then resolves.
    assert engine.stats["incidents_resolved"] >= 1
    assert engine.stats["windows_expired"] > 0
    state = engine.stream_state("acme", "fraud")
    assert state is not None
    assert min(state.window_events) >= state.watermark - (SHORT.retention_days + 2) * DAY  # type: ignore[operator]


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        EngineConfig(baseline_start_days=10, baseline_end_days=20)
    with pytest.raises(ValueError):
        EngineConfig(alpha=0)


DEFAULTS_SHORT_HISTORY = EngineConfig(
    baseline_start_days=28, baseline_end_days=7, min_baseline_windows=3, retention_days=30
)


def test_interim_looks_find_a_clear_shift_within_hours() -> None:
    onset = 30.3  # 07:12 on day 30
    drifts = run(stream(seed=21, days=32, per_day=1500, shift_day=onset), DEFAULTS_SHORT_HISTORY)
    assert {d.feature for d in drifts} == {"x0"}
    first = min(drifts, key=lambda d: d.detected_at)
    assert first.partial and first.window_start == T0 + 30 * DAY
    delay_hours = (first.detected_at - (T0 + onset * DAY)) / 3600
    assert 0 < delay_hours <= 2.0, delay_hours
    assert first.window_end <= first.detected_at
    # The interim finding is not judged again when the window closes.
    day30 = [d for d in drifts if d.window_start == T0 + 30 * DAY]
    assert len(day30) == 1


def test_a_feature_found_at_a_look_is_not_tested_again_in_its_window() -> None:
    """Later looks at the window skip the found feature's tests (they would judge it no
    more) and still find another feature that drifts hours later in the same window."""
    second = 30.6  # 14:24 on day 30, after x0's onset at 07:12

    def both() -> Iterator[PredictionEvent]:
        for e in stream(seed=21, days=32, per_day=1500, shift_day=30.3):
            if e.timestamp >= T0 + second * DAY:
                x1 = e.features["x1"]
                assert isinstance(x1, float)
                e = replace(e, features={**e.features, "x1": x1 + 1.0})
            yield e

    drifts, engine = run_engine(both(), DEFAULTS_SHORT_HISTORY)
    day30 = [d for d in drifts if d.window_start == T0 + 30 * DAY]
    assert sorted(str(d.feature) for d in day30) == ["x0", "x1"]  # one event each, at a look
    assert all(d.partial for d in day30)
    found_x1 = next(d for d in day30 if d.feature == "x1")
    assert found_x1.detected_at > T0 + second * DAY
    # x0's tests at the looks after it was found, and x1's after it: not run.
    assert engine.stats["tests_skipped_judged"] > 0


def test_interim_looks_do_not_raise_false_alarms() -> None:
    drifts, engine = run_engine(
        stream(seed=22, days=40, per_day=600, n_numeric=20, categorical=True),
        DEFAULTS_SHORT_HISTORY,
    )
    assert drifts == []
    assert engine.stats["interim_looks"] > 0
    # More tests than one per feature and closed window: the hourly looks tested too.
    assert engine.stats["tests"] > 21 * engine.stats["windows_closed"]


def test_weekly_seasonality_is_not_drift() -> None:
    events = list(stream(seed=23, days=42, per_day=600, weekly_amplitude=0.5))
    seasonal, engine = run_engine(iter(events), DEFAULTS_SHORT_HISTORY)
    assert engine.stats["tests"] > 0
    # 3 features x ~30 tested days at a 1% false-alarm budget per model-window: one chance
    # alarm is allowed, a weekly rhythm of them (or any confirmed incident) is not.
    assert len(seasonal) <= 1 and not any(d.confirmed for d in seasonal)
    # Without the weekly-phase baseline the same stream raises alarms every weekend.
    naive = EngineConfig(
        baseline_start_days=28, baseline_end_days=7, retention_days=30, seasonal_period_days=0
    )
    naive_alarms = {(d.window_start - T0) // DAY for d in run(iter(events), naive)}
    assert len(naive_alarms) >= 6, naive_alarms


def test_alpha_spending_keeps_the_window_budget() -> None:
    cfg = EngineConfig()
    assert cfg.interim_looks == 23
    assert cfg.interim_tests == 5 + 23 + 11 + 5 + 2
    spent = cfg.final_alpha + cfg.interim_tests * cfg.interim_alpha
    assert spent + cfg.interim_looks * cfg.sequential_alpha == pytest.approx(cfg.alpha)
    off = EngineConfig(sequential_alpha_share=0)
    assert off.sequential_alpha == 0
    assert off.final_alpha + off.interim_tests * off.interim_alpha == pytest.approx(cfg.alpha)
    assert EngineConfig(interim_seconds=0).final_alpha == cfg.alpha


def with_nulls(
    events: Iterator[PredictionEvent],
    days: Iterable[int],
    seed: int,
    share: float = 0.3,
    left_out: bool = False,
) -> Iterator[PredictionEvent]:
    """``share`` of feature x1 missing on the given days: null, or ``left_out`` (no key)."""
    rng = np.random.default_rng(seed)
    null_days = set(days)
    for e in events:
        if int((e.timestamp - T0) // DAY) in null_days and rng.random() < share:
            features = {**e.features, "x1": None}
            if left_out:
                del features["x1"]
            e = replace(e, features=features)
        yield e


def test_missing_rate_change_is_its_own_incident() -> None:
    # An upstream join starts failing on day 20: 30% of x1 goes missing from then on.
    drifts = run(with_nulls(stream(seed=30, days=30, per_day=400), range(20, 30), seed=31))
    tests = {(d.feature, d.test) for d in drifts}
    assert ("x1", "missing_rate") in tests
    missing = [d for d in drifts if d.test == "missing_rate"]
    assert min(d.window_start for d in missing) == T0 + 20 * DAY
    assert missing[0].extra["missing_rate"] == pytest.approx(0.3, abs=0.06)
    assert {d.feature for d in drifts} == {"x1"}
    # A distribution incident of x1, if any, has its own id.
    ids = {(d.test == "missing_rate", d.drift_id) for d in drifts}
    assert len({i for _, i in ids}) == len({flag for flag, _ in ids})


def test_the_drifting_share_counts_features_not_tests() -> None:
    """One feature of three whose distribution and missing rate both move is a third of the
    features drifting, not two tests of four: its severity is its effect's (HIGH), not
    raised as for broad drift (CRITICAL). Two features of three moving is broad drift."""
    one = with_nulls(
        stream(seed=50, days=30, per_day=600, shift_day=20, shift_feature="x1", shift_sigma=0.5),
        range(20, 30),
        seed=51,
    )
    first = [d for d in run(one) if d.window_start == T0 + 20 * DAY]
    assert {d.test for d in first} == {"ks", "missing_rate"} and {d.feature for d in first} == {
        "x1"
    }
    assert all(d.drifting_share == pytest.approx(1 / 3) for d in first)
    assert next(d for d in first if d.test == "ks").severity == Severity.HIGH

    def two_features() -> Iterator[PredictionEvent]:
        moved = stream(
            seed=52, days=30, per_day=600, shift_day=20, shift_feature="x1", shift_sigma=0.5
        )
        for e in moved:
            shift = 0.5 if e.timestamp >= T0 + 20 * DAY else 0.0
            yield replace(e, features={**e.features, "x2": e.features["x2"] + shift})  # type: ignore[operator]

    broad = [d for d in run(two_features()) if d.window_start == T0 + 20 * DAY]
    assert {d.feature for d in broad} == {"x1", "x2"}
    assert all(d.drifting_share == pytest.approx(2 / 3) for d in broad)
    # x1's effect is HIGH's, as alone above (0.21 against 0.23): raised for broad drift
    assert next(d for d in broad if d.feature == "x1").severity == Severity.CRITICAL


def test_drift_events_carry_effect_sizes() -> None:
    drifts = run(stream(seed=1, days=30, per_day=400, shift_day=20, shift_feature="x1"))
    d = drifts[0]
    assert d.extra["psi"] > 0.25
    assert d.extra["wasserstein_sd"] == pytest.approx(1.0, abs=0.25)
    assert 0 < d.extra["js_distance"] <= 1
    cat = run(stream(seed=4, days=30, per_day=400, categorical=True, cat_shift_day=20))
    assert "new_categories" in cat[0].extra and cat[0].extra["psi"] > 0


def test_missing_rate_incident_closes_when_the_nulls_stop() -> None:
    engine = DriftEngine(SHORT, MemoryStore())
    burst = with_nulls(stream(seed=40, days=30, per_day=400), (20, 21), seed=41)
    drifts = [d for e in burst for d in engine.observe(e)]
    assert {d.test for d in drifts if d.feature == "x1"} == {"missing_rate"}
    state = engine.stream_state("acme", "fraud")
    assert state is not None and "x1#missing" not in state.incidents.open
    assert engine.stats["incidents_resolved"] >= 1


def test_runaway_feature_names_are_rejected() -> None:
    engine = DriftEngine(EngineConfig(max_features_per_stream=5), MemoryStore())
    for i in range(5):
        engine.observe(PredictionEvent(f"e{i}", "t", "m", "v", T0 + i, {f"f{i}": 1.0}, 0.5))
    with pytest.raises(InvalidEvent) as exc:
        engine.observe(PredictionEvent("e9", "t", "m", "v", T0 + 9, {"new": 1.0}, 0.5))
    assert exc.value.reason == "too_many_features"
    engine.observe(PredictionEvent("e10", "t", "m", "v", T0 + 10, {"f1": 2.0}, 0.5))
    with pytest.raises(ValueError):
        EngineConfig(min_window_count=0)


class EveryLookSpanLooks(InterimLooks):
    """The looks before they skipped spans with too few events, or looks with no baseline
    yet (a stream's first weeks): every span is judged."""

    def has_baseline(self, stream: Any, window: float) -> bool:
        return True

    def spans(self, stream: Any, window: float, look: int) -> tuple[list[int], int]:
        spans = [0] if look % CUMULATIVE_EVERY == 0 else []
        return spans + [1 << k for k in range(RECENT_LEVELS) if look % (1 << k) == 0], 0


class EveryLookSpan(DriftEngine):
    """The engine with :class:`EveryLookSpanLooks`."""

    def __init__(self, config: EngineConfig, store: MemoryStore) -> None:
        super().__init__(config, store)
        self._looks = EveryLookSpanLooks(config, self._judge, self.stats)


@pytest.mark.parametrize("per_day", [200, 900])
def test_looks_skip_only_spans_that_could_run_no_test(per_day: int) -> None:
    """A span with fewer events than ``min_window_count`` is not read at all, nor is any
    feature at a look before the stream has a baseline: the same DriftEvents (p-values
    included) and stored state as judging every span, on a sparse stream (most hourly spans
    skipped) and a dense one, with a shift found at a look."""

    def events() -> Iterator[PredictionEvent]:
        return stream(seed=31, days=32, per_day=per_day, n_numeric=4, categorical=True,
                      shift_day=30.3, shift_sigma=1.0)  # fmt: skip

    found: list[list[DriftEvent]] = []
    stored: list[dict[str, bytes]] = []
    engines: list[DriftEngine] = []
    for cls in (DriftEngine, EveryLookSpan):
        store = MemoryStore()
        engine = cls(DEFAULTS_SHORT_HISTORY, store)
        out: list[DriftEvent] = []
        for k, e in enumerate(events()):
            out.extend(engine.observe(e, (0, k)))
            if k % 500 == 0:
                store.apply(engine.flush())
        store.apply(engine.flush())
        found.append(out)
        stored.append(dict(store.data))
        engines.append(engine)
    assert found[0] == found[1] and any(d.partial for d in found[0])
    assert engines[0].stats["tests"] == engines[1].stats["tests"] > 0
    assert engines[0].stats["looks_without_baseline"] > 100
    if per_day == 200:
        assert engines[0].stats["look_spans_skipped"] > 100

    # The stream's record differs by the slot counts only; every feature window is the same
    # but for its score association, a merge of per-batch moments whose last bits follow the
    # batching (which the looks change: they apply what is pending first).
    def without_association(data: dict[str, bytes]) -> dict[str, bytes]:
        out = {}
        for key, raw in data.items():
            if '"w"' in key[:5]:
                fw = FeatureWindow.from_bytes(raw)
                fw.assoc = None
                raw = fw.to_bytes()
            if '"s"' not in key[:5]:
                out[key] = raw
        return out

    assert without_association(stored[0]) == without_association(stored[1])


@pytest.mark.parametrize("engine_cls", [DriftEngine, EveryLookSpan])
@pytest.mark.parametrize("flush_every", [1, 1_000])
def test_nulls_before_a_feature_has_a_kind_are_dropped_whenever_applied(
    engine_cls: type[DriftEngine], flush_every: int
) -> None:
    """A feature's nulls that come before its first value are dropped (it has no kind yet),
    not counted as missing once a later event types it: the same windows whether the
    buffered values are applied after each event (the worker's small batches), at each look
    (``EveryLookSpan``) or only at a close (a look with no baseline yet waits)."""
    cfg = replace(SHORT, interim_seconds=3600)
    store = MemoryStore()
    engine = engine_cls(cfg, store)
    k = 0
    for hour, value in ((0, None), (1, 1.5)):
        for i in range(60):
            ts = T0 + hour * 3600 + i * 50
            engine.observe(PredictionEvent(f"e{k}", "acme", "fraud", "v1", ts, {"x": value}, 0.5))
            k += 1
            if k % flush_every == 0:
                store.apply(engine.flush())
    store.apply(engine.flush())
    window = engine.feature_window("acme", "fraud", T0, "x")
    assert window is not None and window.summary.count == 60 and window.summary.missing == 0
    assert engine.stats["untyped_nulls"] == 60


ABSENT_MISSING = replace(SHORT, absent_is_missing=True)


@pytest.mark.parametrize("batch", [1, 500])
def test_a_feature_left_out_of_the_events_is_a_missing_rate_incident(batch: int) -> None:
    """A producer that stops sending a feature (drops the key, as serializers that skip
    nulls do) is told: its missing rate rises from the day it went, as with nulls, and the
    other features stay quiet. With ``absent_is_missing`` off (the default) the feature is
    only not in those events: no incident."""

    def drifts_of(config: EngineConfig) -> tuple[list[DriftEvent], DriftEngine]:
        engine = DriftEngine(config, MemoryStore())
        fresh = stream(seed=30, days=30, per_day=400)
        events = list(with_nulls(fresh, range(20, 30), 31, share=1.0, left_out=True))
        out: list[DriftEvent] = []
        for k in range(0, len(events), batch):
            out.extend(d for _, d in engine.observe_many(events[k : k + batch]).drifts)
        return out, engine

    drifts, engine = drifts_of(ABSENT_MISSING)
    missing = [d for d in drifts if d.test == "missing_rate"]
    assert {d.feature for d in drifts} == {"x1"} and missing
    assert min(d.window_start for d in missing) == T0 + 20 * DAY
    assert missing[0].extra["missing_rate"] == 1.0
    window = engine.feature_window("acme", "fraud", T0 + 25 * DAY, "x1")
    assert window is not None and window.summary.count == 0 and window.summary.missing > 300
    quiet, engine = drifts_of(SHORT)  # the default
    assert quiet == [] and engine.stats["tests"] > 0
    assert engine.feature_window("acme", "fraud", T0 + 25 * DAY, "x1") is None


@pytest.mark.parametrize("flush_every", [1, 7, 1_000])
def test_a_feature_is_missing_only_from_events_after_it_was_first_seen(flush_every: int) -> None:
    """Events before a feature's first value do not miss it (the stream did not know it
    then), whenever the buffer is applied; those after it that leave it out do, and a null
    counts as before."""
    store = MemoryStore()
    engine = DriftEngine(ABSENT_MISSING, store)
    Row = dict[str, float | str | None]
    a1: Row = {"a": 1.0}
    rows: list[Row] = (
        [a1] * 10
        + [{"a": 2.0, "b": 3.0}] * 5
        + [a1] * 4
        + [{"b": None}] * 2
        + [{"a": 1.0, "z": None}]  # z has no kind (dropped), b is left out
        + [{"a": 1.0, "c": 2.0}] * 3  # c is new: no event before misses it
    )
    for k, features in enumerate(rows):
        ts = T0 + 60 * k
        engine.observe(PredictionEvent(f"e{k}", "acme", "fraud", "v1", ts, features, 0.5))
        if (k + 1) % flush_every == 0:
            store.apply(engine.flush())
    store.apply(engine.flush())
    a = engine.feature_window("acme", "fraud", T0, "a")
    b = engine.feature_window("acme", "fraud", T0, "b")
    c = engine.feature_window("acme", "fraud", T0, "c")
    assert a is not None and (a.summary.count, a.summary.missing) == (23, 2)
    assert b is not None and (b.summary.count, b.summary.missing) == (5, 10)
    assert c is not None and (c.summary.count, c.summary.missing) == (3, 0)
    assert engine.feature_window("acme", "fraud", T0, "z") is None


def test_a_re_read_event_never_misses_a_feature_first_seen_after_it() -> None:
    """Events re-read after a restart (offsets written, not committed) are not counted
    again, and do not miss a feature the stream first saw in a later window: that window's
    guard never had their offsets, and a re-read must change nothing."""
    store = MemoryStore()
    engine = DriftEngine(ABSENT_MISSING, store)
    events = [
        PredictionEvent(f"e{k}", "acme", "fraud", "v1", T0 + 60 * k, {"a": 1.0}, 0.5)
        for k in range(10)
    ] + [
        PredictionEvent(
            f"e{k}", "acme", "fraud", "v1", T0 + DAY + 60 * k, {"a": 1.0, "b": 2.0}, 0.5
        )
        for k in range(10, 20)
    ]
    positions = [(0, k) for k in range(20)]
    engine.observe_many(events, positions)
    store.apply(engine.flush())
    again = DriftEngine(ABSENT_MISSING, store)
    again.observe_many(events[:10], positions[:10])
    store.apply(again.flush())
    assert again.stats["duplicates_skipped"] == 10
    assert again.feature_window("acme", "fraud", T0, "b") is None
    b = again.feature_window("acme", "fraud", T0 + DAY, "b")
    assert b is not None and (b.summary.count, b.summary.missing) == (10, 0)


def test_merged_baselines_kept_are_bounded_by_the_features_not_the_days() -> None:
    """Derived baselines of windows closed long ago are not kept: two per stream feature,
    however long the stream (a cache of 4,096 cleared when full grew a worker's memory)."""
    from streams.baselines import PER_SLOT

    looks = replace(SHORT, interim_seconds=3600)
    drifts, engine = run_engine(stream(seed=5, days=60, per_day=200), looks)
    assert engine.stats["tests"] > 0 and engine.stats["interim_looks"] > 0 and not drifts
    judge = engine._judge
    features = len(next(iter(stream(seed=5, days=1, per_day=1))).features)
    assert 0 < len(judge.baselines._features) <= PER_SLOT * features
    # and it still serves: a window's merge is reused by its later looks and its close
    assert judge.baselines._features.hits > judge.baselines._features.misses > 0


def test_a_stream_whose_first_event_is_rejected_writes_nothing() -> None:
    """The stream's state is written once an event of it is applied, with its partition: a
    rejected first event leaves nothing to write, and no partition (in a worker, a write
    without one has no store to go to)."""
    engine = DriftEngine(EngineConfig(max_features_per_stream=2), MemoryStore())
    too_wide = PredictionEvent("e1", "acme", "wide", "v1", 0.0, {"a": 1.0, "b": 2.0, "c": 3.0}, 0.5)
    with pytest.raises(InvalidEvent, match="too_many_features"):
        engine.observe(too_wide, (3, 7))
    assert engine.flush() == []
    fits = PredictionEvent("e2", "acme", "wide", "v1", 1.0, {"a": 1.0, "b": 2.0}, 0.5)
    engine.observe(fits, (3, 8))
    written = engine.flush()
    assert written and {w.partition for w in written} == {3}


@pytest.mark.parametrize(
    ("config", "seed", "days", "shift_day"),
    [
        (SHORT, 8, 24, None),
        (replace(SHORT, interim_seconds=3600), 8, 24, None),
        (replace(SHORT, retention_days=14), 3, 30, 22.0),
        (replace(SHORT, retention_days=14, interim_seconds=3600), 5, 28, 21.0),
    ],
    ids=["daily", "hourly_looks", "drift_daily", "drift_hourly_looks"],
)
def test_a_write_cut_short_by_a_crash_leaves_the_state_of_a_whole_one(
    config: EngineConfig, seed: int, days: int, shift_day: float | None
) -> None:
    """A worker killed mid-write leaves a prefix of the write's records in the changelog
    (what a restore brings back); the batch is then read again from the committed offset.
    Whatever the prefix, the state after that must be the state of an uninterrupted write.
    - With the stream's record first, a prefix could hold the stream (its clock past an
      expiry, the expired windows gone from its list) without the windows' deletions: those
      windows were never deleted (found by the kill-loop test on a 3-kill run).
    - With the deletes before it, a prefix could hold some of them without the stream: the
      batch read again judged the windows it closes against a baseline that had lost them
      (the drift cases; a retention equal to the baseline's reach)."""
    events = list(stream(seed=seed, days=days, per_day=60, shift_day=shift_day))
    # The last batch moves the clock three days or more: windows close and expire in its write.
    split = days - 3 if shift_day is None else int(shift_day) + 2
    head, tail = events[: split * 60], events[split * 60 :]
    positions = {e.event_id: (0, k) for k, e in enumerate(events)}

    def applied(store: MemoryStore, batch: list[PredictionEvent]) -> list[Write]:
        engine = DriftEngine(config, store)  # a restart: nothing decoded, the store is the truth
        for e in batch:
            engine.observe(e, positions[e.event_id])
        return engine.flush()

    base = MemoryStore()
    base.apply(applied(base, head))
    writes = applied(MemoryStore.copy_of(base), tail)
    kinds = ["put" if w.value is not None else "delete" for w in writes]
    last = max(k for k, w in enumerate(writes) if w.key.startswith('["s"'))
    assert "delete" not in kinds[:last] and "put" not in kinds[last + 1 :], "puts, stream, deletes"
    assert any(w.value is None and w.key.startswith('["w"') for w in writes), "no expiry"
    reference = MemoryStore.copy_of(base)
    reference.apply(writes)
    for cut in range(len(writes) + 1):
        crashed = MemoryStore.copy_of(base)
        crashed.apply(writes[:cut])
        crashed.apply(applied(MemoryStore.copy_of(crashed), tail))  # the batch read again
        assert crashed.data == reference.data, f"cut after {cut} of {len(writes)} records"
