"""Bucket reduction: ``streams.buckets._reduce`` against the plain form of its algorithm.

Run as ``python -m bench.bucket_reduction [--days 7] [--repeat 7]``.

A baseline merge pools its windows' buckets (7 days x 384) and reduces them once
(``NumericSummary.merge_all``); the throughput benchmark's detection settings merge one per
stream feature and day, ~6 ms each before this was measured, about a fifth of the worker's
engine time there. This times the reduction as it is and as it was written before its
rounds were reworked (``tests.unit.test_bucket_reduction.reference_reduce``, kept as the
test's reference), side by side on the same pooled inputs, checks that both give the same
buckets, and prints the ratio (best of ``--repeat``).

Then the same for folds, the reduction's most frequent use in a busy worker: a window's summary
past ``EXACT_CAPACITY`` folds every ``FOLD_CHUNK`` (4,096) values in (``fold_points``: absorb
what its buckets contain, reduce the rest in). The four distributions' values go through a
summary each, and every fold's input is replayed through ``fold_points`` with the reduction
as it is and with the reference's; both must give the same buckets.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from unittest import mock

import numpy as np

import streams.buckets
import streams.numeric_summary
from streams.buckets import Buckets, _reduce, fold_points, points_to_buckets, sorted_unique_counts
from streams.numeric_summary import FOLD_CHUNK, NumericSummary
from tests.unit.test_bucket_reduction import reference_reduce

Reduce = Callable[..., Buckets]


def pooled_baselines(days: int, seed: int = 1) -> list[Buckets]:
    """Per distribution, ``days`` daily summaries' buckets pooled, as a merge pools them."""
    rng = np.random.default_rng(seed)
    draws = [
        lambda day: rng.normal(day * 0.01, 1.0, 2_500),
        lambda day: rng.lognormal(0.0, 1.0 + day * 0.02, 2_500),
        lambda day: np.round(rng.exponential(3.0, 4_000), 1),  # ties
        lambda day: rng.uniform(0.0, 10.0 + day, 2_500),
    ]
    out: list[Buckets] = []
    for draw in draws:
        # A day's bucket set, as a summary of more than EXACT_CAPACITY values holds one.
        sets = [
            points_to_buckets(*sorted_unique_counts(np.sort(draw(day))), NumericSummary.BUCKETS)
            for day in range(days)
        ]
        lo, hi, w = (np.concatenate([b[j] for b in sets]) for j in range(3))
        out.append((lo, hi, w))
    return out


Fold = tuple[Buckets, np.ndarray, np.ndarray]


def folds_of_streams(chunks: int, seed: int = 2) -> list[Fold]:
    """The (buckets, points, counts) of every fold of four summaries fed ``chunks`` chunks of
    ``FOLD_CHUNK`` values each, the distributions drifting slowly as a day's traffic does."""
    rng = np.random.default_rng(seed)
    draws = [
        lambda k: rng.normal(k * 0.002, 1.0, FOLD_CHUNK),
        lambda k: rng.lognormal(0.0, 1.0 + k * 0.001, FOLD_CHUNK),
        lambda k: np.round(rng.exponential(3.0, FOLD_CHUNK), 1),  # ties
        lambda k: rng.uniform(0.0, 10.0 + k * 0.01, FOLD_CHUNK),
    ]
    folds: list[Fold] = []

    def record(base: Buckets, values: np.ndarray, counts: np.ndarray, limit: int) -> Buckets:
        folds.append((base, values, counts))
        return fold_points(base, values, counts, limit)

    with mock.patch.object(streams.numeric_summary, "fold_points", record):
        for draw in draws:
            summary = NumericSummary()
            for k in range(chunks):
                summary.extend(draw(k))
    return folds


def fold_seconds(reduce: Reduce, folds: list[Fold], repeat: int) -> tuple[float, list[Buckets]]:
    """Best seconds per fold of ``folds`` with ``reduce`` as the reduction, and the results."""
    best, out = float("inf"), []
    with mock.patch.object(streams.buckets, "_reduce", reduce):
        for _ in range(repeat):
            started = time.perf_counter()
            out = [fold_points(b, v, c, NumericSummary.BUCKETS) for b, v, c in folds]
            best = min(best, time.perf_counter() - started)
    return best / len(folds), out


def best_seconds(fn: Reduce, inputs: list[Buckets], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for lo, hi, w in inputs:
            fn(lo, hi, w, NumericSummary.BUCKETS)
        best = min(best, time.perf_counter() - started)
    return best / len(inputs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bucket_reduction", description=__doc__)
    p.add_argument("--days", type=int, default=7, help="windows pooled per merge (7)")
    p.add_argument("--repeat", type=int, default=7, help="timed runs; best taken (7)")
    p.add_argument("--chunks", type=int, default=150, help="folds per summary (150)")
    args = p.parse_args(argv)
    inputs = pooled_baselines(args.days)
    for lo, hi, w in inputs:
        got = _reduce(lo, hi, w, NumericSummary.BUCKETS)
        want = reference_reduce(lo, hi, w, NumericSummary.BUCKETS)
        if not all(np.array_equal(g, r) for g, r in zip(got, want, strict=True)):
            raise SystemExit("the reduction differs from the reference")
    sizes = ", ".join(str(lo.size) for lo, _, _ in inputs)
    ref = best_seconds(reference_reduce, inputs, args.repeat)
    now = best_seconds(_reduce, inputs, args.repeat)
    print(f"{len(inputs)} pooled baselines of {args.days} days ({sizes} buckets -> "
          f"{NumericSummary.BUCKETS}), same buckets from both")  # fmt: skip
    print(f"reference (before): {ref * 1e3:.2f} ms per reduction")
    print(f"streams.buckets:    {now * 1e3:.2f} ms per reduction  ({ref / now:.2f}x)")
    folds = folds_of_streams(args.chunks)
    ref, want_folds = fold_seconds(reference_reduce, folds, args.repeat)
    now, got_folds = fold_seconds(_reduce, folds, args.repeat)
    if not all(
        np.array_equal(g, r) for a, b in zip(got_folds, want_folds, strict=True)
        for g, r in zip(a, b, strict=True)
    ):  # fmt: skip
        raise SystemExit("a fold with the reduction differs from one with the reference")
    print(
        f"{len(folds)} folds of {FOLD_CHUNK} values into summaries of "
        f"{NumericSummary.BUCKETS} buckets (4 distributions), same buckets from both"
    )
    print(f"folds, reference:        {ref * 1e6:.0f} us per fold")
    print(f"folds, streams.buckets:  {now * 1e6:.0f} us per fold  ({ref / now:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
