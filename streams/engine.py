"""The drift detection engine: one code path for the live worker and the offline backtest.

The engine owns no I/O. It reads and writes opaque bytes through a :class:`StateStore`
(a Faust RocksDB table in the worker, a dict in a backtest), caches decoded state while a
batch is processed, and hands the caller the dirty values to persist with :meth:`flush`.

This module is the ingestion side: event-time clocks, feature values into their windows,
windows' close and expiry. The values wait in :class:`~streams.value_buffer.ValueBuffer` until
something reads the windows, which applies them in bulk. Which interim looks test the open window is
:class:`~streams.interim_looks.InterimLooks`' job; what a test of a window finds, and what
that does to the incidents, :class:`~streams.judge.FeatureJudge`'s.

Order of work for one event (the same whatever the batching, so live and backtest agree):

1. advance the stream's event-time clock to the event's timestamp;
2. test every window that the clock has now passed by the allowed lateness, oldest first;
3. add the event's feature values to the summaries of its own window.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from schemas import DriftEvent, InvalidEvent, PredictionEvent
from streams.config import DAY, EngineConfig
from streams.importance import ImportanceSource
from streams.incidents import IncidentNotice
from streams.interim_looks import InterimLooks
from streams.judge import FeatureJudge
from streams.keyed_state import (
    Position,
    StateCache,
    StateStore,
    Write,
    crash_ordered,
    guard,
)
from streams.moment_tracker import MomentTracker
from streams.segment_tracker import SegmentTracker
from streams.state import (
    FeatureKind,
    FeatureWindow,
    KindCheck,
    StreamState,
    stream_key,
    window_key,
)
from streams.value_buffer import ValueBuffer

_KNOWN_SHAPES = 32
"""Tuples of feature names remembered per stream (``StreamState.known_shapes``): a stream
whose events carry ever other subsets of its features checks the rest value by value."""


@dataclass(slots=True)
class Observed:
    """What :meth:`DriftEngine.observe_many` did."""

    drifts: list[tuple[int, DriftEvent]]
    """The drift events the clock's advances produced, in order, each with the index of the
    event whose advance produced it."""
    refused: list[tuple[int, Exception]]
    """The events not applied: an :class:`InvalidEvent` (the event changed nothing), or a
    bug's exception."""
    noticed: list[tuple[int, int]] = field(default_factory=list)
    """(index, count), in order: an event whose clock advance told the incidents' changes
    into :attr:`DriftEngine.notices`, and how many it added there (for a caller that
    interleaves them per event with other notices, as the labelled backtest does)."""


_UNMARKED = object()
"""The stream not yet marked for the flush in a run (its partition may be None)."""


class DriftEngine:
    """Windowed feature-drift detection over prediction events.

    >>> from streams.keyed_state import MemoryStore
    >>> engine = DriftEngine(EngineConfig(), MemoryStore())
    >>> engine.stats["events"]
    0
    """

    def __init__(
        self,
        config: EngineConfig,
        store: StateStore,
        importances: ImportanceSource | None = None,
    ) -> None:
        """``importances``: the registry's feature importances of a stream's active model
        version, if anyone knows them (the incidents' impact then uses them; otherwise the
        features' association with the score: :mod:`streams.importance`)."""
        self.config = config
        self.store = store
        self.stats: Counter[str] = Counter()
        self.notices: list[IncidentNotice] = []
        """Incident changes since the caller last took them (:meth:`take_notices`)."""
        self._streams: StateCache[StreamState] = StateCache(
            store, self._decode_stream, StreamState.to_bytes, capacity=1 << 30
        )
        self._orphans: list[StreamState] = []
        """Streams read with windows their last write meant to delete (:meth:`flush`)."""
        self._windows: StateCache[FeatureWindow] = StateCache(
            store, FeatureWindow.from_bytes, FeatureWindow.to_bytes, config.cached_windows
        )
        # Per (stream, window): its numeric features' moments (multivariate drift).
        self._moments = MomentTracker(config, store)
        self._segments = SegmentTracker(config)
        self._segments_on = bool(self._segments)  # read per event
        self._judge = FeatureJudge(
            config,
            self._windows,
            self.stats,
            self.notices,
            importances=importances,
            moments=self._moments.cache if config.multivariate else None,
        )
        self._looks = InterimLooks(config, self._judge, self.stats)
        self._looks_on = bool(self._looks.per_window)  # read per event
        self._buffer = ValueBuffer(
            config, self._streams, self._windows, self._moments, self._segments, self._looks_on
        )
        # The configuration a run reads, once (observe pays it per event).
        self._clock = (
            config.window_seconds,
            config.retention_days * DAY,
            config.allowed_lateness_seconds,
            config.interim_seconds,
            config.multivariate,
        )
        self.quiet_advances = True
        """Move the clock past an event without calling :meth:`_advance` when it would only
        set the watermark (most events); False: every advance through it (a reference)."""

    # ------------------------------------------------------------------ public API

    def observe(self, event: PredictionEvent, position: Position | None = None) -> list[DriftEvent]:
        """Apply one validated event; return the drift events its clock advance produced.

        Raises :class:`InvalidEvent` (nothing changed) for a feature whose type contradicts
        what the stream has seen, or an event older than the retained history.
        """
        done = Observed([], [])
        self._observe_run((event,), None if position is None else (position,), 0, 1, done)
        if done.refused:
            raise done.refused[0][1]
        return [drift for _, drift in done.drifts]

    def observe_many(
        self,
        events: Sequence[PredictionEvent],
        positions: Sequence[Position | None] | None = None,
    ) -> Observed:
        """Apply validated events in order: the same work, state and results as
        :meth:`observe` one at a time, at a fraction of its cost per event (a run of one
        stream's events has its stream found, and its values' kinds checked, once).

        An event :meth:`observe` would refuse, or one that meets a bug, changes what it would
        have changed (an :class:`InvalidEvent`: nothing), is reported with its index in
        :attr:`Observed.refused`, and the others go on: one bad event never costs its
        neighbours.
        """
        done = Observed([], [])
        n = len(events)
        if positions is not None and len(positions) != n:
            raise ValueError(f"{len(positions)} positions for {n} events")
        start = 0
        while start < n:
            tenant, model = events[start].tenant, events[start].model
            end = start + 1
            while end < n and events[end].model == model and events[end].tenant == tenant:
                end += 1
            try:
                self._observe_run(events, positions, start, end, done)
            except Exception as exc:  # the run's stream could not be had: each event refused
                done.refused += [(k, exc) for k in range(start, end)]
            start = end
        return done

    def _observe_run(
        self,
        events: Sequence[PredictionEvent],
        positions: Sequence[Position | None] | None,
        start: int,
        end: int,
        done: Observed,
    ) -> None:
        """Events ``start:end``, all of one stream (see the module's order of work). Raises
        only before any of them changed anything (their stream's record unreadable)."""
        first = events[start]
        skey = stream_key(first.tenant, first.model)
        stream = self._stream(skey, first.tenant, first.model)
        # The run's names when all its events have them (and known kinds): None else.
        # One event is checked as it comes (KindCheck's own lookup: cheaper for one).
        shape = self._run_shape(stream, events[start:end]) if end - start > 1 else None
        checked = shape is not None
        width, retained, lateness, interim, multivariate = self._clock
        looks, per_window, segments = self._looks_on, self._looks.per_window, self._segments_on
        absent_on = self.config.absent_is_missing
        shortcut = self.quiet_advances
        window_events, offsets = stream.window_events, stream.offsets
        stats = self.stats
        counted = late = duplicates = 0
        buffered = appended = 0  # values and events into the buffer, not yet in its counts
        pending: list[tuple[PredictionEvent, Position | None]] | None = None
        pending_window = None
        marked: object = _UNMARKED
        kinds: dict[str, FeatureKind] = {}
        untyped: tuple[str, ...] = ()
        try:
            for k in range(start, end):
                event = events[k]
                position = None if positions is None else positions[k]
                try:
                    if not checked:
                        kinds, untyped = self._check_feature_kinds(stream, event)
                    t = event.timestamp
                    window = (t // width) * width  # cfg.window_start
                    wm = stream.watermark
                    if wm is not None and window < (wm // width) * width - retained:
                        raise InvalidEvent("too_late", "event is older than the retained history")
                    if position is None:
                        fresh = True
                    else:
                        stream.partition = position[0]
                        fresh = guard(offsets, position)
                    # Most events do not move the clock past a look or a close: _advance
                    # would only set the watermark (its own tests, and InterimLooks._next's).
                    if wm is None or t > wm:
                        closed = stream.last_closed
                        quiet = (
                            shortcut
                            and closed is not None
                            and t - width - lateness < closed + width
                        )
                        if quiet and looks:
                            look = min(int((t - window) // interim), per_window)
                            quiet = (
                                look < 1
                                or window not in window_events
                                or (stream.interim_window == window and stream.interim_look >= look)
                            )
                        if quiet:
                            stream.watermark = t
                        else:
                            self._buffer.values += buffered  # counted before it may be applied
                            self._buffer.events += appended
                            buffered = appended = 0
                            pending = None  # the buffer may be applied: a new list
                            told = len(self.notices)
                            try:
                                for drift in self._advance(stream, t, window):
                                    done.drifts.append((k, drift))
                            finally:
                                if len(self.notices) != told:
                                    done.noticed.append((k, len(self.notices) - told))
                    if fresh:
                        stream.events += 1
                        stream.model_version = event.model_version
                        if looks:
                            if stream.slot_window == window:  # InterimLooks.count_slot's
                                slots = stream.slot_events
                                slot = int((t - window) // interim)
                                slots[slot] = slots.get(slot, 0) + 1
                            else:
                                self._looks.count_slot(stream, window, t)
                        seen = window_events.get(window)
                        window_events[window] = 1 if seen is None else seen + 1
                        if stream.first_window is None or window < stream.first_window:
                            stream.first_window = window
                        if kinds:
                            for name, kind in kinds.items():
                                stream.features.setdefault(name, kind)
                        if seen is None and multivariate:
                            self._moments.start(stream, window)
                        if segments:
                            self._segments.count(stream, window, event)
                        if stream.last_closed is not None and window <= stream.last_closed:
                            stream.late_events += 1
                            late += 1
                        counted += 1
                    else:
                        duplicates += 1
                    if stream.partition != marked:
                        self._streams.mark(skey, stream.partition)
                        marked = stream.partition
                    if pending is None or window != pending_window:
                        pending = self._buffer.list_for((skey, window), shape)
                        pending_window = window
                    if untyped:  # dropped whenever the batch is applied, even once typed
                        self._buffer.untyped.setdefault((skey, window), []).append(
                            (len(pending), untyped)
                        )
                    # The features the stream knew, less the event's typed ones: some known
                    # feature is left out (missing, once applied). The stream's features are
                    # only ever added to, so its first ``known`` are the ones known now. Only
                    # for an event the stream counts: a re-read one may know features first
                    # seen after it, and their windows' guards may not have its offset yet.
                    if absent_on and fresh:
                        left_out = len(stream.features) - len(event.features) + len(untyped)
                        if left_out > 0:
                            self._buffer.absent.setdefault((skey, window), []).append(
                                (len(pending), len(stream.features))
                            )
                            buffered += left_out  # values, for the buffer's bounds
                    pending.append((event, position))
                    buffered += len(event.features) or 1
                    appended += 1
                except Exception as exc:  # the caller's to report
                    done.refused.append((k, exc))
                    pending = None
        finally:
            self._buffer.values += buffered
            self._buffer.events += appended
            if counted:
                stats["events"] += counted
            if late:
                stats["late_events"] += late
            if duplicates:
                stats["duplicates_skipped"] += duplicates

    def _run_shape(
        self, stream: StreamState, events: Sequence[PredictionEvent]
    ) -> tuple[str, ...] | None:
        """The events' feature names, if all have the same in the same order, and all their
        values are of kinds the stream knows, with no null without a kind (the usual run:
        none of them then adds a kind or drops a value, and none is refused for a kind);
        else None."""
        features = [event.features for event in events]
        names = tuple(features[0])
        check = stream.known_shapes.get(names)
        if (
            check is not None
            and all(map(names.__eq__, map(tuple, features)))
            and check.fits_all(map(dict.values, features))
        ):
            return names
        return None

    def take_notices(self) -> list[IncidentNotice]:
        out = self.notices.copy()
        self.notices.clear()  # in place: the judge tells into this same list
        return out

    def advance(self, tenant: str, model: str, event_time: float) -> list[DriftEvent]:
        """Move a stream's clock without an event (a quiet stream, driven by a wall-clock timer)."""
        key = stream_key(tenant, model)
        if self.store.get(key) is None and key not in self._streams:
            return []
        stream = self._stream(key, tenant, model)
        drifts = self._advance(stream, event_time, self.config.window_start(event_time))
        self._streams.mark(key, stream.partition)
        return drifts

    def apply_pending(self, at_least: int = 0, at_least_events: int = 0) -> None:
        """Apply the buffered values to their windows, writing nothing, if there are at least
        ``at_least`` of them from at least ``at_least_events`` events. A worker that writes
        its state every few seconds applies them in runs of that size rather than per batch.
        The bulk update costs per (stream, window, feature) run, and a live worker's batches
        are small: at 10 events a batch that cost more than half its time
        (``bench.profile_engine --batch``); a wide model's runs need enough events, not only
        enough values. Whatever reads the windows (a look, a close, a flush) applies the
        buffer first: the same drift events, and the same windows but for the merge order of
        their score associations (equal up to rounding, as the live worker's and the
        backtest's are).

        >>> from streams.keyed_state import MemoryStore
        >>> engine = DriftEngine(EngineConfig(), MemoryStore())
        >>> _ = engine.observe(PredictionEvent("e", "t", "m", "v", 0.0, {"x": 1.0}, 0.5))
        >>> engine.apply_pending(at_least=1, at_least_events=2); engine.buffered()
        1
        >>> engine.apply_pending(at_least=2); engine.buffered()
        1
        >>> engine.apply_pending(); engine.buffered()
        0
        """
        if self._buffer.values >= at_least and self._buffer.events >= at_least_events:
            self._buffer.apply()

    def buffered(self) -> int:
        """Feature values observed and not yet in their windows."""
        return self._buffer.values

    def unwritten(self) -> int:
        """Windows changed since the last :meth:`flush` (cached until it: not evictable).

        >>> from streams.keyed_state import MemoryStore
        >>> DriftEngine(EngineConfig(), MemoryStore()).unwritten()
        0
        """
        return len(self._windows.dirty())

    def flush(self, keep_cache: bool = True) -> list[Write]:
        """The state changed since the last flush, to persist. Decoded state stays cached
        (bounded: ``EngineConfig.cached_windows``) unless ``keep_cache`` is false."""
        self._buffer.apply()
        # In the order a crash can cut short (``crash_ordered``). With the streams' records
        # first, the batch read again found a stream past the expiries and closes it had
        # done, and left those windows as the prefix had them; with the deletes before them,
        # it judged the windows it closes against a baseline that had lost some. The deletes
        # a prefix lost are made again by whoever reads the stream next (``_name_deletes``).
        self._name_deletes()
        windows = self._windows.flush() + self._moments.flush()
        writes = crash_ordered(windows, self._streams.flush())
        self._buffer.hot.clear()
        if not keep_cache:
            self.forget()
        return writes

    def spill(self) -> list[Write]:
        """:meth:`flush` for a backtest, whose store is scratch memory: what bounds memory is
        written (windows expired or forgotten beyond ``cached_windows``;
        :meth:`StateCache.spill`), the rest stays in memory for the last flush to encode once.
        Never for a worker's state: what it does not write, a crash loses."""
        self._buffer.apply()
        writes = self._windows.spill() + self._moments.cache.spill()
        self._buffer.hot.clear()  # the windows forgotten may be among them
        return writes

    def _decode_stream(self, raw: bytes) -> StreamState:
        stream = StreamState.from_bytes(raw)
        if stream.dropped:
            self._orphans.append(stream)
        return stream

    def _name_deletes(self) -> None:
        """Each stream written now names the windows this write deletes; the deletes a
        stream's last write may have lost are made again (without writing the stream for
        it: if these are lost too, its record still names them)."""
        orphans = [(s, s.dropped) for s in self._orphans]
        self._orphans.clear()
        streams = self._streams
        for skey in streams.dirty():
            stream = streams.cached(skey)
            if stream is not None:
                stream.dropped = []
        for cache in (self._windows, self._moments.cache):
            for key in [k for k in cache.dirty() if cache.cached(k) is None]:
                _, tenant, model, *_ = json.loads(key)
                skey = stream_key(tenant, model)
                stream = streams.cached(skey)
                assert stream is not None  # a window expires through its stream
                streams.mark(skey, stream.partition)
                stream.dropped.append(key)
        for stream, keys in orphans:
            skey = stream_key(stream.tenant, stream.model)
            written = skey in streams.dirty()
            for key in keys:
                if key.startswith('["v"'):
                    self._moments.cache.delete(key, stream.partition)
                else:
                    self._delete(key, stream.partition)
                if written and key not in stream.dropped:
                    stream.dropped.append(key)

    def forget(self, partitions: Collection[int] | None = None) -> None:
        """Drop decoded state (of ``partitions``, or all): after those partitions were given up
        to another worker, the store is the truth again. Call after :meth:`flush`."""
        self._buffer.apply()
        self._buffer.hot.clear()
        self._orphans.clear()  # their records still name them: whoever reads one next
        self._streams.forget(partitions)
        self._windows.forget(partitions)
        self._moments.forget(partitions)
        self._judge.forget()

    def stream_state(self, tenant: str, model: str) -> StreamState | None:
        return self._streams.get(stream_key(tenant, model))

    def feature_window(
        self, tenant: str, model: str, window_start: float, feature: str
    ) -> FeatureWindow | None:
        self._buffer.apply()
        return self._window(window_key(tenant, model, window_start, feature))

    # ------------------------------------------------------------------ state access

    def _stream(self, key: str, tenant: str, model: str) -> StreamState:
        """The stream of ``key`` (its ``stream_key``), held new if it has no state yet."""
        stream = self._streams.get(key)
        if stream is None:
            stream = StreamState(tenant, model)
            # Written once marked with its partition: by observe, after the checks; a first
            # event they reject leaves nothing to write (and no partition to write it to).
            self._streams.hold(key, stream)
        return stream

    def _window(self, key: str) -> FeatureWindow | None:
        return self._windows.get(key)

    def _delete(self, key: str, partition: int | None) -> None:
        self._windows.delete(key, partition)
        self._buffer.hot.clear()

    # ------------------------------------------------------------------ detection

    def _check_feature_kinds(
        self, stream: StreamState, event: PredictionEvent
    ) -> tuple[dict[str, FeatureKind], tuple[str, ...]]:
        """The kinds of the event's features that the stream does not know yet (what the
        event would add), and the names of its nulls that have no kind yet (dropped);
        raises for a value whose kind contradicts the stream's."""
        features = event.features
        names = tuple(features)
        check = stream.known_shapes.get(names)
        if check is not None and check(features.values()):
            return {}, ()
        known = stream.features
        new: dict[str, FeatureKind] = {}
        untyped: list[str] = []
        for name, value in features.items():
            was = known.get(name)
            if value is None:
                if was is None:
                    untyped.append(name)  # first seen as null: no type yet, value dropped
                continue
            kind: FeatureKind = "categorical" if value.__class__ is str else "numeric"
            if was is None:
                if new.get(name, kind) != kind:
                    raise InvalidEvent(
                        "type_mismatch",
                        f"feature {name!r} is {new[name]} in this event, got {kind}",
                    )
                new[name] = kind
            elif was != kind:
                raise InvalidEvent(
                    "type_mismatch", f"feature {name!r} is {was} in this stream, got {kind}"
                )
        if new and len(known) + len(new) > self.config.max_features_per_stream:
            raise InvalidEvent(
                "too_many_features",
                f"stream has {len(known)} features; {len(new)} more would pass the "
                f"limit of {self.config.max_features_per_stream}",
            )
        if untyped:
            self.stats["untyped_nulls"] += len(untyped)
        elif not new and len(stream.known_shapes) < _KNOWN_SHAPES:
            stream.known_shapes[names] = KindCheck(names, known)
        return new, tuple(untyped)

    def _advance(self, stream: StreamState, event_time: float, window: float) -> list[DriftEvent]:
        """Move the clock to ``event_time`` (in ``window``): close and judge the windows it
        passed, then any interim look. The stream changes in place (clock, incidents): the
        callers mark it for the flush."""
        if stream.watermark is not None and event_time <= stream.watermark:
            return []
        stream.watermark = event_time
        cfg = self.config
        drifts: list[DriftEvent] = []
        # Windows are aligned, so the next one that can close starts a window after the last
        # closed one: most events are earlier than its close, and need no scan of the windows.
        horizon = event_time - cfg.window_seconds - cfg.allowed_lateness_seconds
        if stream.last_closed is not None and horizon < stream.last_closed + cfg.window_seconds:
            closable: list[float] = []
        else:
            closable = sorted(
                w
                for w in stream.window_events
                if (stream.last_closed is None or w > stream.last_closed) and w <= horizon
            )
        looking = self._looks.pending(stream, event_time, window)
        if closable or (looking and self._looks.due(stream, event_time)):
            self._buffer.apply()  # the tests read the windows: every earlier value is in
        for window in closable:
            drifts.extend(self._judge.judge(stream, window, event_time, cfg.final_alpha, None))
            self._close_window(stream, window)
            stream.last_closed = window
            self.stats["windows_closed"] += 1
        if closable:
            self._expire(stream, closable[-1])
        if looking or closable:
            drifts.extend(self._looks.look(stream, event_time))
        return drifts

    def _close_window(self, stream: StreamState, window: float) -> None:
        if self.config.multivariate:
            self._moments.close(stream, window)
        for feature, _ in stream.judged_features():
            key = window_key(stream.tenant, stream.model, window, feature)
            fw = self._window(key)
            if fw is not None and fw.close():
                self._windows.mark(key, stream.partition)

    def _expire(self, stream: StreamState, newest_closed: float) -> None:
        horizon = newest_closed - self.config.retention_days * DAY
        for window in [w for w in stream.window_events if w < horizon]:
            for feature, _ in stream.judged_features():
                self._delete(
                    window_key(stream.tenant, stream.model, window, feature), stream.partition
                )
            self._moments.expire(stream, window)
            del stream.window_events[window]
            stream.segment_values.pop(window, None)
            self.stats["windows_expired"] += 1
        self._segments.expire(stream)
