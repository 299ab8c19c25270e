"""The sequential mean-shift scan (issue 12, item 3): valid p-values on any distribution,
small shifts found at the looks' alpha, and in the engine earlier than by the span looks
alone, the same live and in a backtest, silent on null streams."""

from __future__ import annotations

import dataclasses
import gc
import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from driftwatch.backtest import run_backtest
from schemas import DriftEvent, PredictionEvent
from streams.config import DAY, EngineConfig
from streams.drift_tests import DRIFT_TESTS
from streams.drift_tests.mean_scan import (
    MeanShiftScan,
    RankSums,
    mean_mid_rank,
    mid_ranks,
    scan,
    scan_many,
    scan_p,
    suffix_p,
    suffix_scan,
)
from streams.keyed_state import MemoryStore
from streams.numeric_summary import NumericSummary
from streams.slot_series import SlotSeries
from tests.unit.live_replay import replay_live
from tests.unit.test_multivariate import CONFIG as SHORT_HISTORY

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SCAN = MeanShiftScan()
Draw = Callable[[np.random.Generator, int], np.ndarray]
DISTRIBUTIONS: dict[str, Draw] = {
    "normal": lambda rng, n: rng.normal(0.0, 1.0, n),
    "lognormal": lambda rng, n: rng.lognormal(0.0, 1.2, n),  # skewed, heavy right tail
    "discrete": lambda rng, n: rng.poisson(1.5, n).astype(float),  # ties everywhere
}


def summary_of(values: np.ndarray) -> NumericSummary:
    out = NumericSummary()
    out.add_many(values)
    return out


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("baseline_size", [800, 6_000], ids=["exact", "bucketed"])
def test_null_p_values_are_valid_whatever_the_distribution(name: str, baseline_size: int) -> None:
    """Eight hourly slots of 62 values from the baseline's own distribution, 400 times: the
    share of p-values under 5 % stays under 5 % (Bonferroni over the suffixes is
    conservative), and the test is not blind either (p-values spread below 1/2)."""
    draw = DISTRIBUTIONS[name]
    rng = np.random.default_rng(11)
    base = summary_of(draw(rng, baseline_size))
    assert base.is_exact == (baseline_size == 800)
    ps = np.array([
        SCAN.run(SlotSeries(tuple(draw(rng, 62) for _ in range(8)), 0, 3600.0), base).p_value
        for _ in range(400)
    ])  # fmt: skip
    assert float(np.mean(ps < 0.05)) <= 0.05
    assert float(np.mean(ps < 0.5)) >= 0.1


def test_mid_ranks_are_centred_on_ties() -> None:
    """On a feature with ties the mid-rank of a value the baseline has is the middle of its
    step, so an unchanged discrete feature averages 1/2."""
    base = summary_of(np.array([0.0, 1.0, 1.0, 2.0]))
    assert list(mid_ranks(np.array([0.0, 1.0, 2.0, 5.0]), base)) == [0.125, 0.5, 0.875, 1.0]
    assert mean_mid_rank(base, base) == 0.5


def test_mid_ranks_are_the_cdfs_both_sides_bit_for_bit() -> None:
    """An exact baseline's mid-ranks come from two searches, not from its CDF at each value
    and at the double below it: the same bits, on ties, on values the baseline has, on both
    zeros and at the ends (and a bucketed baseline's are its CDF's, as before)."""
    rng = np.random.default_rng(11)

    def by_cdf(values: np.ndarray, base: NumericSummary) -> np.ndarray:
        both = base.cdf(np.concatenate((values, np.nextafter(values, -np.inf))))
        return 0.5 * (both[: values.size] + both[values.size :])

    checked = {True: 0, False: 0}
    for trial in range(60):
        size = int(rng.integers(1, 3_000))
        raw = rng.normal(0.0, 1.0, size)
        if trial % 3 == 0:
            raw = np.round(raw * 4) / 4  # ties
        raw[: size // 10] = 0.0
        raw[size // 10 : size // 5] = -0.0  # both zeros, side by side
        base = NumericSummary()
        base.extend(raw)
        values = np.concatenate((rng.choice(raw, 20), rng.normal(0.0, 2.0, 20), [0.0, -0.0]))
        values = np.concatenate((values, [raw.min(), raw.max(), -1e300, 1e300, -np.inf, np.inf]))
        got = mid_ranks(values, base)
        assert got.tobytes() == by_cdf(values, base).tobytes()
        checked[base.is_exact] += 1
    assert checked[True] > 10 and checked[False] > 10  # both paths were compared


def test_a_bucketed_window_reads_as_its_values() -> None:
    """The mean mid-rank from two bucketed CDFs is within their errors of the exact one."""
    rng = np.random.default_rng(3)
    values = rng.normal(0.2, 1.0, 5_000)
    base = summary_of(rng.normal(0.0, 1.0, 20_000))
    window = summary_of(values)
    assert not window.is_exact and not base.is_exact
    exact = float(np.mean(mid_ranks(np.sort(values), base)))
    assert abs(mean_mid_rank(window, base) - exact) <= window.cdf_error + base.cdf_error
    assert abs(exact - 0.5 - 0.2 / (2 * math.sqrt(math.pi))) < 0.01  # Phi(d / sqrt 2) - 1/2


def test_a_small_shift_is_found_at_the_looks_alpha() -> None:
    """0.3 sd from the second of eight slots of 62 values (about 1,500 a day; 434 shifted
    values, an expected z of ~6.1): in at least 4 of 5 seeds the best suffix is the shifted
    one, significant at one look's alpha of a 6-feature model (z ~4.9), its effect past the
    floor. (0.25 sd gives z ~5.1 there: found about half the time, as it should be.)"""
    cfg = EngineConfig()
    found_in = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        base = summary_of(rng.normal(0.0, 1.0, 6_000))
        slots = SlotSeries(
            tuple(rng.normal(0.0 if i < 1 else 0.3, 1.0, 62) for i in range(8)), 0, 3600.0
        )
        r = SCAN.run(slots, base)
        found = scan(slots, base)
        assert found is not None and found.z > 0 and found.tried == 8
        if r.p_value < cfg.sequential_alpha / 6:
            found_in += 1
            assert r.effect_size >= SCAN.effect_floor(cfg)
            assert 5 <= found.slots <= 8  # the shifted hours, not a short lucky run
    assert found_in >= 4


def test_the_baselines_cdf_error_is_taken_off() -> None:
    """A bucketed baseline's CDF error makes the scan weaker, never stronger: against the
    same data kept exactly (mid-ranks from the sorted values themselves) the bucketed z is
    no larger, and the margin is what keeps it so."""
    rng = np.random.default_rng(9)
    data = rng.normal(0.0, 1.0, 6_000)
    bucketed = summary_of(data)
    assert not bucketed.is_exact and bucketed.cdf_error > 0
    slots = tuple(rng.normal(0.2, 1.0, 62) for _ in range(8))
    ref = np.sort(data)
    found = scan(SlotSeries(slots, 0, 3600.0), bucketed)
    assert found is not None and found.slots >= 4
    u = np.concatenate([
        (np.searchsorted(ref, s, "left") + np.searchsorted(ref, s, "right")) / (2 * ref.size)
        for s in slots[-found.slots :]
    ])  # fmt: skip
    n, m = u.size, ref.size
    z_exact = float(np.sum(u - 0.5)) / math.sqrt(n * (1 + n / m) / 12)  # the same suffix
    assert 0 < found.z <= z_exact
    without_margin = found.z + n * bucketed.cdf_error / math.sqrt(n * (1 + n / m) / 12)
    assert without_margin > found.z


def test_too_few_values_is_no_test() -> None:
    base = summary_of(np.random.default_rng(1).normal(0, 1, 1_000))
    r = SCAN.run(SlotSeries((np.array([5.0] * 10),), 0, 3600.0), base)
    assert (r.p_value, r.effect_size, SCAN.describe(SlotSeries((), 0, 3600.0), base)) == (
        1.0,
        0.0,
        {},
    )


# --------------------------------------------------------------------------- the engine

# The short history of the multivariate tests (first tested window: day 14), per feature only.
CONFIG = dataclasses.replace(SHORT_HISTORY, multivariate=False)
WITHOUT_SCAN = dataclasses.replace(CONFIG, sequential_alpha_share=0.0)


def shifted(
    seed: int, days: int, per_day: int, shift: float, onset: float
) -> Iterator[PredictionEvent]:
    """Three normal features; ``x0`` moves by ``shift`` sd from day ``onset`` on."""
    rng = np.random.default_rng(seed)
    for day in range(days):
        ts = T0 + day * DAY + np.sort(rng.uniform(0, DAY, per_day))
        x = rng.standard_normal((per_day, 3))
        x[ts >= T0 + onset * DAY, 0] += shift
        for i in range(per_day):
            yield PredictionEvent(
                event_id=f"e-{day}-{i}", tenant="acme", model="fraud", model_version="v1",
                timestamp=float(ts[i]),
                features={f"x{j}": round(float(x[i, j]), 6) for j in range(3)}, score=0.5,
            )  # fmt: skip


def first_alarm(drifts: list[DriftEvent], feature: str) -> DriftEvent | None:
    found = [d for d in drifts if d.feature == feature]
    return min(found, key=lambda d: d.detected_at) if found else None


def test_the_scan_finds_a_small_shift_hours_before_the_span_looks() -> None:
    """0.3 sd on x0 from 07:12 of day 16, 1,500 events a day: over 4 seeds the first alarm
    comes no later than the span looks' alone (same stream, the scan turned off), hours
    earlier on average, mostly from the scan (a ``mean_scan`` event with its span), and
    nothing else alarms."""
    onset = 16.3
    gains: list[float] = []
    found_by_scan = 0
    for seed in range(4):
        events = list(shifted(seed, 18, 1_500, 0.3, onset))
        with_scan = run_backtest(events, CONFIG).drift_events
        without = run_backtest(events, WITHOUT_SCAN).drift_events
        a, b = first_alarm(with_scan, "x0"), first_alarm(without, "x0")
        assert a is not None and a.detected_at >= T0 + onset * DAY
        assert {d.feature for d in with_scan} == {"x0"}
        assert b is None or a.detected_at <= b.detected_at
        gains.append(((b.detected_at if b else T0 + 18 * DAY) - a.detected_at) / 3600)
        scans = [d for d in with_scan if d.test == "mean_scan"]
        assert all(d.partial and d.extra["shift_sd"] > 0 for d in scans)
        assert all(3600 <= d.extra["span_seconds"] <= 8 * 3600 for d in scans)
        found_by_scan += a.test == "mean_scan"
    # Measured: 3.8-4.8 h after the onset where the span looks took 4.8-8.8 h (in one seed
    # a one-hour span's KS was first, at 2.9 h, with or without the scan).
    assert found_by_scan >= 3
    assert sum(gains) / len(gains) >= 2.0, gains  # hours earlier on average


def test_no_scan_alarm_on_null_streams() -> None:
    for seed in range(3):
        report = run_backtest(shifted(100 + seed, 20, 1_500, 0.0, 0.0), CONFIG)
        assert report.drift_events == []
        assert report.engine_stats["scan_tests"] > 300, "the scan hardly ran"


def test_live_batches_and_backtest_give_the_same_scan_events() -> None:
    events = list(shifted(9, 17, 1_200, 0.35, 16.3))
    backtest = run_backtest(events, CONFIG).drift_events
    assert any(d.test == "mean_scan" for d in backtest)
    live = replay_live(CONFIG, MemoryStore(), events)
    assert [d.to_dict() for d in live] == [d.to_dict() for d in backtest]


def test_registered_for_numeric_features_only_at_the_scan() -> None:
    assert isinstance(DRIFT_TESTS["mean_scan"], MeanShiftScan)
    assert not DRIFT_TESTS.for_kind("categorical", False, scan=True)
    for whole in (True, False):
        assert "mean_scan" not in [t.name for t in DRIFT_TESTS.for_kind("numeric", whole)]


def test_remembered_rank_sums_are_the_computed_ones_and_bounded() -> None:
    """Between looks only the newest slot is ranked again; what is remembered is exactly what
    ranking gives, a changed baseline (its count) is never served a stale sum, and the memo
    holds at most its bound."""
    rng = np.random.default_rng(2)
    base = summary_of(rng.normal(0, 1, 3_000))
    sums = RankSums(kept=4)
    slots = [rng.normal(0.1, 1, 60) for _ in range(6)]
    first = [sums(s, base) for s in slots]
    assert first == [math.fsum((mid_ranks(s, base) - 0.5).tolist()) for s in slots]
    assert len(sums._sums) == 4
    assert sums.hits == 0
    assert [sums(s, base) for s in slots[-4:]] == first[-4:]  # served, the same figures
    assert sums.hits == 4
    base.add_many(rng.normal(3, 1, 500))  # a live one-window baseline grows
    moved = sums(slots[-1], base)
    assert moved == math.fsum((mid_ranks(slots[-1], base) - 0.5).tolist()) != first[-1]


def test_a_rank_sum_is_forgotten_with_its_sample() -> None:
    """What is kept is what the windows hold: a sum goes when its slot's sample does (a
    sample replaced, a window dropped), whatever the bound, and a new sample that reuses the
    old one's address is ranked, never served the old sum."""
    rng = np.random.default_rng(4)
    base = summary_of(rng.normal(0, 1, 2_000))
    sums = RankSums()
    slots = [rng.normal(0, 1, 50) for _ in range(8)]
    [sums(s, base) for s in slots]
    assert len(sums) == 8
    del slots[:5]
    gc.collect()
    assert len(sums) == 3
    assert [sums(s, base) for s in slots] and sums.hits == 3
    for _ in range(50):  # CPython hands a freed array's address to the next of its size
        fresh = rng.normal(2, 1, 50)
        assert sums(fresh, base) == math.fsum((mid_ranks(fresh, base) - 0.5).tolist())
        del fresh
    assert sums.hits == 3 and len(sums) == 3
    empty = np.empty(0)  # a slot without traffic: nothing to remember (its array lives on)
    assert sums(empty, base) == 0.0 == math.fsum([]) and len(sums) == 3


def _scan_one_at_a_time(window: SlotSeries | NumericSummary, baseline: NumericSummary) -> object:
    """The suffix search as a loop, as it was written before ``scan_many``: the reference."""
    m = baseline.count
    if m == 0 or window.count == 0:
        return None
    error, least = baseline.cdf_error, 30
    if isinstance(window, NumericSummary):
        error += window.cdf_error
        sums = [(window.count * (mean_mid_rank(window, baseline) - 0.5), window.count)]
    else:
        least = max(least, window.min_values)
        sums = [(math.fsum((mid_ranks(s, baseline) - 0.5).tolist()), int(s.size))
                for s in window.slots]  # fmt: skip
    best, total, n, tried = None, 0.0, 0, 0
    for k, (s, size) in enumerate(reversed(sums), start=1):
        total += s
        n += size
        if n < least or size == 0:
            continue
        tried += 1
        net = max(0.0, abs(total) - n * error)
        z = math.copysign(net / math.sqrt(n * (1 + n / m) / 12.0), total)
        if best is None or abs(z) > abs(best[0]):
            best = (z, n, k, 0.5 + math.copysign(net, total) / n)
    return None if best is None else (best[0], best[1], best[2], tried, best[3])


def test_scan_many_finds_what_a_loop_per_feature_finds_bit_for_bit() -> None:
    rng = np.random.default_rng(11)
    pairs: list[tuple[SlotSeries | NumericSummary, NumericSummary]] = []
    for k in range(60):
        base = NumericSummary()
        base.add_many(rng.normal(0.0, 1.0, int(rng.integers(1, 9_000))))
        shift = float(rng.choice([0.0, 0.2, 1.0]))
        slots = tuple(rng.normal(shift, 1.0, int(rng.choice([0, 3, 20, 64]))) for _ in range(k % 9))
        pairs.append((SlotSeries(slots, 0, 3600.0, int(rng.choice([0, 100]))), base))
        if k % 10 == 0:  # a whole summary is one slot, bucketed or exact
            pairs.append((NumericSummary.of(rng.normal(shift, 1.0, 3_000)), base))
    found = scan_many(pairs)
    expected = [_scan_one_at_a_time(w, b) for w, b in pairs]
    got = [None if f is None else (f.z, f.values, f.slots, f.tried, f.mean_rank) for f in found]
    assert got == expected
    assert sum(f is not None for f in found) > 30 and sum(f is None for f in found) > 5
    assert any(f is not None and abs(f.z) > 5 for f in found)  # shifted ones stand out


def test_suffix_p_is_scan_p_of_each_finding() -> None:
    """The look screen's p of every row at once: the judge's own, bit for bit (rows with
    slots missing, without a tried suffix, with a shift, against small and large baselines)."""
    rng = np.random.default_rng(17)
    rows = 60
    size = rng.integers(0, 70, (rows, 8))
    size[::7, 3:] = 0  # a short run of slots
    size[::11] = 3  # never enough for a suffix (24 values)
    total = rng.normal(0.0, 1.0, (rows, 8)) * np.sqrt(size) * 0.3 + size * rng.choice(
        [0.0, 0.15], (rows, 1)
    )
    leasts = np.full(rows, 30)
    errors = rng.choice([0.0, 0.002], rows)
    counts = rng.choice([200, 40_000], rows)
    found = suffix_scan(total.copy(), size, leasts, errors, counts)
    p = suffix_p(total.copy(), size, leasts, errors, counts)
    assert p.tolist() == [scan_p(f) for f in found]
    assert any(f is None for f in found) and min(p) < 1e-6


def test_suffix_p_of_bounded_sums_is_a_bound_below_the_p_of_any_sums_within() -> None:
    """What the look screen proves a scan quiet with: slot sums known only within bounds
    give, as ``summed`` suffix sizes, a p at or below the p of every sums inside them (here
    the bounds' own ends and random sums between), and equal to it where the bounds meet."""
    rng = np.random.default_rng(19)
    rows = 80
    size = rng.integers(0, 70, (rows, 8))
    leasts, errors = np.full(rows, 30), rng.choice([0.0, 0.002], rows)
    counts = rng.choice([200, 40_000], rows)
    exact = rng.normal(0.0, 1.0, (rows, 8)) * np.sqrt(size) * 0.3
    width = rng.uniform(0.0, 0.02, (rows, 8)) * size
    width[::5] = 0.0  # known exactly
    low, high = exact - rng.uniform(0, 1, (rows, 8)) * width, exact + width
    reach = np.maximum(np.abs(np.cumsum(low, axis=1)), np.abs(np.cumsum(high, axis=1)))
    floor = suffix_p(reach, size, leasts, errors, counts, summed=True)
    for sums in (low, high, exact, low + rng.uniform(0, 1, (rows, 8)) * (high - low)):
        p = suffix_p(sums.copy(), size, leasts, errors, counts)
        assert (floor <= p).all()
    p = suffix_p(exact.copy(), size, leasts, errors, counts)
    assert floor[::5].tolist() == p[::5].tolist()
    assert (floor < p).sum() > rows // 4  # the bounds' width does cost p (many p are 1)
