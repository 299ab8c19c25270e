"""The detection state kept per stream, per feature-window and per incident, and its codecs.

Every value carries the source offsets it has applied (``offsets``: partition -> last
offset). After a crash the worker re-reads events since its last commit; the guard makes the
re-application a no-op, so counts stay exact under at-least-once delivery without Kafka
transactions.
"""

from __future__ import annotations

import functools
import json
import operator
import struct
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from json.encoder import encode_basestring_ascii as _quoted
from typing import Any, Literal, cast

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
    dump_json,
    guard,
    guard_many,
    load_json,
    offsets_from_json,
    offsets_to_json,
)
from streams.numeric_summary import NumericSummary
from streams.recent_slots import (
    RECENT_SLOTS,
    FirstSample,
    RecentSlots,
    SlotRuns,
)
from streams.slot_series import SlotSeries, SlotSpan

FeatureKind = Literal["numeric", "categorical"]
Summary = NumericSummary | CategoricalSummary
ABSENT = object()
"""A feature an event does not have (unlike None: present and missing), in a batch's columns."""


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
                # summary its row (the same values, in order) and its missing count when it
                # finishes.
                batch.add(self.assoc, values, self.numeric)
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

    def recent_arrays(self, last_slot: int) -> list[tuple[np.ndarray, int]] | None:
        """A numeric feature's last :data:`RECENT_SLOTS` known slots up to ``last_slot``
        (``RecentSlots.known_slot_arrays``; empty if ``last_slot`` is unknown): every span
        and the scan of one look read these, so a look asks once (None: not numeric, or a
        window without sub-day samples)."""
        if self.recent is None or self.kind != "numeric":
            return None
        return self.recent.known_slot_arrays(last_slot, RECENT_SLOTS)

    def span_summary(
        self,
        last_slot: int,
        slots: int,
        min_count: int = 0,
        recent: list[tuple[np.ndarray, int]] | None = None,
    ) -> SlotSpan | CategoricalSummary | None:
        """The sampled values of the last ``slots`` slots, for a sub-day test (a numeric
        feature's as a :class:`SlotSpan`, pooled only if a test needs it); None when a slot
        is unknown or there are fewer than ``min_count`` values. ``recent``: the feature's
        :meth:`recent_arrays` at ``last_slot``, if the caller has them."""
        if self.recent is None:
            return None
        if self.kind == "numeric":
            # The run of known slots ending at last_slot: the span if it is that long.
            if recent is None:
                recent = self.recent.known_slot_arrays(last_slot, slots)
            if len(recent) < slots:
                return None
            parts = recent[-slots:]
            span = SlotSpan(tuple(p for p, _ in parts), sum(m for _, m in parts))
            return None if span.count + span.missing < min_count else span
        counted = self.recent.span_tally(last_slot, slots)
        if counted is None or counted[1] < min_count:
            return None
        out = CategoricalSummary()
        tally = cast(Counter[str | None], counted[0])  # a categorical feature's: str or None
        if not out.add_tally(tally, counted[1]):
            out.add_values(self.recent.span(last_slot, slots))  # type: ignore[arg-type]
        return out

    def slot_series(
        self,
        last_slot: int,
        slot_seconds: float,
        min_count: int = 0,
        recent: list[tuple[np.ndarray, int]] | None = None,
    ) -> SlotSeries | None:
        """The last :data:`RECENT_SLOTS` slots up to ``last_slot`` (fewer early in the
        window) one by one, for the sequential scan; None for a categorical feature, when
        no slot is known, or with fewer than ``min_count`` values and missing ones.
        ``recent``: :meth:`recent_arrays` at ``last_slot``, if the caller has them."""
        if self.recent is None or self.kind != "numeric":
            return None
        parts = self.recent.known_slot_arrays(last_slot, RECENT_SLOTS) if recent is None else recent
        if not parts:
            return None
        missing = sum(m for _, m in parts)
        series = SlotSeries(tuple(p for p, _ in parts), missing, slot_seconds, min_count)
        return series if series.count + missing >= min_count else None

    def close(self) -> bool:
        """The window is closed: its sub-day samples go, and its numeric summary's unfolded
        tail (up to ``FOLD_CHUNK`` values, 32 KiB) is folded into its buckets, so that the
        windows kept for the baselines are stored at a bucket set's size (one fold a day per
        feature, at the close: a point of the event-time sequence, the same in a worker and a
        backtest); returns whether that changed it."""
        changed = self.recent is not None
        self.recent = None
        if self.numeric is not None and self.numeric.fold_tail():
            changed = True
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
        head = dump_json(header)
        recent = b"" if self.recent is None else self.recent.to_bytes(self.kind == "numeric")
        summary = self.summary.to_bytes()
        return struct.pack("<III", len(head), len(recent), len(summary)) + head + recent + summary

    @classmethod
    def from_bytes(cls, raw: bytes) -> FeatureWindow:
        hlen, rlen, slen = struct.unpack_from("<III", raw)
        pos = 12
        header = load_json(raw[pos : pos + hlen])
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


def merge_summaries(a: Summary, b: Summary) -> Summary:
    if isinstance(a, NumericSummary) and isinstance(b, NumericSummary):
        return a.merge(b)
    if isinstance(a, CategoricalSummary) and isinstance(b, CategoricalSummary):
        return a.merge(b)
    raise TypeError("cannot merge numeric and categorical summaries")


_NOT_CATEGORICAL = frozenset({str, type(None)})


class KindCheck:
    """Do an event's values (in the order of the names it was made for) fit their features'
    kinds? In C, whatever the width: a categorical feature takes text or null, a numeric one
    anything but text (as ``DriftEngine`` types a value: ``str`` is categorical, any other
    class numeric). A model of 1,000 features whose events each miss a few values at random
    has a new (names, types) shape every event; checked value by value in Python, that was
    6 % of such a worker's time.

    The answer depends on the values' classes only, so the classes of the first
    :attr:`SIGNATURES` kinds of events found to fit are kept, and an event with the same
    classes fits at one lookup (two thirds of the time of the check, for 20 features; with 1 %
    of values null at random, four events in five have no null). A shape whose events mostly
    miss them (nulls anywhere in a wide model: every event another kind) stops looking them
    up after :attr:`MISSES` misses, once they outnumber the hits, and is checked each time;
    after :attr:`RETRY` such checks it starts again with none kept (a stream's first events, a
    deploy's mixed versions, can be unlike all those after them: a worker runs for months).

    >>> check = KindCheck(("a", "b", "c"), {"a": "numeric", "b": "categorical", "c": "numeric"})
    >>> check((1.0, "x", None)), check((None, None, 2)), check(("x", "y", 1.0))
    (True, True, False)
    >>> check((1.0, 2.0, 3.0))  # a number where a category goes
    False
    >>> check((2.5, "y", None)), check((2.5, 1.0, None))  # the first's classes were kept
    (True, False)
    """

    SIGNATURES = 8
    MISSES = 64
    RETRY = 1 << 14
    __slots__ = ("_categorical", "_fits", "_hits", "_misses", "_numeric")

    def __init__(self, names: tuple[str, ...], kinds: Mapping[str, FeatureKind]) -> None:
        self._numeric = _picker([k for k, n in enumerate(names) if kinds[n] == "numeric"])
        self._categorical = _picker([k for k, n in enumerate(names) if kinds[n] != "numeric"])
        self._fits: set[tuple[type, ...]] | None = set()
        """The classes of events found to fit (None: no longer looked up)."""
        self._hits = self._misses = 0

    def __call__(self, values: Collection[object]) -> bool:
        """``values``: in the names' order (an event's ``features.values()`` as they are)."""
        fits = self._fits
        if fits is None:
            self._misses += 1
            if self._misses >= self.RETRY:
                self._fits, self._hits, self._misses = set(), 0, 0
            return self._check_classes(tuple(map(type, values)))
        signature = tuple(map(type, values))
        if signature in fits:
            self._hits += 1
            return True
        fit = self._check_classes(signature)
        if fit and len(fits) < self.SIGNATURES:
            fits.add(signature)
        self._misses += 1
        if self._misses >= self.MISSES and self._misses > self._hits:
            self._fits, self._misses = None, 0  # then counts the checks up to RETRY
        return fit

    def fits_all(self, rows: Iterable[Iterable[object]]) -> bool:
        """Do all these events' values fit? What :meth:`__call__` answers for each, worked
        out for the lot at once: the set of their classes' signatures is made in C, and only
        a signature not kept is checked (each distinct one counts as one hit or miss, as one
        event does in :meth:`__call__`).

        >>> check = KindCheck(("a", "b"), {"a": "numeric", "b": "categorical"})
        >>> check.fits_all([(1.0, "x"), (2, None), (None, "y")]), check.fits_all([(1.0, 2.0)])
        (True, False)
        """
        signatures = set(map(tuple, map(map, repeat(type), rows)))
        fits = self._fits
        if fits is None:
            self._misses += len(signatures)
            if self._misses >= self.RETRY:
                self._fits, self._hits, self._misses = set(), 0, 0
            return all(map(self._check_classes, signatures))
        unknown = signatures - fits
        self._hits += len(signatures) - len(unknown)
        fit = True
        for signature in unknown:
            self._misses += 1
            if not self._check_classes(signature):
                fit = False
                break
            if len(fits) < self.SIGNATURES:
                fits.add(signature)
        if self._misses >= self.MISSES and self._misses > self._hits:
            self._fits, self._misses = None, 0  # then counts the checks up to RETRY
        return fit

    def _check_classes(self, classes: tuple[type, ...]) -> bool:
        """The values' classes, in the names' order (the pickers index them)."""
        numeric, categorical = self._numeric, self._categorical
        return (numeric is None or str not in set(numeric(classes))) and (
            categorical is None or set(categorical(classes)) <= _NOT_CATEGORICAL
        )


def _picker(index: list[int]) -> Callable[[Sequence[object]], Sequence[object]] | None:
    """The values at ``index``, as a sequence (None: no index)."""
    if not index:
        return None
    if len(index) == 1:
        only = index[0]
        return lambda values: (values[only],)
    return operator.itemgetter(*index)


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
    for any test without reading a feature (see ``InterimLooks.spans``)."""
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
    dropped: list[str] = field(default_factory=list)
    """Keys of the expired windows whose deletes go after this record in its write: a crash
    between the two leaves them, and whoever reads this record next deletes them again."""
    known_shapes: dict[tuple[str, ...], KindCheck] = field(
        default_factory=dict, repr=False, compare=False
    )
    """Not stored: per tuple of feature names (in an event's order) that all have a kind in
    ``features``, the check of an event's values against those kinds (:class:`KindCheck`);
    an event with these names needs no check per value in Python (kinds are never removed or
    changed, so a check stays valid)."""

    def to_bytes(self) -> bytes:
        return dump_json(
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
            | self._segments_json()
            | ({"dk": self.dropped} if self.dropped else {})
        )

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
        d = load_json(raw)
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
            dropped=d.get("dk", []),
        )

    def judged_features(self) -> list[tuple[str, FeatureKind]]:
        """Every feature and segment feature with a window to judge, in the order they are
        judged (features, then segment features, each by name)."""
        return sorted(self.features.items()) + sorted(self.segments.items())


# Keys are JSON arrays (unambiguous whatever the names contain); building them is on the hot
# path (a stream's key per run of events, a window's per feature at each flush and look), so
# they are memoised. Bounded by what is asked for again, not by how long the worker runs: a
# window's keys are asked for while it is open or a baseline, and 65,536 of them kept windows
# long expired (~0.8 MB more RSS every million events of ``bench.worker_memory``; with the
# p-value memos, ~2.4 MB: tests/unit/test_memo_bounds.py).
@functools.lru_cache(maxsize=4096)
def stream_key(tenant: str, model: str) -> str:
    return json.dumps(["s", tenant, model])


@functools.lru_cache(maxsize=4096)
def window_key(tenant: str, model: str, window_start: float, feature: str) -> str:
    """``json.dumps(["w", tenant, model, int(window_start), feature])`` (the keys of state
    written before), built without its generic encoder: a model of 1,000 features asks for
    more keys than the memo holds, and ``json.dumps`` was ~3 % of such a worker's drift work.

    >>> window_key("acme", "fraud", 86400.0, "amount")
    '["w", "acme", "fraud", 86400, "amount"]'
    >>> odd = ('t"\u00e9', "m", 86400.9, "f1")
    >>> window_key(*odd) == json.dumps(["w", odd[0], odd[1], 86400, odd[3]])
    True
    """
    return (
        '["w", ' + _quoted(tenant) + ", " + _quoted(model) + ", " + str(int(window_start))
        + ", " + _quoted(feature) + "]"
    )  # fmt: skip
