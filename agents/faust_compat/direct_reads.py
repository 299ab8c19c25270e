"""A table read straight from its partition's RocksDB: what ``table.get`` ends up doing,
without the layers on the way.

Faust's ``table.get(key)`` for a key that is there goes through ``Mapping.get``, the table's
sensors, ``key in store`` (encode the key, find the current event, read RocksDB) and then
``store[key]`` (all of that again, a second read); for a key that is not there it raises and
catches a ``KeyError``. The join reads every new prediction's key (nearly all misses), so
these layers were ~4 % of a single-event worker's interpreter time (``py-spy --gil``). For a
plain table of raw bytes in RocksDB (not global, no partitioner, no window) the answer is
``store._db_for_partition(partition).get(key)`` - the read Faust's ``Store._get`` makes for
the current event's partition - and that is what :func:`read` does; any other table is read
the way Faust reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from agents.faust_compat import introspection
from agents.faust_compat.current_event import read_done, read_in
from agents.faust_compat.version import check_version

check_version()


def direct_capable(table: Any) -> bool:
    """Whether :func:`read` can go to ``table``'s RocksDB partitions itself."""
    return (
        hasattr(getattr(table, "data", None), "_db_for_partition")
        and table.key_serializer == "raw"
        and table.value_serializer == "raw"
        and not table.use_partitioner
        and not table.is_global
        and table.window is None
    )


def read(table: Any, key: bytes, partition: int | None, direct: bool) -> bytes | None:
    """``key``'s value in ``partition``'s store of ``table`` (the current event's when None),
    or None. ``direct``: :func:`direct_capable` of the table (worked out once by the caller)."""
    if partition is None:
        value = table.get(key)
    elif direct:
        value = table.data._db_for_partition(partition).get(key)
    else:
        token = read_in(partition)
        try:
            value = table.get(key)
        finally:
            read_done(token)
    return None if value is None else bytes(value)


FAUST_OFFSET_KEY = b"__faust\0offset__"
"""Where Faust's RocksDB store keeps a partition's changelog offset, among the table's keys
(``faust.stores.rocksdb.Store.offset_key``): never a record, never to be deleted."""


def _items(table: Any, partition: int, direct: bool) -> Iterable[tuple[Any, Any]] | None:
    """``partition``'s (key, value) records, Faust's offset record left out; None while its
    store is not open. A table without partition stores (a dict in tests) is one store."""
    if not direct:
        return table.items()  # type: ignore[no-any-return]
    db = introspection.table_dbs(table).get(partition)
    if db is None:
        return None
    return ((k, v) for k, v in db.items() if k != FAUST_OFFSET_KEY)


def scan(table: Any, partition: int, marker: bytes, direct: bool) -> list[bytes] | None:
    """The values of ``table`` in ``partition``'s store that contain ``marker``, None while
    that store is not open. Safe from a thread: reads the RocksDB handle of a partition this
    worker has open, never opens one."""
    items = _items(table, partition, direct)
    if items is None:
        return None
    return [bytes(v) for _, v in items if v is not None and marker in bytes(v)]


def scan_keys(
    table: Any, partition: int, keep: Callable[[bytes], bool], direct: bool
) -> list[bytes] | None:
    """The keys of ``table`` in ``partition``'s store whose value ``keep`` accepts, None while
    that store is not open (as :func:`scan`, of which it is the variant for deletes)."""
    items = _items(table, partition, direct)
    if items is None:
        return None
    return [bytes(k) for k, v in items if v is not None and keep(bytes(v))]
