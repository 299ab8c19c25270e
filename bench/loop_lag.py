"""How long the worker's event loop is held up while batches are processed.

Run as ``python -m bench.loop_lag [--events N] [--features F]``.

The worker's loop also runs commits, the other agents, timers and (via Faust) the consumer's
fetches; a batch that closes windows runs many tests. This feeds the same batches as
``bench.profile_engine`` through the real ``PredictionProcessor`` (over a dict standing in for
the RocksDB table) twice, side by side in one process:

* **off the loop** (what the worker does): the batch's CPU work in a worker thread;
* **on the loop** (before): the same work called inline;

while a probe task asks to wake every 5 ms and records how late it wakes. Printed: the
probe's lateness (median, p99, max) and the batches' total time in each mode.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from bench.profile_engine import faust_events, make_processor, positions
from bench.throughput import bench_messages

PROBE_SECONDS = 0.005


async def _probe(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        asked = time.perf_counter()
        await asyncio.sleep(PROBE_SECONDS)
        lags.append(time.perf_counter() - asked - PROBE_SECONDS)


async def _run(batches: list[list[Any]], inline: bool) -> tuple[list[float], float]:
    processor = make_processor()
    processor.offload = not inline
    lags: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(lags, stop))
    started = time.perf_counter()
    for batch in batches:
        await processor.process_batch(batch)
        await asyncio.sleep(0)
    took = time.perf_counter() - started
    stop.set()
    await probe
    return lags, took


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=40_000)
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--batch", type=int, default=1000)
    args = p.parse_args(argv)
    messages = bench_messages(args.events, args.features)
    events = faust_events(messages, positions(messages, 2))
    batches = [events[i : i + args.batch] for i in range(0, len(events), args.batch)]
    print(f"{args.events:,} events x {args.features} features, batches of {args.batch}")
    print(f"{'mode':<14}{'lag p50 ms':>12}{'lag p99 ms':>12}{'lag max ms':>12}{'seconds':>10}")
    for name, inline in (("on the loop", True), ("off the loop", False)):
        lags, took = asyncio.run(_run(batches, inline))
        q = statistics.quantiles(lags, n=100, method="inclusive")
        print(f"{name:<14}{1000 * statistics.median(lags):>12.1f}{1000 * q[98]:>12.1f}"
              f"{1000 * max(lags):>12.1f}{took:>10.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
