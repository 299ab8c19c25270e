"""Unit tests for streams.effects: PSI, Jensen-Shannon, Wasserstein and the missing-rate test.

Reference implementations below work on the raw values with plain numpy/scipy, so they check
both the exact path (to 1e-9) and how far bucketed summaries drift from the truth.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from streams.categorical_summary import CategoricalSummary
from streams.drift_tests.missing_rate import missing_rate_test
from streams.effects import (
    Effects,
    effects,
    js_distance_categorical,
    js_distance_numeric,
    new_categories,
    psi_categorical,
    psi_numeric,
    quantile_cuts,
    wasserstein_normalized,
)
from streams.numeric_summary import NumericSummary

# Tolerances of bucketed summaries (> 1,024 values, cdf_error ~0.003 per side) against the
# exact computation on the raw values. Each bin proportion can be off by at most
# 2 * cdf_error (~0.01), but interpolation errors mostly cancel: over 270 seeded cases
# (normal, lognormal, normal + integer point masses; 0 / 0.25 / 1 sigma shifts) the worst
# errors were PSI 0.008 (at PSI ~0.6), JS 0.003, W 0.002 sd on normal data. The tolerances
# keep ~2-3x headroom and stay far below the PSI reading bands (0.1 / 0.25). For W there is
# a rigorous bound instead (see ``w1_bound``); heavy tails can use a few hundredths of a sd.
PSI_TOL = 0.02
JS_TOL = 0.01
W_TOL_NORMAL = 0.01


def summarize(xs: np.ndarray) -> NumericSummary:
    s = NumericSummary()
    s.add_many(xs)
    return s


def categorical(counts: dict[str, int]) -> CategoricalSummary:
    c = CategoricalSummary()
    for key, n in counts.items():
        for _ in range(n):
            c.add(key)
    return c


# --------------------------------------------------------------------------- references


def raw_cuts(baseline: np.ndarray, bins: int) -> np.ndarray:
    """Inverted-CDF quantiles k/bins with integer arithmetic: the ceil(k*n/bins)-th value."""
    b = np.sort(baseline)
    ranks = np.array([-(-k * b.size // bins) for k in range(1, bins)])
    return np.unique(b[ranks - 1])


def raw_props(xs: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Shares of (-inf, c1], (c1, c2], ..., (c_last, inf)."""
    idx = np.searchsorted(cuts, xs, side="left")
    return np.bincount(idx, minlength=cuts.size + 1) / xs.size


def raw_psi(w: np.ndarray, b: np.ndarray, bins: int = 10, eps: float = 1e-4) -> float:
    cuts = raw_cuts(b, bins)
    p = np.maximum(raw_props(w, cuts), eps)
    q = np.maximum(raw_props(b, cuts), eps)
    return float(np.sum((p - q) * np.log(p / q)))


def raw_js(w: np.ndarray, b: np.ndarray, bins: int = 20) -> float:
    cuts = raw_cuts(b, bins)
    return float(jensenshannon(raw_props(w, cuts), raw_props(b, cuts), base=2))


def raw_w_sd(w: np.ndarray, b: np.ndarray) -> float:
    return float(stats.wasserstein_distance(w, b)) / float(np.std(b, ddof=1))


def w1_bound(s: NumericSummary) -> float:
    """Rigorous bound on integral |cdf - true cdf| dx: each ramp bucket errs by <= w*width/2."""
    if s.is_exact:
        return 0.0
    lo, hi, w = s._buckets
    return float(np.sum(w * (hi - lo))) / (2 * s.count)


# --------------------------------------------------------------------------- PSI


def test_psi_identical_distributions_is_near_zero() -> None:
    rng = np.random.default_rng(21)
    a, b = summarize(rng.normal(0, 1, 5_000)), summarize(rng.normal(0, 1, 5_000))
    assert 0.0 <= psi_numeric(a, b) < 0.02
    assert psi_numeric(b, b) == 0.0


def test_psi_reads_shift_size() -> None:
    rng = np.random.default_rng(22)
    base = summarize(rng.normal(0, 1, 20_000))
    assert psi_numeric(summarize(rng.normal(1.0, 1, 5_000)), base) > 0.25
    assert 0.02 < psi_numeric(summarize(rng.normal(0.25, 1, 5_000)), base) < 0.25


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_psi_exact_matches_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Rounded values: ties at the quantiles exercise the inverted-CDF rule and bin closure.
    b = np.round(rng.normal(0, 1, 500), 1)
    w = np.round(rng.normal(0.3, 1.2, 200), 1)
    sw, sb = summarize(w), summarize(b)
    assert sw.is_exact and sb.is_exact
    for bins in (4, 10, 13):
        np.testing.assert_array_equal(quantile_cuts(sb, bins), raw_cuts(b, bins))
        assert psi_numeric(sw, sb, bins=bins) == pytest.approx(raw_psi(w, b, bins), abs=1e-9)


def test_quantile_cuts_match_numpy_inverted_cdf() -> None:
    b = np.random.default_rng(23).normal(size=777)
    qs = np.arange(1, 10) / 10
    ref = np.quantile(b, qs, method="inverted_cdf")
    np.testing.assert_array_equal(quantile_cuts(summarize(b), 10), ref)


def test_psi_categorical_matches_hand_computation() -> None:
    w = categorical({"a": 50, "b": 30, "c": 20})
    b = categorical({"a": 40, "b": 40, "d": 20})
    eps = 1e-4
    hand = (
        (0.5 - 0.4) * math.log(0.5 / 0.4)
        + (0.3 - 0.4) * math.log(0.3 / 0.4)
        + (0.2 - eps) * math.log(0.2 / eps)  # "c" only in the window
        + (eps - 0.2) * math.log(eps / 0.2)  # "d" only in the baseline
    )
    assert psi_categorical(w, b) == pytest.approx(hand, abs=1e-12)
    assert psi_categorical(w, w) == 0.0


# --------------------------------------------------------------------------- Jensen-Shannon


def test_js_numeric_matches_scipy_on_same_bins() -> None:
    rng = np.random.default_rng(24)
    b, w = rng.normal(0, 1, 900), rng.normal(0.5, 1, 300)
    sw, sb = summarize(w), summarize(b)
    for bins in (5, 20):
        cuts = raw_cuts(b, bins)
        ref = jensenshannon(raw_props(w, cuts), raw_props(b, cuts), base=2)
        assert js_distance_numeric(sw, sb, bins=bins) == pytest.approx(ref, abs=1e-9)
    assert js_distance_numeric(sb, sb) == 0.0


def test_js_numeric_range_and_monotone_in_shift() -> None:
    rng = np.random.default_rng(25)
    base = summarize(rng.normal(0, 1, 20_000))
    ds = [js_distance_numeric(summarize(rng.normal(s, 1, 3_000)), base) for s in (0, 1, 3, 50)]
    assert all(0.0 <= d <= 1.0 for d in ds)
    assert ds == sorted(ds)
    # Entirely above the baseline: all window mass in the open top bin, which holds 1/20
    # of the baseline, so JS saturates below 1 at the distance of (0,...,0,1) vs uniform.
    top_bin_only = jensenshannon(np.eye(20)[-1], np.full(20, 1 / 20), base=2)
    assert ds[-1] == pytest.approx(top_bin_only, abs=1e-9)


def test_js_categorical_matches_scipy() -> None:
    w = categorical({"a": 5, "b": 3, "c": 2})
    b = categorical({"a": 2, "b": 6, "d": 4})
    ref = jensenshannon([5 / 10, 3 / 10, 2 / 10, 0], [2 / 12, 6 / 12, 0, 4 / 12], base=2)
    assert js_distance_categorical(w, b) == pytest.approx(ref, abs=1e-12)
    assert 0.0 < js_distance_categorical(w, b) < 1.0
    assert js_distance_categorical(w, w) == 0.0
    assert js_distance_categorical(w, categorical({"z": 3})) == 1.0


# --------------------------------------------------------------------------- Wasserstein


def test_wasserstein_exact_matches_scipy() -> None:
    rng = np.random.default_rng(26)
    b, w = rng.normal(0, 2, 800), rng.exponential(2, 300)
    got = wasserstein_normalized(summarize(w), summarize(b))
    assert got == pytest.approx(raw_w_sd(w, b), rel=1e-6, abs=1e-12)


def test_wasserstein_reads_shift_in_sigmas() -> None:
    rng = np.random.default_rng(27)
    base = rng.normal(10, 3, 20_000)
    moved = rng.normal(13, 3, 20_000)  # +1 sigma
    sb, sm = summarize(base), summarize(moved)
    assert not sb.is_exact and not sm.is_exact
    assert wasserstein_normalized(sm, sb) == pytest.approx(1.0, abs=0.05)
    assert wasserstein_normalized(sb, sb) == 0.0


def test_wasserstein_constant_baseline_is_zero() -> None:
    assert wasserstein_normalized(summarize(np.arange(5.0)), summarize(np.full(10, 2.0))) == 0.0


# --------------------------------------------------------------------------- bucketed vs exact


@pytest.mark.parametrize("shift", [0.0, 0.25, 1.0])
def test_bucketed_effects_close_to_exact_on_raw_values(shift: float) -> None:
    rng = np.random.default_rng(28)
    b = np.concatenate((rng.normal(0, 1, 15_000), rng.integers(0, 5, 5_000).astype(float)))
    w = np.concatenate((rng.normal(shift, 1, 4_000), rng.integers(0, 5, 1_000).astype(float)))
    sb, sw = summarize(b), summarize(w)
    assert not sb.is_exact and not sw.is_exact
    assert abs(psi_numeric(sw, sb) - raw_psi(w, b)) <= PSI_TOL
    assert abs(js_distance_numeric(sw, sb) - raw_js(w, b)) <= JS_TOL
    assert abs(wasserstein_normalized(sw, sb) - raw_w_sd(w, b)) <= W_TOL_NORMAL


def test_bucketed_wasserstein_within_rigorous_bound_on_heavy_tails() -> None:
    rng = np.random.default_rng(29)
    b, w = rng.lognormal(0, 1, 20_000), rng.lognormal(0.25, 1, 5_000)
    sb, sw = summarize(b), summarize(w)
    bound = (w1_bound(sw) + w1_bound(sb)) / sb.std
    assert 0.0 < bound < 0.2
    assert abs(wasserstein_normalized(sw, sb) - raw_w_sd(w, b)) <= bound


# --------------------------------------------------------------------------- missing rate


def hand_z_test(mw: int, nw: int, mb: int, nb: int) -> tuple[float, float]:
    pooled = (mw + mb) / (nw + nb)
    z = (mw / nw - mb / nb) / math.sqrt(pooled * (1 - pooled) * (1 / nw + 1 / nb))
    return z, math.erfc(abs(z) / math.sqrt(2))


def test_missing_rate_matches_hand_z_test() -> None:
    r = missing_rate_test(10, 100, 20, 100)
    assert r.statistic == pytest.approx(-1.9802950859533488, abs=1e-12)
    assert r.p_value == pytest.approx(0.04767038065616144, abs=1e-12)
    assert r.effect_size == pytest.approx(0.1, abs=1e-12)
    assert (r.test, r.exact, r.error_bound) == ("missing_rate", True, 0.0)
    for args in ((37, 2_000, 410, 30_000), (120, 800, 60, 800)):
        z, p = hand_z_test(*args)
        got = missing_rate_test(*args)
        assert got.statistic == pytest.approx(z, rel=1e-12)
        assert got.p_value == pytest.approx(p, rel=1e-9)


def test_missing_rate_uses_fisher_when_few_rows_are_expected() -> None:
    from scipy.stats import fisher_exact

    # 3 of 50 vs 1 of 70: about 1.7 missing rows expected in the window.
    got = missing_rate_test(3, 50, 1, 70)
    assert got.p_value == pytest.approx(fisher_exact([[3, 47], [1, 69]]).pvalue, rel=1e-12)
    # 6 of 83 (an hour) vs 1% of a month: z says p ~ 1e-9, the exact test ~ 2e-4.
    small = missing_rate_test(6, 83, 450, 45_000)
    assert small.p_value > 1e-5


def test_missing_rate_detects_jump_not_noise() -> None:
    jump = missing_rate_test(30, 1_500, 4_500, 45_000)  # 2% vs 10%
    assert jump.p_value < 1e-10 and jump.statistic < 0
    assert jump.effect_size == pytest.approx(0.08)
    same = missing_rate_test(15, 1_500, 450, 45_000)  # 1% vs 1%
    assert same.p_value > 0.05
    rng = np.random.default_rng(30)
    noisy = missing_rate_test(int(rng.binomial(1_500, 0.01)), 1_500, 450, 45_000)
    assert noisy.p_value > 0.05


@pytest.mark.parametrize(
    "args", [(0, 0, 5, 100), (5, 100, 0, 0), (0, 100, 0, 5_000), (100, 100, 5_000, 5_000)]
)
def test_missing_rate_degenerate(args: tuple[int, int, int, int]) -> None:
    r = missing_rate_test(*args)
    assert (r.statistic, r.p_value) == (0.0, 1.0)


def test_missing_rate_rejects_bad_counts() -> None:
    with pytest.raises(ValueError):
        missing_rate_test(5, 4, 0, 10)
    with pytest.raises(ValueError):
        missing_rate_test(0, 10, -1, 10)


# --------------------------------------------------------------------------- dispatch


def test_effects_dispatch() -> None:
    rng = np.random.default_rng(31)
    base, moved = summarize(rng.normal(0, 1, 2_000)), summarize(rng.normal(1, 1, 2_000))
    num = effects(moved, base)
    assert num == Effects(
        psi_numeric(moved, base),
        js_distance_numeric(moved, base),
        wasserstein_normalized(moved, base),
    )
    assert num.wasserstein_sd is not None and num.wasserstein_sd > 0.5
    cw, cb = categorical({"a": 3, "b": 1}), categorical({"a": 1, "b": 3})
    cat = effects(cw, cb)
    assert cat.wasserstein_sd is None
    assert cat.psi == psi_categorical(cw, cb) and cat.js_distance == js_distance_categorical(cw, cb)
    with pytest.raises(TypeError):
        effects(base, cb)


def test_empty_inputs_rejected() -> None:
    empty = NumericSummary()
    empty.add_missing(3)
    full = summarize(np.arange(10.0))
    for fn in (psi_numeric, js_distance_numeric, wasserstein_normalized):
        with pytest.raises(ValueError):
            fn(empty, full)
        with pytest.raises(ValueError):
            fn(full, empty)
    with pytest.raises(ValueError):
        psi_categorical(CategoricalSummary(), categorical({"a": 1}))


def test_fast_fisher_and_chi2_equal_scipy() -> None:
    """The missing-rate test's Fisher p and the chi-square test are computed without scipy's
    per-call overhead; they must be scipy's numbers."""
    from streams.drift_tests.chi2 import chi2_test
    from streams.drift_tests.missing_rate import _fisher_p

    rng = np.random.default_rng(0)
    for _ in range(500):
        wt, bt = int(rng.integers(20, 600)), int(rng.integers(100, 8000))
        wm, bm = min(int(rng.integers(0, 12)), wt), min(int(rng.integers(0, 60)), bt)
        want = stats.fisher_exact([[wm, wt - wm], [bm, bt - bm]]).pvalue
        assert _fisher_p.__wrapped__(wm, wt, bm, bt) == pytest.approx(want, rel=1e-9, abs=1e-300)
    for _ in range(200):
        w, b = CategoricalSummary(), CategoricalSummary()
        k = int(rng.integers(2, 12))
        w.add_values([f"c{int(x)}" for x in rng.integers(0, k, int(rng.integers(30, 400)))])
        b.add_values([f"c{int(x)}" for x in rng.integers(0, k + 1, int(rng.integers(100, 3000)))])
        got = chi2_test(w, b)
        cats = sorted(set(w.counts) | set(b.counts))
        table = np.array([[w.counts.get(c, 0) for c in cats], [b.counts.get(c, 0) for c in cats]])
        small = (table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()).min(axis=0)
        if (small >= 5).all():  # no pooling: compare with scipy directly
            ref = stats.chi2_contingency(table, correction=False)
            assert got.statistic == pytest.approx(ref.statistic, rel=1e-9)
            assert got.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)


def test_fast_binomial_and_normal_p_equal_scipy() -> None:
    """The missing-rate test's exact binomial p (a small window against a large baseline) and
    its z-test p skip scipy's per-call overhead; they must be scipy's numbers."""
    from streams.drift_tests.missing_rate import _binomial_p, missing_rate_test

    rng = np.random.default_rng(1)
    for _ in range(500):
        n = int(rng.integers(1, 3000))
        rate = float(rng.uniform(0.0005, 0.2))
        k = min(n, int(rng.poisson(rate * n * float(rng.uniform(0.2, 3.0)))))
        want = stats.binomtest(k, n, rate).pvalue
        assert _binomial_p.__wrapped__(k, n, rate) == pytest.approx(want, rel=1e-10, abs=1e-300)
    assert _binomial_p.__wrapped__(5, 100, 0.05) == 1.0 == stats.binomtest(5, 100, 0.05).pvalue
    r = missing_rate_test(90, 1_500, 4_500, 45_000)  # the z-test path
    want = 2 * stats.norm.sf(abs(r.statistic))
    assert r.p_value == pytest.approx(want, rel=1e-12)


def test_categorical_effects_read_the_counts_the_test_compares() -> None:
    """Found by review: the chi-square reads the kept counts (up to 128 categories), but PSI,
    JS and the new categories still read each side's view folded to its own top 63: on a
    stationary feature of 100 categories a DriftEvent would have shown a PSI of 2.8 (a
    "major shift") and listed 25 categories the baseline holds as new."""
    from streams.baselines import merge_baseline

    rng = np.random.default_rng(3)

    def day(n: int) -> CategoricalSummary:
        c = CategoricalSummary()
        c.add_values([f"v{v}" for v in rng.integers(0, 100, n)])
        return c

    baseline = merge_baseline([day(500) for _ in range(4)])
    assert isinstance(baseline, CategoricalSummary)
    window = day(1000)
    assert psi_categorical(window, baseline) < 0.25
    assert new_categories(window, baseline) == []
