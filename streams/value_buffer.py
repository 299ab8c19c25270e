"""The engine's buffer: values of events whose clock advance is done, not yet in their
feature windows, and their application in bulk.

:class:`~streams.engine.DriftEngine` advances a stream's clock per event (a look or a close
reads the windows, and applies this buffer first), and buffers the event's values here. They
are applied per (stream, window) and feature in bulk, before anything reads the windows (a
test, a flush), so the order of work per event is unchanged: the same values, guards and
samples as one at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from schemas import PredictionEvent
from streams.config import EngineConfig
from streams.importance import ScoreBatch
from streams.keyed_state import Position, Run, StateCache, part_of_run, run_of
from streams.moment_tracker import MomentTracker
from streams.recent_slots import FirstSample, event_hashes, slot_runs
from streams.segment_tracker import SegmentTracker
from streams.state import ABSENT, FeatureKind, FeatureWindow, StreamState, window_key

__all__ = ["ValueBuffer", "feature_columns"]


def feature_columns(
    rows: Sequence[Mapping[str, object]], names: tuple[str, ...] | None = None
) -> tuple[dict[str, list[object]], bool]:
    """The rows' features as columns, names in order of first appearance, :data:`ABSENT`
    where a row lacks a name; and whether no row lacks one. Rows with the same names in the
    same order (the usual batch of one model) are transposed in one step. ``names``: every
    row's names, in order, when the caller knows it (then not checked).

    >>> feature_columns([{"a": 1, "b": None}, {"a": 2, "b": "x"}])
    ({'a': [1, 2], 'b': [None, 'x']}, True)
    >>> cols, complete = feature_columns([{"a": 1}, {"b": 2, "a": 3}])
    >>> cols == {"a": [1, 3], "b": [ABSENT, 2]}, complete
    (True, False)
    """
    if not rows:
        return {}, True
    known = names is not None
    names = names or tuple(rows[0])
    if known or all(map(names.__eq__, map(tuple, rows))):  # in C: a third of a generator's
        transposed = zip(*(row.values() for row in rows), strict=True)
        return dict(zip(names, map(list, transposed), strict=True)), True
    order: dict[str, None] = {}
    for row in rows:
        order.update(dict.fromkeys(row))
    return {name: [row.get(name, ABSENT) for row in rows] for name in order}, False


def _fill_absent(
    columns: dict[str, list[object]],
    left_out: list[tuple[int, int]],
    features: list[str],
    rows: int,
) -> None:
    """Make ``columns`` say missing (None) where a row left out one of the first ``known``
    of its stream's ``features``, for each (row, known) in ``left_out``: a feature at a time
    (a whole column at once where no row has it).

    >>> cols = {"a": [1.0, ABSENT, 2.0]}
    >>> _fill_absent(cols, [(1, 2), (2, 2)], ["a", "b", "c"], 3)
    >>> cols == {"a": [1.0, None, 2.0], "b": [ABSENT, None, None]}
    True
    """
    by_known: dict[int, list[int]] = {}
    for row, known in left_out:
        by_known.setdefault(known, []).append(row)
    for known, picked in by_known.items():
        everyone = len(picked) == rows
        for name in features[:known]:
            column = columns.get(name)
            if column is None and everyone:
                columns[name] = [None] * rows
                continue
            if column is None:
                column = columns[name] = [ABSENT] * rows
            for row in picked:
                if column[row] is ABSENT:
                    column[row] = None


class ValueBuffer:
    """Buffered events per (stream, window), and the feature windows a flush writes."""

    def __init__(
        self,
        config: EngineConfig,
        streams: StateCache[StreamState],
        windows: StateCache[FeatureWindow],
        moments: MomentTracker,
        segments: SegmentTracker,
        looks_on: bool,
    ) -> None:
        self.config = config
        self.streams = streams
        self.windows = windows
        self.moments = moments
        self.segments = segments
        self.looks_on = looks_on
        # Per (stream, window): the feature windows already loaded and marked dirty since the
        # last flush, so the per-value path is one dict lookup and an append.
        self.hot: dict[tuple[str, float], dict[str, FeatureWindow]] = {}
        # Values of events whose clock advance is done, not yet in their feature windows:
        # applied per (stream, window) and feature in bulk, before anything reads the windows
        # (a test, a flush), so the order of work per event is unchanged.
        self.pending: dict[tuple[str, float], list[tuple[PredictionEvent, Position | None]]] = {}
        self.values = 0
        """Feature values (at least one an event) in ``pending``."""
        self.events = 0
        # Per (stream, window) batch: its events' nulls that had no kind when they came, by
        # index in the batch. They are dropped when applied, whenever that is: a value's
        # fate must not depend on when the buffer is applied (a later event may type it).
        self.untyped: dict[tuple[str, float], list[tuple[int, tuple[str, ...]]]] = {}
        # Per (stream, window) batch: its events that left out a feature their stream knew
        # when they came (by index in the batch, with how many of the stream's features, in
        # order, it knew then): missing values when applied (``absent_is_missing``), whenever
        # that is, and never for a feature first seen after them.
        self.absent: dict[tuple[str, float], list[tuple[int, int]]] = {}
        # Per (stream, window) batch: the names every one of its events has, in order, when
        # that is known without looking (:meth:`list_for`).
        self.shapes: dict[tuple[str, float], tuple[str, ...] | None] = {}

    def list_for(
        self, key: tuple[str, float], shape: tuple[str, ...] | None
    ) -> list[tuple[PredictionEvent, Position | None]]:
        """The list of ``key``'s (stream, window) events, and the names all its events have,
        kept while every run that adds to it has the same (``shape``): applied, its columns
        are then a transposition, with no check of each event's names."""
        pending = self.pending.get(key)
        if pending is None:
            pending = self.pending[key] = []
            self.shapes[key] = shape
        elif shape is None or self.shapes.get(key) != shape:
            self.shapes[key] = None
        return pending

    def apply(self) -> None:
        """Put the buffered events' values into their feature windows, one bulk update per
        (stream, window, feature): the same values, guards and samples as one at a time."""
        if not self.pending:
            return
        cfg = self.config
        looks = self.looks_on
        missing = ABSENT
        for (skey, window), items in self.pending.items():
            stream = self.streams.cached(skey)
            assert stream is not None
            hot = self.hot.setdefault((skey, window), {})
            positions = [p for _, p in items]
            run = run_of(positions)  # the same for every feature of these events
            if looks:
                slots = [int((e.timestamp - window) // cfg.interim_seconds) for e, _ in items]
                hashes = event_hashes([e.event_id for e, _ in items])
                # Worked out once for all the features: a new slot's sample is the batch's
                # smallest hashes; a batch of several slots goes in per ring entry.
                one_slot = slots.count(slots[0]) == len(slots)
                first = FirstSample.of(hashes) if one_slot else None
                runs = None if one_slot else slot_runs(slots, hashes)
            else:
                slots = hashes = [0] * len(items)
                first = runs = None
            scores = [e.score for e, _ in items]
            batch = ScoreBatch(scores)  # every feature's association with them, at once
            shape = self.shapes.get((skey, window))
            all_columns, complete = feature_columns([e.features for e, _ in items], shape)
            for k, names in self.untyped.get((skey, window), ()):
                for name in names:  # a null before its feature had a kind: not a value
                    all_columns[name][k] = missing
                complete = False
            left_out = self.absent.get((skey, window))
            if left_out:
                _fill_absent(all_columns, left_out, list(stream.features), len(items))
                complete = False
            columns: dict[str, list[object]] = {}  # the multivariate rows read them again
            for name, column in all_columns.items():
                feature_kind = stream.features.get(name)
                if feature_kind is None:
                    continue  # only ever seen as null: no type to summarise it by yet
                fw = self._window(stream, window, hot, name, feature_kind)
                columns[name] = column
                if not complete and any(v is missing for v in column):
                    present = [k for k, v in enumerate(column) if v is not missing]
                    self._apply_subset(fw, column, present, positions, slots, hashes, run, scores)
                else:
                    fw.apply_many(column, positions, slots, hashes, run, batch, first, runs)  # type: ignore[arg-type]
            batch.finish()
            if self.segments:

                def feature_window(name: str, kind: FeatureKind) -> FeatureWindow:
                    return self._window(stream, window, hot, name, kind)  # noqa: B023

                def apply_rows(fw: FeatureWindow, column: list[object], rows: list[int]) -> None:
                    # No association with the score per segment: a segment's incident is
                    # ranked by its feature's (``FeatureJudge``), a tenth of their cost.
                    self._apply_subset(fw, column, rows, positions, slots, hashes, run, None)  # noqa: B023

                self.segments.apply(stream, window, columns, feature_window, apply_rows)
            if self.config.multivariate:
                self.moments.apply(stream, window, items, positions, run, columns, complete, batch)
        self.pending.clear()
        self.shapes.clear()
        self.untyped.clear()
        self.absent.clear()
        self.values = self.events = 0

    def _window(
        self,
        stream: StreamState,
        window: float,
        hot: dict[str, FeatureWindow],
        name: str,
        kind: FeatureKind,
    ) -> FeatureWindow:
        """The (stream, window)'s feature window of ``name``: loaded (or made) once per
        flush, and marked to be written."""
        fw = hot.get(name)
        if fw is not None:
            return fw
        wkey = window_key(stream.tenant, stream.model, window, name)
        # Read from the stream's own partition: this runs after the whole batch,
        # whose last event (the partitioned store's default) may be another's.
        fw = self.windows.get(wkey, stream.partition)
        if fw is None:
            is_open = stream.last_closed is None or window > stream.last_closed
            fw = FeatureWindow.new(kind, recent=is_open and self.looks_on)
            self.windows.put(wkey, fw, stream.partition)
        else:
            self.windows.mark(wkey, stream.partition)
        hot[name] = fw
        return fw

    @staticmethod
    def _apply_subset(
        fw: FeatureWindow,
        column: list[object],
        rows: list[int],
        positions: list[Position | None],
        slots: list[int],
        hashes: list[int],
        run: Run | None,
        scores: list[float] | None,
    ) -> None:
        """The batch's ``rows`` of ``column`` into ``fw`` (rows whose value is present);
        without ``scores``, no association with the score."""
        subset = [positions[k] for k in rows]
        fw.apply_many(
            [column[k] for k in rows],  # type: ignore[misc]  # present values only
            subset,
            [slots[k] for k in rows],
            [hashes[k] for k in rows],
            part_of_run(run, subset),
            None if scores is None else [scores[k] for k in rows],
        )
