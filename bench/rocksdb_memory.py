"""RocksDB memory of a worker's stores as the partitions it holds grow: a cache per store
against one budget per worker (``DRIFTWATCH_ROCKSDB_WORKER_MEMORY_MB``).

    python -m bench.rocksdb_memory [--partitions 2,8,32] [--records 200000] [--out FILE]

For each partition count and each mode, a fresh process opens 4 tables x that many partition
stores exactly as the worker does (Faust's ``RocksDBOptions`` with the worker's options),
writes the same ``--records`` state records of 1-3 KiB spread over them (the total state does
not depend on the partitions, as when a topic is split finer), then reads them back at random
twice. Printed per run: the process's RSS grown since before the stores were opened,
RocksDB's memory by kind (what ``driftwatch_rocksdb_memory_bytes`` tells), and the seconds
the writes and reads took, so the cost of the smaller cache is measured side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.results_file import write_results
from bench.worker_memory import rocksdb_mb, rss_mb

RESULTS = Path(__file__).resolve().parent / "results" / "rocksdb_memory.json"
TABLES = 4


def child(partitions: int, worker_mb: int, records: int, seed: int) -> dict[str, Any]:
    """One run, in this process: the figures of one (partitions, mode)."""
    from faust.stores.rocksdb import RocksDBOptions

    from agents.app import rocksdb_options
    from agents.faust_compat import rocksdb_memory
    from agents.metrics import RocksDBCollector
    from runtime.malloc_arenas import fix_mmap_threshold, limit_arenas, trim_heap
    from runtime.settings import Settings

    settings = Settings()
    limit_arenas(settings.malloc_arenas)  # as the worker starts (driftwatch.worker)
    fix_mmap_threshold(settings.malloc_mmap_threshold_kb * 1024)
    per_store_mb = settings.rocksdb_memory_mb
    options: dict[str, Any] = dict(rocksdb_options(per_store_mb))
    shared = None
    if worker_mb:
        rocksdb_memory.install()
        shared = rocksdb_memory.SharedRocksMemory.of(worker_mb)
        options[rocksdb_memory.SHARED_OPTION] = shared
    rng = random.Random(seed)
    payload = rng.randbytes(4096)
    before = rss_mb(os.getpid())[0]
    with tempfile.TemporaryDirectory(prefix="dw-rocksdb-bench-") as tmp:
        stores = {
            f"table{t}": {
                p: RocksDBOptions(**options).open(Path(tmp) / f"t{t}-{p}.db")
                for p in range(partitions)
            }
            for t in range(TABLES)
        }
        dbs = [db for table in stores.values() for db in table.values()]
        started = time.perf_counter()
        for i in range(records):
            size = 1024 + (i * 7919) % 2048
            start = (i * 104729) % (len(payload) - size)
            dbs[i % len(dbs)][f"key-{i}".encode()] = payload[start : start + size]
        wrote = time.perf_counter() - started
        keys = list(range(records))
        started = time.perf_counter()
        for _ in range(2):
            rng.shuffle(keys)
            for i in keys:
                if dbs[i % len(dbs)][f"key-{i}".encode()] is None:
                    raise SystemExit(f"lost key-{i}")
        read = time.perf_counter() - started
        memory = rocksdb_mb(
            [
                (sample.name, sample.labels, sample.value)
                for family in RocksDBCollector(lambda: stores, shared).collect()
                for sample in family.samples
            ]
        )
        trim_heap()  # as the worker does every DRIFTWATCH_MALLOC_TRIM_SECONDS
        after = rss_mb(os.getpid())[0]
        files = len(list(Path(tmp).glob("*/*.sst")))
        for db in dbs:
            db.close()
    return {
        "partitions": partitions,
        "stores": len(dbs),
        "mode": f"one budget of {worker_mb} MiB" if worker_mb else "a cache per store",
        "worker_memory_mb": worker_mb,
        "rss_growth_mb": round(after - before, 1),
        "rocksdb_mb": memory,
        "sst_files": files,
        "write_s": round(wrote, 2),
        "read_s": round(read, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--partitions", default="2,8,32", help="partition counts (2,8,32)")
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument(
        "--worker-memory-mb",
        type=int,
        default=None,
        help="the budget compared (DRIFTWATCH_ROCKSDB_WORKER_MEMORY_MB's default)",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        parts, mb = (int(x) for x in args.child.split(","))
        print(json.dumps(child(parts, mb, args.records, seed=7)))
        return 0
    from runtime.settings import Settings

    budget = args.worker_memory_mb
    if budget is None:
        budget = Settings().rocksdb_worker_memory_mb
    rows = []
    print(f"{args.records:,} records of 1-3 KiB over {TABLES} tables x P partition stores")
    print(f"{'P':>4} {'mode':<24}{'RSS +MiB':>10}{'cache':>8}{'memtab':>8}{'readers':>9}"
          f"{'files':>7}{'write s':>9}{'read s':>8}")  # fmt: skip
    for partitions in (int(x) for x in args.partitions.split(",")):
        for mb in (0, budget):  # side by side, each in a fresh process
            out = subprocess.run(
                [sys.executable, "-m", "bench.rocksdb_memory", "--records", str(args.records),
                 "--child", f"{partitions},{mb}"],
                check=True, capture_output=True, text=True, env=os.environ.copy(),
            ).stdout  # fmt: skip
            row = json.loads(out.strip().splitlines()[-1])
            rows.append(row)
            rocks = row["rocksdb_mb"]
            print(
                f"{partitions:>4} {row['mode']:<24}{row['rss_growth_mb']:>10.1f}"
                f"{rocks.get('block_cache', 0):>8.1f}{rocks.get('memtables', 0):>8.1f}"
                f"{rocks.get('table_readers', 0):>9.1f}{row['sst_files']:>7}{row['write_s']:>9.2f}"
                f"{row['read_s']:>8.2f}"
            )
    write_results(
        args.out,
        "bench.rocksdb_memory",
        records=args.records,
        tables=TABLES,
        results=rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
