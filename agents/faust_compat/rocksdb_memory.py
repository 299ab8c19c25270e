"""One memory budget for all of a worker's RocksDB partition stores.

Faust opens one RocksDB database per table and partition, each with a block cache and write
buffers of its own (``RocksDBOptions.as_options`` makes a new ``rocksdict.Cache`` for every
store). A worker's RocksDB memory then grows with the partitions it is given: 4 tables x 32
partitions x 16 MiB is 2 GiB for a worker that held 128 MiB with 2 partitions. As Kafka
Streams' bounded-memory recipe does (one static ``Cache`` and ``WriteBufferManager`` handed
to every store by a ``RocksDBConfigSetter``), the stores here share one LRU block cache and
one memtable budget, made once per worker (:class:`SharedRocksMemory`), so the worker's
RocksDB memory is what ``DRIFTWATCH_ROCKSDB_WORKER_MEMORY_MB`` says however many partitions
it holds. Two limits to that: index and filter blocks of open files (``table_readers``) stay
outside both bounds (they grow with the data on disk, as before), and past the memtable
budget RocksDB flushes the memtable of the store being written, so a store that is not
written keeps what it holds, at least one arena block (:data:`ARENA_BLOCK_BYTES`). With
many stores each flush is smaller (about the budget over the busy stores): a larger budget
makes fewer, larger files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rocksdict

from agents.faust_compat.version import check_version

SHARED_OPTION = "driftwatch_shared_memory"
"""The table option (``app.Table(options=...)``) carrying a :class:`SharedRocksMemory`: Faust
keeps options it does not know in ``RocksDBOptions.extra_options``."""

MIB = 1024 * 1024
ARENA_BLOCK_BYTES = 64 * 1024
"""A memtable's unit of allocation, and of the budget's accounting, under the shared budget.
RocksDB's default is an eighth of the write buffer (512 KiB here), and a store that holds
anything unflushed keeps at least one block: 4 tables x 32 partitions of idle stores were then
64 MiB of a 16 MiB budget, and every write past it flushed a tiny memtable (a storm of small
files). With 64 KiB blocks the same stores take 8 MiB (``bench.rocksdb_memory``)."""


@dataclass(frozen=True)
class SharedRocksMemory:
    """A block cache and a memtable budget that every store opened with them shares.

    >>> memory = SharedRocksMemory.of(32)
    >>> memory.cache_bytes // MIB, memory.write_buffer_bytes // MIB
    (16, 16)
    >>> sorted(memory.usage())
    ['block_cache', 'block_cache_pinned', 'memtables']
    """

    cache: rocksdict.Cache
    write_buffers: rocksdict.WriteBufferManager
    cache_bytes: int
    write_buffer_bytes: int

    @classmethod
    def of(cls, memory_mb: int) -> SharedRocksMemory:
        """Half of ``memory_mb`` block cache, half memtables. The memtables are not charged
        to the cache (RocksDB's other mode): the two are then reported apart, exactly, and a
        burst of writes cannot evict the reads' blocks."""
        half = max(1, memory_mb // 2) * MIB
        # allow_stall=False: past the budget RocksDB flushes the written store's memtable early
        # rather than stall writers (a stalled write would hold up the event loop).
        return cls(rocksdict.Cache(half), rocksdict.WriteBufferManager(half, False), half, half)

    def usage(self) -> dict[str, int]:
        """Bytes in use, as the budget counts them: the cache's usage, and the memtables' arena
        blocks (at or a little above the sum of the stores' ``cur-size-all-mem-tables``)."""
        return {
            "block_cache": int(self.cache.get_usage()),
            "block_cache_pinned": int(self.cache.get_pinned_usage()),
            "memtables": int(self.write_buffers.get_usage()),
        }

    def limits(self) -> dict[str, int]:
        return {"block_cache": self.cache_bytes, "memtables": self.write_buffer_bytes}

    def apply(self, options: rocksdict.Options, bloom_filter_bits: int) -> None:
        """Point a store's options at the shared cache and budget; the table format is the
        one Faust sets (bloom filter, binary-search index)."""
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(bloom_filter_bits, True)
        table.set_block_cache(self.cache)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        options.set_write_buffer_manager(self.write_buffers)
        options.set_arena_block_size(ARENA_BLOCK_BYTES)


def shared_memory_of(options: Mapping[str, Any]) -> SharedRocksMemory | None:
    found = options.get(SHARED_OPTION)
    return found if isinstance(found, SharedRocksMemory) else None


def install() -> None:
    """Stores whose table options carry :data:`SHARED_OPTION` open with that shared memory;
    others as Faust opens them. Idempotent."""
    check_version()
    from faust.stores.rocksdb import RocksDBOptions

    if getattr(RocksDBOptions.as_options, "driftwatch_shared", False):
        return
    faust_as_options = RocksDBOptions.as_options

    def as_options(self: RocksDBOptions) -> Any:
        options = faust_as_options(self)
        shared = shared_memory_of(self.extra_options)
        # Only the rocksdict driver (agents.app forces it): python-rocksdb's Options would
        # refuse the extra option before this is reached.
        if shared is not None and self.use_rocksdict:
            shared.apply(options, self.bloom_filter_size)
        return options

    as_options.driftwatch_shared = True  # type: ignore[attr-defined]
    RocksDBOptions.as_options = as_options  # type: ignore[method-assign]
