"""aiokafka's produce-request encoding against ``agents.faust_compat.request_encoding``'s.

Run as ``python -m bench.request_encoding [--repeat 200]``.

Encodes the same produce requests both ways, in turns, in this process: one record batch of
16 KiB (Kafka's default batch size), one of 512 KiB (``DRIFTWATCH_PRODUCER_MAX_BATCH_BYTES``),
and eight of 512 KiB (a worker's request to one broker carries a batch for each partition it
writes: the join's changelog, ``join-input``, ``performance-input``, the drift state's
changelog). Each figure is the best of five rounds of ``--repeat`` encodings (microseconds a
request); the bytes are compared once. Writes ``bench/results/request_encoding.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka.protocol.produce import ProduceRequest_v7
from aiokafka.protocol.struct import Struct

from agents.faust_compat import request_encoding
from bench.results_file import write_results

RESULTS = Path(__file__).with_name("results") / "request_encoding.json"
SHAPES = ((16 * 1024, 1), (512 * 1024, 1), (512 * 1024, 8))


def best_of(fn: Callable[[], Any], repeat: int, rounds: int = 5) -> float:
    """Microseconds a call: the best round's mean."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    theirs = request_encoding.ORIGINAL_ENCODE or Struct.encode
    rows = []
    print(f"{'request':>26} {'aiokafka µs':>12} {'one join µs':>12} {'ratio':>7}")
    for size, parts in SHAPES:
        batch = os.urandom(size)
        topics = [("changelog", [(p, batch) for p in range(parts)])]
        request = ProduceRequest_v7(None, -1, 30_000, topics)
        if request_encoding.encode_struct(request) != theirs(request):
            print("the encodings differ", file=sys.stderr)
            return 1
        before = best_of(lambda: theirs(request), args.repeat)  # noqa: B023  # called here
        after = best_of(lambda: request_encoding.encode_struct(request), args.repeat)  # noqa: B023
        label = f"{parts} x {size // 1024} KiB"
        print(f"{label:>26} {before:12.1f} {after:12.1f} {before / after:6.1f}x")
        row = {"batches": parts, "batch_bytes": size, "aiokafka_us": round(before, 2)}
        rows.append({**row, "one_join_us": round(after, 2), "ratio": round(before / after, 2)})
    write_results(args.out, "bench.request_encoding", repeat=args.repeat, results=rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
