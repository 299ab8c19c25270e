"""Multivariate drift (issue 12): the moments, Jennrich's test, and the engine on seeded
streams whose truth is known (a correlation flip with unchanged marginals; null and
daily-cycle streams)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from importlib import resources

import jsonschema
import numpy as np
import pytest

from driftwatch.backtest import run_backtest
from schemas import DriftEvent, PredictionEvent
from streams.config import DAY, EngineConfig
from streams.drift_tests import DRIFT_TESTS
from streams.drift_tests.multivariate import MULTIVARIATE_FEATURE, jennrich_test
from streams.engine import DriftEngine
from streams.keyed_state import MemoryStore
from streams.moments import MOMENT_CHUNK, MomentSummary, MomentWindow, moment_key
from tests.unit.live_replay import replay_live

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z

# Defaults but a shorter history (first tested window: day 14) and confirmation at the
# first drifting window, so "confirmed within 24 h" is a question of detection alone.
CONFIG = EngineConfig(
    baseline_start_days=14,
    baseline_end_days=7,
    min_baseline_windows=5,
    retention_days=16,
    seasonal_period_days=0,
    confirm_windows=1,
)


def correlated(
    seed: int,
    days: int,
    per_day: int,
    rho: float = 0.8,
    flip_at: float | None = None,
    daily_amplitude: float = 0.0,
    missing: float = 0.01,
) -> Iterator[PredictionEvent]:
    """x0, x1 standard normal with correlation ``rho`` (``-rho`` from ``flip_at`` days on:
    marginals unchanged), x2, x3 independent; each value missing with probability
    ``missing``; with ``daily_amplitude``, every feature's mean follows a daily sine (its
    own phase), the same every day."""
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * math.pi, 4)
    for day in range(days):
        t = np.sort(rng.uniform(0, DAY, per_day))
        z = rng.standard_normal((per_day, 4))
        ts = T0 + day * DAY + t
        r = np.full(per_day, rho)
        if flip_at is not None:
            r[ts >= T0 + flip_at * DAY] = -rho
        x = z.copy()
        x[:, 1] = r * z[:, 0] + np.sqrt(1 - r**2) * z[:, 1]
        x += daily_amplitude * np.sin(2 * math.pi * t[:, None] / DAY + phases)
        gone = rng.random((per_day, 4)) < missing
        for i in range(per_day):
            yield PredictionEvent(
                event_id=f"e-{day}-{i}",
                tenant="acme",
                model="fraud",
                model_version="v1",
                timestamp=float(ts[i]),
                features={
                    f"x{j}": None if gone[i, j] else round(float(x[i, j]), 6) for j in range(4)
                },
                score=0.5,
            )


def run(events: Iterator[PredictionEvent], config: EngineConfig = CONFIG) -> list[DriftEvent]:
    engine = DriftEngine(config, MemoryStore())
    out: list[DriftEvent] = []
    for e in events:
        out.extend(engine.observe(e))
    assert engine.stats["multivariate_tests"] > 0, "the multivariate test never ran"
    return out


# --------------------------------------------------------------------------- moments


def _rows(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal([5.0, -3.0, 100.0], [[1, 0.5, 0], [0.5, 2, 0.3], [0, 0.3, 9]], n)
    x[rng.random((n, 3)) < 0.02] = np.nan
    return x


def test_moments_are_those_of_the_complete_rows_whatever_the_batching() -> None:
    x = _rows(1, 2_000)
    complete = x[np.isfinite(x).all(axis=1)]
    one = MomentSummary(("a", "b", "c"))
    one.add_rows(x)
    pieces = MomentSummary(("a", "b", "c"))
    for lo, hi in [(0, 1), (1, 70), (70, 64 * 9 + 3), (64 * 9 + 3, 2_000)]:
        pieces.add_rows(x[lo:hi])
    assert one.to_bytes() == pieces.to_bytes()  # folded at the same points: the same bits
    c_order, f_order = MomentSummary(("a", "b", "c")), MomentSummary(("a", "b", "c"))
    c_order.add_rows(complete)
    for lo, hi in [(0, 1), (1, 200), (200, len(complete))]:
        # An F-ordered batch after a one-row tail concatenated to an F-ordered tail, whose
        # fold then summed in another order: other bits (the fix: rows go in C order).
        f_order.add_rows(np.asfortranarray(complete[lo:hi]))
    assert c_order.to_bytes() == f_order.to_bytes()
    assert one.count == len(complete) and one.missing == 2_000 - len(complete)
    np.testing.assert_allclose(one.covariance(), np.cov(complete.T), rtol=1e-10)
    np.testing.assert_allclose(one.moments()[1], complete.mean(axis=0), rtol=1e-12)
    assert 0 < one.tail.shape[0] < MOMENT_CHUNK


def test_empty_and_missing_only_summaries_round_trip() -> None:
    empty = MomentSummary(("a", "b"))
    gone = MomentSummary(("a", "b"))
    gone.add_rows(np.full((10, 2), np.nan))
    for s in (empty, gone):
        back = MomentSummary.from_bytes(s.to_bytes())
        assert back.to_bytes() == s.to_bytes() and back.features == ("a", "b")
    assert gone.count == 0 and gone.missing == 10
    mw = MomentWindow([gone, empty], {0: 7})
    assert MomentWindow.from_bytes(mw.to_bytes()).offsets == {0: 7}


def test_merge_refuses_other_features() -> None:
    with pytest.raises(ValueError, match="different features"):
        MomentSummary(("a", "b")).merge(MomentSummary(("a", "c")))


# --------------------------------------------------------------------------- the test


def _pair(
    seed: int, rho_w: float, rho_b: float, n_w: int, n_b: int, p: int = 6
) -> tuple[MomentSummary, MomentSummary]:
    rng = np.random.default_rng(seed)
    out = []
    for rho, n in ((rho_w, n_w), (rho_b, n_b)):
        cov = np.eye(p)
        cov[0, 1] = cov[1, 0] = rho
        s = MomentSummary(tuple(f"f{i}" for i in range(p)))
        s.add_rows(rng.multivariate_normal(np.zeros(p), cov, n))
        out.append(s)
    return out[0], out[1]


def test_jennrich_false_alarm_rate_is_calibrated() -> None:
    """Gaussian null pairs at engine sizes (a day against five): p uniform, so about 1% of
    them below 0.01 and none below 1e-4 in 400."""
    ps = [jennrich_test(*_pair(seed, 0.8, 0.8, 800, 4_000)).p_value for seed in range(400)]
    assert 8 <= sum(p < 0.05 for p in ps) <= 35  # ~20 of 400 at 5 %
    assert sum(p < 0.01 for p in ps) <= 10
    assert min(ps) > 1e-4


def _t_pair(
    seed: int, rho_w: float, n_w: int, n_b: int = 5_000, p: int = 6
) -> tuple[MomentSummary, MomentSummary]:
    """Multivariate t with 5 degrees of freedom (heavy tails, elliptical): corr(f0, f1)
    ``rho_w`` in the window, 0.8 in the baseline."""
    rng = np.random.default_rng([seed, 5])
    out = []
    for rho, n in ((rho_w, n_w), (0.8, n_b)):
        z = rng.standard_normal((n, p))
        z[:, 1] = rho * z[:, 0] + math.sqrt(1 - rho * rho) * z[:, 1]
        z /= np.sqrt(rng.chisquare(5, (n, 1)) / 5)
        s = MomentSummary(tuple(f"f{i}" for i in range(p)))
        s.add_rows(z)
        out.append(s)
    return out[0], out[1]


def test_heavy_tails_are_corrected_for() -> None:
    """Uncorrected, the test put 121 of these 200 null pairs below p = 0.01; with the
    kurtosis correction 1, and a flip at a day's size is still found."""
    ps = [jennrich_test(*_t_pair(seed, 0.8, 1_000)).p_value for seed in range(200)]
    assert sum(p < 0.01 for p in ps) <= 12
    assert sum(p < 1e-4 for p in ps) <= 1
    for seed in range(5):
        r = jennrich_test(*_t_pair(seed, -0.8, 1_000))
        assert r.p_value < 1e-6 and r.effect_size >= CONFIG.min_multivariate_effect, (seed, r)


def test_jennrich_finds_the_flip_and_a_smaller_change_and_names_the_features() -> None:
    w, b = _pair(3, -0.8, 0.8, 300, 4_000)
    r = jennrich_test(w, b)
    assert r.p_value < 1e-30 and r.effect_size > 0.55
    extra = DRIFT_TESTS["corr_jennrich"].describe(w, b)
    assert set(extra["contributing_features"][:2]) == {"f0", "f1"}  # type: ignore[index]
    assert extra["reconstruction_error"] > 2 * extra["baseline_reconstruction_error"]  # type: ignore[operator]
    small = jennrich_test(*_pair(4, 0.6, 0.8, 1_000, 4_000))  # H ~ 0.17
    assert small.p_value < 1e-6 and small.effect_size >= CONFIG.min_multivariate_effect


# --------------------------------------------------------------------------- the engine


def test_correlation_flip_is_found_and_confirmed_within_a_day() -> None:
    """600 and 2,000 events a day; the flip at 06:00 of day 16 (marginals unchanged): found
    at an interim look of that same window, confirmed, by the multivariate test alone."""
    for per_day in (600, 2_000):
        flip = 16.25
        drifts = run(correlated(seed=per_day, days=18, per_day=per_day, flip_at=flip))
        assert drifts, per_day
        assert {d.feature for d in drifts} == {MULTIVARIATE_FEATURE}, per_day
        first = min(drifts, key=lambda d: d.detected_at)
        delay = first.detected_at - (T0 + flip * DAY)
        assert 0 < delay <= DAY, (per_day, delay / 3600)
        # At a look of the open window (its features' own tests all quiet there): not only
        # at its close, 18 hours after the flip.
        assert first.partial and first.detected_at < T0 + 17 * DAY, per_day
        assert first.confirmed and first.test == "corr_jennrich"
        assert set(first.extra["contributing_features"][:2]) == {"x0", "x1"}
        assert len({d.drift_id for d in drifts}) == 1


@pytest.mark.parametrize(
    ("seed", "amplitude"), [(11, 0.0), (12, 0.0), (13, 1.0), (14, 1.0)], ids=str
)
def test_no_multivariate_alarm_on_null_and_daily_cycle_streams(seed: int, amplitude: float) -> None:
    """60 days of 1,000 events a day, correlation 0.8 throughout, with and without a daily
    cycle of each mean (1 sd, its own phase: the open window's cumulative looks see a part
    of the cycle the whole-day baseline averages over)."""
    config = dataclasses.replace(
        CONFIG, baseline_start_days=60, baseline_end_days=30, retention_days=62,
        min_baseline_windows=3,
    )  # fmt: skip
    drifts = run(correlated(seed, 60, 1_000, daily_amplitude=amplitude), config)
    assert [d for d in drifts if d.feature == MULTIVARIATE_FEATURE] == []


def test_marginal_changes_are_left_to_the_per_feature_tests() -> None:
    """x2's deviation doubles and x3's mean moves 1 sd (correlations unchanged): the
    per-feature tests find both, the multivariate test stays quiet (Box's M, tried first,
    also fired on the variance change)."""
    events = []
    for e in correlated(seed=8, days=18, per_day=1_000):
        if e.timestamp >= T0 + 16.25 * DAY:
            x2, x3 = e.features["x2"], e.features["x3"]
            features = dict(e.features)
            features["x2"] = None if x2 is None else 2.0 * float(x2)
            features["x3"] = None if x3 is None else float(x3) + 1.0
            e = dataclasses.replace(e, features=features)
        events.append(e)
    drifts = run(iter(events))
    assert {"x2", "x3"} <= {d.feature for d in drifts}
    assert MULTIVARIATE_FEATURE not in {d.feature for d in drifts}


def test_live_batches_and_backtest_give_the_same_drift_events() -> None:
    """The worker's way (offsets, batches of uneven size, flushes dropping the decoded state)
    and ``run_backtest`` find the same DriftEvents, the multivariate ones included."""
    events = list(correlated(seed=5, days=18, per_day=700, flip_at=16.5))
    report = run_backtest(events, CONFIG)
    backtest = report.drift_events
    multivariate = [d for d in backtest if d.feature == MULTIVARIATE_FEATURE]
    assert multivariate
    drift_schema = json.loads(
        resources.files("schemas").joinpath("v1", "drift_event.json").read_text()
    )
    for d in multivariate:  # the contract's fields plus the optional multivariate ones
        jsonschema.validate(d.to_dict(), drift_schema)
        assert {"contributing_features", "reconstruction_error"} <= set(d.to_dict())
    store = MemoryStore()
    live = replay_live(CONFIG, store, events)
    assert [d.to_dict() for d in live] == [d.to_dict() for d in backtest]
    mw = MomentWindow.from_bytes(store.get(moment_key("acme", "fraud", T0 + 17 * DAY)) or b"")
    closed = MomentWindow.from_bytes(store.get(moment_key("acme", "fraud", T0 + 15 * DAY)) or b"")
    assert all(b.tail.shape[0] == 0 for b in closed.blocks)  # folded at the close
    assert len(closed.blocks) == CONFIG.moment_blocks == 3
    assert sum(b.count + b.missing for b in closed.blocks) == sum(
        1 for e in events if T0 + 15 * DAY <= e.timestamp < T0 + 16 * DAY
    )
    whole = mw.upto()
    assert whole.count + whole.missing == sum(
        1 for e in events if T0 + 17 * DAY <= e.timestamp < T0 + 18 * DAY
    )


def test_off_by_setting() -> None:
    events = correlated(seed=6, days=18, per_day=600, flip_at=16.25)
    engine = DriftEngine(dataclasses.replace(CONFIG, multivariate=False), MemoryStore())
    drifts = [d for e in events for d in engine.observe(e)]
    assert drifts == [] and engine.stats["multivariate_tests"] == 0


def test_a_flush_persisted_in_part_loses_no_window_moments() -> None:
    """A worker killed while its flush's changelog records were on the way: the new owner
    restores the stream's state (which counted a window's first events) without that window's
    moments, and reads those events again. The moments must be made then (before: only at a
    window's first event, so the window was never tested again: a live-vs-backtest
    difference in test_failover) and hold every row, as the backtest's."""
    events = list(correlated(seed=5, days=18, per_day=700, flip_at=16.5))
    backtest = run_backtest(events, CONFIG).drift_events
    store = MemoryStore()
    engine = DriftEngine(CONFIG, store)
    cut = next(k for k, e in enumerate(events) if e.timestamp >= T0 + 17 * DAY) + 20
    live: list[DriftEvent] = []
    for offset in range(cut):
        live.extend(engine.observe(events[offset], (0, offset)))
    lost = moment_key("acme", "fraud", T0 + 17 * DAY)
    writes = engine.flush()
    assert any(w.key == lost for w in writes)
    store.apply(w for w in writes if w.key != lost)  # the rest reached the changelog
    engine = DriftEngine(CONFIG, store)  # the new owner, from the store
    for offset in range(cut - 30, len(events)):  # re-read from before the kill
        live.extend(engine.observe(events[offset], (0, offset)))
    store.apply(engine.flush())
    restored = {d.to_dict()["detected_at"]: d.to_dict() for d in live}
    assert sorted(restored.values(), key=str) == sorted((d.to_dict() for d in backtest), key=str), (
        "live (after the partial flush) and backtest differ"
    )
    mw = MomentWindow.from_bytes(store.get(lost) or b"")
    whole = mw.upto()
    assert whole.count + whole.missing == sum(
        1 for e in events if T0 + 17 * DAY <= e.timestamp < T0 + 18 * DAY
    )


def test_moments_take_the_association_s_rows_with_the_same_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The moments read their rows from the batch's association (one conversion of the
    columns for both) where it has them all; the stored moments are those of converting
    the columns again, byte for byte, values missing and all, with a feature they do not
    track absent from some events, and one they track."""
    from streams.importance import ScoreBatch

    events = []
    for k, e in enumerate(correlated(seed=8, days=17, per_day=500, missing=0.05)):
        features = dict(e.features)
        if k % 7:
            features["kind"] = "ab"[k % 2]  # not tracked: absent from some events
        if e.timestamp >= T0 + 16 * DAY and k % 5 == 0:
            del features["x3"]  # tracked, absent: that batch's moments convert on their own
        events.append(dataclasses.replace(e, features=features))
    rows_of = ScoreBatch.rows_of
    taken: list[bool] = []

    def spy(self: ScoreBatch, columns: list[list[object]]) -> np.ndarray | None:
        made = rows_of(self, columns)
        taken.append(made is not None)
        return made

    def state(take: bool) -> dict[str, bytes]:
        monkeypatch.setattr(ScoreBatch, "rows_of", spy if take else lambda self, columns: None)
        store = MemoryStore()
        engine = DriftEngine(CONFIG, store)
        for e in events:
            engine.observe(e)
        store.apply(engine.flush())
        assert engine.stats["multivariate_tests"] > 0
        return {k: v for k, v in store.data.items() if k.startswith('["v"')}

    taken_state, converted_state = state(True), state(False)
    assert taken.count(True) > 50 and False in taken
    assert taken_state and taken_state == converted_state
