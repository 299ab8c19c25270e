"""Offline profile of the driftwatch worker's per-batch hot path, without Kafka or Faust.

Run as ``python -m bench.profile_engine [--events N] [--features F] [--partitions P] [--live]``.

Feeds the same events as ``bench.throughput`` (same simulation, same JSON bytes, the
partition librdkafka's default partitioner would pick for each key) through the steps that
``agents.processor.PredictionProcessor.process_batch`` runs per batch, and prints events/s for

1. ``validate``: ``PredictionValidator().validate(raw, now=None)``;
2. ``validate+observe``: plus ``DriftEngine.observe`` (the engine's cache is never flushed);
3. ``validate+observe+flush``: plus ``engine.flush()`` into a ``MemoryStore`` every
   ``--batch`` events (state is encoded, stored and decoded again per batch, as in the worker);
4. ``PredictionProcessor``: the real ``process_batch`` over a dict standing in for the RocksDB
   table (adds Prometheus metrics, activity tracking, Faust's current-event context variable),
   writing after every batch; then writing every 5 s as the worker does, its values applied
   after every batch and in runs of ``APPLY_AT_VALUES`` (the worker's way; with a small
   ``--batch``, as a live worker keeping up with its stream gets, the difference shows).

Step 3 also reports the garbage collector's collections and time by generation (the pace is
``DRIFTWATCH_GC_THRESHOLD``'s, as in the worker; 0 for CPython's own). Then it runs step 3
under cProfile and lists the top functions by cumulative and by own time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from faust.types import TP
from prometheus_client import CollectorRegistry

from agents.dead_letters import DeadLetters
from agents.metrics import WorkerMetrics
from agents.processor import APPLY_AT_EVENTS, APPLY_AT_VALUES, PredictionProcessor, TableStore
from bench.throughput import FAST_DETECTION, bench_messages
from runtime.gc_tuning import GcPauses, tune_gc
from runtime.settings import Settings
from streams.config import EngineConfig
from streams.engine import DriftEngine
from streams.ingest import PredictionValidator
from streams.keyed_state import MemoryStore

Position = tuple[int, int]
NO_CLOSE = "  same, no window tests"


def engine_config(close_windows: bool = True) -> EngineConfig:
    """The detection settings ``bench.throughput`` gives the worker.

    ``close_windows=False``: an allowed lateness so large that no window ever closes, and no
    interim looks, which leaves only the per-event work (no tests, baseline merges, expiry).
    """
    env = dict(FAST_DETECTION)
    env["DRIFTWATCH_MAX_FEATURES_PER_STREAM"] = "1000"  # --features up to an event's limit
    if not close_windows:
        env["DRIFTWATCH_ALLOWED_LATENESS_SECONDS"] = str(1e12)
        env["DRIFTWATCH_INTERIM_SECONDS"] = "0"
    return Settings.from_env(env).engine_config()


def positions(messages: list[tuple[bytes, bytes]], partitions: int) -> list[Position]:
    """(partition, offset) per message: librdkafka's default partitioner is crc32(key) % P."""
    next_offset = [0] * partitions
    out: list[Position] = []
    for key, _ in messages:
        p = zlib.crc32(key) % partitions
        out.append((p, next_offset[p]))
        next_offset[p] += 1
    return out


def run_validate(values: list[bytes], pos: list[Position], batch: int) -> dict[str, int]:
    validate = PredictionValidator().validate
    for raw in values:
        validate(raw, None)
    return {}


def run_observe(values: list[bytes], pos: list[Position], batch: int) -> dict[str, int]:
    validate = PredictionValidator().validate
    engine = DriftEngine(engine_config(), MemoryStore())
    for raw, position in zip(values, pos, strict=True):
        engine.observe(validate(raw, None), position)
    return dict(engine.stats)


@dataclass
class FlushTimer:
    seconds: float = 0.0


def run_flush(
    values: list[bytes],
    pos: list[Position],
    batch: int,
    timer: FlushTimer | None = None,
    close_windows: bool = True,
) -> dict[str, int]:
    validate = PredictionValidator().validate
    store = MemoryStore()
    engine = DriftEngine(engine_config(close_windows), store)
    for start in range(0, len(values), batch):
        for raw, position in zip(
            values[start : start + batch], pos[start : start + batch], strict=True
        ):
            engine.observe(validate(raw, None), position)
        flushed_at = time.perf_counter()
        store.apply(engine.flush())
        if timer is not None:
            timer.seconds += time.perf_counter() - flushed_at
    return dict(engine.stats)


class _Message:
    def __init__(self, topic: str, partition: int, offset: int, key: bytes) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.tp = TP(topic, partition)


class _Event:
    """What process_batch reads off a Faust event (weak-referenceable, like faust.Event)."""

    def __init__(self, message: _Message, value: bytes) -> None:
        self.message = message
        self.value = value


def make_processor(table: dict[bytes, bytes] | None = None) -> PredictionProcessor:
    """The real processor over a dict standing in for the RocksDB table; sends discarded."""
    store = TableStore({} if table is None else table)

    async def discard(key: bytes, value: bytes) -> None:
        return None

    metrics = WorkerMetrics.create(CollectorRegistry())
    return PredictionProcessor(
        engine=DriftEngine(engine_config(), store),
        store=store,
        validator=PredictionValidator(max_future_seconds=None),
        metrics=metrics,
        send_drift=discard,
        dead_letters=DeadLetters(discard, metrics),
        source_topic="predictions",
        idle_timeout=300.0,
    )


def faust_events(messages: list[tuple[bytes, bytes]], pos: list[Position]) -> list[_Event]:
    return [
        _Event(_Message("predictions", p, o, key), value)
        for (key, value), (p, o) in zip(messages, pos, strict=True)
    ]


def run_processor(
    messages: list[tuple[bytes, bytes]],
    pos: list[Position],
    batch: int,
    apply_at_values: int | None = None,
) -> dict[str, int]:
    """``apply_at_values`` None: state written after every batch (the processor's default);
    else written every 5 s (the worker's default), values applied in runs of this many and of
    ``APPLY_AT_EVENTS`` events (0: after every batch)."""
    processor = make_processor()
    if apply_at_values is not None:
        processor.state_flush_seconds = 5.0
        processor.apply_at_values = apply_at_values
        processor.apply_at_events = APPLY_AT_EVENTS if apply_at_values else 0
    events = faust_events(messages, pos)

    async def feed() -> None:
        for start in range(0, len(events), batch):
            await processor.process_batch(events[start : start + batch])
        await processor.write_held()

    asyncio.run(feed())
    return dict(processor.engine.stats)


def timed(fn: Callable[[], dict[str, int]]) -> tuple[float, dict[str, int]]:
    started = time.perf_counter()
    stats = fn()
    return time.perf_counter() - started, stats


def profile_text(prof: cProfile.Profile, sort: str, top: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.strip_dirs().sort_stats(sort).print_stats(top)
    lines = out.getvalue().splitlines()
    # Drop pstats' preamble up to the column header.
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    return "\n".join(line for line in lines[start:] if line.strip())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_engine", description=__doc__)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--batch", type=int, default=1000, help="events per flush (1000)")
    p.add_argument("--top", type=int, default=15, help="functions listed per profile (15)")
    p.add_argument("--no-profile", action="store_true", help="timings only")
    p.add_argument(
        "--live",
        action="store_true",
        help="bench.throughput --live's data: a dense day after a sparse history",
    )
    p.add_argument(
        "--live-rate",
        type=float,
        default=None,
        help="with --live: the live part's event times at this many predictions a second "
        "(bench.throughput --live-rate)",
    )
    args = p.parse_args(argv)
    n, features, batch = args.events, args.features, args.batch
    # The worker's collector pace (DRIFTWATCH_GC_THRESHOLD; 0: CPython's own, to compare).
    tune_gc(Settings.from_env().gc_threshold)

    messages = bench_messages(n, features, live=args.live, live_rate=args.live_rate)
    values = [v for _, v in messages]
    pos = positions(messages, args.partitions)
    print(
        f"{len(messages):,} events x {features} features, flush every {batch}, "
        f"{args.partitions} partitions"
        + (f" ({n:,} of them in one live day)" if args.live and not args.live_rate else "")
        + (f" ({n:,} of them at {args.live_rate:,.0f}/s of event time)" if args.live_rate else "")
    )

    timer = FlushTimer()
    variants: list[tuple[str, Callable[[], dict[str, int]]]] = [
        ("validate", lambda: run_validate(values, pos, batch)),
        ("validate+observe", lambda: run_observe(values, pos, batch)),
        ("validate+observe+flush", lambda: run_flush(values, pos, batch, timer)),
        (NO_CLOSE, lambda: run_flush(values, pos, batch, close_windows=False)),
        ("PredictionProcessor (dict table)", lambda: run_processor(messages, pos, batch)),
        ("  written every 5 s, applied per batch", lambda: run_processor(messages, pos, batch, 0)),
        (
            "  written every 5 s, applied in runs",
            lambda: run_processor(messages, pos, batch, APPLY_AT_VALUES),
        ),
    ]
    print(
        f"\n{'step':<34} {'seconds':>8} {'events/s':>10} {'feature-values/s':>17} {'us/event':>9}"
    )
    seconds: dict[str, float] = {}
    stats: dict[str, int] = {}
    collector: dict[str, tuple[float, float]] = {}
    for name, fn in variants:
        pauses = GcPauses().install() if name == "validate+observe+flush" else None
        took, result = timed(fn)
        seconds[name] = took
        if pauses is not None:
            pauses.uninstall()
            counts, spent = pauses.collections(), pauses.seconds()
            collector = {g: (counts[g], spent[g]) for g in sorted(counts)}
        if name == "validate+observe+flush":
            stats = result
        rate = len(values) / took  # every event, the history's too with --live
        print(
            f"{name:<34} {took:>8.2f} {rate:>10,.0f} {rate * features:>17,.0f} {1e6 / rate:>9.1f}"
        )
    full = seconds["validate+observe+flush"]
    closes = full - seconds[NO_CLOSE]
    windows = max(1, stats.get("windows_closed", 0))
    keys = ("events", "windows_closed", "interim_looks", "tests", "drift_events")
    print("\nengine: " + ", ".join(f"{k}={stats.get(k, 0)}" for k in keys))
    print(f"flush + store.apply: {timer.seconds:.2f}s of {full:.2f}s")
    print(
        f"garbage collector (threshold {gc.get_threshold()}): "
        + ", ".join(f"generation {g}: {n:.0f} x, {t:.2f}s" for g, (n, t) in collector.items())
        + f" of {full:.2f}s"
    )
    print(
        f"window tests (closes + interim looks: baselines, tests, expiry): ~{closes:.2f}s of "
        f"{full:.2f}s, {1000 * closes / windows:.0f} ms per closed window of {features} features"
    )

    if not args.no_profile:
        prof = cProfile.Profile()
        prof.runcall(run_flush, values, pos, batch)
        for sort in ("cumulative", "tottime"):
            print(f"\ncProfile of validate+observe+flush, top {args.top} by {sort}:")
            print(profile_text(prof, sort, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
