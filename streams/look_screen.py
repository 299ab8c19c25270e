"""Which parts of an hourly look can find nothing, shown for a whole stream at once.

A look judges up to four spans of the open window's recent slots and runs the sequential scan
over them (:class:`~streams.interim_looks.InterimLooks`). Only discoveries count there, and
nearly every part has none. Judged part by part through the generic judge (a span summary, a
job and a result per feature and part, each slot's figures looked up again), that cost ~20 µs
a feature and part, and all of it again for every feature of a wide model whenever one p came
near alpha.

This screen keeps a stream window's numeric features as rows of arrays across its looks
(:class:`NumericRows`): per feature and recent slot, the slot's counts below the baseline's
grid points, computed once, when the slot's sample changes. A look then adds up every span of
every feature, bounds their KS distances, bounds each slot's rank sum from the same counts and
scans their suffixes in a few numpy calls whatever the number of features, and so has each
test's p-value as the judge would compute it, or a bound below it that proves it above alpha:
the KS screen's (``ks_bounds``: the same figures, bit for bit) where it proves the exact p
above alpha, else the exact test's; the scan's from the bounded rank sums where they prove it
above alpha, else from the exact rank sums (``suffix_p``: ranking a slot exactly is a few
numpy calls per feature, and a look needs it for under 1 % of them); the chi-square's own
``run_for_decision`` for categorical spans. (A p above alpha is no discovery whatever it is.)
A part whose p-values hold no Benjamini-Hochberg discovery (the judge's function, per family)
is one the judge would return nothing for, so it is not judged; the others are judged as
before, from scratch. A feature a part finds drifting leaves the later parts' families (the
judge skips a feature found in this window): their p-values are kept by feature, and
Benjamini-Hochberg is asked again of what is left (a feature drifting in every part kept a
wide model's every later part, all its features, from being screened). Its tests are counted
as the judge counts them.

It knows the built-in span and scan tests (KS, chi-square, the mean-shift scan): with any
other test registered for spans or the scan, it shows nothing and every part is judged."""

from __future__ import annotations

import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from streams.categorical_summary import CategoricalSummary
from streams.config import EngineConfig
from streams.decision import benjamini_hochberg, surely_above
from streams.drift_tests import DRIFT_TESTS
from streams.drift_tests.chi2 import ChiSquare
from streams.drift_tests.ks import (
    KolmogorovSmirnov,
    count_below,
    ks_bounds,
    ks_test,
    screenable,
    screened,
)
from streams.drift_tests.mean_scan import (
    MIN_SUFFIX_VALUES,
    MeanShiftScan,
    slot_rank_sum,
    suffix_p,
)
from streams.judge import FeatureInputs
from streams.numeric_summary import CDF_GRID_POINTS, NumericSummary
from streams.recent_slots import RECENT_SLOTS
from streams.segments import is_segment_feature
from streams.slot_series import SlotSpan
from streams.state import FeatureWindow, StreamState, stream_key

__all__ = ["LookScreen", "NumericRows", "RecentOf", "Screened"]

RecentOf = Callable[[str, FeatureWindow], list[tuple[np.ndarray, int]] | None]
"""A feature's recent slot arrays at this look (``FeatureWindow.recent_arrays``, read once)."""

KEPT_ROWS: Final = 8_192
"""Numeric feature rows kept over all streams (~5.3 KiB each, as allocated: ~42 MiB); beyond,
the least recently looked-at streams' rows go, and are built again at their next look. What
a row refers to (its slots' arrays, its baseline's grid) it holds weakly: it keeps none of
them alive."""
_POINTS: Final = CDF_GRID_POINTS + 1
"""A row's grid: the baseline's points, then +inf (at which every value is counted, and
both CDFs are 1: the cell right of the last point is then the judge's own last cell)."""
_UINT8_MAX: Final = int(np.iinfo(np.uint8).max)
_ROW_ARRAYS: Final = (
    "xs", "b_at", "b_left", "counts", "sizes", "ranks", "low", "high", "m", "errors"
)  # fmt: skip
""":class:`NumericRows`' arrays, a row per feature each."""


def _built_in(kind: str, whole: bool, scan: bool, expected: list[type]) -> bool:
    tests = DRIFT_TESTS.for_kind(kind, whole, scan)  # type: ignore[arg-type]
    return [type(t) for t in tests] == expected and all(t.incident_suffix == "" for t in tests)


def _dead() -> None:
    """A weak reference to nothing: what a row's slots and grid start as."""


class NumericRows:
    """One stream window's numeric features at its looks: per feature a row, per recent slot
    (by ring position, ``slot % RECENT_SLOTS``) the slot's size (of finite values), counts below
    the row's grid points, and bounds on its rank sum and the sum itself once needed, with a
    weak reference to the slot array they are of (a slot's array is replaced, never changed,
    when its sample changes: while it lives, the same object is the same sample; once freed,
    the reference is dead and the slot is computed again). A row is reset when its baseline's
    grid is not the one its figures are of (a new baseline, or a live one that grew: the
    grid's CDF array is made anew each time)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.names: list[str] = []
        self.grids: list[Callable[[], object]] = []
        self.arrays: list[list[Callable[[], object]]] = []
        self.xs = np.empty((0, _POINTS))
        """The baseline's grid points, then +inf (where every value is below)."""
        self.b_at = np.empty((0, _POINTS))
        self.b_left = np.empty((0, _POINTS))
        self.counts = np.zeros((0, RECENT_SLOTS, 2, _POINTS), np.uint8)  # a slot's: <= 64
        self.sizes = np.zeros((0, RECENT_SLOTS), np.int64)
        self.ranks = np.zeros((0, RECENT_SLOTS))
        """A slot's rank sum (the scan's), NaN until a look needs it exactly."""
        self.low = np.zeros((0, RECENT_SLOTS))
        """Bounds on a slot's rank sum from its counts (NaN from the slot's fill until a look
        reads them; a new row's padding is never read: every slot a look reads is filled)."""
        self.high = np.zeros((0, RECENT_SLOTS))
        self.m = np.zeros(0, np.int64)
        self.errors = np.zeros(0)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def allocated(self) -> int:
        """Rows of memory held (rows grow by doubling), at least one for the table itself."""
        return max(1, self.m.size)

    def row(self, feature: str, base: NumericSummary) -> int:
        """The feature's row, reset if its baseline's grid is not the one its figures are of."""
        r = self.index.get(feature)
        if r is None:
            r = self.index[feature] = len(self.grids)
            self.names.append(feature)
            self.grids.append(_dead)
            self.arrays.append([_dead] * RECENT_SLOTS)
            self._grow()
        grid = base.cdf_grid()
        if self.grids[r]() is not grid.at:
            g = grid.xs.size
            self.grids[r] = weakref.ref(grid.at)
            self.arrays[r] = [_dead] * RECENT_SLOTS
            self.xs[r, :g], self.xs[r, g:] = grid.xs, np.inf
            self.b_at[r, :g], self.b_at[r, g:] = grid.at, 1.0
            self.b_left[r, :g], self.b_left[r, g:] = grid.left, 1.0
            self.m[r] = base.count
            self.errors[r] = base.cdf_error
        return r

    def _grow(self) -> None:
        n = len(self.grids)
        if n <= self.m.size:
            return
        more = max(n - self.m.size, self.m.size)  # doubling: a wide stream's rows come at once
        for name in _ROW_ARRAYS:
            old = getattr(self, name)
            pad = np.zeros((more, *old.shape[1:]), old.dtype)
            setattr(self, name, np.concatenate((old, pad)))

    def fill(self, r: int, recent: Sequence[tuple[np.ndarray, int]], last: int) -> None:
        """Bring row ``r``'s slots (of the grid :meth:`row` made it for) up to ``recent`` (the
        run of known slots ending at slot ``last``, oldest first, each slot's finite values):
        figures are computed for the slots whose array changed. (A span or a scan tests the
        finite values once there are ``min_window_count`` of them: the missing ones, which
        only a whole window's missing-rate test reads, are not kept.)"""
        arrays, xs = self.arrays[r], self.xs[r]
        for j, (values, _) in enumerate(reversed(recent)):
            pos = (last - j) % RECENT_SLOTS
            if arrays[pos]() is values:
                continue
            arrays[pos] = weakref.ref(values)
            if values.size > _UINT8_MAX and self.counts.dtype == np.uint8:
                self.counts = self.counts.astype(np.int64)  # a slot past the usual sample
            self.sizes[r, pos] = values.size
            count_below(values, xs, self.counts[r, pos])  # finite values: all below +inf
            self.ranks[r, pos] = self.low[r, pos] = self.high[r, pos] = np.nan

    def rank_bounds(self, rows: np.ndarray, pos: np.ndarray) -> None:
        """Bounds on the rank sums of slots ``(rows, pos)`` from their counts, for all at once
        (ranking a slot exactly is a few numpy calls per feature; a look's scan proves nearly
        every feature quiet from these). A value at grid point k has the mid-rank ``(at[k] +
        left[k]) / 2`` (the baseline's CDF at and just left of it, the same figures the exact
        ranking computes), one strictly between points k-1 and k one between ``at[k-1]``
        (or 0) and ``left[k]``, the CDF being monotone; the +inf point closes the last cell.
        Widened by 1e-9 a value, far beyond any rounding of the exact sum."""
        c = self.counts[rows, pos].astype(np.float64)
        at_or_below, below = c[:, 0], c[:, 1]
        at, left = self.b_at[rows], self.b_left[rows]
        on = at_or_below - below
        inside = below
        inside[:, 1:] -= at_or_below[:, :-1]
        before = np.zeros_like(at)
        before[:, 1:] = at[:, :-1]
        size = self.sizes[rows, pos]
        fixed = np.einsum("ij,ij->i", on, at + left) * 0.5 - 0.5 * size
        slack = 1e-9 * (size + 1)
        self.low[rows, pos] = fixed + np.einsum("ij,ij->i", inside, before) - slack
        self.high[rows, pos] = fixed + np.einsum("ij,ij->i", inside, left) + slack


@dataclass(slots=True)
class Screened:
    """What :meth:`LookScreen.quiet` found of a look: its quiet parts (span slot counts; -1
    the scan) and, per part, the tests the judge would count: ``tests`` run, ``skipped``
    (found drifting earlier in the window), and the features without a baseline; and each
    part's p-values by feature (``families``), asked again once a part finds drift
    (:meth:`LookScreen.still_quiet`)."""

    quiet: set[int] = field(default_factory=set)
    tests: Counter[int] = field(default_factory=Counter)
    skipped: Counter[int] = field(default_factory=Counter)
    no_baseline: int = 0
    families: dict[int, _Family] = field(default_factory=dict)

    @property
    def scan(self) -> bool:
        return -1 in self.quiet


@dataclass(slots=True)
class _Family:
    """A part's p-values as the judge would have them, features' and segment features'
    apart (two Benjamini-Hochberg families, as the judge's ``_significant_by_family``),
    with the feature each is of (its incident key: the built-in tests' suffix is empty)."""

    features: list[float] = field(default_factory=list)
    segments: list[float] = field(default_factory=list)
    feature_keys: list[str] = field(default_factory=list)
    segment_keys: list[str] = field(default_factory=list)

    def add(self, p: float, segment: bool, key: str) -> None:
        (self.segments if segment else self.features).append(p)
        (self.segment_keys if segment else self.feature_keys).append(key)

    def __len__(self) -> int:
        return len(self.features) + len(self.segments)

    def without(self, judged: Callable[[str], bool]) -> _Family:
        """The family less the features ``judged`` (found drifting in this window since the
        p-values were found: the judge skips them)."""
        out = _Family()
        for ps, keys, segment in (
            (self.features, self.feature_keys, False),
            (self.segments, self.segment_keys, True),
        ):
            for p, key in zip(ps, keys, strict=True):
                if not judged(key):
                    out.add(p, segment, key)
        return out

    def discovers(self, alpha: float) -> bool:
        """Would Benjamini-Hochberg at ``alpha`` find anything? (The same function on the
        same p-values as the judge: its answer does not depend on their order.)"""
        least = surely_above(alpha)
        return any(
            ps and min(ps) <= least and any(benjamini_hochberg(ps, alpha))
            for ps in (self.features, self.segments)
        )


class LookScreen:
    """Proves parts of a look quiet (see the module). ``stats``: the engine's counters, which
    :meth:`count` adds a quiet part's tests to, as the judge would have.

    >>> LookScreen(EngineConfig(), Counter()).enabled  # the built-in tests
    True
    """

    def __init__(self, config: EngineConfig, stats: Counter[str]) -> None:
        self.config = config
        self.stats = stats
        self.enabled = (
            _built_in("numeric", False, False, [KolmogorovSmirnov])
            and _built_in("categorical", False, False, [ChiSquare])
            and _built_in("numeric", False, True, [MeanShiftScan])
            and _built_in("categorical", False, True, [])
        )
        self._chi2 = ChiSquare()
        self._rows: OrderedDict[tuple[str, float], NumericRows] = OrderedDict()
        self._window_of: dict[str, float] = {}
        self._kept = 0
        """Rows allocated over all the tables (:attr:`NumericRows.allocated`)."""

    def _rows_of(self, stream: StreamState, window: float) -> NumericRows:
        skey = stream_key(stream.tenant, stream.model)
        key = (skey, window)
        rows = self._rows.get(key)
        if rows is not None:
            self._rows.move_to_end(key)
            return rows
        earlier = self._window_of.get(skey)
        if earlier is not None:  # the stream's earlier window: its slots are done with
            gone = self._rows.pop((skey, earlier), None)
            if gone is not None:
                self._kept -= gone.allocated
        rows = self._rows[key] = NumericRows()
        self._window_of[skey] = window
        self._kept += rows.allocated
        return rows

    def _evict(self) -> None:
        """The least recently looked-at tables, beyond :data:`KEPT_ROWS` (never the last)."""
        while len(self._rows) > 1 and self._kept > KEPT_ROWS:
            (skey, _), gone = self._rows.popitem(last=False)
            del self._window_of[skey]
            self._kept -= gone.allocated

    def quiet(
        self,
        stream: StreamState,
        window: float,
        look: int,
        spans: list[int],
        scan: bool,
        inputs: FeatureInputs,
        recent_of: RecentOf,
    ) -> Screened:
        """Which of ``spans`` (slot counts; 0, the window so far, is never screened) and of
        the scan (if it runs) would the judge find nothing in, as the look starts: their
        p-values as the judge would compute them, and no Benjamini-Hochberg discovery among
        them. (A part judged before them that finds drift changes their families: the caller
        then asks :meth:`still_quiet` instead of ``quiet``, which is not updated. Nothing is
        counted yet: see :meth:`count`.)"""
        parts = [k for k in spans if k > 0]
        out = Screened()
        if not self.enabled or not (parts or scan):
            return out
        cfg = self.config
        min_count, alpha = cfg.min_window_count, cfg.interim_alpha
        last_window = stream.incidents.last_window
        table = self._rows_of(stream, window)
        before = table.allocated
        family = {part: _Family() for part in [*parts, -1]}
        numeric = _LookRows(table)
        blind = False
        for feature, kind, fw, baseline in inputs:
            if baseline is None:
                out.no_baseline += 1
                continue
            base = baseline[0]
            was_judged = last_window.get(feature, -1) >= window
            if kind == "numeric":
                recent = recent_of(feature, fw)
                if recent and not base.count:
                    blind = True  # no CDF to rank against (never made so): all judged
                elif recent:
                    r = table.row(feature, base)
                    table.fill(r, recent, look - 1)
                    numeric.add(r, feature, recent, base, was_judged, is_segment_feature(feature))
                continue
            for part in parts:
                summary = fw.span_summary(look - 1, part, min_count)
                # ``count + missing`` is at least ``count``: one check for both of the judge's.
                if summary is None or summary.count < min_count:
                    continue
                if was_judged:
                    out.skipped[part] += 1
                    continue
                out.tests[part] += 1
                assert isinstance(summary, CategoricalSummary)
                result = self._chi2.run_for_decision(summary, base, alpha)
                family[part].add(result.p_value, is_segment_feature(feature), feature)
        self._kept += table.allocated - before
        self._evict()
        if blind:
            return Screened()
        out.families = family
        if numeric.rows:
            numeric.close(look)
            self._spans_p(numeric, parts, family, out)
            if scan:
                self._scan_p(numeric, family[-1], out)
        out.quiet = {part for part in parts if not family[part].discovers(alpha)}
        if scan and not family[-1].discovers(cfg.sequential_alpha):
            out.quiet.add(-1)
        return out

    def part_quiet(
        self,
        screened: Screened,
        part: int,
        stream: StreamState,
        window: float,
        after_drift: bool,
    ) -> bool:
        """Is ``part`` (-1: the scan) quiet: as :meth:`quiet` found it, or, once a part judged
        before it in this look found drift (``after_drift``), as :meth:`still_quiet` finds it
        (asked again only then: it walks the part's whole family)."""
        if after_drift:
            return self.still_quiet(screened, part, stream, window)
        return part in screened.quiet

    def still_quiet(
        self, screened: Screened, part: int, stream: StreamState, window: float
    ) -> bool:
        """Is ``part`` (-1: the scan) quiet once the parts judged before it in this look have
        found drift? The features they found leave its families, as the judge skips them
        (found in this window already), and Benjamini-Hochberg is asked again of what is
        left: fewer tests can make a discovery where more did not, and the feature that
        drifts in every part no longer keeps every later part from being screened. If so,
        its tests of those features count as skipped, as the judge counts them."""
        family = screened.families.get(part)
        if family is None:
            return False
        last_window = stream.incidents.last_window
        left = family.without(lambda key: last_window.get(key, -1) >= window)
        cfg = self.config
        if left.discovers(cfg.sequential_alpha if part == -1 else cfg.interim_alpha):
            return False
        found = len(family) - len(left)
        screened.tests[part] -= found
        screened.skipped[part] += found
        screened.families[part] = left
        return True

    def count(self, screened: Screened, part: int) -> None:
        """Count a quiet part's tests (-1: the scan) as the judge would have."""
        stats = self.stats
        if screened.no_baseline:
            stats["tests_skipped_no_baseline"] += screened.no_baseline
        if screened.skipped[part]:
            stats["tests_skipped_judged"] += screened.skipped[part]
        if screened.tests[part]:
            stats["tests"] += screened.tests[part]
            if part == -1:
                stats["scan_tests"] += screened.tests[part]

    def _spans_p(
        self, rows: _LookRows, parts: list[int], family: dict[int, _Family], out: Screened
    ) -> None:
        """The KS p-values of the spans of ``parts`` slots, every numeric feature's as the
        judge computes it: the screen's, from the bounds of all spans of all features at once,
        where it proves the exact p above alpha (``ks_bounds``' figures: a row's depend on
        its own data only, so bounded together or part by part they are the same bit for
        bit), else the exact test's. (Part by part, the numpy calls' own cost was most of a
        narrow model's screening: four spans a look. Together, a wide model's temporaries are
        all its spans' at once: ~9 KB a feature and span, ~15-30 MB for 800 numeric
        features.)"""
        if not parts:
            return
        alpha = self.config.interim_alpha
        lengths = np.array(parts)
        # A span of k slots holds the k newest; a row whose run of known slots is shorter
        # has no such span.
        n_all = np.cumsum(rows.sizes, axis=1)[:, np.minimum(lengths, RECENT_SLOTS) - 1]
        has = (rows.runs[:, None] >= lengths) & (n_all >= self.config.min_window_count)
        chosen = rows.choose_all(has, parts, out)
        which, where = np.nonzero(chosen.T)  # part by part, each part's rows in order
        if not where.size:
            return
        table, sel, n = rows.table, rows.index[where], n_all[where, which]
        m = table.m[sel]
        p = np.full(sel.size, np.nan)
        fits = np.flatnonzero(screenable(n, m))  # the others are too small to screen
        if fits.size:
            at = sel[fits]
            pos = rows.newest_first
            counts = np.empty((fits.size, 2, _POINTS), np.int64)
            # fits is in order, so each part's pairs are a block of it
            edges = np.searchsorted(which[fits], np.arange(len(parts) + 1)).tolist()
            for j, part in enumerate(parts):
                a, b = edges[j], edges[j + 1]
                if a == b:
                    continue
                if part == 1:
                    counts[a:b] = table.counts[at[a:b], pos[0]]
                else:
                    mine = at[a:b, None]
                    counts[a:b] = table.counts[mine, pos[:part]].sum(axis=1, dtype=np.int64)
            _, n_eff, bound_p = ks_bounds(
                n[fits], m[fits], table.b_at[at], table.b_left[at], counts
            )
            proven = screened(n_eff, bound_p, alpha)
            p[fits[proven]] = bound_p[proven]
        ks = where.tolist()
        spans = [parts[j] for j in which.tolist()]
        for j in np.flatnonzero(np.isnan(p)).tolist():
            k, part = ks[j], spans[j]
            cut = rows.recents[k][-part:]
            span = SlotSpan(tuple(v for v, _ in cut), sum(missing for _, missing in cut))
            p[j] = ks_test(span.summary(), rows.bases[k], decide_at=alpha).p_value
        for k, part, pj in zip(ks, spans, p.tolist(), strict=True):
            family[part].add(pj, rows.segments[k], rows.features[k])

    def _scan_p(self, rows: _LookRows, family: _Family, out: Screened) -> None:
        """Every numeric feature's scan p as the judge computes it, or a bound below it above
        alpha (all at once): the slots' rank sums are bounded from their counts, and only a
        feature whose bound allows a p at or below alpha has its slots ranked exactly. A p
        above alpha is no Benjamini-Hochberg discovery whatever its value, nor moves another
        p's rank below it: the family decides as it would on the exact p-values."""
        min_count = self.config.min_window_count
        inside = np.arange(RECENT_SLOTS)[None, :] < rows.runs[:, None]  # a row's run of slots
        size = np.where(inside, rows.sizes, 0)
        chosen = rows.choose(size.sum(axis=1) >= min_count, -1, out)
        if not chosen.size:
            return
        table, sel, inside, size = rows.table, rows.index[chosen], inside[chosen], size[chosen]
        at = (sel[:, None], rows.newest_first)
        exact = table.ranks[at]
        stale = inside & np.isnan(exact) & np.isnan(table.low[at])
        if stale.any():
            which, where = np.nonzero(stale)
            table.rank_bounds(sel[which], np.asarray(rows.newest_first)[where])
        known = ~np.isnan(exact)
        low = np.where(inside, np.where(known, exact, table.low[at]), 0.0)
        high = np.where(inside, np.where(known, exact, table.high[at]), 0.0)
        reach = np.maximum(np.abs(np.cumsum(low, axis=1)), np.abs(np.cumsum(high, axis=1)))
        leasts = np.full(sel.size, max(MIN_SUFFIX_VALUES, min_count))
        errors, m = table.errors[sel], table.m[sel]
        p = suffix_p(reach, size, leasts, errors, m, summed=True)
        near = np.flatnonzero(p <= surely_above(self.config.sequential_alpha))
        if near.size:
            for k in near.tolist():
                row, recent = int(sel[k]), rows.recents[int(chosen[k])]
                base = rows.bases[int(chosen[k])]
                for slot in np.flatnonzero(inside[k] & ~known[k]).tolist():
                    ranked = slot_rank_sum(recent[-1 - slot][0], base)
                    exact[k, slot] = table.ranks[row, rows.newest_first[slot]] = ranked
            sums = np.where(inside[near], exact[near], 0.0)
            p[near] = suffix_p(sums, size[near], leasts[near], errors[near], m[near])
        for j, pj in enumerate(p.tolist()):
            k = int(chosen[j])
            family.add(pj, rows.segments[k], rows.features[k])


class _LookRows:
    """A look's numeric features in their :class:`NumericRows`, in judging order: their rows,
    recent slots, baselines, whether found drifting in this window already and whether
    segment features; after :meth:`close`, as arrays, with the rows' slot sizes by
    ``newest_first`` (the ring positions of the slots before the look, newest first)."""

    def __init__(self, table: NumericRows) -> None:
        self.table = table
        self.rows: list[int] = []
        self.features: list[str] = []
        self.recents: list[list[tuple[np.ndarray, int]]] = []
        self.bases: list[NumericSummary] = []
        self.segments: list[bool] = []
        self._runs: list[int] = []
        self._judged: list[bool] = []

    def add(
        self,
        row: int,
        feature: str,
        recent: list[tuple[np.ndarray, int]],
        base: NumericSummary,
        judged: bool,
        segment: bool,
    ) -> None:
        self.rows.append(row)
        self.features.append(feature)
        self.recents.append(recent)
        self.bases.append(base)
        self.segments.append(segment)
        self._runs.append(len(recent))
        self._judged.append(judged)

    def close(self, look: int) -> None:
        self.index = np.array(self.rows, np.intp)
        self.runs = np.array(self._runs)
        self.judged = np.array(self._judged, bool)
        self.newest_first = [(look - 1 - j) % RECENT_SLOTS for j in range(RECENT_SLOTS)]
        self.sizes = self.table.sizes[self.index[:, None], self.newest_first]

    def choose_all(self, has: np.ndarray, parts: list[int], out: Screened) -> np.ndarray:
        """Where the features that ``has`` a test in each of ``parts`` (a column each) were
        not found drifting already, as a mask; counted as the judge counts them (tests, and
        skipped)."""
        has_judged = (has & self.judged[:, None]).sum(axis=0).tolist()
        chosen: np.ndarray = has & ~self.judged[:, None]
        tests = chosen.sum(axis=0).tolist()
        for part, skipped, run in zip(parts, has_judged, tests, strict=True):
            out.skipped[part] += skipped
            out.tests[part] += run
        return chosen

    def choose(self, has: np.ndarray, part: int, out: Screened) -> np.ndarray:
        """The positions of the features that ``has`` a test in ``part`` and were not found
        drifting already; counted as the judge counts them (tests, and skipped)."""
        return np.flatnonzero(self.choose_all(has[:, None], [part], out)[:, 0])
