"""What the drift processor alone costs per prediction, to set against the whole worker.

Run as ``python -m bench.processor_share [--events N] [--features F] [--batch B]
[--live-rate R] [--out FILE]`` with the arguments given to ``python -m bench.throughput
--live``.

``bench.throughput --live`` times the worker process whole: Kafka fetches, the drift agent,
the join (every valid prediction forwarded on ``join-input``, read back, stored and
changelogged), the performance agent and Faust's machinery, on one core. This runs the same
input's live part through the real :class:`agents.processor.PredictionProcessor` alone -
validation, the engine, its state written every 5 s (of the processor's own clock) into a dict
standing in for the RocksDB table, values applied in runs as the worker applies them - with
no Kafka, no join and no Faust, after applying the history part untimed, in messages of the
same size and batches of ``bench.throughput.BATCH`` messages (as the worker takes a backlog),
and reports predictions per second of process CPU time.

A worker's rate over this rate is the share of its CPU that is the drift processor; the rest
is what the other stages cost. (The processor runs its CPU work in the event loop here; the
worker runs it in a thread beside the loop, which costs a little more, not less.)
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from agents.processor import APPLY_AT_EVENTS, APPLY_AT_VALUES
from bench.profile_engine import faust_events, make_processor, positions
from bench.results_file import write_results
from bench.throughput import BATCH, bench_events
from driftwatch.kafka_io import prediction_messages
from runtime.gc_tuning import tune_gc
from runtime.settings import Settings

RESULTS = Path(__file__).parent / "results" / "processor_share.json"


def run(events: int, features: int, batch: int, live_rate: float | None) -> dict[str, float]:
    """Predictions/s of the processor over the live part (history applied first, untimed)."""
    every, history = bench_events(events, features, live=True, live_rate=live_rate)
    before = list(prediction_messages(every[:history], batch))
    timed = list(prediction_messages(every[history:], batch))
    pos = positions(before + timed, 2)
    all_events = faust_events(before + timed, pos)
    processor = make_processor()
    processor.state_flush_seconds = 5.0
    processor.apply_at_values = APPLY_AT_VALUES
    processor.apply_at_events = APPLY_AT_EVENTS
    processor.offload = False  # (the worker's thread only adds the hand-over's cost)

    async def feed(part: Sequence[object]) -> None:
        for start in range(0, len(part), BATCH):
            await processor.process_batch(part[start : start + BATCH])

    asyncio.run(feed(all_events[: len(before)]))
    started = time.process_time()
    asyncio.run(feed(all_events[len(before) :]))
    asyncio.run(processor.write_held())
    seconds = time.process_time() - started
    applied = int(processor.engine.stats["events"])  # the history's too: the work was done
    return {"predictions": events, "history": history, "applied": applied,
            "cpu_seconds": seconds, "predictions_per_s": events / seconds}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.processor_share", description=__doc__)
    p.add_argument("--events", type=int, default=100_000, help="timed predictions (100000)")
    p.add_argument("--features", type=int, default=20, help="features per prediction (20)")
    p.add_argument("--batch", type=int, default=1, help="predictions per message (1)")
    p.add_argument("--live-rate", type=float, default=None, help="as bench.throughput's")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results ({RESULTS})")
    args = p.parse_args(argv)
    tune_gc(Settings.from_env().gc_threshold)  # the worker's collector pace
    result = run(args.events, args.features, args.batch, args.live_rate)
    print(
        f"drift processor alone: {args.events:,} predictions x {args.features} features, "
        f"{args.batch} per message: {result['cpu_seconds']:.2f} s of CPU, "
        f"{result['predictions_per_s']:,.0f} predictions/s (the engine applied "
        f"{result['applied']:,} with the {result['history']:,} of the history)"
    )
    asked = {k: v for k, v in vars(args).items() if k != "out"}
    write_results(args.out, "bench.processor_share", **asked, **result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
