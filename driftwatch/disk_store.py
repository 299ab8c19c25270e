"""A state store on disk, for a backtest's state that grows with its input's rate.

A backtest keeps the engine's and the performance monitor's state in memory: it is bounded by
the features and the windows, whatever the input's size. The join's is not: it keeps every
prediction for its retention (30 days), so a labelled input of 25,000 predictions a day held
~750,000 records, 1.04 GB of RSS for 1.5M predictions. In a RocksDB database of its own, in a
temporary directory, the join reads and writes them as the worker's join does its table:
what RSS holds is the join's cache of decoded records (``JoinConfig.cached_records``) and a
bounded block cache and memtable.

>>> import tempfile
>>> from streams.keyed_state import Write
>>> with tempfile.TemporaryDirectory() as tmp, DiskStore(Path(tmp) / "join") as store:
...     store.apply([Write("a", b"1", None), Write("b", b"2", None), Write("a", None, None)])
...     store.get("a"), store.get("b")
(None, b'2')
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import rocksdict

from streams.keyed_state import Write

MIB = 1024 * 1024


class DiskStore:
    """:class:`~streams.keyed_state.MemoryStore`'s interface (``get``, ``apply``) over a
    RocksDB database at ``path``, made empty and deleted on :meth:`close`: scratch state, so
    no write-ahead log (a crash loses the backtest, not data)."""

    def __init__(self, path: Path, cache_mb: int = 8, write_buffer_mb: int = 16) -> None:
        self.path = path
        shutil.rmtree(path, ignore_errors=True)
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_size(write_buffer_mb * MIB)
        options.set_max_write_buffer_number(2)
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(rocksdict.Cache(cache_mb * MIB))
        table.set_bloom_filter(10, False)  # most lookups are of keys not there yet
        options.set_block_based_table_factory(table)
        self._db: rocksdict.Rdict | None = rocksdict.Rdict(str(path), options)
        self._write_options = rocksdict.WriteOptions()
        # a property at run time; the stubs call it a method
        self._write_options.disable_wal = True  # type: ignore[method-assign,assignment]

    def get(self, key: str, partition: int | None = None) -> bytes | None:
        assert self._db is not None, "closed"
        value: bytes | None = self._db.get(key.encode())  # raw mode: bytes as stored
        return value

    def apply(self, writes: Iterable[Write]) -> None:
        assert self._db is not None, "closed"
        batch = rocksdict.WriteBatch(raw_mode=True)
        for w in writes:
            if w.value is None:
                batch.delete(w.key.encode())
            else:
                batch.put(w.key.encode(), w.value)
        if not batch.is_empty():
            self._db.write(batch, self._write_options)

    def close(self) -> None:
        """Close the database and delete its files."""
        if self._db is not None:
            self._db.close()
            self._db = None
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> DiskStore:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
