"""A sequential scan for small shifts of a numeric feature: every recent span, at every look.

Why beside the KS looks: the looks test the last 1, 2, 4 and 8 slots only where such a span
ends on a multiple of its length, and KS spends its power on every kind of change. A small
shift of the location (0.25-0.5 sd) then waits for the 8-slot span (issue 12: 8.8 h at 0.25 sd
where river's ADWIN took 4.3 h). This test ranks each recent value against the baseline (its
mid-rank ``u = (F(x-) + F(x)) / 2`` under the baseline's CDF: uniform with mean 1/2 when
nothing changed, whatever the feature's distribution) and, at every look, sums ``u - 1/2``
over every suffix of the recent slots (the last 1, 2, ..., 8 slots). A suffix's sum is the
Mann-Whitney statistic of those values against the baseline (efficiency 0.95 of a t-test on
normal data, valid on any); the largest standardised suffix is a scan statistic in the spirit
of a CUSUM's restart at the best change point. Its p-value is Bonferroni over the suffixes
(the number the look could try), so at each look the chance of a false alarm is at most the
look's alpha, and the engine splits its own share of the window's alpha over the looks.

The bucketed baseline's CDF is within ``cdf_error`` of its data; that bias is taken off each
suffix's sum before it is standardised, so an approximate baseline makes the test weaker, not
wrong. The baseline's own sampling noise is in the variance (Mann-Whitney's, ``N (1 + N/m) /
12`` for N values against m).

>>> import numpy as np
>>> from streams.numeric_summary import NumericSummary
>>> from streams.slot_series import SlotSeries
>>> rng = np.random.default_rng(7)
>>> base = NumericSummary()
>>> base.add_many(rng.normal(0.0, 1.0, 6_000))
>>> calm = SlotSeries(tuple(rng.normal(0.0, 1.0, 62) for _ in range(8)), 0, 3600.0)
>>> MeanShiftScan().run(calm, base).p_value > 0.01
True
>>> late = tuple(rng.normal(0.0 if i < 2 else 0.3, 1.0, 62) for i in range(8))
>>> r = MeanShiftScan().run(SlotSeries(late, 0, 3600.0), base)
>>> r.p_value < 1e-4, round(r.effect_size, 2)
(True, 0.1)
>>> MeanShiftScan().describe(SlotSeries(late, 0, 3600.0), base)["span_seconds"]
21600.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy import special

from streams.drift_tests.base import DriftTest, TestResult
from streams.numeric_summary import NumericSummary
from streams.pair_memo import PairMemo
from streams.slot_series import SlotSeries

__all__ = [
    "MIN_SUFFIX_VALUES",
    "MeanShiftScan",
    "ScanFinding",
    "best_suffixes",
    "scan",
    "scan_many",
    "scan_p",
    "slot_rank_sum",
    "suffix_p",
    "suffix_scan",
]

MIN_SUFFIX_VALUES: Final = 30
"""A suffix with fewer values is not tried (its normal approximation would be poor, and
it could not show a shift the floor counts)."""
_SQRT2: Final = math.sqrt(2.0)
RANK_SUMS_KEPT: Final = 1 << 18
"""A bound on the slot rank sums remembered (a slot's sample against a baseline): between two
looks only the newest slot changes, so the other seven are read back rather than ranked
again. A sum is forgotten when its sample is (see :class:`RankSums`), so what is kept is
what the decoded windows hold; the bound only guards against a leak."""
Window = SlotSeries | NumericSummary


# Not frozen: one is made per feature scanned at a look, and a frozen dataclass's __init__ costs 6x.
@dataclass(slots=True)
class ScanFinding:
    """The best suffix: ``z`` its standardised sum (signed), ``values`` how many it holds,
    ``slots`` how many slots, ``tried`` how many suffixes were tried, ``mean_rank`` the mean
    mid-rank net of the baseline's CDF error (1/2: no shift)."""

    z: float
    values: int
    slots: int
    tried: int
    mean_rank: float


def mid_ranks(values: np.ndarray, baseline: NumericSummary) -> np.ndarray:
    """Each value's mid-rank ``(F(x-) + F(x)) / 2`` under the baseline's CDF
    (:meth:`NumericSummary.mid_ranks`)."""
    return baseline.mid_ranks(values)


def mean_mid_rank(window: NumericSummary, baseline: NumericSummary) -> float:
    """The window's mean mid-rank under the baseline, from the two CDFs: exact for step and
    piecewise-linear ones alike (both are linear between the union of their edges, where
    the integral of one against the other is the interval's mass times the midpoint)."""
    if window.is_exact:
        return float(np.mean(mid_ranks(window.values(), baseline)))
    xs = np.union1d(window.edges(), baseline.edges())
    left = np.nextafter(xs, -np.inf)
    fw, fw_left = window.cdf(xs), window.cdf(left)
    fb, fb_left = baseline.cdf(xs), baseline.cdf(left)
    jumps = float(np.sum((fw - fw_left) * 0.5 * (fb + fb_left)))
    between = float(np.sum((fw_left[1:] - fw[:-1]) * 0.5 * (fb[:-1] + fb_left[1:])))
    return jumps + between


class RankSums:
    """Per (slot sample, baseline), ``sum(mid-rank - 1/2)``: remembered while both are the
    same objects (a slot's array is replaced, never changed, when its sample changes; the
    baseline's count is in the key, for a one-window baseline that is a live summary), and
    forgotten when the sample is (a fixed number of entries, as before, was ranked over again
    on every look once a look's features had more slots than it held, 7/8 of a 1,000-feature
    scan's work), or beyond ``kept``, oldest first (:class:`~streams.pair_memo.PairMemo`).
    The same figure as computing it again, so results never depend on what is remembered."""

    def __init__(self, kept: int = RANK_SUMS_KEPT) -> None:
        self._sums: PairMemo[float] = PairMemo(kept)

    @property
    def hits(self) -> int:
        return self._sums.hits

    def __len__(self) -> int:
        return len(self._sums)

    def __call__(self, values: np.ndarray, baseline: NumericSummary) -> float:
        return self.many((values,), baseline)[0]

    def many(self, slots: Sequence[np.ndarray], baseline: NumericSummary) -> list[float]:
        """Each slot's sum, in order (a look asks for a feature's eight at once)."""
        version = baseline.count
        get, put = self._sums.get, self._sums.put
        out = []
        for values in slots:
            if not values.size:
                out.append(0.0)  # a slot without traffic (one shared array, never freed)
                continue
            total = get(values, baseline, version)
            if total is None:
                total = slot_rank_sum(values, baseline)
                put(values, baseline, version, total)
            out.append(total)
        return out


def slot_rank_sum(values: np.ndarray, baseline: NumericSummary) -> float:
    """A slot's ``sum(mid-rank - 1/2)`` (``math.fsum``: exactly rounded, so the same whatever
    the order its values came in); 0 for a slot without values."""
    if not values.size:
        return 0.0
    return math.fsum((mid_ranks(values, baseline) - 0.5).tolist())


_RANK_SUMS = RankSums()


def scan(window: Window, baseline: NumericSummary) -> ScanFinding | None:
    """The best suffix of ``window``'s slots (a summary is one slot), or None when no suffix
    has :data:`MIN_SUFFIX_VALUES` values (or the series' ``min_values``).

    A slot's sum is ``math.fsum``'s: exactly rounded, so it does not depend on the order the
    values arrived in (live batches and a backtest keep a slot's first values in different
    orders)."""
    return scan_many([(window, baseline)])[0]


def scan_many(pairs: Sequence[tuple[Window, NumericSummary]]) -> list[ScanFinding | None]:
    """:func:`scan` of each (window, baseline), the suffixes of all of them searched at
    once: a look scans every numeric feature, and a loop over eight suffixes each cost more
    in the interpreter than the arithmetic. The same figures as one at a time, bit for bit:
    cumulative sums are sequential in numpy too, and every other step is elementwise IEEE
    arithmetic in the same order (``n / m`` of exact integers, correctly rounded both ways).

    >>> import numpy as np
    >>> rng = np.random.default_rng(2)
    >>> base = NumericSummary()
    >>> base.add_many(rng.normal(0.0, 1.0, 5_000))
    >>> quiet = SlotSeries(tuple(rng.normal(0.0, 1.0, 40) for _ in range(8)), 0, 3600.0)
    >>> moved = SlotSeries(tuple(rng.normal(1.0, 1.0, 40) for _ in range(3)), 0, 3600.0)
    >>> a, b, none = scan_many([(quiet, base), (moved, base), (SlotSeries((), 0, 3600.0), base)])
    >>> (a.slots, a.tried) == (scan(quiet, base).slots, 8), b.z > 5, b.tried, none
    (True, True, 3, None)
    """
    out: list[ScanFinding | None] = [None] * len(pairs)
    rows: list[int] = []
    sums: list[list[float]] = []  # per pair, each slot's sum, newest first
    sizes: list[list[int]] = []
    errors: list[float] = []
    leasts: list[int] = []
    counts: list[int] = []
    for k, (window, baseline) in enumerate(pairs):
        m = baseline.count
        if m == 0 or window.count == 0:
            continue
        # The bias either CDF's approximation can put into a mean mid-rank.
        error = baseline.cdf_error
        least = MIN_SUFFIX_VALUES
        if isinstance(window, NumericSummary):
            error += window.cdf_error
            slot_sums = [window.count * (mean_mid_rank(window, baseline) - 0.5)]
            slot_sizes = [window.count]
        else:
            least = max(least, window.min_values)
            newest_first = window.slots[::-1]
            slot_sums = _RANK_SUMS.many(newest_first, baseline)
            slot_sizes = [s.size for s in newest_first]
        rows.append(k)
        sums.append(slot_sums)
        sizes.append(slot_sizes)
        errors.append(error)
        leasts.append(least)
        counts.append(m)
    if not rows:
        return out
    for k, found in zip(rows, best_suffixes(sums, sizes, errors, leasts, counts), strict=True):
        out[k] = found
    return out


def best_suffixes(
    sums: Sequence[list[float]],
    sizes: Sequence[list[int]],
    errors: Sequence[float],
    leasts: Sequence[int],
    counts: Sequence[int],
) -> list[ScanFinding | None]:
    """:func:`scan_many`'s arithmetic: per row, each slot's rank sum and size (newest
    first), the CDF error, the fewest values a suffix is tried with and the baseline's count;
    its best suffix (None: none tried). A row's figures depend on it alone."""
    width = max(map(len, sums))
    # Padded with zeros (slots that add nothing), in one conversion each.
    total = np.array([row + [0.0] * (width - len(row)) for row in sums], np.float64)
    size = np.array([row + [0] * (width - len(row)) for row in sizes], np.int64)
    return suffix_scan(total, size, np.array(leasts), np.array(errors), np.array(counts))


def suffix_scan(
    total: np.ndarray, size: np.ndarray, leasts: np.ndarray, errors: np.ndarray, counts: np.ndarray
) -> list[ScanFinding | None]:
    """:func:`best_suffixes` of rows already as matrices (``total``, each slot's rank sum,
    and ``size``, newest slot first, zeros past a row's slots; ``total`` is overwritten)."""
    s = _Suffixes(total, size, leasts, errors, counts)
    times = s.tried.tolist()
    out: list[ScanFinding | None] = []
    for j, b in enumerate(s.best.tolist()):
        if not times[j]:
            out.append(None)
            continue
        values = int(s.n[j, b])
        mean_rank = 0.5 + math.copysign(float(s.net[j, b]), float(s.total[j, b])) / values
        out.append(ScanFinding(float(s.z[j, b]), values, b + 1, times[j], mean_rank))
    return out


def suffix_p(
    total: np.ndarray,
    size: np.ndarray,
    leasts: np.ndarray,
    errors: np.ndarray,
    counts: np.ndarray,
    summed: bool = False,
) -> np.ndarray:
    """:func:`scan_p` of each row's :func:`suffix_scan` finding, as an array (the same
    figures: elementwise, in the same order of operations). ``summed``: ``total`` holds each
    suffix's sum already (a bound on its size, say: the p is then a bound below the p of any
    sums within it, the standardised sum growing with the sum's size; not the same figures
    as any one finding's)."""
    s = _Suffixes(total, size, leasts, errors, counts, summed)
    z = np.take_along_axis(s.z, s.best[:, None], axis=1)[:, 0]
    with np.errstate(invalid="ignore"):  # rows without a tried suffix: p = 1 below
        p = np.fmin(1.0, s.tried * special.erfc(np.abs(z) / _SQRT2))  # as min(1.0, nan)
    return np.where(s.tried > 0, p, 1.0)


class _Suffixes:
    """Every suffix's standardised sum, and each row's best (``best``, of ``tried``)."""

    __slots__ = ("best", "n", "net", "total", "tried", "z")

    def __init__(
        self,
        total: np.ndarray,
        size: np.ndarray,
        leasts: np.ndarray,
        errors: np.ndarray,
        counts: np.ndarray,
        summed: bool = False,
    ) -> None:
        if not summed:
            np.cumsum(total, axis=1, out=total)  # each suffix's sum: slot by slot, in order
        n = np.cumsum(size, axis=1)
        # A suffix is tried once it holds enough values, and only where its oldest slot adds
        # some (else it is the same suffix as the shorter one); padding adds none.
        tried = (n >= leasts[:, None]) & (size > 0)
        m_b = counts.astype(np.int64)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            net = np.maximum(0.0, np.abs(total) - n * errors.astype(np.float64)[:, None])
            z = np.copysign(net / np.sqrt(n * (1 + n / m_b) / 12.0), total)
        strength = np.where(tried, np.abs(z), -1.0)
        self.best = np.argmax(strength, axis=1)  # the first of the strongest, as a loop
        self.tried = tried.sum(axis=1)
        self.total, self.n, self.net, self.z = total, n, net, z


def scan_p(found: ScanFinding | None) -> float:
    """The scan's p: Bonferroni over the suffixes tried (1 where none was)."""
    if found is None:
        return 1.0
    return min(1.0, found.tried * float(special.erfc(abs(found.z) / _SQRT2)))


def shift_in_sd(mean_rank: float) -> float:
    """The shift of a normal distribution, in its sd, that gives this mean mid-rank against
    the unshifted one (``E[Phi(X)] = Phi(delta / sqrt(2))`` for ``X ~ N(delta, 1)``)."""
    p = min(max(mean_rank, 1e-12), 1 - 1e-12)
    return float(_SQRT2 * special.ndtri(p))


def tv_of_shift(delta: float) -> float:
    """Total variation distance between two normals ``delta`` sd apart (the scale of the
    other tests' effects: KS distance and TV coincide for a normal shift)."""
    return math.erf(abs(delta) / (2 * _SQRT2))


class MeanShiftScan(DriftTest[Window]):
    """The scan as a plug-in: runs at every hourly look on the recent slots only
    (``scan_only``), never on whole windows or the dyadic spans."""

    name = "mean_scan"
    kinds = frozenset({"numeric"})
    scan_only = True

    def run(self, window: Window, baseline: Window) -> TestResult:
        assert isinstance(baseline, NumericSummary)
        return self._result(scan(window, baseline), window, baseline)

    def run_many_for_decision(
        self, pairs: Sequence[tuple[Window, Window]], alpha: float
    ) -> list[TestResult]:
        """:meth:`run` of each pair (the exact results), their suffixes searched at once."""
        numeric = [(w, b) for w, b in pairs if isinstance(b, NumericSummary)]
        assert len(numeric) == len(pairs), "the scan's baselines are numeric summaries"
        found = scan_many(numeric)
        return [self._result(f, w, b) for f, (w, b) in zip(found, numeric, strict=True)]

    def _result(
        self, found: ScanFinding | None, window: Window, baseline: NumericSummary
    ) -> TestResult:
        if found is None:
            return TestResult(0.0, 1.0, 0.0, baseline.cdf_error, False, self.name)
        p = scan_p(found)
        effect = tv_of_shift(shift_in_sd(found.mean_rank))
        exact = baseline.is_exact and not (isinstance(window, NumericSummary) and window.cdf_error)
        return TestResult(found.z, p, effect, 0.0, exact, self.name, sample_size=found.values)

    def noise(self, n_eff: float, baseline: Window) -> float:
        """The effect a 95% noise excursion of the mean mid-rank would read as."""
        return tv_of_shift(shift_in_sd(0.5 + 1.96 / math.sqrt(12.0 * max(n_eff, 1.0))))

    def describe(self, window: Window, baseline: Window) -> dict[str, object]:
        """Where the shift shows: the span of the best suffix, its values, and the shift in
        baseline sd (signed; the normal-equivalent of the mean mid-rank)."""
        assert isinstance(baseline, NumericSummary)
        found = scan(window, baseline)
        if found is None:
            return {}
        out: dict[str, object] = {
            "shift_sd": round(shift_in_sd(found.mean_rank), 4),
            "span_values": found.values,
        }
        if isinstance(window, SlotSeries):
            out["span_seconds"] = found.slots * window.slot_seconds
        return out
