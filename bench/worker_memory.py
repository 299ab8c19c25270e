"""Worker memory against input size: is the driftwatch worker's RSS flat from 1M to 10M events?

Run as ``python -m bench.worker_memory [--events 10000000] [--features 4] [--per-day 2000]
[--batch 500] [--every 1000000]``.

A worker runs for a long time: what it holds must not grow with what it has read. This
produces a long stream at a steady rate (4 streams x ``--per-day`` predictions a day, so 10M
events are ~1,250 days: windows close, expire and drop out of the history, the join's stored
predictions expire unlabelled) into the embedded broker (or ``KAFKA_BOOTSTRAP_SERVERS``), in
envelopes of ``--batch`` (only to spare Faust's per-message cost: the state is the same), then
starts one worker and reads its resident set size (``VmRSS``) each time its event counter
passes another ``--every`` events. It prints the table and writes
``bench/results/worker_memory.json``; the verdict is the spread of RSS over the checkpoints,
each over the first (issue 10's target: all within +-10 %).

The stream is generated and produced lazily (10M events do not fit in this process as
objects). The features default to 4 (all numeric: one in five is categorical, rounded down)
so that 10M events take about half an hour here; the state per feature is bounded the same
way whatever the count.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

from bench.throughput import (
    FAST_DETECTION,
    MODELS,
    START,
    TENANTS,
    _log,
    bench_broker,
    driftwatch_worker,
    machine_info,
    metric_sum,
    split_features,
)
from driftwatch.kafka_io import make_producer, prediction_messages, produce_messages
from driftwatch.simulate import SimulationConfig, generate
from runtime.settings import Settings
from runtime.topics import ensure_topics

RESULTS = Path(__file__).resolve().parent / "results" / "worker_memory.json"
PARTITIONS = 2


def simulation(events: int, features: int, per_day: int) -> SimulationConfig:
    """A steady stream: 4 streams x ``per_day`` a day, as many days as ``events`` needs."""
    numeric, categorical = split_features(features)
    streams = len(TENANTS) * len(MODELS)
    return SimulationConfig(
        seed=11,
        tenants=TENANTS,
        models=MODELS,
        days=math.ceil(events / (streams * per_day)) + 1,
        events_per_day=per_day,
        numeric_features=numeric,
        categorical_features=categorical,
        start=START,
    )


def messages(events: int, features: int, per_day: int, batch: int) -> Iterator[tuple[bytes, bytes]]:
    return prediction_messages(
        islice(generate(simulation(events, features, per_day)), events), batch
    )


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of ``pid``, MiB (Linux /proc)."""
    current = peak = math.nan
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            current = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return current, peak


def rss_parts_mb(pid: int) -> dict[str, float]:
    """The resident set of ``pid`` by kind, MiB: ``anon`` (the heaps: Python's, the C
    allocator's, RocksDB's caches) and ``file`` (mapped files: libraries, and any table file
    RocksDB maps), which RSS adds together (Linux /proc)."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        for field, kind in (("RssAnon:", "anon"), ("RssFile:", "file")):
            if line.startswith(field):
                out[kind] = round(int(line.split()[1]) / 1024, 1)
    return out


def rocksdb_mb(samples: list[tuple[str, dict[str, str], float]]) -> dict[str, float]:
    """The worker's RocksDB memory by kind (all tables), MiB, from its metrics.

    >>> rocksdb_mb([("driftwatch_rocksdb_memory_bytes", {"table": "a", "kind": "memtables"},
    ...              2 * 2**20), ("driftwatch_rocksdb_memory_bytes",
    ...              {"table": "b", "kind": "memtables"}, 2**20)])
    {'memtables': 3.0}
    """
    out: dict[str, float] = {}
    for name, labels, value in samples:
        if name == "driftwatch_rocksdb_memory_bytes":
            kind = labels.get("kind", "")
            out[kind] = out.get(kind, 0.0) + value / 2**20
    return {kind: round(mb, 1) for kind, mb in sorted(out.items())}


def rocksdb_tables(samples: list[tuple[str, dict[str, str], float]]) -> dict[str, dict[str, float]]:
    """Per table, MiB: its index and filter blocks (``table_readers``, outside every budget)
    and its live files on disk, which they grow with: which table's files grow, if RSS does.

    >>> rocksdb_tables([("driftwatch_rocksdb_memory_bytes", {"table": "join", "kind":
    ...     "table_readers"}, 2**20), ("driftwatch_rocksdb_disk_bytes", {"table": "join",
    ...     "kind": "live"}, 3 * 2**20), ("driftwatch_rocksdb_disk_bytes", {"table": "join",
    ...     "kind": "total"}, 4 * 2**20)])
    {'join': {'table_readers': 1.0, 'disk': 3.0}}
    """
    out: dict[str, dict[str, float]] = {}
    for name, labels, value in samples:
        kind = labels.get("kind")
        if name == "driftwatch_rocksdb_memory_bytes" and kind == "table_readers":
            field = "table_readers"
        elif name == "driftwatch_rocksdb_disk_bytes" and kind == "live":
            field = "disk"
        else:
            continue
        out.setdefault(labels.get("table", ""), {})[field] = round(value / 2**20, 1)
    return dict(sorted(out.items()))


def run(args: argparse.Namespace) -> dict[str, Any]:
    n, every = args.events, args.every
    run_id = f"mem-{uuid.uuid4().hex[:8]}"
    prefix = f"{run_id}-"
    checkpoints: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="driftwatch-mem-") as tmp:
        workdir = Path(tmp)
        with bench_broker(workdir) as (bootstrap, broker_kind):
            _log(f"broker {bootstrap} ({broker_kind})")
            ensure_topics(bootstrap, {f"{prefix}predictions": PARTITIONS})
            started = time.perf_counter()
            sent = produce_messages(
                make_producer(bootstrap),
                f"{prefix}predictions",
                messages(n, args.features, args.per_day, args.batch),
            )
            _log(
                f"produced {n:,} events in {sent:,} messages: {time.perf_counter() - started:.0f}s"
            )
            worker = driftwatch_worker(
                bootstrap, prefix, f"{run_id}-dw", PARTITIONS, workdir, args.features
            )
            worker.start()
            assert worker.proc is not None
            began = time.monotonic()
            next_mark = every
            try:
                while next_mark <= n:
                    worker.check_alive()
                    samples = worker.samples()
                    done = int(metric_sum(samples, worker.counter)) if samples else 0
                    if done >= next_mark:
                        current, peak = rss_mb(worker.proc.pid)
                        row = {
                            "events": done,
                            "rss_mb": round(current, 1),
                            "peak_rss_mb": round(peak, 1),
                            "rss_parts_mb": rss_parts_mb(worker.proc.pid),
                            "seconds": round(time.monotonic() - began, 1),
                            "rocksdb_mb": rocksdb_mb(samples or []),
                            "rocksdb_tables": rocksdb_tables(samples or []),
                            # read ahead, not yet processed: input in flight, not state
                            "queued_messages": int(
                                metric_sum(samples or [], "driftwatch_stream_buffer_messages")
                            ),
                        }
                        checkpoints.append(row)
                        _log(f"{done:,} events: RSS {current:,.0f} MiB (peak {peak:,.0f})")
                        while next_mark <= done:
                            next_mark += every
                        continue
                    if time.monotonic() - began > args.timeout:
                        raise RuntimeError(f"{done:,}/{n:,} events after {args.timeout:.0f}s")
                    time.sleep(1.0)
            finally:
                worker.stop()
    first, last = checkpoints[0], checkpoints[-1]
    return {
        "benchmark": "bench.worker_memory",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {
            "events": n,
            "features": args.features,
            "streams": len(TENANTS) * len(MODELS),
            "per_stream_day": args.per_day,
            "days": simulation(n, args.features, args.per_day).days,
            "predictions_per_message": args.batch,
            "partitions": PARTITIONS,
            "broker": broker_kind,
            "detection": FAST_DETECTION,
            "worker_gc_threshold": Settings.from_env().gc_threshold,
            "worker_malloc_arenas": Settings.from_env().malloc_arenas,
        },
        "checkpoints": checkpoints,
        "rss_last_over_first": round(last["rss_mb"] / first["rss_mb"], 3),
        "rss_spread_over_first": spread(checkpoints),
    }


def spread(checkpoints: list[dict[str, Any]]) -> list[float]:
    """[lowest, highest] RSS of every checkpoint over the first's: issue 10's target is
    every checkpoint within +-10 % of the first. (The last checkpoint alone says little: it is
    read as the backlog runs out, when the read-ahead buffers are empty.)

    >>> spread([{"rss_mb": 400.0}, {"rss_mb": 440.0}, {"rss_mb": 380.0}])
    [0.95, 1.1]
    """
    first = checkpoints[0]["rss_mb"]
    ratios = [row["rss_mb"] / first for row in checkpoints]
    return [round(min(ratios), 3), round(max(ratios), 3)]


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"{'events':>12} {'RSS MiB':>9} {'peak MiB':>9} {'seconds':>8} {'queued':>7} "
        f"{'disk MiB':>8}  RocksDB MiB"
    ]
    for row in result["checkpoints"]:
        rocks = row.get("rocksdb_mb", {})
        lines.append(
            f"{row['events']:>12,} {row['rss_mb']:>9,.0f} {row['peak_rss_mb']:>9,.0f} "
            f"{row['seconds']:>8,.0f} {row.get('queued_messages', 0):>7,} "
            f"{sum(t.get('disk', 0.0) for t in row.get('rocksdb_tables', {}).values()):>8,.0f}  "
            f"{sum(v for k, v in rocks.items() if k != 'block_cache_pinned'):,.0f} "
            + " ".join(f"{k} {v:,.0f}" for k, v in rocks.items())
        )
    low, high = result["rss_spread_over_first"]
    lines.append(
        f"RSS at every checkpoint / the first: {low:.3f} to {high:.3f} "
        f"(last / first: {result['rss_last_over_first']:.3f})"
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_memory", description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--features", type=int, default=4, help="1 in 5 categorical (4)")
    parser.add_argument("--per-day", type=int, default=2000, help="per stream and day (2000)")
    parser.add_argument("--batch", type=int, default=500, help="predictions per envelope (500)")
    parser.add_argument("--every", type=int, default=1_000_000, help="events between readings")
    parser.add_argument("--timeout", type=float, default=4 * 3600.0, help="seconds (4 h)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(format_table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
