"""The two-sample Kolmogorov-Smirnov test of numeric features, on their summaries."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt
from scipy import special, stats

from streams.buckets import FloatArray
from streams.drift_tests.base import DriftTest, TestResult
from streams.numeric_summary import CdfGrid, NumericSummary
from streams.pair_memo import PairMemo
from streams.slot_series import SlotSpan, pooled

__all__ = [
    "KS_NOISE",
    "Counts",
    "KolmogorovSmirnov",
    "clearly_above",
    "count_below",
    "ks_bounds",
    "ks_pvalue",
    "ks_screen",
    "ks_test",
    "screenable",
    "screened",
    "span_counts",
]

T = TypeVar("T", float, FloatArray)

KS_NOISE: Final = 1.358
"""95% quantile of the Kolmogorov distribution: when nothing changed, D < 1.36 / sqrt(n_eff)
in 95% of samples. Severity reads the effect above that (a 95% lower bound of the change)."""


class KolmogorovSmirnov(DriftTest[NumericSummary]):
    """KS distance D (the largest gap between the two CDFs) as both statistic and effect.

    Severity reads D net of noise, ``KS_NOISE / sqrt(n_eff)``:

    >>> ks, base = KolmogorovSmirnov(), NumericSummary()
    >>> round(ks.debiased_effect(0.305, 64, 40_000, base), 3)     # an hour's look
    0.135
    >>> round(ks.debiased_effect(0.305, 1_500, 40_000, base), 3)  # a whole day
    0.269
    """

    name = "ks"
    kinds = frozenset({"numeric"})

    def run(self, window: NumericSummary, baseline: NumericSummary) -> TestResult:
        return ks_test(window, baseline)

    def run_for_decision(
        self, window: NumericSummary, baseline: NumericSummary, alpha: float
    ) -> TestResult:
        return ks_test(window, baseline, decide_at=alpha)

    def run_many_for_decision(
        self, pairs: Sequence[tuple[NumericSummary | SlotSpan, NumericSummary]], alpha: float
    ) -> list[TestResult]:
        """:meth:`run_for_decision` of each pair; the pairs :func:`ks_screen` proves are no
        discovery at ``alpha`` cost a few shared numpy calls instead of a test each (and a
        :class:`~streams.slot_series.SlotSpan` is pooled only where the screen cannot)."""
        screened = ks_screen(pairs, alpha)
        return [
            ks_test(pooled(w), b, decide_at=alpha) if r is None else r
            for (w, b), r in zip(pairs, screened, strict=True)
        ]

    def noise(self, n_eff: float, baseline: NumericSummary) -> float:
        return KS_NOISE / math.sqrt(n_eff)


def ks_test(
    window: NumericSummary, baseline: NumericSummary, decide_at: float | None = None
) -> TestResult:
    """Two-sample Kolmogorov-Smirnov test.

    ``decide_at``: only whether p <= ``decide_at`` matters (see
    ``DriftTest.run_for_decision``); an exact p that is provably above it is not computed
    (:func:`clearly_above`), which saves the exact distributions' milliseconds at the hourly
    looks, where nearly every p is far above the looks' small alpha.

    Exact D (scipy ``ks_2samp``'s) when both sides still hold their values, and its exact p
    while n * m <= 100,000 (the asymptotic p below beyond). Otherwise D is the
    exact sup-distance between the two estimated CDFs, found by evaluating both at every
    kink/jump (and just left of it); since each estimate is within its ``cdf_error`` of the
    truth, the true D is within ``error_bound`` of it. p uses the asymptotic distribution
    with n_eff = n*m/(n+m), as scipy's ``method="asymp"`` does.

    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> w, b = NumericSummary(), NumericSummary()
    >>> w.add_many(rng.normal(0.5, 1.0, 5_000))
    >>> b.add_many(rng.normal(0.0, 1.0, 50_000))
    >>> r = ks_test(w, b)
    >>> r.p_value < 1e-6, r.exact, r.error_bound < 0.02
    (True, False, True)
    """
    n, m = window.count, baseline.count
    if n == 0 or m == 0:
        raise ValueError("ks_test needs at least one value on each side")
    if window.is_exact and baseline.is_exact:
        d, p = ks_2samp_sorted(window.values(), baseline.values(), _EXACT_2SAMP_CELLS, decide_at)
        return TestResult(d, p, d, 0.0, True, "ks")
    if window.is_exact:
        # A step function against a piecewise-linear CDF with point masses: the sup of the
        # difference sits at the window's values or the baseline's point masses (left or
        # right limit), never strictly between them, so those are all the points needed.
        # The same points as their union (duplicates do not move a maximum), without a sort.
        edges = np.concatenate((window.edges(), baseline.point_masses()))
    else:
        edges = np.union1d(window.edges(), baseline.edges())
    xs = np.concatenate((edges, np.nextafter(edges, -np.inf)))
    d = float(np.max(np.abs(window.cdf(xs) - baseline.cdf(xs))))
    n_eff = max(1, round(n * m / (n + m)))
    lazy = None
    if decide_at is not None and n_eff <= _EXACT_KS_BELOW:
        lazy = clearly_above(d, n_eff, min(n, m), decide_at)
    p_value = ks_pvalue(d, n_eff) if lazy is None else lazy
    return TestResult(d, p_value, d, window.cdf_error + baseline.cdf_error, False, "ks")


def ks_screen(
    pairs: Sequence[tuple[NumericSummary | SlotSpan, NumericSummary]], alpha: float
) -> list[TestResult | None]:
    """For each (window, baseline), a result whose p is provably above ``alpha``, or None
    where :func:`ks_test` must decide (see ``DriftTest.run_for_decision``).

    An hourly look tests every numeric feature and nearly none is a discovery; proving that
    from an upper bound of D is cheap for all features at once. Between two consecutive
    points of the baseline's :meth:`~NumericSummary.cdf_grid`, both CDFs are monotone, so
    ``|F_w - F_b|`` is at most ``max(F_w(right-) - F_b(left), F_b(right-) - F_w(left))``;
    the largest over the cells (and the two open ends) bounds the D :func:`ks_test` computes
    (plus 1e-9 for rounding). Where Stephens' p of that bound is ``clearly_above`` alpha, so
    is the p of the true D (the p falls as D grows) and so, by the margin that function
    documents, is the exact one. The window's values are counted below each pair's grid
    points with a ``searchsorted`` per pair: one over all pairs at once, each on its own
    line of the complex plane, cost 2-4x as much (complex comparisons are slow).

    Only exact windows (every sub-day span, and a window so far of up to 2,048 values) are
    screened; the rest, and pairs too small for :func:`clearly_above`, get None. A span
    given as its slots (:class:`~streams.slot_series.SlotSpan`) is counted per slot, and
    each slot's counts below a baseline's grid are remembered (:func:`_slot_counts`): the
    slot is in up to eight looks' spans against the same baseline, and its span is then
    never pooled nor sorted. The counts add up to the pooled sample's, so the bound is the
    same, bit for bit.

    >>> rng = np.random.default_rng(5)
    >>> base = NumericSummary()
    >>> base.add_many(rng.normal(0, 1, 40_000))
    >>> same, moved = (NumericSummary.of(rng.normal(mu, 1, 64)) for mu in (0.0, 1.5))
    >>> [r is None for r in ks_screen([(same, base), (moved, base)], 0.001)]
    [False, True]
    >>> r = ks_screen([(same, base)], 0.001)[0]
    >>> r.statistic >= ks_test(same, base).statistic, r.p_value > 0.01
    (True, True)
    """
    out: list[TestResult | None] = [None] * len(pairs)
    index: list[int] = []
    grids: list[CdfGrid] = []
    rows: list[Counts] = []
    for k, (w, b) in enumerate(pairs):
        if not w.is_exact or not screenable(w.count, b.count):
            continue
        grid = b.cdf_grid()
        if isinstance(w, SlotSpan):
            counts = span_counts(w.slots, grid)
        else:
            counts = np.empty((2, grid.xs.size), np.int64)
            count_below(w.edges(), grid.xs, counts, presorted=True)
        index.append(k)
        grids.append(grid)
        rows.append(counts)
    if not index:
        return out
    # One row a pair, each grid followed by +inf (see ks_bounds), in one matrix.
    width = max(g.xs.size for g in grids) + 1
    n = np.array([pairs[k][0].count for k in index])
    b_at, b_left = np.ones((len(index), width)), np.ones((len(index), width))
    counts = np.empty((len(index), 2, width), np.int64)
    for j, (grid, row) in enumerate(zip(grids, rows, strict=True)):
        g = grid.xs.size
        b_at[j, :g], b_left[j, :g] = grid.at, grid.left
        counts[j, :, :g], counts[j, :, g:] = row, n[j]
    m = np.array([pairs[k][1].count for k in index])
    d, n_eff, p = ks_bounds(n, m, b_at, b_left, counts)
    proven = screened(n_eff, p, alpha)
    for j, k in enumerate(index):
        if proven[j]:
            bound_d = float(d[j])  # the true D is somewhere in [0, bound_d]
            out[k] = TestResult(bound_d, float(p[j]), bound_d, bound_d, False, "ks")
    return out


IntArray = npt.NDArray[np.integer[Any]]


def ks_bounds(
    n: IntArray, m: IntArray, b_at: FloatArray, b_left: FloatArray, counts: IntArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """:func:`ks_screen`'s arithmetic, a row per pair: a sample of ``n`` values against a
    baseline of ``m``, whose CDF at and just left of each grid point is ``b_at``/``b_left``,
    with ``counts[:, 0]``/``counts[:, 1]`` of the sample's values at or below / below each
    point. Each row's points are followed by at least one +inf (a CDF of 1 both sides, the
    sample's whole count): the cell right of a row's last point is then bounded as beyond
    the last point, and the padding adds cells of 0 (cells are never negative). Returns the
    bound of D, ``n_eff`` and Stephens' p of the bound, per row; a row's figures depend on
    its own data only (elementwise, and a maximum per row), so pairs screened together or
    apart, or with more padding, get them bit for bit."""
    n_w = n.astype(np.float64)[:, None]
    w_at, w_left = counts[:, 0] / n_w, counts[:, 1] / n_w
    # The cell right of each grid point, up to the next one.
    cell = np.maximum(w_left[:, 1:] - b_at[:, :-1], b_left[:, 1:] - w_at[:, :-1])
    bound = np.maximum(cell.max(axis=1), np.maximum(w_left[:, 0], b_left[:, 0]))
    d = np.minimum(bound + 1e-9, 1.0)
    n_f, m_b = n_w[:, 0], m.astype(np.float64)
    n_eff = np.maximum(1.0, np.rint(n_f * m_b / (n_f + m_b)))
    return d, n_eff, _stephens(d, np.sqrt(n_eff))


def screenable(n: Any, m: Any) -> Any:
    """Can :func:`ks_bounds` decide a sample of ``n`` exact values against ``m``? (Smaller
    ones need the exact p.) Of numbers or of arrays, elementwise."""
    return (np.minimum(n, m) >= _LAZY_MIN_N) & (n * m / (n + m) >= _LAZY_MIN_N)


def screened(n_eff: Any, p: Any, alpha: float) -> Any:
    """Does :func:`ks_bounds`' p prove the exact p above ``alpha``? Elementwise."""
    return (n_eff >= _LAZY_MIN_N) & (p >= _lazy_floor(alpha))


Counts = npt.NDArray[np.integer[Any]]
_SLOT_COUNTS: PairMemo[Counts] = PairMemo(kept=1 << 18)
"""Per (slot sample, baseline grid's points): the sample's values <= and < each point."""


def _slot_counts(values: FloatArray, grid: CdfGrid) -> Counts:
    """A slot's values at or below (row 0), and below (row 1), each of ``grid``'s points,
    remembered while the slot's array and the grid live (both are replaced, never changed).
    In the smallest integers that hold them: a slot's sample is 64 values, so one byte a count,
    ~0.6 KiB an entry with its keys (the slots of 8,192 cached windows: ~40 MiB at most)."""
    hit = _SLOT_COUNTS.get(values, grid.xs, 0)  # the grid is a tuple: its points are keyed
    if hit is None:
        dtype = np.uint8 if values.size <= _UINT8_MAX else np.int64
        hit = np.empty((2, grid.xs.size), dtype)
        count_below(values, grid.xs, hit)
        _SLOT_COUNTS.put(values, grid.xs, 0, hit)
    return hit


def count_below(values: FloatArray, xs: FloatArray, out: Counts, presorted: bool = False) -> None:
    """Into ``out``'s two rows: how many of ``values`` are at or below (row 0), and below
    (row 1), each of the sorted ``xs``."""
    v = values
    if not presorted:  # np.sort's own steps, without its wrapper (every new slot, every look)
        v = values.copy()
        v.sort()
    out[0] = v.searchsorted(xs, "right")
    out[1] = v.searchsorted(xs, "left")


def span_counts(slots: Sequence[FloatArray], grid: CdfGrid) -> Counts:
    """:func:`_slot_counts` of a span's slots, added up (in int64): the pooled sample's
    (a span of one slot with values, half of the looks' spans: that slot's own counts)."""
    counts = [_slot_counts(s, grid) for s in slots if s.size]
    if len(counts) == 1:
        return counts[0]
    total = np.zeros((2, grid.xs.size), np.int64)
    for c in counts:
        total += c
    return total


def ks_2samp_sorted(
    a: FloatArray, b: FloatArray, max_exact_cells: float = math.inf, decide_at: float | None = None
) -> tuple[float, float]:
    """scipy's two-sided ``ks_2samp(a, b, method="auto")`` (D, p) for sorted, finite samples,
    without its argument handling, which cost ~80 % of a sub-day look's tests (about 0.6 ms
    a call). The exact p-value is scipy's own computation; where that is unavailable (its
    private helper moved) or fails, scipy's public function answers. Above
    ``max_exact_cells`` (n1 * n2) the exact distribution costs ~0.35 µs per thousand cells
    (0.7 ms at 512 x 2,048): p is then :func:`ks_pvalue`'s, as for every comparison with a
    bucketed summary (within a few % of the exact p there).

    >>> rng = np.random.default_rng(4)
    >>> a, b = np.sort(rng.normal(0.3, 1, 300)), np.sort(rng.normal(0, 1, 1_500))
    >>> ks_2samp_sorted(a, b) == tuple(map(float, stats.ks_2samp(a, b)))
    True
    """
    n1, n2 = int(a.size), int(b.size)
    both = np.concatenate((a, b))
    diffs = (
        np.searchsorted(a, both, side="right") / n1 - np.searchsorted(b, both, side="right") / n2
    )
    d = float(max(float(np.clip(-diffs.min(), 0, 1)), float(diffs.max())))
    n_eff = max(1, round(n1 * n2 / (n1 + n2)))
    if n1 * n2 > max_exact_cells:
        return d, ks_pvalue(d, n_eff)
    if decide_at is not None:
        p_above = clearly_above(d, n_eff, min(n1, n2), decide_at)
        if p_above is not None:
            return d, p_above
    if max(n1, n2) <= _EXACT_2SAMP_MAX_N and _exact_2samp is not None:
        ok, d_exact, p = _exact_2samp(n1, n2, math.gcd(n1, n2), d, "two-sided")
        if ok:
            return float(d_exact), float(p)
    res = stats.ks_2samp(a, b, method="auto")
    return float(res.statistic), float(res.pvalue)


def ks_pvalue(d: float, n_eff: int) -> float:
    """P(D >= d) for the two-sample KS statistic with effective size ``n_eff``.

    scipy's exact ``kstwo.sf`` costs milliseconds from n ~ 100 (30 ms at 40,000) and runs for
    every feature at every look; from n = 60, Stephens' corrected asymptotic form
    (``kolmogorov((sqrt(n) + 0.12 + 0.11/sqrt(n)) * d)``) agrees within 7% relative (measured
    over d in 0.05..0.5 and n in 64..40,000) and costs microseconds. Below n = 60 the exact
    one (~0.3 ms) is remembered: small sub-day spans ask the same (d, n) again and again.

    >>> round(ks_pvalue(0.05, 1500), 4), round(float(stats.kstwo.sf(0.05, 1500)), 4)
    (0.0011, 0.0011)
    """
    if n_eff <= _EXACT_KS_BELOW:
        return _exact_ks_p(d, n_eff)
    en = math.sqrt(n_eff)
    return float(_stephens(d, en))


def clearly_above(d: float, n_eff: int, n_min: int, alpha: float) -> float | None:
    """Stephens' asymptotic p (:func:`ks_pvalue`'s form above n = 60) when it proves the
    exact p is above ``alpha``, else None (the exact p is needed).

    The exact p-values, one-sample (``kstwo``, n <= 60) and two-sample (scipy's exact
    distribution, n * m <= 100,000), are at least 0.36 x this approximation wherever both
    samples have >= 15 values and n_eff >= 15 and the approximation is >= 1e-6 (measured
    over n in 15..60 and d in 0..1, and sample pairs 15..400 x 10..2,048 at their attainable
    d; ``tests/unit/test_summary.py`` checks it on random samples). Asking for ten times
    ``alpha`` leaves a margin of ~3.6x.

    >>> clearly_above(0.1, 40, 40, 0.001) is not None   # p ~ 0.8: not a discovery
    True
    >>> clearly_above(0.4, 40, 40, 0.001) is None       # p ~ 4e-6: compute it exactly
    True
    """
    if n_eff < _LAZY_MIN_N or n_min < _LAZY_MIN_N:
        return None
    en = math.sqrt(n_eff)
    p = float(_stephens(d, en))
    return p if p >= _lazy_floor(alpha) else None


def _stephens(d: T, en: T) -> T:
    """Stephens' asymptotic P(D >= d) at ``en = sqrt(n_eff)``, for a float or an array."""
    return special.kolmogorov((en + 0.12 + 0.11 / en) * d)  # type: ignore[no-any-return]


def _lazy_floor(alpha: float) -> float:
    """The approximate p above which the exact one is proven above ``alpha``."""
    return max(_LAZY_MARGIN * alpha, 1e-6)


_LAZY_MIN_N = 15
_UINT8_MAX: Final = int(np.iinfo(np.uint8).max)
_LAZY_MARGIN = 10.0
_EXACT_KS_BELOW = 60
_EXACT_2SAMP_MAX_N = 10_000  # scipy's own limit for method="auto"
_EXACT_2SAMP_CELLS = 100_000  # exact p up to ~0.1 ms a test
try:  # scipy's exact two-sample distribution (private: checked by the doctest above)
    from scipy.stats._stats_py import _attempt_exact_2kssamp as _exact_2samp
except ImportError:  # pragma: no cover - another scipy: the public function answers
    _exact_2samp = None


@functools.lru_cache(maxsize=1 << 12)
def _exact_ks_p(d: float, n_eff: int) -> float:
    """scipy's exact ``kstwo.sf`` (n <= 60), remembered: small sub-day spans ask the same
    (d, n) again and again (the asymptotic form above it is cheaper than a cache entry)."""
    return float(stats.kstwo.sf(d, n_eff))
