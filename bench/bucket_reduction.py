"""Bucket reduction: ``streams.buckets._reduce`` against the plain form of its algorithm.

Run as ``python -m bench.bucket_reduction [--days 7] [--repeat 7]``.

A baseline merge pools its windows' buckets (7 days x 384) and reduces them once
(``NumericSummary.merge_all``); the throughput benchmark's detection settings merge one per
stream feature and day, ~6 ms each before this was measured, about a fifth of the worker's
engine time there. This times the reduction as it is and as it was written before its
rounds were reworked (``tests.unit.test_bucket_reduction.reference_reduce``, kept as the
test's reference), side by side on the same pooled inputs, checks that both give the same
buckets, and prints the ratio (best of ``--repeat``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from streams.buckets import Buckets, _reduce, points_to_buckets, sorted_unique_counts
from streams.numeric_summary import NumericSummary
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
