"""``streams.buckets._reduce`` against the plain form of its algorithm.

The reduction's rounds avoid three generic steps (a row sort of each pair's endpoints, a
sparse table for range maxima, a three-key lexsort) with shortcuts that hold only because of
invariants: buckets sorted by ``hi``, ``lo <= hi``, whole-count weights. The reference below
is the algorithm written without them; both must give the same buckets, bit for bit, on
inputs that probe the shortcuts: heavy overlap, ties, wide buckets, points, big weights.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from streams.buckets import (
    Buckets,
    FloatArray,
    IntArray,
    _absorb,
    _cheapest_first,
    _cheapest_minima,
    _containers,
    _reduce,
    max_coverage,
)


def _sparse_max(cov: FloatArray) -> FloatArray:
    n = cov.size
    levels = max(1, n.bit_length())
    table = np.zeros((levels, n), np.float64)
    table[0] = cov
    span = 1
    for k in range(1, levels):
        table[k, : n - span] = np.maximum(table[k - 1, : n - span], table[k - 1, span:])
        span *= 2
    return table


def _range_max(table: FloatArray, start: IntArray, end: IntArray) -> FloatArray:
    level = np.frexp((end - start).astype(np.float64))[1] - 1
    out: FloatArray = np.maximum(table[level, start], table[level, end - (1 << level)])
    return out


def reference_reduce(lo: FloatArray, hi: FloatArray, w: IntArray, limit: int) -> Buckets:
    order = np.lexsort((lo, hi))
    lo, hi, w = lo[order], hi[order], w[order]
    if lo.size > 1:
        same = (lo[1:] == lo[:-1]) & (hi[1:] == hi[:-1])
        if same.any():
            starts = np.flatnonzero(np.concatenate(([True], ~same)))
            lo = np.minimum.reduceat(lo, starts)
            hi = np.maximum.reduceat(hi, starts)
            w = np.add.reduceat(w, starts)
    while lo.size > limit:
        n = lo.size
        grid = np.unique(np.concatenate((lo, hi)))
        ilo = np.searchsorted(grid, lo)
        ihi = np.searchsorted(grid, hi)
        wf = w.astype(np.float64)
        delta = np.bincount(ilo, wf, grid.size + 1) - np.bincount(ihi, wf, grid.size + 1)
        table = _sparse_max(np.cumsum(delta)[: grid.size])
        a0, a1, b0, b1 = ilo[:-1], ihi[:-1], ilo[1:], ihi[1:]
        wa, wb = wf[:-1], wf[1:]
        cuts = np.sort(np.stack((np.minimum(a0, b0), a0, a1, b0, b1), axis=1), axis=1)
        peak = np.zeros(n - 1, np.float64)
        for j in range(4):
            s, e = cuts[:, j], cuts[:, j + 1]
            piece = e > s
            if not piece.any():
                continue
            s, e = s[piece], e[piece]
            rise = np.where((a0[piece] <= s) & (s < a1[piece]), 0.0, wa[piece])
            rise += np.where((b0[piece] <= s) & (s < b1[piece]), 0.0, wb[piece])
            peak[piece] = np.maximum(peak[piece], _range_max(table, s, e) + rise)
        pairs = n - 1
        idx = np.arange(pairs)
        rank = np.empty(pairs, np.int64)
        rank[np.lexsort((idx & 1, wa + wb, peak))] = idx
        left = np.concatenate(([pairs], rank[:-1]))
        right = np.concatenate((rank[1:], [pairs]))
        chosen = np.flatnonzero((rank < left) & (rank < right) & (rank < n - limit))
        lo, hi, w = lo.copy(), hi.copy(), w.copy()
        lo[chosen] = np.minimum(lo[chosen], lo[chosen + 1])
        hi[chosen] = hi[chosen + 1]
        w[chosen] += w[chosen + 1]
        keep = np.ones(n, bool)
        keep[chosen + 1] = False
        lo, hi, w = lo[keep], hi[keep], w[keep]
    return lo, hi, w


def pooled_days(rng: np.random.Generator, days: int, per_day: int, width: float) -> Buckets:
    """Several days' bucket sets pooled, as a baseline merge pools them: overlapping
    buckets of similar weight, some of them points."""
    los, his, ws = [], [], []
    for day in range(days):
        centre = np.sort(rng.normal(day * 0.05, 1.0, per_day))
        span = np.abs(rng.normal(0.0, width, per_day)) * (rng.random(per_day) < 0.8)
        los.append(centre)
        his.append(centre + span)
        ws.append(rng.integers(1, 40, per_day))
    return np.concatenate(los), np.concatenate(his), np.concatenate(ws).astype(np.int64)


def coarse(rng: np.random.Generator) -> Buckets:
    lo, hi, w = pooled_days(rng, 5, 250, 0.3)
    return np.round(lo, 1), np.round(hi, 1), w


def heavy(rng: np.random.Generator) -> Buckets:
    lo, hi, _ = pooled_days(rng, 5, 200, 0.05)
    return lo, hi, rng.integers(1, 10**9, lo.size).astype(np.int64)


CASES: dict[str, Callable[[np.random.Generator], Buckets]] = {
    "baseline of 7 days": lambda rng: pooled_days(rng, 7, 384, 0.02),
    "wide buckets": lambda rng: pooled_days(rng, 3, 300, 0.5),
    "points only": lambda rng: pooled_days(rng, 4, 200, 0.0),
    "ties on a coarse grid": coarse,
    "heavy weights": heavy,
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_reduction_is_the_reference_algorithm(case: str, seed: int) -> None:
    lo, hi, w = CASES[case](np.random.default_rng(seed))
    hi = np.maximum(lo, hi)  # rounding may not flip a bucket
    for limit in (64, 384):
        got = _reduce(lo, hi, w, limit)
        want = reference_reduce(lo, hi, w, limit)
        assert got[0].size <= limit
        for g, r in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, r)
        assert int(got[2].sum()) == int(w.sum())
        assert max_coverage(*got) == max_coverage(*want)


def test_weights_too_big_for_one_sort_key_take_the_three_key_sort() -> None:
    rng = np.random.default_rng(4)
    lo, hi, _ = pooled_days(rng, 3, 200, 0.1)
    w = rng.integers(2**40, 2**41, lo.size).astype(np.int64)
    got = _reduce(lo, hi, w, 100)
    want = reference_reduce(lo, hi, w, 100)
    for g, r in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("scale", [1, 2**20, 2**29, 2**30, 2**31, 2**40])
def test_the_one_key_order_is_the_three_key_order_up_to_its_bound(scale: int) -> None:
    """``_cheapest_first`` against ``np.lexsort`` with peaks and weights around where one
    int64 key stops holding them (from 2**30 x 2**30 on it takes the three-key sort)."""
    rng = np.random.default_rng(scale)
    n = 2_000
    peak = (rng.integers(0, 4, n) * (scale // 2) + rng.integers(0, 3, n)).astype(np.float64)
    weight = (rng.integers(1, 4, n) * (scale // 2) + rng.integers(1, 3, n)).astype(np.float64)
    parity = np.arange(n) & 1
    np.testing.assert_array_equal(
        _cheapest_first(peak, weight, parity), np.lexsort((parity, weight, peak))
    )
    edge = np.array([0.0, 0.0]), np.array([2.0**62, 1.0]), np.array([0, 1])
    np.testing.assert_array_equal(_cheapest_first(*edge), np.lexsort(edge[::-1]))


@pytest.mark.parametrize("scale", [1, 3, 2**20, 2**28, 2**40])
def test_the_cheapest_pairs_by_selection_are_those_by_rank(scale: int) -> None:
    """``_cheapest_minima`` selects the cheapest pairs with ``np.partition`` over one key
    that holds (peak, weight, parity, index); against the ranks of a full three-key sort,
    for every count from none to all, on pairs with many ties (small scales) and past
    where the key fits (the large ones take the ranks themselves)."""
    rng = np.random.default_rng(scale)
    pairs = 500
    peak = (rng.integers(0, 4, pairs) * scale + rng.integers(0, 2, pairs)).astype(np.int64)
    weight = (rng.integers(1, 3, pairs) * scale).astype(np.int64)
    idx = np.arange(pairs)
    rank = np.empty(pairs, np.int64)
    rank[np.lexsort((idx & 1, weight, peak))] = idx
    for cheap in (0, 1, 7, pairs // 2, pairs - 1, pairs):
        small, before = _cheapest_minima(peak, weight, cheap)
        assert small.tolist() == (rank < cheap).tolist()
        assert before.tolist() == (rank[:-1] < rank[1:]).tolist()
        assert int(small.sum()) == cheap


def reference_containers(base: Buckets, items: Buckets, cap: float) -> IntArray:
    """``streams.buckets._containers`` as ``_absorb`` chose them before its candidates were
    tried in one pass: one candidate after the other, a narrower one that fits taking over."""
    blo, bhi, bw = base
    ilo, ihi, iw = items
    n = blo.size
    first = np.searchsorted(bhi, ihi, side="left")
    target = np.full(ilo.size, -1, np.int64)
    width = np.full(ilo.size, np.inf)
    span = bhi - blo
    for k in range(8):
        cand = first + k
        inside = cand < n
        cand = np.minimum(cand, n - 1)
        better = inside & (blo[cand] <= ilo) & (span[cand] < width)
        better &= (bw[cand] + iw <= cap) | (span[cand] == 0)
        target = np.where(better, cand, target)
        width = np.where(better, span[cand], width)
    return target


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_absorbing_in_one_pass_is_the_reference_loop(case: str, seed: int) -> None:
    """Buckets of one case as the base, points and buckets of another as the items, at caps
    from tight (little fits) to loose (every container takes all): the same containers as
    the loop chose, and some items with one and some without, so neither path is vacuous;
    what is absorbed is only ever into an item's container."""
    rng = np.random.default_rng(seed)
    blo, bhi, bw = _reduce(*CASES[case](rng), 384)
    points = np.sort(rng.normal(0.0, 1.2, 1_000))
    ilo, ihi, iw = pooled_days(rng, 2, 300, 0.01)
    placed = unplaced = 0
    for items in (
        (points, points, rng.integers(1, 5, points.size)),
        (ilo, np.maximum(ilo, ihi), iw),
    ):
        for cap in (1.0, float(bw.mean()), 2.0 * float(bw.mean()), 1e12):
            got = _containers((blo, bhi, bw), items, cap)
            np.testing.assert_array_equal(got, reference_containers((blo, bhi, bw), items, cap))
            placed += int((got >= 0).sum())
            unplaced += int((got < 0).sum())
            new_w, rest = _absorb((blo, bhi, bw), items, cap)
            taken = np.setdiff1d(np.arange(items[0].size), rest)
            assert (got[taken] >= 0).all()
            assert int(new_w.sum() - bw.sum()) == int(items[2][taken].sum())
    assert placed and unplaced


def test_a_bucket_wider_than_the_largest_float_contains_nothing() -> None:
    """Two finite bounds can span more than the largest float (their difference is inf):
    the loop never chose such a bucket (it took only spans narrower than the best so far,
    which starts at inf), and neither does the one-pass choice."""
    base = (np.array([-1e308, 5.0]), np.array([1e308, 1e308]), np.array([1, 1], np.int64))
    items = (np.array([0.0]), np.array([0.0]), np.array([1], np.int64))
    assert _containers(base, items, 10.0).tolist() == [-1]
    assert reference_containers(base, items, 10.0).tolist() == [-1]
    new_w, rest = _absorb(base, items, 10.0)
    assert new_w.tolist() == [1, 1] and rest.tolist() == [0]
