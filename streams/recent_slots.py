"""Deterministic samples of the values in an open window's last few sub-day slots.

A shift that starts mid-day is diluted in the whole day's summary; the engine's interim looks
test the last 1, 2, 4 and 8 slots (:data:`RECENT_LEVELS`) from these samples instead. Each slot
keeps the :data:`SLOT_SAMPLE` values with the smallest hash of their event id: a uniform
sample that does not depend on arrival order or batching, so a live worker and a backtest
keep the same values.
"""

from __future__ import annotations

import bisect
import json
import operator
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.keyed_state import load_json

RECENT_LEVELS = 4
"""Recent spans tested at sub-day looks: the last 1, 2, 4 and 8 interim slots."""
RECENT_SLOTS = 1 << (RECENT_LEVELS - 1)
SLOT_SAMPLE = 64
"""Values kept per slot: a deterministic uniform sample (the smallest event-id hashes)."""
_NO_VALUES: np.ndarray = np.empty(0, np.float64)


class Picks:
    """A batch's index lists (a run's, or those under a cut), each with the batch's hashes at
    them and a function that takes a feature's values at them: worked out once for every
    feature of the batch, which each gathered them again with two comprehensions (a wide
    model's runs, a batch, are per feature and ring entry).

    >>> picks = Picks()
    >>> hashes, take = picks.of([2, 3, 4], [10, 11, 12, 13, 14])
    >>> hashes, take(list("abcde")), picks.of([1, 4], [10, 11, 12, 13, 14])[1](list("abcde"))
    ([12, 13, 14], ['c', 'd', 'e'], ['b', 'e'])
    """

    __slots__ = ("_held", "_merged")

    def __init__(self) -> None:
        self._held: dict[int, tuple[list[int], list[int], Callable[[list[Any]], list[Any]]]] = {}
        """By the ``id`` of an index list (kept here, so no other list takes its ``id``)."""
        self._merged: dict[int, tuple[list[int], list[int], list[int], _Take]] = {}
        """By the ``id`` of a run's hashes (kept here): the entry's hashes they were merged
        into, the merged sample's hashes and its taker (:meth:`merged`)."""

    def of(
        self, ks: list[int], hashes: list[int]
    ) -> tuple[list[int], Callable[[list[Any]], list[Any]]]:
        """``hashes`` at ``ks`` (ascending, not empty; the same ``hashes`` for one ``ks``
        every time), and a taker of values at ``ks``: never change what they return."""
        hit = self._held.get(id(ks))
        if hit is None:
            hit = self._held[id(ks)] = (ks, [hashes[k] for k in ks], _taker(ks))
        return hit[1], hit[2]

    def merged(self, kept: list[int], fresh: list[int]) -> tuple[list[int], _Take]:
        """A ring entry's hashes ``kept`` with a run's ``fresh`` ones (a list of the batch's
        that nothing changes: :meth:`of`'s, or the batch's hashes): the ``SLOT_SAMPLE``
        smallest of ``kept + fresh``, stably sorted, and a taker of the values at them from
        the entry's values followed by the run's. Sorted once for the features whose entries
        hold the same hashes (those present in the same events: on a dense stream every
        batch's run meets a full entry, and each feature sorted it again). One merge is kept
        per run: features whose entries differ take turns, each sorting anew.

        >>> picks, fresh = Picks(), [5, 1]
        >>> hashes, take = picks.merged([2, 4] * 32, fresh)  # 32 twos and 31 fours stay
        >>> hashes[:3], hashes.count(4), take(list(range(66)))[:3]
        ([1, 2, 2], 31, (65, 0, 2))
        >>> picks.merged([2, 4] * 32, fresh)[1] is take, picks.merged([3] * 64, fresh)[1] is take
        (True, False)
        """
        hit = self._merged.get(id(fresh))
        if hit is not None and hit[1] == kept:
            return hit[2], hit[3]
        both = kept + fresh
        take = _smallest(both)
        hashes = list(take(both))
        self._merged[id(fresh)] = (fresh, list(kept), hashes, take)
        return hashes, take


_Take = Callable[[Sequence[Any]], tuple[Any, ...]]


def _smallest(hashes: list[int]) -> _Take:
    """A taker of the items at the ``SLOT_SAMPLE`` smallest of ``hashes`` (at least two),
    in hash order; ties in their order (a stable sort)."""
    return operator.itemgetter(*sorted(range(len(hashes)), key=hashes.__getitem__)[:SLOT_SAMPLE])


def _taker(ks: list[int]) -> Callable[[list[Any]], list[Any]]:
    """A function that takes a list's items at ``ks`` (ascending), as a new list: a slice
    where they are consecutive (a batch in event-time order), else in C."""
    if ks[-1] - ks[0] == len(ks) - 1:  # one index too
        return operator.itemgetter(slice(ks[0], ks[-1] + 1))
    get = operator.itemgetter(*ks)  # two or more: a tuple
    return lambda values: list(get(values))


class SlotRuns(list[tuple[int, list[int]]]):
    """Per ring entry a batch touches: its highest slot, and the batch's indices in that slot.
    Made with the batch's ``hashes``, it also finds (:meth:`below`) a run's indices whose
    hash is below a cut, once per cut, as :meth:`FirstSample.below` does for a batch of one
    slot: every feature present in the same events keeps the same sample."""

    def __init__(self, runs: list[tuple[int, list[int]]], hashes: list[int] | None = None) -> None:
        super().__init__(runs)
        self.hashes = hashes
        self._below: dict[tuple[int, int], list[int]] = {}
        self.picks = Picks()

    def below(self, j: int, cut: int) -> list[int]:
        """Run ``j``'s indices whose hash is below ``cut``, in order (needs ``hashes``)."""
        hit = self._below.get((j, cut))
        if hit is None:
            assert self.hashes is not None
            hashes = self.hashes
            hit = self._below[j, cut] = [k for k in self[j][1] if hashes[k] < cut]
        return hit


def slot_runs(slots: Sequence[int], hashes: list[int] | None = None) -> SlotRuns:
    """What :meth:`RecentSlots.add_many` keeps of a batch of several slots: per ring entry,
    its highest slot and the indices (in order) of the values in it (older ones are too late).
    ``hashes``: the batch's, for :meth:`SlotRuns.below`.

    >>> runs = slot_runs([3, 4, 11, 3, 12], [5, 1, 7, 2, 9])
    >>> runs, runs.below(1, 9), runs.below(1, 10)
    ([(11, [2]), (12, [4])], [], [4])
    """
    by_entry: dict[int, list[int]] = {}
    for k, slot in enumerate(slots):
        by_entry.setdefault(slot % RECENT_SLOTS, []).append(k)
    out: list[tuple[int, list[int]]] = []
    for ks in by_entry.values():
        top = max(slots[k] for k in ks)
        out.append((top, [k for k in ks if slots[k] == top]))
    return SlotRuns(out, hashes)


@dataclass(frozen=True, slots=True)
class FirstSample:
    """The sample of a batch of one slot that starts its ring entry, the same for every
    feature of the batch: ``take`` picks the values with the ``SLOT_SAMPLE`` smallest hashes
    (ties: the earlier value) in hash order, as tuples in C; ``hashes`` are theirs. For an
    entry already full, :meth:`below` finds the few values that can still enter it.

    >>> first = FirstSample.of([9, 3, 7] * 30)
    >>> first.hashes[:3], first.take(list(range(90)))[:3]
    ((3, 3, 3), (1, 4, 7))
    >>> first.below(7)[:4]
    [1, 4, 7, 10]
    """

    take: Callable[[Sequence[Any]], tuple[Any, ...]]
    hashes: tuple[int, ...]
    batch_hashes: list[int]
    _below: dict[int, list[int]] = field(default_factory=dict, repr=False)
    picks: Picks = field(default_factory=Picks, repr=False)

    @classmethod
    def of(cls, hashes: list[int]) -> FirstSample | None:
        """None for a batch smaller than a sample (its values are all kept, in order)."""
        if len(hashes) < SLOT_SAMPLE:
            return None
        take = _smallest(hashes)
        return cls(take, take(hashes), hashes)

    def below(self, cut: int) -> list[int]:
        """The batch's indices whose hash is below ``cut``, in order: all that can enter a
        full sample whose largest hash is ``cut``. Remembered per cut: every feature present
        in the same events keeps the same sample, so a batch usually has one cut, and its
        features pair up the few values that pass instead of all of them (a dense stream's
        samples are full after its first batch of the hour)."""
        hit = self._below.get(cut)
        if hit is None:
            hit = self._below[cut] = [k for k, h in enumerate(self.batch_hashes) if h < cut]
        return hit


class RecentSlots:
    """Samples of the values in the last ``RECENT_SLOTS`` interim slots of an open window.

    A shift that starts mid-day is diluted in the whole day's summary; testing the last few
    hours finds it hours earlier. Keeping the ``SLOT_SAMPLE`` values with the smallest hash of
    their event id is a uniform sample that does not depend on arrival order or batching, so
    the live worker and a backtest keep the same values; tests on a sample stay valid (it is
    i.i.d. from the slot's distribution), they just have less power at very high volume —
    the whole-window tests still see every value.

    Each ring entry keeps its hashes and its values in two lists of the same length (in
    arrival order until the sample is full, then by hash; ties in arrival order). Pairs of
    (hash, value) in one list cost a tuple per value per feature: making and freeing them
    was a twentieth of a backtest's steady state, and they kept the collector busy. The two
    lists hold the batch's own objects: a hash is shared by every feature of its event.
    :attr:`samples` gives the entries as pairs.
    """

    __slots__ = ("_arrays", "_encoded", "_moved", "_run", "_tallies", "hashes", "ids", "values")

    def __init__(
        self,
        ids: list[int] | None = None,
        samples: Sequence[Sequence[tuple[int, float | str | None]]] | None = None,
    ) -> None:
        self.ids: list[int] = [-1] * RECENT_SLOTS if ids is None else ids
        self.hashes: list[list[int]] = [[] for _ in range(RECENT_SLOTS)]
        self.values: list[list[float | str | None]] = [[] for _ in range(RECENT_SLOTS)]
        for i, sample in enumerate(samples or ()):
            self.hashes[i] = [h for h, _ in sample]
            self.values[i] = [v for _, v in sample]
        self._arrays: dict[int, tuple[int, tuple[np.ndarray, int]]] = {}
        """Per ring entry: (slot, (finite values, missing)) of numeric samples; dropped
        whenever the entry changes."""
        self._encoded: dict[int, bytes] = {}
        """Per ring entry: its part of :meth:`to_bytes` (a flush re-encodes only the entries
        that changed since the last one: usually one of eight); dropped with ``_arrays``."""
        self._tallies: dict[int, tuple[int, Counter[float | str | None]]] = {}
        """Per ring entry: (slot, its values counted) of categorical samples; dropped with
        ``_arrays``."""
        self._run: tuple[int, tuple[tuple[np.ndarray, int], ...]] | None = None
        """The last slot and the result of the last whole-ring :meth:`known_slot_arrays` (a
        look's), which the next look's is made from."""
        self._moved = 0
        """Ring entries changed since ``_run`` was made, a bit each (kept only while there is
        one)."""

    @property
    def samples(self) -> list[list[tuple[int, float | str | None]]]:
        """Each ring entry as (hash, value) pairs, in its order."""
        return [list(zip(h, v, strict=True)) for h, v in zip(self.hashes, self.values, strict=True)]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecentSlots):
            return NotImplemented
        return (self.ids, self.hashes, self.values) == (other.ids, other.hashes, other.values)

    def __repr__(self) -> str:
        return f"RecentSlots(ids={self.ids!r}, samples={self.samples!r})"

    def _changed(self, i: int) -> None:
        if self._run is not None:
            self._moved |= 1 << i
        self._arrays.pop(i, None)
        self._encoded.pop(i, None)
        self._tallies.pop(i, None)

    def add(self, slot: int, h: int, value: float | str | None) -> None:
        i = slot % RECENT_SLOTS
        self._changed(i)
        if self.ids[i] != slot:
            if self.ids[i] > slot:
                return  # an event later than its slot's ring entry: too late for sub-day looks
            self.ids[i] = slot
            self.hashes[i], self.values[i] = [], []
        hashes, values = self.hashes[i], self.values[i]
        if len(hashes) < SLOT_SAMPLE:
            hashes.append(h)
            values.append(value)
            if len(hashes) == SLOT_SAMPLE:
                self._keep(i, hashes, values)  # full: by hash from now on
        elif h < hashes[-1]:
            hashes.pop()
            values.pop()
            at = bisect.bisect_right(hashes, h)  # after equal hashes: they came first
            hashes.insert(at, h)
            values.insert(at, value)

    def add_many(
        self,
        slots: list[int],
        hashes: list[int],
        values: list[float | str | None],
        first: FirstSample | None = None,
        runs: SlotRuns | None = None,
    ) -> None:
        """:meth:`add` for each (slot, hash, value), in order, in one pass per ring entry:
        an entry ends up holding its highest slot, with the ``SLOT_SAMPLE`` smallest hashes
        (ties: the earlier value) - what adding them one at a time leaves. ``first``: the
        batch's :class:`FirstSample`, for a batch of one slot of at least ``SLOT_SAMPLE``
        values (its sample, if it starts its entry; its picks and merges, if not);
        ``runs``: :func:`slot_runs` of ``slots`` and these ``hashes`` (else made here). Both
        are the same for every feature of a batch: its caller works them out once."""
        if len(hashes) != len(values):
            raise ValueError("a hash for each value")
        one_slot = first is not None or (  # a FirstSample is made for one slot only
            runs is None and bool(slots) and slots.count(slots[0]) == len(slots)
        )
        if one_slot:
            slot = slots[0]
            i = slot % RECENT_SLOTS
            starts = self.ids[i] < slot or (self.ids[i] == slot and not self.hashes[i])
            if first is not None:
                if len(values) != len(first.batch_hashes):
                    raise ValueError("a value for each hash of the batch")
                if starts:
                    # What _add_run leaves: the stably sorted batch's first SLOT_SAMPLE.
                    self.ids[i] = slot
                    self.hashes[i] = list(first.hashes)
                    self.values[i] = list(first.take(values))
                    self._changed(i)
                    return
                if self.ids[i] == slot and len(self.hashes[i]) == SLOT_SAMPLE:
                    # What _add_run keeps of them all: those under the largest kept hash.
                    ks = first.below(self.hashes[i][-1])
                    if ks:
                        fresh, take = first.picks.of(ks, first.batch_hashes)
                        self._add_run(slot, fresh, take(values), first.picks)
                    return
                # An entry this slot's earlier values began: the batch's hashes are the run.
                self._add_run(slot, first.batch_hashes, values, first.picks)
                return
            self._add_run(slot, hashes, values)
            return
        if runs is None or runs.hashes is not hashes:
            runs = slot_runs(slots, hashes)  # its cuts and picks are this batch's hashes'
        for j, (top, ks) in enumerate(runs):
            i = top % RECENT_SLOTS
            if self.ids[i] == top and len(self.hashes[i]) == SLOT_SAMPLE:
                # What _add_run keeps of them all: those under the largest kept hash.
                ks = runs.below(j, self.hashes[i][-1])
                if not ks:
                    continue
            fresh, take = runs.picks.of(ks, hashes)
            self._add_run(top, fresh, take(values), runs.picks)

    def _add_run(
        self,
        slot: int,
        fresh_h: list[int],
        fresh_v: list[float | str | None],
        picks: Picks | None = None,
    ) -> None:
        """Values of one slot, in arrival order, into its ring entry. ``picks``: the batch's,
        to merge them with an entry they overflow (:meth:`Picks.merged`, keyed by
        ``fresh_h``: a list of the batch's that nothing changes)."""
        i = slot % RECENT_SLOTS
        if self.ids[i] > slot:
            return  # every one of them is later than its slot's ring entry
        if self.ids[i] != slot:
            self.ids[i] = slot
            self.hashes[i], self.values[i] = [], []
        hashes, values = self.hashes[i], self.values[i]
        if len(hashes) == SLOT_SAMPLE:  # full, so sorted: only smaller hashes get in
            cut = hashes[-1]
            ks = [k for k, h in enumerate(fresh_h) if h < cut]
            if len(ks) != len(fresh_h):
                fresh_h = [fresh_h[k] for k in ks]
                fresh_v = [fresh_v[k] for k in ks]
        if not fresh_h and hashes:
            return
        self._changed(i)
        if len(hashes) + len(fresh_h) < SLOT_SAMPLE:
            hashes.extend(fresh_h)  # arrival order until the sample is full
            values.extend(fresh_v)
            return
        # Stable: ties keep arrival order, so a newcomer with the same hash as the largest
        # kept one stays out, as it does one at a time (it must be strictly smaller).
        if picks is None:
            self._keep(i, hashes + fresh_h, values + fresh_v)
            return
        merged, take = picks.merged(hashes, fresh_h)
        self.hashes[i] = list(merged)
        self.values[i] = list(take(values + fresh_v))

    def _keep(self, i: int, hashes: list[int], values: list[float | str | None]) -> None:
        """Entry ``i`` becomes the ``SLOT_SAMPLE`` smallest hashes of these, stably sorted."""
        take = _smallest(hashes)
        self.hashes[i] = list(take(hashes))  # in C: two comprehensions cost a wide model 6 %
        self.values[i] = list(take(values))

    def slot_arrays(self, last_slot: int, slots: int) -> list[tuple[np.ndarray, int]] | None:
        """Per slot ``last_slot - slots + 1 .. last_slot`` (oldest first), its sample's
        finite values and missing count (an empty array for a slot with no traffic); None if
        a slot is unknown (before the window, or its ring entry taken by a later slot)."""
        out = self.known_slot_arrays(last_slot, slots)
        return out if len(out) == slots else None

    def known_slot_arrays(self, last_slot: int, slots: int) -> list[tuple[np.ndarray, int]]:
        """:meth:`slot_arrays` of the longest run of known slots that ends at ``last_slot``
        (at most ``slots``; none if ``last_slot`` is unknown). The arrays are shared (kept
        while their entry stays the same, and known by their identity): never change them.

        A look asks for the whole ring (``slots`` = :data:`RECENT_SLOTS`) at the slot after
        the last look's, and usually only the newest slot's entry has changed since: its run
        is then the last one moved on by that slot (or, asked again at the same slot, with
        that slot's entry made again), one entry's work rather than a walk of eight (a wide
        model's looks walked a ring per feature). Anything else walks the ring."""
        if slots != RECENT_SLOTS:
            return self._walk(last_slot, slots)
        kept = self._run
        i = last_slot % RECENT_SLOTS
        if (
            kept is not None
            and last_slot - 1 <= kept[0] <= last_slot
            and last_slot >= 0
            and self._moved & ~(1 << i) == 0
        ):
            at, run = kept
            entry = self._entry(last_slot)
            if entry is None:
                out = []
            elif at == last_slot:  # (not empty then: an entry's slot only ever grows)
                out = [*run[:-1], entry]
            else:
                out = [*(run[1:] if len(run) == RECENT_SLOTS else run), entry]
        else:
            out = self._walk(last_slot, slots)
        self._run, self._moved = (last_slot, tuple(out)), 0
        return out

    def _walk(self, last_slot: int, slots: int) -> list[tuple[np.ndarray, int]]:
        """:meth:`known_slot_arrays`, slot by slot."""
        out: list[tuple[np.ndarray, int]] = []
        for slot in range(last_slot, last_slot - slots, -1):
            entry = self._entry(slot)
            if entry is None:
                break
            out.append(entry)
        out.reverse()
        return out

    def _entry(self, slot: int) -> tuple[np.ndarray, int] | None:
        """``slot``'s finite values and missing count (none for a slot with no traffic);
        None if it is unknown (before the window, or its ring entry taken by a later slot)."""
        i = slot % RECENT_SLOTS
        if slot < 0 or self.ids[i] > slot:
            return None
        if self.ids[i] < slot:
            return (_NO_VALUES, 0)  # a slot with no traffic
        return self._arrays_of(i, slot)

    def _arrays_of(self, i: int, slot: int) -> tuple[np.ndarray, int]:
        """Entry ``i``'s (holding ``slot``) finite values and missing count, converted once
        while it stays the same."""
        hit = self._arrays.get(i)
        if hit is None or hit[0] != slot:
            # None (missing) becomes NaN in the conversion
            raw = np.array(self.values[i], dtype=np.float64)
            finite = raw[np.isfinite(raw)]
            hit = self._arrays[i] = (slot, (finite, int(raw.size - finite.size)))
        return hit[1]

    def _span_entries(self, last_slot: int, slots: int) -> list[int] | None:
        """The ring entries of slots ``last_slot - slots + 1 .. last_slot`` that had
        traffic, oldest first; None if one of those slots is unknown."""
        out: list[int] = []
        for slot in range(last_slot - slots + 1, last_slot + 1):
            i = slot % RECENT_SLOTS
            if slot < 0 or self.ids[i] != slot:
                if slot >= 0 and self.ids[i] < slot:
                    continue  # a slot with no traffic
                return None
            out.append(i)
        return out

    def span(self, last_slot: int, slots: int) -> list[float | str | None] | None:
        """Values of slots ``last_slot - slots + 1 .. last_slot``; None if one is unknown."""
        entries = self._span_entries(last_slot, slots)
        if entries is None:
            return None
        out: list[float | str | None] = []
        for i in entries:
            out.extend(self.values[i])
        return out

    def span_tally(
        self, last_slot: int, slots: int
    ) -> tuple[Counter[float | str | None], int] | None:
        """:meth:`span`'s values counted (in order of first appearance, as ``Counter`` of the
        values would have them), and how many; None if a slot is unknown. Each entry is
        counted once while it stays the same: a look's four spans of a categorical feature
        re-counted every value of up to eight samples (~2 % of a backtest)."""
        entries = self._span_entries(last_slot, slots)
        if entries is None:
            return None
        out: Counter[float | str | None] = Counter()
        n = 0
        cache = self._tallies
        for i in entries:
            hit = cache.get(i)
            if hit is None or hit[0] != self.ids[i]:
                hit = cache[i] = (self.ids[i], Counter(self.values[i]))
            out.update(hit[1])
            n += len(self.values[i])
        return out, n

    def to_bytes(self, numeric: bool) -> bytes:
        """Compact binary for numeric features (<= 6.2 KiB: ids, counts, u32 hashes, f64
        values with NaN for missing); JSON for categorical values."""
        cache = self._encoded
        entries: list[bytes] = []
        for i in range(RECENT_SLOTS):
            part = cache.get(i)
            if part is None:
                part = cache[i] = _encode_sample(self.hashes[i], self.values[i], numeric)
            entries.append(part)
        if not numeric:  # the bytes of json.dumps(..., separators=(",", ":")) of the whole
            ids = json.dumps(self.ids, separators=(",", ":")).encode()
            return b'{"ids":' + ids + b',"s":[' + b",".join(entries) + b"]}"
        counts = [len(h) for h in self.hashes]
        return struct.pack(f"<{RECENT_SLOTS}q{RECENT_SLOTS}H", *self.ids, *counts) + b"".join(
            entries
        )

    @classmethod
    def from_bytes(cls, raw: bytes, numeric: bool) -> RecentSlots:
        if not numeric:
            d = load_json(raw)
            return cls(ids=list(d["ids"]), samples=[[(h, v) for h, v in x] for x in d["s"]])
        head = struct.Struct(f"<{RECENT_SLOTS}q{RECENT_SLOTS}H")
        fields_ = head.unpack_from(raw)
        out = cls(ids=list(fields_[:RECENT_SLOTS]))
        pos = head.size
        for i, n in enumerate(fields_[RECENT_SLOTS:]):
            out.hashes[i] = np.frombuffer(raw, dtype="<u4", count=n, offset=pos).tolist()
            pos += 4 * n
            values = np.frombuffer(raw, dtype="<f8", count=n, offset=pos).tolist()
            pos += 8 * n
            out.values[i] = [None if v != v else v for v in values]
        return out


def _encode_sample(hashes: list[int], values: list[float | str | None], numeric: bool) -> bytes:
    """One ring entry's part of :meth:`RecentSlots.to_bytes`."""
    if not numeric:
        pairs = [[h, v] for h, v in zip(hashes, values, strict=True)]
        return json.dumps(pairs, separators=(",", ":")).encode()
    # None (missing) becomes NaN in the conversion
    return np.array(hashes, dtype="<u4").tobytes() + np.array(values, "<f8").tobytes()


def event_hash(event_id: str) -> int:
    """Stable 32-bit hash of an event id (the same in every process, unlike ``hash``)."""
    return zlib.crc32(event_id.encode())


def event_hashes(event_ids: list[str]) -> list[int]:
    """:func:`event_hash` of each id, in C (a batch's: no Python call per event).

    >>> event_hashes(["a", "b"]) == [event_hash("a"), event_hash("b")]
    True
    """
    return list(map(zlib.crc32, map(str.encode, event_ids)))
