"""``NumericSummary``: a bounded, mergeable summary of one numeric feature in one window.

Exact up to ``EXACT_CAPACITY`` values, then a bucket set (:mod:`streams.buckets`, which
explains why its CDF error bound is true, not probabilistic) with exact count, moments, min
and max. Pure statistics (numpy only, no streaming framework imports) so the same code runs
in the Faust agents, in backtests and in unit tests.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from streams.buckets import (
    Buckets,
    FloatArray,
    empty_buckets,
    fold_points,
    max_coverage,
    merge_buckets,
    points_to_buckets,
    reduce_buckets,
    sort_runs,
    sorted_unique,
    sorted_unique_counts,
    unique_of_runs,
)

__all__ = ["CDF_GRID_POINTS", "CdfGrid", "NumericSummary"]

FOLD_CHUNK: Final = 4096
"""Values folded into the bucket set at a time. Folds happen at fixed points of the value
sequence (every ``FOLD_CHUNK`` values after the summary leaves exact mode), never because
someone read or stored the summary: so the bucket set depends only on the values and their
order, and a worker that persists after every batch holds the same summary as a backtest that
reads it at every hourly look. Between folds the newest values are kept exactly (the *tail*)
and reads combine both; a window's tail is folded when it closes (:meth:`fold_tail`).

Why 4,096: a fold of 1,024 values took 0.34 ms and one of 4,096 0.59 (``bench.bucket_reduction``):
~0.26 ms of it is fixed cost in the bucket reduction, whatever it folds, and on a busy stream
folds were the engine's largest cost per value (a quarter of a worker's computing with
envelopes of 500). The price is an open window's stored tail, up to 32 KiB
(8 bytes a value) where 1,024 kept it under 8 KiB; a closed one has none."""

_HEADER: Final = struct.Struct("<4sBBxxqqddddI")
_TAIL: Final = struct.Struct("<I")
_MAGIC: Final = b"DWNS"
_VERSION: Final = 2  # 2: the unfolded tail follows the arrays (1: none)
_MODE_EXACT: Final = 0
_MODE_BUCKETS: Final = 1


def _chan(
    n_a: int, mean_a: float, m2_a: float, n_b: int, mean_b: float, m2_b: float
) -> tuple[int, float, float]:
    """Chan et al.'s exact merge of two (count, mean, M2)."""
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, mean_a + delta * n_b / n, m2_a + m2_b + delta * delta * n_a * n_b / n


class CdfGrid(NamedTuple):
    """A summary's CDF at a few points (see :meth:`NumericSummary.cdf_grid`)."""

    xs: FloatArray
    at: FloatArray
    """cdf(x)"""
    left: FloatArray
    """cdf just left of x (the next float down)"""


_NO_TAIL: Final = np.empty(0, np.float64)
_NO_TAIL.flags.writeable = False
"""The buffer of a summary with no unfolded values (shared: never written, only replaced)."""

CDF_GRID_POINTS: Final = 128
"""Points of a :class:`CdfGrid`: the CDF rises at most ~1/128 of the mass between two."""


def _ramp_at(knots: FloatArray, lo: FloatArray, hi: FloatArray, w: FloatArray) -> FloatArray:
    """``sum_b w_b * clip((k - lo_b) / (hi_b - lo_b), 0, 1)`` at each knot ``k``, in
    O((knots + buckets) log) rather than as a knots x buckets matrix (4 ms for a merged
    baseline of 384 buckets, 15 % of a backtest's time).

    Buckets wholly at or below a knot add their whole (integer) weight: a cumulative sum of
    integers, exact in any order, so where no knot falls strictly inside a bucket (buckets
    that do not overlap) the ramp is exactly the matrix product's. Knots inside a bucket (an
    overlap left by a merge) add their fraction on top: the sum may then differ from the
    product's in its last bits (~1e-16 relative), as two BLAS builds' products do.

    >>> lo, hi, w = np.array([0.0, 1.0, 1.5]), np.array([1.0, 3.0, 2.0]), np.array([2.0, 4.0, 1.0])
    >>> knots = np.unique(np.concatenate((lo, hi)))
    >>> _ramp_at(knots, lo, hi, w).tolist()
    [0.0, 2.0, 3.0, 5.0, 7.0]
    >>> (np.clip((knots[:, None] - lo) / (hi - lo), 0.0, 1.0) @ w).tolist()
    [0.0, 2.0, 3.0, 5.0, 7.0]
    """
    by_hi = np.argsort(hi, kind="stable")
    whole = np.concatenate(([0.0], np.cumsum(w[by_hi])))
    ramp = whole[np.searchsorted(hi[by_hi], knots, side="right")]
    first = np.searchsorted(knots, lo, side="right")
    inside = np.searchsorted(knots, hi, side="left") - first
    inside = np.maximum(inside, 0)
    total = int(inside.sum())
    if total:
        bucket = np.repeat(np.arange(lo.size), inside)
        knot = np.arange(total) - np.repeat(np.cumsum(inside) - inside, inside) + first[bucket]
        frac = np.clip((knots[knot] - lo[bucket]) / (hi[bucket] - lo[bucket]), 0.0, 1.0)
        np.add.at(ramp, knot, frac * w[bucket])
    return ramp


# Not frozen: one is made per read of a summary's tail, and a frozen dataclass's __init__ costs 6x.
@dataclass(slots=True)
class _Tail:
    size: int
    """Buffered values it was made from (the cache key)."""
    values: FloatArray
    """Sorted finite values."""
    nonfinite: int
    mean: float
    m2: float


class NumericSummary:
    """Bounded, mergeable summary of a numeric feature's values in one window.

    Up to ``EXACT_CAPACITY`` values are kept exactly, so small windows get exact tests;
    beyond that, at most ``BUCKETS`` buckets ``(lo, hi, weight)`` with exact count, moments,
    min and max. ``cdf()`` is then within ``cdf_error`` of the true empirical CDF of every
    value ever added (:mod:`streams.buckets` explains why the bound holds). NaN and +/-inf count
    as missing: they have no place in a CDF and would poison the moments.

    >>> import numpy as np
    >>> s = NumericSummary()
    >>> s.add_many(np.random.default_rng(7).normal(size=20_000))
    >>> s.add(float("nan"))
    >>> s.count, s.missing, s.is_exact
    (20000, 1, False)
    >>> round(float(s.cdf(np.array([0.0]))[0]), 2), s.cdf_error < 0.01
    (0.5, True)
    >>> len(s.to_bytes()) < 16 * 1024
    True
    """

    EXACT_CAPACITY: int = 2048
    BUCKETS: int = 384

    def __init__(self) -> None:
        self._buf: FloatArray = _NO_TAIL
        """The unfolded tail in its first ``_held`` places: float64, 8 bytes a value (a list
        of floats took 32), grown as a list grows, at most ``FOLD_CHUNK``."""
        self._held = 0
        self._count = 0
        self._missing = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._min = math.inf
        self._max = -math.inf
        self._values: FloatArray | None = np.empty(0, np.float64)  # None once bucketed
        self._buckets: Buckets = empty_buckets()
        self._coverage = 0  # max bucket coverage, in counts
        self._cdf_cache: tuple[FloatArray, FloatArray, FloatArray, FloatArray] | None = None
        self._tail_cache: _Tail | None = None
        self._grid_cache: tuple[tuple[int, int, int], CdfGrid] | None = None

    # ----------------------------------------------------------------- ingestion

    @property
    def _pending(self) -> FloatArray:
        """The unfolded tail, as it arrived (a view: copy what must outlive the next value)."""
        return self._buf[: self._held]

    def _room(self, n: int) -> FloatArray:
        """The buffer, with space for ``n`` more values (up to ``FOLD_CHUNK`` in all)."""
        need = self._held + n
        if need > self._buf.size:
            grown = np.empty(min(FOLD_CHUNK, max(need, 2 * self._buf.size, 16)), np.float64)
            grown[: self._held] = self._buf[: self._held]
            self._buf = grown
        return self._buf

    def _keep_from(self, cut: int) -> None:
        """Drop the first ``cut`` buffered values (folded): the rest move to the front."""
        rest = self._held - cut
        if rest:
            self._buf[:rest] = self._buf[cut : self._held].copy()
        self._held = rest

    def add(self, x: float) -> None:
        """O(1): values are buffered and folded in bulk with numpy (see ``FOLD_CHUNK``)."""
        self._room(1)[self._held] = x
        self._held += 1
        if self._held >= FOLD_CHUNK:
            self._drain()

    def add_many(self, xs: npt.NDArray[Any] | list[float]) -> None:
        """Bulk construction (offline, tests): everything buffered and ``xs`` folded at once."""
        self._fold_all()
        self._ingest(np.asarray(xs, dtype=np.float64).ravel())

    def extend(self, values: FloatArray) -> None:
        """:meth:`add` for each of ``values``, in order: folded at the same points of the
        sequence as one at a time, so the summary is the same too."""
        n = int(values.size)
        held = self._held
        end = held + n
        if n > 0 and end < FOLD_CHUNK and end <= self._buf.size:
            # The usual batch: into the buffer's room, no fold due (a wide model's batch
            # hands every feature's summary a few values).
            self._buf[held:end] = values
            self._held = end
            return
        i = 0
        while i < n:
            chunk = values[i : i + FOLD_CHUNK - self._held]
            held = self._held
            self._room(chunk.size)[held : held + chunk.size] = chunk
            self._held = held + chunk.size
            i += chunk.size
            if self._held >= FOLD_CHUNK:
                self._drain()

    @classmethod
    def of(cls, values: FloatArray, missing: int = 0) -> NumericSummary:
        """A new summary of finite ``values`` (plus ``missing``): the same as adding them to an
        empty one, in a few numpy calls (the sub-day looks build one per feature and span)."""
        out = cls()
        out._missing = missing
        if values.size > cls.EXACT_CAPACITY:
            out._ingest(values)
            return out
        if values.size:
            v = np.sort(values)
            mean = float(v.sum()) / v.size  # np.mean's own sum and division, without its wrapper
            out._values = v
            out._count = int(v.size)
            out._mean = mean
            out._m2 = float(np.square(v - mean).sum())
            out._min, out._max = float(v[0]), float(v[-1])
        return out

    def add_missing(self, n: int = 1) -> None:
        if n < 0:
            raise ValueError("n must be >= 0")
        self._missing += n

    def _drain(self) -> None:
        """Fold what the schedule says is due: in exact mode every buffered value (exact
        values do not depend on when they are sorted in) up to and including the one that
        passes ``EXACT_CAPACITY``; in bucketed mode whole ``FOLD_CHUNK``s, oldest first."""
        self._tail_cache = None
        self._grid_cache = None  # keyed by sizes a fold can bring back (a tail of NaN)
        if self._values is not None and self._held:
            raw = self._pending
            finite = np.flatnonzero(np.isfinite(raw))
            room = self.EXACT_CAPACITY - int(self._values.size)
            cut = raw.size if finite.size <= room else int(finite[room]) + 1
            self._ingest(raw[:cut])  # read before the buffer moves
            self._keep_from(cut)
        while self._values is None and self._held >= FOLD_CHUNK:
            self._ingest(self._buf[:FOLD_CHUNK])
            self._keep_from(FOLD_CHUNK)
        if not self._held and self._values is not None:
            self._buf = _NO_TAIL  # an exact summary read: no buffer until values come

    def _fold(self) -> None:
        """Make the summary readable: exact mode folds (cheap, order-free); a bucketed one
        keeps its tail, which the readers combine with the buckets (:meth:`_tail`)."""
        if self._held and self._values is not None:
            self._drain()

    def _fold_all(self) -> None:
        """Fold the tail too (bulk construction only: it moves the fold schedule)."""
        self._drain()
        if self._held:
            self._tail_cache = None
            self._ingest(self._pending)
            self._held = 0
            self._buf = _NO_TAIL

    def fold_tail(self) -> bool:
        """Fold the unfolded tail into the buckets now; whether there was one. For a window
        that closed: late values aside, nothing more comes, and its bytes are kept for weeks.
        It moves the fold schedule, so it must be called at a point of the value sequence the
        same in every run (a window's close), never because the summary was read or stored.

        >>> s = NumericSummary()
        >>> s.extend(np.arange(5_000.0))
        >>> s.has_tail, s.fold_tail(), s.has_tail, s.count, s.fold_tail()
        (True, True, False, 5000, False)
        """
        self._fold()
        if not self._held:
            return False
        self._fold_all()
        return True

    def _tail(self) -> _Tail:
        """The unfolded values of a bucketed summary: sorted finite values, non-finite count,
        and their moments (cached until the next value arrives)."""
        hit = self._tail_cache
        if hit is None or hit.size != self._held:
            raw = self._pending
            finite = np.sort(raw[np.isfinite(raw)])
            mean = float(finite.mean()) if finite.size else 0.0
            m2 = float(np.square(finite - mean).sum()) if finite.size else 0.0
            hit = self._tail_cache = _Tail(self._held, finite, raw.size - finite.size,
                                           mean, m2)  # fmt: skip
        return hit

    def _moments(self) -> tuple[int, int, float, float, float, float]:
        """(count, missing, mean, M2, min, max) of every value, the tail included."""
        self._fold()
        base = (self._count, self._missing, self._mean, self._m2, self._min, self._max)
        if not self._held:
            return base
        t = self._tail()
        if not t.values.size:
            return (self._count, self._missing + t.nonfinite, *base[2:])
        n, mean, m2 = _chan(self._count, self._mean, self._m2, int(t.values.size), t.mean, t.m2)
        return (
            n,
            self._missing + t.nonfinite,
            mean,
            m2,
            min(self._min, float(t.values[0])),
            max(self._max, float(t.values[-1])),
        )

    def _ingest(self, batch: FloatArray) -> None:
        finite = np.isfinite(batch)
        if not finite.all():
            self._missing += int(batch.size - finite.sum())
            batch = batch[finite]
        if batch.size == 0:
            return
        self._cdf_cache = None
        self._grid_cache = None
        if self._values is not None:
            values = sort_runs(np.concatenate((self._values, np.sort(batch))))
            # The moments of all the values, not a merge of the chunks they came in: an exact
            # summary folds whenever it is read, and its bytes must not depend on when that
            # was (a look more or less, live or in a backtest). As NumericSummary.of does.
            self._count = int(values.size)
            self._mean = float(values.mean())
            self._m2 = float(np.square(values - self._mean).sum())
            self._min, self._max = float(values[0]), float(values[-1])
            if values.size <= self.EXACT_CAPACITY:
                self._values = values
                return
            self._values = None
            self._set_buckets(points_to_buckets(*sorted_unique_counts(values), self.BUCKETS))
        else:
            mean_b = float(batch.mean())
            m2_b = float(np.square(batch - mean_b).sum())
            self._combine_moments(
                int(batch.size), mean_b, m2_b, float(batch.min()), float(batch.max())
            )
            points = sorted_unique_counts(np.sort(batch))
            self._set_buckets(fold_points(self._buckets, *points, self.BUCKETS))

    def _combine_moments(self, n_b: int, mean_b: float, m2_b: float, lo: float, hi: float) -> None:
        """Chan et al. parallel update: exact merge of (count, mean, M2)."""
        self._count, self._mean, self._m2 = _chan(
            self._count, self._mean, self._m2, n_b, mean_b, m2_b
        )
        self._min = min(self._min, lo)
        self._max = max(self._max, hi)

    def _set_buckets(self, buckets: Buckets) -> None:
        self._buckets = buckets
        self._coverage = max_coverage(*buckets)
        self._cdf_cache = None

    # ----------------------------------------------------------------- read side

    # The counts without a tail (every baseline, most windows read at a look) are the fields:
    # they are read for every pair of every test.
    @property
    def count(self) -> int:
        if not self._held:
            return self._count
        self._fold()
        return self._count + (int(self._tail().values.size) if self._held else 0)

    @property
    def missing(self) -> int:
        if not self._held:
            return self._missing
        self._fold()
        return self._missing + (self._tail().nonfinite if self._held else 0)

    @property
    def mean(self) -> float:
        """Mean of non-missing values (0.0 when empty)."""
        return self._moments()[2]

    @property
    def m2(self) -> float:
        """Sum of squared deviations from the mean (Welford's M2)."""
        return self._moments()[3]

    @property
    def min(self) -> float:
        """Exact minimum (+inf when empty, the identity for merging)."""
        return self._moments()[4]

    @property
    def max(self) -> float:
        """Exact maximum (-inf when empty)."""
        return self._moments()[5]

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1); 0.0 with fewer than two values."""
        count, _, _, m2, _, _ = self._moments()
        return m2 / (count - 1) if count >= 2 else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)

    @property
    def has_tail(self) -> bool:
        """Values not yet folded into the buckets (see ``FOLD_CHUNK``)."""
        self._fold()
        return bool(self._held)

    @property
    def is_exact(self) -> bool:
        if self._held:
            self._fold()
        return self._values is not None

    @property
    def cdf_error(self) -> float:
        """Max |cdf(x) - true empirical CDF(x)| over all x; 0.0 in exact mode (the tail is
        exact: it adds to the count, not to the error)."""
        if self._held:
            self._fold()
        if self._values is not None or self._count == 0:
            return 0.0
        return self._coverage / self.count

    def values(self) -> FloatArray:
        """The sorted values (exact mode only)."""
        self._fold()
        if self._values is None:
            raise ValueError("summary is bucketed; values are no longer kept exactly")
        return self._values.copy()

    def cdf(self, xs: npt.ArrayLike) -> FloatArray:
        """Fraction of values <= x (interpolated inside buckets in bucketed mode)."""
        self._fold()
        if self._count == 0:
            raise ValueError("cdf of an empty summary")
        x = np.asarray(xs, dtype=np.float64)
        if self._values is not None:
            return self._values.searchsorted(x, "right") / self._count
        # Methods and minimum/maximum, not np.searchsorted and np.clip: the same figures
        # without their Python wrappers (~3 µs a call; the scan ranks every new slot).
        # Each part only where there is one (a baseline of continuous values has no point
        # buckets, nor a tail once closed): the CDF ranks every new slot at every look.
        knots, ramp, points, point_cum = self._cdf_tables()
        below: FloatArray
        if knots.size:
            below = np.interp(x, knots, ramp, left=0.0, right=ramp[-1])
        else:
            below = np.zeros(x.shape)
        if points.size:
            below = below + point_cum[points.searchsorted(x, "right")]
        n = self._count
        if self._held:
            below = below + self._tail().values.searchsorted(x, "right")
            n = self.count
        return np.minimum(np.maximum(below / n, 0.0), 1.0)

    def mid_ranks(self, xs: FloatArray) -> FloatArray:
        """Each x's mid-rank ``(F(x-) + F(x)) / 2``, ``F`` being :meth:`cdf` and ``F(x-)``
        its value at the double just below x (one call for both sides: the CDF is
        elementwise, so the same figures as two).

        In exact mode the CDF is a count, and the count at or below the double just below x
        is the count below x (no double lies between them): one search each way, with the
        same divisions and sum. A look ranks every new slot of every numeric feature, and a
        model of a few hundred predictions a day has exact baselines.

        >>> s = NumericSummary.of(np.array([1.0, 2.0, 2.0, 3.0]))
        >>> s.mid_ranks(np.array([0.5, 1.0, 2.0, 2.5])).tolist()
        [0.0, 0.125, 0.5, 0.75]
        """
        self._fold()
        if self._values is not None and self._count:
            n = self._count
            right = self._values.searchsorted(xs, "right") / n
            return 0.5 * (right + self._values.searchsorted(xs, "left") / n)
        both = self.cdf(np.concatenate((xs, np.nextafter(xs, -np.inf))))
        return 0.5 * (both[: xs.size] + both[xs.size :])

    def _cdf_tables(self) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Piecewise-linear part evaluated at its knots, plus the step part (point buckets)."""
        if self._cdf_cache is None:
            lo, hi, w = self._buckets
            wide = lo < hi
            wlo, whi, ww = lo[wide], hi[wide], w[wide].astype(np.float64)
            knots = unique_of_runs(np.concatenate((wlo, whi)))
            ramp = _ramp_at(knots, wlo, whi, ww)
            order = np.argsort(lo[~wide], kind="stable")
            points = lo[~wide][order]
            point_cum = np.concatenate(([0.0], np.cumsum(w[~wide][order].astype(np.float64))))
            self._cdf_cache = (knots, ramp, points, point_cum)
        return self._cdf_cache

    def cdf_grid(self, points: int = CDF_GRID_POINTS) -> CdfGrid:
        """At most ``points`` x's (sorted; the smallest and largest edges among them) with
        :meth:`cdf` at each and just left of each: enough to bound the CDF anywhere, since it
        is monotone (:func:`streams.drift_tests.ks.ks_screen`). Cached until a value arrives.

        >>> s = NumericSummary.of(np.array([1.0, 2.0, 2.0, 3.0]))
        >>> xs, at, left = s.cdf_grid()
        >>> xs.tolist(), at.tolist(), left.tolist()
        ([1.0, 2.0, 3.0], [0.25, 0.75, 1.0], [0.0, 0.25, 0.75])
        """
        if self._held:
            self._fold()
        key = (self._count, self._held, points)
        hit = self._grid_cache
        if hit is not None and hit[0] == key:
            return hit[1]
        edges = self.edges()
        if self._values is not None:
            edges = sorted_unique(edges)  # exact values repeat; bucketed edges are unique
        if edges.size > points:
            edges = edges[np.unique(np.linspace(0, edges.size - 1, points).round().astype(np.intp))]
        grid = CdfGrid(edges, self.cdf(edges), self.cdf(np.nextafter(edges, -np.inf)))
        self._grid_cache = (key, grid)
        return grid

    def edges(self) -> FloatArray:
        """Every x where the estimated CDF has a kink or a jump (read-only in exact mode)."""
        self._fold()
        if self._values is not None:
            return self._values
        edges = np.concatenate(self._buckets[:2])
        if self._held:
            edges = np.concatenate((edges, self._tail().values))
        return unique_of_runs(edges)

    def point_masses(self) -> FloatArray:
        """The x of every zero-width bucket and tail value, sorted: where the bucketed CDF
        jumps (the exact KS statistic against a step function needs only these and the
        step's own points)."""
        self._fold()
        points = self._cdf_tables()[2]
        if self._held:
            return np.union1d(points, self._tail().values)
        return points

    def _folded(self) -> NumericSummary:
        """This summary with its tail folded in: itself when there is none, else a copy (a
        merge needs one bucket set, and must not move this summary's fold schedule)."""
        self._fold()
        if not self._held:
            return self
        out = type(self)()
        out._count, out._missing = self._count, self._missing
        out._mean, out._m2, out._min, out._max = self._mean, self._m2, self._min, self._max
        out._values = None
        out._buckets, out._coverage = self._buckets, self._coverage
        out._ingest(self._pending)
        return out

    # ----------------------------------------------------------------- merge

    def merge(self, other: NumericSummary) -> NumericSummary:
        """A new summary of both windows' values; the inputs are unchanged."""
        a, b = self._folded(), other._folded()
        out = type(self)()  # a subclass keeps its (smaller) capacity
        out._missing = a._missing + b._missing  # the tails' non-finite values included
        for part in (a, b):
            if part._count:
                out._combine_moments(part._count, part._mean, part._m2, part._min, part._max)
        if a._values is None and b._values is not None:
            a, b = b, a  # exact side (if any) first
        if a._values is not None and b._values is not None:
            values = sort_runs(np.concatenate((a._values, b._values)))
            if values.size <= out.EXACT_CAPACITY:
                out._values = values
                return out
            out._values = None
            out._set_buckets(points_to_buckets(*sorted_unique_counts(values), out.BUCKETS))
        elif a._values is not None:
            out._values = None
            if a._values.size:
                merged = fold_points(b._buckets, *sorted_unique_counts(a._values), out.BUCKETS)
            else:
                merged = b._buckets
            out._set_buckets(merged)
        else:
            out._values = None
            out._set_buckets(merge_buckets(a._buckets, b._buckets, out.BUCKETS))
        return out

    @classmethod
    def merge_all(cls, parts: Sequence[NumericSummary]) -> NumericSummary:
        """One summary of many windows' values, reduced once (a baseline of 7-30 days).

        Merging pairwise reduces the bucket set after every step: k windows cost k - 1
        reductions, each adding its own approximation. Here the buckets of all parts are pooled
        and reduced once (exact parts folded in as points): fewer rounds of work, and a bound
        (``cdf_error``) as tight on average (true, as always).

        >>> import numpy as np
        >>> rng = np.random.default_rng(5)
        >>> days = [NumericSummary.of(rng.normal(0, 1, 3_000)) for _ in range(7)]
        >>> merged = NumericSummary.merge_all(days)
        >>> merged.count, merged.cdf_error < 0.01
        (21000, True)
        >>> xs = np.linspace(-2, 2, 9)
        >>> truth = np.mean([d.cdf(xs) for d in days], axis=0)  # equal weights
        >>> bool(np.all(np.abs(merged.cdf(xs) - truth) <= merged.cdf_error + 1e-12))
        True
        """
        out = cls()
        values: list[FloatArray] = []
        bucketed: list[Buckets] = []
        for part in parts:
            part._fold()
            out._missing += part._missing
            if part._count:
                out._combine_moments(part._count, part._mean, part._m2, part._min, part._max)
            if part._values is not None:
                values.append(part._values)
            else:
                bucketed.append(part._buckets)
            if part._held:  # a bucketed part's tail joins as points
                tail = part._tail()
                out._missing += tail.nonfinite
                if tail.values.size:
                    v = tail.values
                    out._combine_moments(int(v.size), tail.mean, tail.m2, float(v[0]), float(v[-1]))
                    values.append(v)
        points = sort_runs(np.concatenate(values)) if values else np.empty(0, np.float64)
        if not bucketed:
            if points.size <= out.EXACT_CAPACITY:
                out._values = points
                return out
            out._values = None
            out._set_buckets(points_to_buckets(*sorted_unique_counts(points), out.BUCKETS))
            return out
        out._values = None
        pooled = reduce_buckets(
            np.concatenate([b[0] for b in bucketed]),
            np.concatenate([b[1] for b in bucketed]),
            np.concatenate([b[2] for b in bucketed]),
            out.BUCKETS,
        )
        if points.size:
            pooled = fold_points(pooled, *sorted_unique_counts(points), out.BUCKETS)
        out._set_buckets(pooled)
        return out

    # ----------------------------------------------------------------- serialization

    def to_bytes(self) -> bytes:
        """Fixed ``struct`` header + raw little-endian arrays, then the unfolded tail as it
        arrived (<= ~41.3 KiB; none once the window closed); no pickle."""
        self._fold()
        mode = _MODE_EXACT if self._values is not None else _MODE_BUCKETS
        if self._values is not None:
            n = self._values.size
            body = self._values.astype("<f8").tobytes()
        else:
            lo, hi, w = self._buckets
            n = lo.size
            body = lo.astype("<f8").tobytes() + hi.astype("<f8").tobytes()
            body += w.astype("<i8").tobytes()
        tail = self._pending.astype("<f8").tobytes()
        body += _TAIL.pack(self._held) + tail
        header = _HEADER.pack(
            _MAGIC,
            _VERSION,
            mode,
            self._count,
            self._missing,
            self._mean,
            self._m2,
            self._min,
            self._max,
            n,
        )
        return header + body

    @classmethod
    def from_bytes(cls, raw: bytes) -> NumericSummary:
        if len(raw) < _HEADER.size:
            raise ValueError("truncated NumericSummary")
        magic, version, mode, count, missing, mean, m2, lo_v, hi_v, n = _HEADER.unpack_from(raw)
        if magic != _MAGIC or version not in (1, _VERSION):
            raise ValueError("not a NumericSummary (bad magic or version)")
        width = 8 if mode == _MODE_EXACT else 24
        end = _HEADER.size + width * n
        pending = _NO_TAIL
        if version >= 2:
            if len(raw) < end + _TAIL.size:
                raise ValueError("corrupt NumericSummary (no tail length)")
            (tail,) = _TAIL.unpack_from(raw, end)
            if tail >= FOLD_CHUNK or (tail and (mode == _MODE_EXACT or n == 0)):
                raise ValueError("corrupt NumericSummary (tail)")
            if len(raw) == end + _TAIL.size + 8 * tail:
                pending = np.frombuffer(raw, "<f8", tail, end + _TAIL.size).astype(np.float64)
            end += _TAIL.size + 8 * tail
        if mode not in (_MODE_EXACT, _MODE_BUCKETS) or len(raw) != end:
            raise ValueError("corrupt NumericSummary (mode or length)")
        out = cls()
        out._count, out._missing = count, missing
        out._mean, out._m2, out._min, out._max = mean, m2, lo_v, hi_v
        off = _HEADER.size
        if mode == _MODE_EXACT:
            values = np.frombuffer(raw, "<f8", n, off).astype(np.float64)
            # Unsorted values are corrupt: a pairwise comparison, a third of np.diff's cost
            # (every baseline window read pays it) and the same verdict, NaN and inf included.
            if n != count or n > cls.EXACT_CAPACITY or (values[1:] < values[:-1]).any():
                raise ValueError("corrupt NumericSummary (exact values)")
            out._values = values
        else:
            lo = np.frombuffer(raw, "<f8", n, off).astype(np.float64)
            hi = np.frombuffer(raw, "<f8", n, off + 8 * n).astype(np.float64)
            w = np.frombuffer(raw, "<i8", n, off + 16 * n).astype(np.int64)
            if n > cls.BUCKETS or (lo > hi).any() or (w <= 0).any() or int(w.sum()) != count:
                raise ValueError("corrupt NumericSummary (buckets)")
            out._values = None
            out._set_buckets((lo, hi, w))
        out._buf, out._held = pending, int(pending.size)
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NumericSummary):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        mode = "exact" if self.is_exact else f"buckets={self._buckets[0].size}"
        return (
            f"NumericSummary(count={self.count}, missing={self.missing}, "
            f"mean={self.mean:.6g}, std={self.std:.6g}, {mode}, cdf_error={self.cdf_error:.4g})"
        )
