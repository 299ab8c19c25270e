"""``ks_screen``: the batched proof that a look's KS tests are no discovery.

It may only ever skip a test whose exact p is above alpha; these check that on random
pairs of the looks' shapes (exact sub-day samples against exact and bucketed baselines,
shifted or not, with ties and point masses), and that it does skip most clean ones, so the
fast path is really taken.
"""

from __future__ import annotations

import numpy as np
import pytest

from streams.drift_tests import DRIFT_TESTS
from streams.drift_tests.ks import ks_screen, ks_test
from streams.numeric_summary import NumericSummary

ALPHA = 0.001


def _baseline(rng: np.random.Generator, kind: str, size: int) -> NumericSummary:
    s = NumericSummary()
    if kind == "normal":
        s.add_many(rng.normal(0, 1, size))
    elif kind == "ties":  # few distinct values: point masses in the bucket set
        s.add_many(rng.integers(0, 12, size).astype(np.float64))
    else:  # a mix of a point mass and a skewed continuous part, plus an unfolded tail
        s.add_many(np.where(rng.random(size) < 0.3, 0.0, rng.lognormal(0, 1, size)))
        s.extend(rng.lognormal(0, 1, 300))
    return s


def _window(rng: np.random.Generator, kind: str, size: int, shift: float) -> NumericSummary:
    if kind == "normal":
        raw = rng.normal(shift, 1, size)
    elif kind == "ties":
        raw = (rng.integers(0, 12, size) + round(shift * 3)).astype(np.float64)
    else:
        raw = np.where(rng.random(size) < 0.3, 0.0, rng.lognormal(shift, 1, size))
    return NumericSummary.of(raw)


@pytest.mark.parametrize("kind", ["normal", "ties", "mixed"])
@pytest.mark.parametrize("baseline_size", [400, 40_000])
def test_a_screened_pair_is_never_a_discovery(kind: str, baseline_size: int) -> None:
    rng = np.random.default_rng(11)
    base = _baseline(rng, kind, baseline_size)
    pairs = [
        (_window(rng, kind, int(size), shift), base)
        for size in rng.integers(10, 520, 300)
        for shift in (float(rng.choice([0.0, 0.0, 0.1, 0.3, 1.0])),)
    ]
    screened = ks_screen(pairs, ALPHA)
    exact = [ks_test(w, b) for w, b in pairs]
    skipped = 0
    for bound, truth in zip(screened, exact, strict=True):
        if bound is None:
            continue
        skipped += 1
        assert bound.statistic >= truth.statistic  # an upper bound of D
        assert bound.p_value > ALPHA and truth.p_value > ALPHA  # no discovery either way
        assert bound.test == "ks" and not bound.exact
    # Nearly every pair is clean at a look's alpha: most of them must take the fast path.
    assert skipped >= 0.6 * sum(r.p_value > 0.05 for r in exact)


def test_the_decision_of_every_pair_is_what_the_exact_test_decides() -> None:
    rng = np.random.default_rng(12)
    base = _baseline(rng, "normal", 30_000)
    pairs = [(_window(rng, "normal", 64, s), base) for s in np.linspace(0, 1.2, 200)]
    ks = DRIFT_TESTS["ks"]
    batched = ks.run_many_for_decision(pairs, ALPHA)
    one_by_one = [ks.run_for_decision(w, b, ALPHA) for w, b in pairs]
    assert [r.p_value <= ALPHA for r in batched] == [r.p_value <= ALPHA for r in one_by_one]
    # Discoveries are computed exactly, by the same function: the same figures.
    assert [r for r in batched if r.p_value <= ALPHA] == [
        r for r in one_by_one if r.p_value <= ALPHA
    ]
    assert 0 < sum(r.p_value <= ALPHA for r in batched) < len(pairs)


def test_windows_it_cannot_screen_are_left_to_the_exact_test() -> None:
    rng = np.random.default_rng(13)
    base = _baseline(rng, "normal", 5_000)
    bucketed = NumericSummary()
    bucketed.add_many(rng.normal(0, 1, 5_000))  # a window past its exact capacity
    tiny = NumericSummary.of(rng.normal(0, 1, 8))  # below clearly_above's sizes
    assert ks_screen([(bucketed, base), (tiny, base)], ALPHA) == [None, None]
    assert ks_screen([], ALPHA) == []


def test_the_cdf_grid_is_cached_until_a_value_arrives() -> None:
    s = NumericSummary()
    s.add_many(np.random.default_rng(14).normal(size=10_000))
    grid = s.cdf_grid()
    assert s.cdf_grid() is grid and grid.xs.size == 128
    assert grid.xs[0] == s.min and grid.xs[-1] == s.max
    assert np.all(np.diff(grid.at) >= 0) and np.all(grid.left <= grid.at)
    s.add(5.0)  # now in the unfolded tail: the CDF moved
    assert s.cdf_grid() is not grid


def test_the_cdf_grid_is_not_served_stale_after_a_fold() -> None:
    """A fold can bring back the grid's key (count, tail length): a tail of NaN folded
    away, then as many new values (found by review)."""
    rng = np.random.default_rng(15)
    s = NumericSummary()
    s.add_many(rng.normal(size=5_000))
    s.extend(np.full(1_000, np.nan))
    stale = s.cdf_grid()
    s.add_many(np.array([np.nan]))  # folds the tail: no value, the same count
    s.extend(np.full(1_000, 100.0))
    fresh = s.cdf_grid()
    assert fresh is not stale and fresh.xs[-1] == 100.0
    window = NumericSummary.of(rng.normal(size=2_000))
    assert ks_screen([(window, s)], ALPHA) == [None]  # D ~ 0.17: a discovery


def test_pairs_screened_together_or_apart_get_the_same_figures() -> None:
    """Each pair is a row of one padded matrix (its grid, then +inf): grids of other sizes
    beside it, and more padding, leave its bound and p as they are, bit for bit."""
    rng = np.random.default_rng(16)
    kinds = ("normal", "ties", "mixed")
    bases = [_baseline(rng, kind, 20_000) for kind in kinds]
    assert len({b.cdf_grid().xs.size for b in bases}) == 2  # 128 and 12 (few distinct values)
    pairs = [
        (_window(rng, kind, 64, shift), b)
        for kind, b in zip(kinds, bases, strict=True)
        for shift in (0.0, 0.2)
    ]
    together = ks_screen(pairs, ALPHA)
    apart = [ks_screen([pair], ALPHA)[0] for pair in pairs]
    assert together == apart
    assert sum(r is not None for r in together) >= 3
