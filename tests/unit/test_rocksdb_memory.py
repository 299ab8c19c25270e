"""One RocksDB memory budget per worker (agents.faust_compat.rocksdb_memory), on real stores
opened as Faust opens them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faust.stores.rocksdb import RocksDBOptions
from prometheus_client import CollectorRegistry

from agents.app import rocksdb_options
from agents.faust_compat import rocksdb_memory
from agents.faust_compat.rocksdb_memory import MIB, SHARED_OPTION, SharedRocksMemory
from agents.metrics import RocksDBCollector

VALUE = bytes(range(256)) * 4  # 1 KiB, not all one byte (compressible, but not to nothing)


def open_stores(
    tmp_path: Path, tables: int, partitions: int, shared: SharedRocksMemory | None
) -> dict[str, dict[int, Any]]:
    """``tables`` x ``partitions`` stores, each opened by Faust's own ``RocksDBOptions`` from
    the options a worker gives its tables."""
    rocksdb_memory.install()
    options: dict[str, Any] = dict(rocksdb_options(16))
    if shared is not None:
        options[SHARED_OPTION] = shared
    out: dict[str, dict[int, Any]] = {}
    for t in range(tables):
        opener = RocksDBOptions(**options)
        out[f"t{t}"] = {p: opener.open(tmp_path / f"t{t}-{p}.db") for p in range(partitions)}
    return out


def all_dbs(stores: dict[str, dict[int, Any]]) -> Iterator[Any]:
    for dbs in stores.values():
        yield from dbs.values()


def fill(db: Any, mib: float, tag: str) -> None:
    for i in range(int(mib * 1024)):
        db[f"{tag}-{i}".encode()] = VALUE


def close(stores: dict[str, dict[int, Any]]) -> None:
    for db in all_dbs(stores):
        db.close()


def test_every_store_shares_one_block_cache(tmp_path: Path) -> None:
    """Without the budget each store has a cache of its own (8 MiB: 4 tables x 32 partitions
    would be 1 GiB of cache); with it, one cache of the budget's half serves all of them."""
    own = open_stores(tmp_path / "own", 2, 3, None)
    capacities = {int(db.property_value("rocksdb.block-cache-capacity")) for db in all_dbs(own)}
    assert capacities == {8 * MIB}
    close(own)

    shared = SharedRocksMemory.of(8)
    stores = open_stores(tmp_path / "shared", 2, 3, shared)
    for k, db in enumerate(all_dbs(stores)):
        fill(db, 0.5, str(k))
        db.flush()
        for i in range(0, 512, 3):
            assert db[f"{k}-{i}".encode()] == VALUE
    usage = shared.usage()["block_cache"]
    assert 0 < usage <= shared.cache_bytes * 1.1
    for db in all_dbs(stores):
        assert int(db.property_value("rocksdb.block-cache-capacity")) == 4 * MIB
        assert db.property_int_value("rocksdb.block-cache-usage") == usage  # one cache
    close(stores)


def memtables(stores: dict[str, dict[int, Any]]) -> int:
    return sum(
        int(db.property_int_value("rocksdb.cur-size-all-mem-tables")) for db in all_dbs(stores)
    )


FLUSHING = ("rocksdb.num-running-flushes", "rocksdb.mem-table-flush-pending")


def settle(stores: dict[str, dict[int, Any]], timeout: float = 60.0) -> None:
    """Until no store has a flush running or pending (RocksDB's background threads)."""
    deadline = time.monotonic() + timeout
    while any(db.property_int_value(p) for db in all_dbs(stores) for p in FLUSHING):
        assert time.monotonic() < deadline, "RocksDB's flushes did not finish"
        time.sleep(0.01)


def test_the_memtable_budget_bounds_the_written_stores(tmp_path: Path) -> None:
    """Six stores written in turn (as a worker's flushes write every store it holds), 3 MiB
    each, under their own 4 MiB write buffers: 21 MiB of memtables on their own; with a
    2 MiB budget, RocksDB flushes early and, its flushes done, they hold under 10 MiB, every
    value still readable."""

    def write(stores: dict[str, dict[int, Any]]) -> None:
        dbs = list(all_dbs(stores))
        for i in range(3 * 1024):
            for k, db in enumerate(dbs):
                db[f"{k}-{i}".encode()] = VALUE

    own = open_stores(tmp_path / "own", 2, 3, None)
    write(own)
    assert memtables(own) > 16 * MIB
    close(own)

    shared = SharedRocksMemory.of(4)
    stores = open_stores(tmp_path / "shared", 2, 3, shared)
    write(stores)
    # Flushes run in the background, and a loaded CI once read 13.6 MiB right after the
    # writes: the bound is on what the budget leaves once the flushes it asked for are done.
    # 0.8-4.8 MiB then (a store past the budget flushes at its next write, so the last
    # writes can leave several MiB unflushed), against 21 MiB without the budget.
    settle(stores)
    assert memtables(stores) < 5 * shared.write_buffer_bytes
    assert memtables(stores) <= shared.usage()["memtables"] < 5 * shared.write_buffer_bytes
    for k, db in enumerate(all_dbs(stores)):
        assert db[f"{k}-0".encode()] == VALUE and db[f"{k}-3071".encode()] == VALUE
    close(stores)


@pytest.mark.parametrize("arena", ["ours", "rocksdb's"])
def test_many_idle_stores_fit_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arena: str
) -> None:
    """4 tables x 32 partitions, each store holding 4 KiB unflushed: with RocksDB's arena
    blocks (an eighth of the write buffer) they take four times the default budget's 16 MiB
    of memtables, and every write past it would flush a tiny memtable; with ours, half of it."""
    if arena != "ours":
        monkeypatch.setattr(rocksdb_memory, "ARENA_BLOCK_BYTES", 0)  # 0: RocksDB's own
    shared = SharedRocksMemory.of(32)
    stores = open_stores(tmp_path, 4, 32, shared)
    for k, db in enumerate(all_dbs(stores)):
        fill(db, 4 / 1024, str(k))
    used = shared.usage()["memtables"]
    if arena == "ours":
        assert used <= shared.write_buffer_bytes * 0.6
    else:
        assert used > shared.write_buffer_bytes * 3
    close(stores)


def test_the_shared_cache_is_told_once(tmp_path: Path) -> None:
    """Every store reports the shared cache's whole usage as its own: the collector tells it
    once (table ``shared``) with the budget, so a sum over tables is the worker's memory."""
    shared = SharedRocksMemory.of(8)
    stores = open_stores(tmp_path, 2, 2, shared)
    for k, db in enumerate(all_dbs(stores)):
        fill(db, 0.25, str(k))
        db.flush()
        _ = db[f"{k}-1".encode()]
    registry = CollectorRegistry()
    registry.register(RocksDBCollector(lambda: stores, shared))
    rows = [
        (s.name, s.labels.get("table"), s.labels["kind"], s.value)
        for family in registry.collect()
        for s in family.samples
        if "kind" in s.labels
    ]
    caches = [
        (table, value)
        for name, table, kind, value in rows
        if name == "driftwatch_rocksdb_memory_bytes" and kind == "block_cache"
    ]
    assert caches == [("shared", shared.usage()["block_cache"])] and caches[0][1] > 0
    limits = {
        kind: v for name, _, kind, v in rows if name == "driftwatch_rocksdb_budget_limit_bytes"
    }
    assert limits == {"block_cache": 4 * MIB, "memtables": 4 * MIB}
    used = {kind: v for name, _, kind, v in rows if name == "driftwatch_rocksdb_budget_used_bytes"}
    assert used == {"block_cache": caches[0][1], "memtables": shared.usage()["memtables"]}
    tables = {t for name, t, kind, _ in rows if kind == "memtables" and t is not None}
    assert tables == {"t0", "t1"}
    close(stores)


def test_install_is_idempotent() -> None:
    rocksdb_memory.install()
    patched = RocksDBOptions.as_options
    rocksdb_memory.install()
    assert RocksDBOptions.as_options is patched


@pytest.mark.parametrize("mb", [1, 3, -8])
def test_settings_refuse_a_budget_below_the_floor(mb: int) -> None:
    from runtime.settings import Settings

    with pytest.raises(ValueError, match="DRIFTWATCH_ROCKSDB_WORKER_MEMORY_MB"):
        Settings.from_env({"DRIFTWATCH_ROCKSDB_WORKER_MEMORY_MB": str(mb)})
    assert (
        Settings.from_env({"DRIFTWATCH_ROCKSDB_WORKER_MEMORY_MB": "0"}).rocksdb_worker_memory_mb
        == 0
    )
