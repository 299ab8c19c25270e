"""The detection state kept per stream, per feature-window and per incident, and its codecs.

Every value carries the source offsets it has applied (``offsets``: partition -> last
offset). After a crash the worker re-reads events since its last commit; the guard makes the
re-application a no-op, so counts stay exact under at-least-once delivery without Kafka
transactions.
"""

from __future__ import annotations

import bisect
import functools
import json
import operator
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from streams.categorical_summary import CategoricalSummary
from streams.importance import (
    Association,
    ScoreBatch,
    association_from_json,
    new_association,
)
from streams.incidents import IncidentBook
from streams.keyed_state import (
    Position,
    Run,
    guard,
    guard_many,
    offsets_from_json,
    offsets_to_json,
)
from streams.numeric_summary import NumericSummary
from streams.slot_series import SlotSeries

FeatureKind = Literal["numeric", "categorical"]
Summary = NumericSummary | CategoricalSummary
RECENT_LEVELS = 4
"""Recent spans tested at sub-day looks: the last 1, 2, 4 and 8 interim slots."""
RECENT_SLOTS = 1 << (RECENT_LEVELS - 1)
ABSENT = object()
"""A feature an event does not have (unlike None: present and missing), in a batch's columns."""
SLOT_SAMPLE = 64
"""Values kept per slot: a deterministic uniform sample (the smallest event-id hashes)."""
_NO_VALUES: np.ndarray = np.empty(0, np.float64)


SlotRuns = list[tuple[int, list[int]]]
"""Per ring entry a batch touches: its highest slot, and the batch's indices in that slot."""


def slot_runs(slots: Sequence[int]) -> SlotRuns:
    """What :meth:`RecentSlots.add_many` keeps of a batch of several slots: per ring entry,
    its highest slot and the indices (in order) of the values in it (older ones are too late).

    >>> slot_runs([3, 4, 11, 3, 12])
    [(11, [2]), (12, [4])]
    """
    by_entry: dict[int, list[int]] = {}
    for k, slot in enumerate(slots):
        by_entry.setdefault(slot % RECENT_SLOTS, []).append(k)
    out: SlotRuns = []
    for ks in by_entry.values():
        top = max(slots[k] for k in ks)
        out.append((top, [k for k in ks if slots[k] == top]))
    return out


@dataclass(frozen=True, slots=True)
class FirstSample:
    """The sample of a batch of one slot that starts its ring entry, the same for every
    feature of the batch: ``take`` picks the values with the ``SLOT_SAMPLE`` smallest hashes
    (ties: the earlier value) in hash order, as tuples in C; ``hashes`` are theirs.

    >>> first = FirstSample.of([9, 3, 7] * 30)
    >>> first.hashes[:3], first.take(list(range(90)))[:3]
    ((3, 3, 3), (1, 4, 7))
    """

    take: Callable[[Sequence[Any]], tuple[Any, ...]]
    hashes: tuple[int, ...]

    @classmethod
    def of(cls, hashes: list[int]) -> FirstSample | None:
        """None for a batch smaller than a sample (its values are all kept, in order)."""
        if len(hashes) < SLOT_SAMPLE:
            return None
        order = sorted(range(len(hashes)), key=hashes.__getitem__)  # stable
        take = operator.itemgetter(*order[:SLOT_SAMPLE])
        return cls(take, take(hashes))


@dataclass
class RecentSlots:
    """Samples of the values in the last ``RECENT_SLOTS`` interim slots of an open window.

    A shift that starts mid-day is diluted in the whole day's summary; testing the last few
    hours finds it hours earlier. Keeping the ``SLOT_SAMPLE`` values with the smallest hash of
    their event id is a uniform sample that does not depend on arrival order or batching, so
    the live worker and a backtest keep the same values; tests on a sample stay valid (it is
    i.i.d. from the slot's distribution), they just have less power at very high volume —
    the whole-window tests still see every value.
    """

    ids: list[int] = field(default_factory=lambda: [-1] * RECENT_SLOTS)
    samples: list[list[tuple[int, float | str | None]]] = field(
        default_factory=lambda: [[] for _ in range(RECENT_SLOTS)]
    )
    _arrays: dict[int, tuple[int, int, np.ndarray, int]] = field(
        default_factory=dict, repr=False, compare=False
    )
    """Per ring entry: (slot, sample length, finite values, missing) of numeric samples;
    dropped whenever the entry changes."""
    _encoded: dict[int, bytes] = field(default_factory=dict, repr=False, compare=False)
    """Per ring entry: its part of :meth:`to_bytes` (a flush re-encodes only the entries that
    changed since the last one: usually one of eight); dropped with ``_arrays``."""

    def add(self, slot: int, h: int, value: float | str | None) -> None:
        i = slot % RECENT_SLOTS
        self._arrays.pop(i, None)
        self._encoded.pop(i, None)
        if self.ids[i] != slot:
            if self.ids[i] > slot:
                return  # an event later than its slot's ring entry: too late for sub-day looks
            self.ids[i] = slot
            self.samples[i] = []
        sample = self.samples[i]
        if len(sample) < SLOT_SAMPLE:
            sample.append((h, value))
            if len(sample) == SLOT_SAMPLE:
                sample.sort(key=_hash_of)
        elif h < sample[-1][0]:
            sample.pop()
            bisect.insort(sample, (h, value), key=_hash_of)

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
        batch's :class:`FirstSample`, for a batch of one slot (used if it starts its entry);
        ``runs``: :func:`slot_runs` of ``slots``. Both are the same for every feature of a
        batch: its caller works them out once."""
        one_slot = first is not None or (  # a FirstSample is made for one slot only
            runs is None and bool(slots) and slots.count(slots[0]) == len(slots)
        )
        if one_slot:
            slot = slots[0]
            i = slot % RECENT_SLOTS
            starts = self.ids[i] < slot or (self.ids[i] == slot and not self.samples[i])
            if first is not None and starts:
                # What _add_run leaves: the stably sorted batch's first SLOT_SAMPLE.
                self.ids[i] = slot
                self.samples[i] = list(zip(first.hashes, first.take(values), strict=True))
                self._arrays.pop(i, None)
                self._encoded.pop(i, None)
                return
            self._add_run(slot, list(zip(hashes, values, strict=True)))
            return
        for top, ks in slot_runs(slots) if runs is None else runs:
            self._add_run(top, [(hashes[k], values[k]) for k in ks])

    def _add_run(self, slot: int, fresh: list[tuple[int, float | str | None]]) -> None:
        """Values of one slot, in arrival order, into its ring entry."""
        i = slot % RECENT_SLOTS
        if self.ids[i] > slot:
            return  # every one of them is later than its slot's ring entry
        if self.ids[i] != slot:
            self.ids[i] = slot
            self.samples[i] = []
        sample = self.samples[i]
        if len(sample) == SLOT_SAMPLE:  # full, so sorted: only smaller hashes get in
            cut = sample[-1][0]
            fresh = [pair for pair in fresh if pair[0] < cut]
        if not fresh and sample:
            return
        self._arrays.pop(i, None)
        self._encoded.pop(i, None)
        if len(sample) + len(fresh) < SLOT_SAMPLE:
            sample.extend(fresh)  # arrival order until the sample is full
            return
        # Stable: ties keep arrival order, so a newcomer with the same hash as the largest
        # kept one stays out, as it does one at a time (it must be strictly smaller).
        self.samples[i] = sorted(sample + fresh, key=_hash_of)[:SLOT_SAMPLE]

    def span_array(self, last_slot: int, slots: int) -> tuple[np.ndarray, int] | None:
        """:meth:`span` of a numeric feature as (finite values, missing count), from each
        slot's array, made once per slot sample rather than once per look."""
        parts = self.slot_arrays(last_slot, slots)
        if parts is None:
            return None
        values = np.concatenate([p for p, _ in parts]) if parts else np.empty(0, np.float64)
        return values, sum(m for _, m in parts)

    def slot_arrays(self, last_slot: int, slots: int) -> list[tuple[np.ndarray, int]] | None:
        """Per slot ``last_slot - slots + 1 .. last_slot`` (oldest first), its sample's
        finite values and missing count (an empty array for a slot with no traffic); None if
        a slot is unknown (before the window, or its ring entry taken by a later slot)."""
        out = self.known_slot_arrays(last_slot, slots)
        return out if len(out) == slots else None

    def known_slot_arrays(self, last_slot: int, slots: int) -> list[tuple[np.ndarray, int]]:
        """:meth:`slot_arrays` of the longest run of known slots that ends at ``last_slot``
        (at most ``slots``; none if ``last_slot`` is unknown)."""
        out: list[tuple[np.ndarray, int]] = []
        cache = self._arrays
        for slot in range(last_slot, last_slot - slots, -1):
            i = slot % RECENT_SLOTS
            if slot < 0 or self.ids[i] != slot:
                if slot >= 0 and self.ids[i] < slot:
                    out.append((_NO_VALUES, 0))  # a slot with no traffic
                    continue
                break
            hit = cache.get(i)
            if hit is None or hit[0] != slot:
                # None (missing) becomes NaN in the conversion
                raw = np.array(list(map(_value_of, self.samples[i])), dtype=np.float64)
                finite = raw[np.isfinite(raw)]
                hit = cache[i] = (slot, len(self.samples[i]), finite, int(raw.size - finite.size))
            out.append((hit[2], hit[3]))
        out.reverse()
        return out

    def span(self, last_slot: int, slots: int) -> list[float | str | None] | None:
        """Values of slots ``last_slot - slots + 1 .. last_slot``; None if one is unknown."""
        out: list[float | str | None] = []
        for slot in range(last_slot - slots + 1, last_slot + 1):
            i = slot % RECENT_SLOTS
            if slot < 0 or self.ids[i] != slot:
                if slot >= 0 and self.ids[i] < slot:
                    continue  # a slot with no traffic
                return None
            out.extend(map(_value_of, self.samples[i]))
        return out

    def to_bytes(self, numeric: bool) -> bytes:
        """Compact binary for numeric features (<= 6.2 KiB: ids, counts, u32 hashes, f64
        values with NaN for missing); JSON for categorical values."""
        cache = self._encoded
        entries: list[bytes] = []
        for i, sample in enumerate(self.samples):
            part = cache.get(i)
            if part is None:
                part = cache[i] = _encode_sample(sample, numeric)
            entries.append(part)
        if not numeric:  # the bytes of json.dumps(..., separators=(",", ":")) of the whole
            ids = json.dumps(self.ids, separators=(",", ":")).encode()
            return b'{"ids":' + ids + b',"s":[' + b",".join(entries) + b"]}"
        counts = [len(sample) for sample in self.samples]
        return struct.pack(f"<{RECENT_SLOTS}q{RECENT_SLOTS}H", *self.ids, *counts) + b"".join(
            entries
        )

    @classmethod
    def from_bytes(cls, raw: bytes, numeric: bool) -> RecentSlots:
        if not numeric:
            d = json.loads(raw)
            return cls(ids=list(d["ids"]), samples=[[(h, v) for h, v in x] for x in d["s"]])
        head = struct.Struct(f"<{RECENT_SLOTS}q{RECENT_SLOTS}H")
        fields_ = head.unpack_from(raw)
        ids, counts = list(fields_[:RECENT_SLOTS]), fields_[RECENT_SLOTS:]
        pos = head.size
        samples: list[list[tuple[int, float | str | None]]] = []
        for n in counts:
            hashes = np.frombuffer(raw, dtype="<u4", count=n, offset=pos)
            pos += 4 * n
            values = np.frombuffer(raw, dtype="<f8", count=n, offset=pos)
            pos += 8 * n
            samples.append(
                [
                    (int(h), None if v != v else float(v))
                    for h, v in zip(hashes.tolist(), values.tolist(), strict=True)
                ]
            )
        return cls(ids=ids, samples=samples)


def _encode_sample(sample: list[tuple[int, float | str | None]], numeric: bool) -> bytes:
    """One ring entry's part of :meth:`RecentSlots.to_bytes`."""
    if not numeric:
        return json.dumps([[h, v] for h, v in sample], separators=(",", ":")).encode()
    hashes = np.array([h for h, _ in sample], dtype="<u4").tobytes()
    return hashes + np.array([np.nan if v is None else v for _, v in sample], "<f8").tobytes()


_hash_of = operator.itemgetter(0)
"""A sample entry's hash: the sort key of the slot samples (in C; a Python key function was
a twentieth of the engine's time on dense streams)."""
_value_of = operator.itemgetter(1)
"""A sample entry's value."""


def event_hash(event_id: str) -> int:
    """Stable 32-bit hash of an event id (the same in every process, unlike ``hash``)."""
    return zlib.crc32(event_id.encode())


@dataclass
class FeatureWindow:
    """One feature's values in one window: a bounded summary plus its offset guard, and while
    the window is open, samples of its last few sub-day slots (:class:`RecentSlots`)."""

    kind: FeatureKind
    numeric: NumericSummary | None = None
    categorical: CategoricalSummary | None = None
    offsets: dict[int, int] = field(default_factory=dict)
    recent: RecentSlots | None = None
    results: dict[str, list[Any]] = field(default_factory=dict)
    """The end-of-window tests, by test name: [statistic, p_value, effect_size, effect floor,
    drifting, window count, baseline count] (for the API's latest statistics and the report's
    statistic over time)."""
    assoc: Association | None = None
    """The feature's association with the model's score in this window (for the importance
    of a feature the registry knows nothing about: :mod:`streams.importance`). None in
    windows written before it existed."""

    @classmethod
    def new(cls, kind: FeatureKind, recent: bool = False) -> FeatureWindow:
        fw = (
            cls(kind, numeric=NumericSummary())
            if kind == "numeric"
            else cls(kind, categorical=CategoricalSummary())
        )
        fw.assoc = new_association(kind)
        if recent:
            fw.recent = RecentSlots()
        return fw

    @property
    def summary(self) -> Summary:
        summary = self.numeric if self.numeric is not None else self.categorical
        assert summary is not None
        return summary

    def apply(
        self,
        value: float | str | None,
        position: Position | None,
        slot: int = 0,
        h: int = 0,
        score: float | None = None,
    ) -> bool:
        if not guard(self.offsets, position):
            return False
        if score is not None and value is not None:
            self._associate([value], [score])
        if self.numeric is not None:
            if value is None:
                self.numeric.add_missing()
            else:
                self.numeric.add(value)  # type: ignore[arg-type]  # validated numeric
        elif self.categorical is not None:
            if value is None:
                self.categorical.add_missing()
            else:
                self.categorical.add(value)  # type: ignore[arg-type]  # validated string
        if self.recent is not None:
            self.recent.add(slot, h, value)
        return True

    def apply_many(
        self,
        values: list[float | str | None],
        positions: list[Position | None],
        slots: list[int],
        hashes: list[int],
        run: Run | None = None,
        scores: list[float] | ScoreBatch | None = None,
        first: FirstSample | None = None,
        runs: SlotRuns | None = None,
    ) -> int:
        """:meth:`apply` for each value in order (one position each); returns how many were
        new. Replays are recognised as one at a time would: a value is new when its offset is
        above every offset applied before it from the same partition. ``run``: the
        positions' ``run_of``, if the caller has it. ``scores``: the events' model scores,
        for the feature's association with the score; a :class:`ScoreBatch` (one score per
        value) defers the association (and a numeric summary's values) to its ``finish``,
        which the caller calls after all of the batch's features (all at once); it is used
        when every value is new, else the scores of those that are. ``first``, ``runs``:
        see :meth:`RecentSlots.add_many` (dropped when some values are replays)."""
        batch = None
        if isinstance(scores, ScoreBatch):
            batch, scores = scores, scores.scores
        keep = guard_many(self.offsets, positions, run)
        if len(keep) != len(values):
            batch = first = runs = None
            values = [values[k] for k in keep]
            slots = [slots[k] for k in keep]
            hashes = [hashes[k] for k in keep]
            if scores is not None:
                scores = [scores[k] for k in keep]
        if not values:
            return 0
        if batch is not None:
            if self.assoc is None:
                self.assoc = new_association(self.kind)
            if self.numeric is not None:
                # The batch builds the float array of the values anyway: it hands the
                # summary its row (the same values, in order) when it finishes.
                batch.add(self.assoc, values, self.numeric.extend)
                missing = values.count(None)
                if missing:
                    self.numeric.add_missing(missing)
                if self.recent is not None:
                    self.recent.add_many(slots, hashes, values, first, runs)
                return len(values)
            batch.add(self.assoc, values)
        elif scores is not None:
            self._associate(values, scores)
        if self.numeric is not None:
            present = [v for v in values if v is not None]
            if len(present) != len(values):
                self.numeric.add_missing(len(values) - len(present))
            self.numeric.extend(np.array(present, dtype=np.float64))
        elif self.categorical is not None:
            self.categorical.add_values(values)  # type: ignore[arg-type]  # validated strings
        if self.recent is not None:
            self.recent.add_many(slots, hashes, values, first, runs)
        return len(values)

    def _associate(self, values: list[float | str | None], scores: list[float]) -> None:
        """Add the (value, score) pairs whose value is present to :attr:`assoc`."""
        if self.assoc is None:
            # A window written before associations: from now on (a sample of its pairs).
            self.assoc = new_association(self.kind)
        pairs_x: list[Any]
        pairs_y: list[float]
        if len(values) == 1:
            pairs_x, pairs_y = ([values[0]], scores) if values[0] is not None else ([], [])
        else:
            present = [k for k, v in enumerate(values) if v is not None]
            if len(present) == len(values):
                pairs_x, pairs_y = values, scores
            else:
                pairs_x = [values[k] for k in present]
                pairs_y = [scores[k] for k in present]
        if pairs_x:
            self.assoc.add(pairs_x, pairs_y)  # type: ignore[arg-type]  # validated by kind

    def span_summary(self, last_slot: int, slots: int, min_count: int = 0) -> Summary | None:
        """A summary of the sampled values of the last ``slots`` slots, for a sub-day test;
        None when a slot is unknown or there are fewer than ``min_count`` values."""
        if self.recent is None:
            return None
        if self.kind == "numeric":
            arrays = self.recent.span_array(last_slot, slots)
            if arrays is None or arrays[0].size + arrays[1] < min_count:
                return None
            return NumericSummary.of(*arrays)
        values = self.recent.span(last_slot, slots)
        if values is None or len(values) < min_count:
            return None
        out = CategoricalSummary()
        out.add_values(values)  # type: ignore[arg-type]  # a categorical feature's: str or None
        return out

    def slot_series(
        self, last_slot: int, slot_seconds: float, min_count: int = 0
    ) -> SlotSeries | None:
        """The last :data:`RECENT_SLOTS` slots up to ``last_slot`` (fewer early in the
        window) one by one, for the sequential scan; None for a categorical feature, when
        no slot is known, or with fewer than ``min_count`` values and missing ones."""
        if self.recent is None or self.kind != "numeric":
            return None
        parts = self.recent.known_slot_arrays(last_slot, RECENT_SLOTS)
        if not parts:
            return None
        missing = sum(m for _, m in parts)
        series = SlotSeries(tuple(p for p, _ in parts), missing, slot_seconds, min_count)
        return series if series.count + missing >= min_count else None

    def close(self) -> bool:
        """The window is closed: its sub-day samples go; returns whether that changed it. (The
        summary's unfolded tail stays: folding it here costs a fold per closed window and
        feature, more than the tail's few KiB are worth.)"""
        changed = self.recent is not None
        self.recent = None
        return changed

    @property
    def count(self) -> int:
        """Values present (not missing)."""
        return self.summary.count

    @property
    def missing(self) -> int:
        return self.summary.missing

    def to_bytes(self) -> bytes:
        header: dict[str, Any] = {"k": self.kind, "o": offsets_to_json(self.offsets)}
        if self.results:
            header["r"] = self.results
        if self.assoc is not None:
            header["a"] = self.assoc.to_json()
        head = json.dumps(header, separators=(",", ":")).encode()
        recent = b"" if self.recent is None else self.recent.to_bytes(self.kind == "numeric")
        summary = self.summary.to_bytes()
        return struct.pack("<III", len(head), len(recent), len(summary)) + head + recent + summary

    @classmethod
    def from_bytes(cls, raw: bytes) -> FeatureWindow:
        hlen, rlen, slen = struct.unpack_from("<III", raw)
        pos = 12
        header = json.loads(raw[pos : pos + hlen])
        pos += hlen
        kind: FeatureKind = header["k"]
        numeric = kind == "numeric"
        recent = RecentSlots.from_bytes(raw[pos : pos + rlen], numeric) if rlen else None
        pos += rlen
        body = raw[pos : pos + slen]
        offsets = offsets_from_json(header["o"])
        results = header.get("r", {})
        assoc = association_from_json(header["a"]) if "a" in header else None
        if numeric:
            return cls(
                kind, numeric=NumericSummary.from_bytes(body), offsets=offsets, recent=recent,
                results=results, assoc=assoc,
            )  # fmt: skip
        return cls(
            kind, categorical=CategoricalSummary.from_bytes(body), offsets=offsets, recent=recent,
            results=results, assoc=assoc,
        )  # fmt: skip


def _merge_summaries(a: Summary, b: Summary) -> Summary:
    if isinstance(a, NumericSummary) and isinstance(b, NumericSummary):
        return a.merge(b)
    if isinstance(a, CategoricalSummary) and isinstance(b, CategoricalSummary):
        return a.merge(b)
    raise TypeError("cannot merge numeric and categorical summaries")


@dataclass
class StreamState:
    """Event-time progress and schema of one (tenant, model) stream."""

    tenant: str
    model: str
    partition: int | None = None
    watermark: float | None = None
    """Highest event time seen: the stream's clock."""
    last_closed: float | None = None
    """Start of the newest window already tested."""
    first_window: float | None = None
    model_version: str = ""
    features: dict[str, FeatureKind] = field(default_factory=dict)
    window_events: dict[float, int] = field(default_factory=dict)
    """Events per window start, for the windows still retained."""
    events: int = 0
    late_events: int = 0
    offsets: dict[int, int] = field(default_factory=dict)
    interim_window: float | None = None
    """Window of the latest interim look, and which look it was (1 = after the first hour)."""
    interim_look: int = 0
    slot_window: float | None = None
    """The newest window whose events per sub-day slot are counted (from its first event)."""
    slot_events: dict[int, int] = field(default_factory=dict)
    """Events per sub-day slot of ``slot_window``: a look skips a span with too few events
    for any test without reading a feature (see ``DriftEngine._look_spans``)."""
    incidents: IncidentBook = field(default_factory=lambda: IncidentBook())
    """Kept in the same value as the clock, so judging a window and recording what it found
    are one write: a crash can never persist one without the other."""
    segments: dict[str, FeatureKind] = field(default_factory=dict)
    """Segment features (``streams.segments``) with their kinds: judged like ``features``,
    in a family of their own."""
    segment_values: dict[float, dict[str, list[str]]] = field(default_factory=dict)
    """Per retained window, per segment column: the values with a segment of their own in it
    (chosen at the window's first event, from the previous window's counts)."""
    segment_counts: dict[float, dict[str, dict[str, int]]] = field(default_factory=dict)
    """Per window (the newest two), per segment column: events per value."""
    known_shapes: set[tuple[tuple[str, ...], tuple[type, ...]]] = field(
        default_factory=set, repr=False, compare=False
    )
    """Not stored: the (names, value types) of events found to add nothing to ``features``
    and to contradict none of it; an event of one of these shapes needs no check per value
    (kinds are never removed or changed, so a shape stays valid)."""

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "t": self.tenant,
                "m": self.model,
                "p": self.partition,
                "wm": self.watermark,
                "lc": self.last_closed,
                "fw": self.first_window,
                "v": self.model_version,
                "f": self.features,
                "we": [[w, n] for w, n in sorted(self.window_events.items())],
                "n": self.events,
                "late": self.late_events,
                "o": offsets_to_json(self.offsets),
                "iw": self.interim_window,
                "il": self.interim_look,
                "sw": self.slot_window,
                "se": [[slot, n] for slot, n in sorted(self.slot_events.items())],
                "i": self.incidents.to_json(),
            }
            | self._segments_json(),
            separators=(",", ":"),
        ).encode()

    def _segments_json(self) -> dict[str, object]:
        if not (self.segments or self.segment_values or self.segment_counts):
            return {}  # no segments: the bytes of a stream state from before they existed
        return {
            "sf": dict(sorted(self.segments.items())),  # whatever order they were met in
            "sv": [[w, v] for w, v in sorted(self.segment_values.items())],
            "sc": [[w, c] for w, c in sorted(self.segment_counts.items())],
        }

    @classmethod
    def from_bytes(cls, raw: bytes) -> StreamState:
        d = json.loads(raw)
        return cls(
            tenant=d["t"],
            model=d["m"],
            partition=d["p"],
            watermark=d["wm"],
            last_closed=d["lc"],
            first_window=d["fw"],
            model_version=d["v"],
            features=d["f"],
            window_events={float(w): int(n) for w, n in d["we"]},
            events=d["n"],
            late_events=d["late"],
            offsets=offsets_from_json(d["o"]),
            interim_window=d.get("iw"),
            interim_look=d.get("il", 0),
            # Absent from state written before the counts were kept: no window is counted
            # then, so no look skips a span until a new window starts.
            slot_window=d.get("sw"),
            slot_events={int(slot): int(n) for slot, n in d.get("se", [])},
            incidents=IncidentBook.from_json(d["i"]) if "i" in d else IncidentBook(),
            segments=d.get("sf", {}),
            segment_values={float(w): v for w, v in d.get("sv", [])},
            segment_counts={float(w): c for w, c in d.get("sc", [])},
        )

    def judged_features(self) -> list[tuple[str, FeatureKind]]:
        """Every feature and segment feature with a window to judge, in the order they are
        judged (features, then segment features, each by name)."""
        return sorted(self.features.items()) + sorted(self.segments.items())


# Keys are JSON arrays (unambiguous whatever the names contain); building them is on the hot
# path, once per feature value, so they are memoised.
@functools.lru_cache(maxsize=4096)
def stream_key(tenant: str, model: str) -> str:
    return json.dumps(["s", tenant, model])


@functools.lru_cache(maxsize=1 << 16)
def window_key(tenant: str, model: str, window_start: float, feature: str) -> str:
    return json.dumps(["w", tenant, model, int(window_start), feature])
