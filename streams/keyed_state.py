"""The one state machinery of the engine, the performance monitor and the join.

Each keeps its state as values in a key-value store (a Faust RocksDB table with a changelog in
the worker, a dict in a backtest). :class:`StateCache` is how they all use it:

* a value is decoded once and then changed in place; it stays decoded across batches (the
  next batch of the same stream costs no decode), up to ``capacity`` clean values, oldest used
  first out;
* changed values are tracked (with the partition whose state they are) and handed back,
  encoded, by :meth:`StateCache.flush`: the caller writes them to the store, which writes the
  changelog — only what changed is written;
* :meth:`StateCache.forget` drops decoded values of partitions this process gave up: another
  worker owns (and changes) them now, the store is the truth again when they come back.

Offset guard: every value that counts events carries ``offsets`` (source partition -> last
offset applied) and :func:`guard` admits a position only once, so re-reading events after a
crash (at-least-once delivery, no Kafka transactions) never counts them twice.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Generic, Protocol, TypeVar

import orjson

from schemas.events import json_bytes

Position = tuple[int, int]
"""(partition, offset) of the source message, or None offline."""

V = TypeVar("V")


class StateStore(Protocol):
    """Where state lives between batches. ``partition``: whose state ``key`` is, when the
    caller knows it (a partitioned store must not guess it from elsewhere)."""

    def get(self, key: str, partition: int | None = None) -> bytes | None: ...


# Not frozen: one is made per value written, and a frozen dataclass's __init__ costs 6x.
@dataclass(slots=True)
class Write:
    """One value to persist (``None`` deletes), and the partition whose state it belongs to
    (``None``: the partition of the message being processed)."""

    key: str
    value: bytes | None
    partition: int | None


class MemoryStore:
    """A dict-backed store for backtests and unit tests."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    @classmethod
    def copy_of(cls, other: MemoryStore) -> MemoryStore:
        out = cls()
        out.data = dict(other.data)
        return out

    def get(self, key: str, partition: int | None = None) -> bytes | None:
        return self.data.get(key)

    def apply(self, writes: Iterable[Write]) -> None:
        for w in writes:
            if w.value is None:
                self.data.pop(w.key, None)
            else:
                self.data[w.key] = w.value

    def scan(self, prefix: str) -> Iterator[tuple[str, bytes]]:
        """Entries whose key starts with ``prefix``, in key order (``streams.views``)."""
        for key in sorted(k for k in self.data if k.startswith(prefix)):
            yield key, self.data[key]


def guard(offsets: dict[int, int], position: Position | None) -> bool:
    """Record ``position``; False when it (or a later offset of its partition) was applied.

    >>> seen: dict[int, int] = {}
    >>> guard(seen, (0, 5)), guard(seen, (0, 5)), guard(seen, (0, 4)), guard(seen, (1, 0))
    (True, False, False, True)
    """
    if position is None:
        return True
    partition, offset = position
    if offsets.get(partition, -1) >= offset:
        return False
    offsets[partition] = offset
    return True


Run = tuple[int, int, int]
"""(partition, first offset, last offset) of positions that are all of one partition and
strictly increasing: what a batch of one stream's events usually is (see :func:`run_of`)."""


def crash_ordered(windows: list[Write], streams: list[Write]) -> list[Write]:
    """A write of windowed state in the order a crash can cut short: the windows' new values,
    then the streams' records, then the windows' deletes. A restore brings back a prefix and
    the batch is read again; a prefix with a stream's record has its windows' changes, and
    one without it has none of the deletes, so the batch read again sees the windows as the
    first reading did (deletes a prefix lost are the stream's to make again: it names them).

    >>> windows, streams = [Write("a", None, 0), Write("b", b"1", 0)], [Write("s", b"2", 0)]
    >>> [w.key for w in crash_ordered(windows, streams)]
    ['b', 's', 'a']
    """
    puts = [w for w in windows if w.value is not None]
    return puts + streams + [w for w in windows if w.value is None]


def run_of(positions: list[Position | None]) -> Run | None:
    """``positions`` as a :data:`Run`, or None when they are not one.

    >>> run_of([(0, 4), (0, 7), (0, 9)]), run_of([(0, 4), (1, 5)]), run_of([(0, 4), (0, 4)])
    ((0, 4, 9), None, None)
    """
    if not positions or positions[0] is None:
        return None
    partition, last = positions[0]
    for position in positions[1:]:
        if position is None or position[0] != partition or position[1] <= last:
            return None
        last = position[1]
    return partition, positions[0][1], last


def part_of_run(run: Run | None, part: list[Position | None]) -> Run | None:
    """The :data:`Run` of some of a run's positions, in order (a part of a run is one).

    >>> part_of_run((0, 4, 9), [(0, 5), (0, 9)]), part_of_run(None, [(0, 5)])
    ((0, 5, 9), None)
    """
    if run is None or not part:
        return None
    first, last = part[0], part[-1]
    assert first is not None and last is not None  # a run has no None positions
    return run[0], first[1], last[1]


def guard_many(
    offsets: dict[int, int], positions: list[Position | None], run: Run | None = None
) -> list[int]:
    """:func:`guard` for each position in order; the indices of those admitted. ``run``:
    the positions' :func:`run_of`, worked out once for the many feature windows that guard
    the same events; a run past the guard is admitted whole without a loop.

    >>> guard_many({0: 3}, [(0, 2), (0, 4), (0, 4), None, (1, 0)])
    [1, 3, 4]
    >>> ps = [(0, 4), (0, 5)]
    >>> guard_many({0: 3}, ps, run_of(ps)), guard_many({0: 4}, ps, run_of(ps))
    ([0, 1], [1])
    """
    if run is not None and offsets.get(run[0], -1) < run[1]:
        offsets[run[0]] = run[2]
        return list(range(len(positions)))
    if run is None and positions.count(None) == len(positions):
        return list(range(len(positions)))  # no positions (a backtest): nothing to guard
    keep: list[int] = []
    for k, position in enumerate(positions):
        if position is None:
            keep.append(k)
            continue
        partition, offset = position
        if offsets.get(partition, -1) >= offset:
            continue
        offsets[partition] = offset
        keep.append(k)
    return keep


def offsets_to_json(offsets: dict[int, int]) -> dict[str, int]:
    return {str(p): o for p, o in offsets.items()}


def load_json(raw: bytes) -> Any:
    """Stored JSON back: orjson (4-6x the standard library on a window's header), and the
    standard library for what orjson refuses (NaN and Infinity literals, unpaired
    surrogates), so stored values read back as before. One difference: orjson 3.13 reads an
    integer beyond 64 bits as a float. The engine stores none (counts, slot ids, offsets);
    a join record keeps a prediction's own extra fields, which could (as before: the join
    read its records with orjson already).

    >>> load_json(b'{"a":[1,2.5,null]}'), load_json(b'[NaN, -Infinity]')
    ({'a': [1, 2.5, None]}, [nan, -inf])
    >>> load_json(b'[18446744073709551616]')  # beyond 64 bits: a float
    [1.8446744073709552e+19]
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def dump_json(value: Any) -> bytes:
    """Compact JSON for storing: orjson (the standard library took half of a window's
    ``to_bytes``), in bytes of their own length, and the standard library wherever orjson
    would say something else or refuses: a ``null`` in its output may be a NaN or an
    infinity it wrote as null (the standard library writes them as literals, which
    :func:`load_json` reads back), and it refuses unpaired surrogates,
    integers beyond 64 bits and non-``str`` keys. Either way :func:`load_json` reads back the
    same value; only the spelling differs (orjson writes ``1e-05`` as ``0.00001``, and
    non-ASCII text as UTF-8).

    >>> dump_json({"p": 1e-05, "n": [1, 2]}), dump_json([float("nan"), None])
    (b'{"p":0.00001,"n":[1,2]}', b'[NaN,null]')
    >>> load_json(dump_json({chr(0xDC80): -float("inf")})) == {chr(0xDC80): -float("inf")}
    True
    """
    try:
        out = json_bytes(value)  # orjson's, in bytes of their own length (the value is kept)
    except (TypeError, orjson.JSONEncodeError):
        out = b"null"  # what the standard library makes of it, below
    if b"null" in out:
        return json.dumps(value, separators=(",", ":")).encode()
    return out


def offsets_from_json(raw: dict[str, int]) -> dict[int, int]:
    return {int(p): int(o) for p, o in raw.items()}


_UNMARKED: Final = object()
"""No partition: what ``StateCache.mark`` finds for a key not marked yet."""


class StateCache(Generic[V]):
    """Decoded values of a store: read once, changed in place, written back when changed.

    >>> store = MemoryStore()
    >>> cache = StateCache(store, decode=bytes.decode, encode=str.encode, capacity=2)
    >>> cache.put("a", "one", partition=0)
    >>> store.apply(cache.flush())
    >>> store.data
    {'a': b'one'}
    >>> cache.get("a"), cache.get("b")
    ('one', None)
    >>> cache.delete("a", partition=0)
    >>> [(w.key, w.value, w.partition) for w in cache.flush()]
    [('a', None, 0)]

    With ``max_bytes``, the clean values kept are bounded by their stored size as well, so
    that wide values (a prediction of 1,000 features) do not multiply the memory a count
    allows:

    >>> cache = StateCache(store, bytes.decode, str.encode, capacity=10, max_bytes=8)
    >>> for key in "abc":
    ...     cache.put(key, "four", partition=0)
    >>> store.apply(cache.flush())
    >>> sorted(cache._values), cache.stored_bytes
    (['b', 'c'], 8)
    """

    def __init__(
        self,
        store: StateStore,
        decode: Callable[[bytes], V],
        encode: Callable[[V], bytes],
        capacity: int = 4096,
        max_bytes: int = 0,
    ) -> None:
        self.store = store
        self.decode = decode
        self.encode = encode
        self.capacity = capacity
        """Clean decoded values kept after a flush (changed ones are kept until flushed)."""
        self.max_bytes = max_bytes
        """Most stored bytes (the encoded size of the values) of the clean values kept after
        a flush, beside ``capacity``; 0: no bound but the count."""
        self.stored_bytes = 0
        """Stored bytes of the cached values whose size is known: read from the store or
        written at a flush (a value put and not flushed yet counts from its flush)."""
        self._values: dict[str, V | None] = {}
        self._partitions: dict[str, int | None] = {}
        self._dirty: dict[str, int | None] = {}
        self._sizes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def get(self, key: str, partition: int | None = None) -> V | None:
        """The value (decoded from the store on first use, from ``partition``'s state when
        given), or None if there is none."""
        if key in self._values:
            return self._values[key]
        raw = self.store.get(key) if partition is None else self.store.get(key, partition)
        if raw is None:
            self._values[key] = None
            return None
        value = self._values[key] = self.decode(raw)
        self._sized(key, len(raw))
        return value

    def _sized(self, key: str, size: int) -> None:
        self.stored_bytes += size - self._sizes.get(key, 0)
        self._sizes[key] = size

    def _drop(self, key: str) -> None:
        del self._values[key]
        self._partitions.pop(key, None)
        self.stored_bytes -= self._sizes.pop(key, 0)

    def cached(self, key: str) -> V | None:
        """The decoded value if it is in the cache (no store read)."""
        return self._values.get(key)

    def values(self) -> list[V]:
        """The decoded values in the cache (not the store's)."""
        return [v for v in self._values.values() if v is not None]

    def hold(self, key: str, value: V) -> None:
        """Keep a new ``value`` for ``key`` without writing it: it is written once
        :meth:`mark` ed (with its partition, once known), and never if it is not."""
        self._values[key] = value

    def put(self, key: str, value: V, partition: int | None = None) -> None:
        """Set ``key`` to ``value`` and remember to write it."""
        self._values[key] = value
        self.mark(key, partition)

    def mark(self, key: str, partition: int | None = None) -> None:
        """The value of ``key`` was changed in place: write it at the next flush."""
        if self._dirty.get(key, _UNMARKED) != partition:  # one lookup: a hot path
            self._dirty[key] = partition
            self._partitions[key] = partition
            if key in self._values:  # in use: last in line to be forgotten
                self._values[key] = self._values.pop(key)

    def delete(self, key: str, partition: int | None = None) -> None:
        self._values[key] = None
        self._dirty[key] = partition
        self._partitions[key] = partition

    def dirty(self) -> Collection[str]:
        return self._dirty.keys()

    def flush(self) -> list[Write]:
        """The changed values, encoded, in key order (deterministic changelogs); then the
        oldest clean values beyond ``capacity`` are forgotten."""
        # Per key written or forgotten (a join writes every prediction, three times over
        # its life): ``_sized`` and ``_drop`` inline, the oldest keys taken, not all copied.
        values, sizes, dirty = self._values, self._sizes, self._dirty
        writes = self._encoded(sorted(dirty))
        dirty.clear()
        excess = len(values) - self.capacity
        if excess > 0:
            partitions = self._partitions
            for key in list(itertools.islice(values, excess)):
                del values[key]
                partitions.pop(key, None)
                self.stored_bytes -= sizes.pop(key, 0)
        over = self.stored_bytes - self.max_bytes if self.max_bytes else 0
        if over > 0:
            oldest = []  # only as many keys as go, not a copy of all of them at each flush
            for key in self._values:
                oldest.append(key)
                over -= self._sizes.get(key, 0)
                if over <= 0:
                    break
            for key in oldest:
                self._drop(key)
        return writes

    def spill(self) -> list[Write]:
        """:meth:`flush` for a store that is only scratch memory (a backtest's): the deletes,
        and the changed values among those the cache forgets now, are written; every other
        change stays in memory, unwritten, for a later flush to encode once. Memory is bounded
        as by a flush (``capacity``), with far fewer values encoded (a backtest's open and
        baseline windows were encoded at every flush). The values forgotten are the unchanged
        ones first, oldest first (free to forget), then changed ones in the cache's order;
        that order is not their last change's, since a value marked while changed keeps its
        place, so an open window can go and be read back: a decode more, never a change lost.
        Not for durable state. With ``max_bytes`` (a bound on encoded sizes), a flush.

        >>> store = MemoryStore()
        >>> cache = StateCache(store, bytes.decode, str.encode, capacity=2)
        >>> for key in "abc":
        ...     cache.put(key, key * 2, partition=0)
        >>> cache.delete("b", partition=0)
        >>> [(w.key, w.value) for w in cache.spill()], sorted(cache.dirty())
        ([('a', b'aa'), ('b', None)], ['c'])
        >>> [(w.key, w.value) for w in cache.flush()]
        [('c', b'cc')]
        >>> cache.put("d", "dd", partition=0)  # "b" (deleted, written) is forgotten first
        >>> [w.key for w in cache.spill()], sorted(cache._values)
        ([], ['c', 'd'])
        >>> sized = StateCache(store, bytes.decode, str.encode, capacity=10, max_bytes=8)
        >>> sized.put("d", "dd", partition=0)
        >>> [w.key for w in sized.spill()], list(sized.dirty())  # sizes need every encoding
        (['d'], [])
        """
        if self.max_bytes:
            return self.flush()
        values, dirty = self._values, self._dirty
        excess = len(values) - self.capacity
        gone: list[str] = []
        if excess > 0:
            gone = list(itertools.islice((k for k in values if k not in dirty), excess))
            if len(gone) < excess:
                gone += itertools.islice((k for k in values if k in dirty), excess - len(gone))
        # The deletes, and the changed values forgotten (a clean one goes without a write).
        keys = sorted(
            {k for k in dirty if values.get(k) is None}.union(k for k in gone if k in dirty)
        )
        writes = self._encoded(keys)
        for key in keys:
            del dirty[key]
        for key in gone:
            self._drop(key)
        return writes

    def _encoded(self, keys: list[str]) -> list[Write]:
        """The writes of ``keys`` (all changed), their stored sizes counted; one call for all
        of them (a join's flush writes every prediction)."""
        values, sizes, dirty, encode = self._values, self._sizes, self._dirty, self.encode
        writes: list[Write] = []
        for key in keys:
            value = values.get(key)
            raw = None if value is None else encode(value)
            size = 0 if raw is None else len(raw)
            self.stored_bytes += size - sizes.get(key, 0)
            sizes[key] = size
            writes.append(Write(key, raw, dirty[key]))
        return writes

    def forget(self, partitions: Collection[int] | None = None) -> None:
        """Drop decoded values (all, or those of ``partitions`` and of no known partition).
        Call after a flush: changes not flushed yet are dropped too."""
        if partitions is None:
            self._values.clear()
            self._partitions.clear()
            self._dirty.clear()
            self._sizes.clear()
            self.stored_bytes = 0
            return
        for key in list(self._values):
            part = self._partitions.get(key)
            if part is None or part in partitions:
                self._drop(key)
                self._dirty.pop(key, None)
