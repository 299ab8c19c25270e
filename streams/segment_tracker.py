"""The engine's segment side: which segments each window has, and the batch's values into
the segment features' windows.

:mod:`streams.segments` names segments and chooses them; this module applies those choices
to a stream: it counts the segment columns' values per window, fixes a window's segments at
its first event (from the previous window's counts), splits a batch's values by segment and
forgets segments no retained window has.
"""

from __future__ import annotations

from collections.abc import Callable

from schemas import PredictionEvent
from streams.config import EngineConfig
from streams.segments import (
    MAX_COUNTED_VALUES,
    OTHER,
    choose_segments,
    is_segment_feature,
    segment_feature,
    segment_of,
    split_segment_feature,
)
from streams.state import ABSENT, FeatureKind, FeatureWindow, StreamState

ApplyRows = Callable[[FeatureWindow, list[object], list[int]], None]
"""Puts the batch's given rows of a column (all present) into a feature window."""


class SegmentTracker:
    """Segment drift's bookkeeping for the engine (``EngineConfig.segment_columns``)."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.columns = config.segment_column_names

    def __bool__(self) -> bool:
        return bool(self.columns)

    def count(self, stream: StreamState, window: float, event: PredictionEvent) -> None:
        """Count the event's segment column values; at a window's first event, choose the
        window's segments from the previous window's counts (``streams.segments``)."""
        cfg = self.config
        if window not in stream.segment_values:
            before = [w for w in stream.segment_counts if w < window]
            counts = stream.segment_counts[max(before)] if before else {}
            # A share of all of that window's events (the column may be missing in some).
            total = stream.window_events.get(max(before), 0) if before else 0
            chosen_before = [w for w in stream.segment_values if w < window]
            kept = stream.segment_values[max(chosen_before)] if chosen_before else {}
            chosen: dict[str, list[str]] = {}
            for column in self.columns:
                values = choose_segments(
                    counts.get(column, {}), kept.get(column, []), cfg.segment_values,
                    cfg.segment_min_share, total,
                )  # fmt: skip
                if values:  # with none, its only segment would be all of the traffic
                    chosen[column] = values
            stream.segment_values[window] = chosen
        counts_now = stream.segment_counts.setdefault(window, {})
        for column in self.columns:
            value = event.features.get(column)
            if not isinstance(value, str):
                continue
            seen = counts_now.setdefault(column, {})
            if value in seen:
                seen[value] += 1
            elif len(seen) < MAX_COUNTED_VALUES:
                seen[value] = 1
        while len(stream.segment_counts) > 2:
            del stream.segment_counts[min(stream.segment_counts)]

    def apply(
        self,
        stream: StreamState,
        window: float,
        columns: dict[str, list[object]],
        feature_window: Callable[[str, FeatureKind], FeatureWindow],
        apply_rows: ApplyRows,
    ) -> None:
        """The batch's values of every feature into its segment features, one bulk update
        per segment and feature, like the features' own. ``columns``: per feature, a value,
        None or ``ABSENT`` per event; ``feature_window``: the (stream, window)'s window of a
        feature name, loaded or made and marked to be written."""
        chosen_by_column = stream.segment_values.get(window) if self.columns else None
        if not chosen_by_column:
            return
        for column_name, values in chosen_by_column.items():
            by_column = columns.get(column_name)
            if by_column is None:
                continue  # no event of the batch has the column
            chosen = frozenset(values)
            groups: dict[str, list[int]] = {}
            for k, value in enumerate(by_column):
                segment = segment_of(value, chosen)
                if segment is not None:
                    groups.setdefault(segment, []).append(k)
            for segment, rows in sorted(groups.items()):
                for name, column in columns.items():
                    if name == column_name:
                        continue  # constant within its own segments
                    present = [k for k in rows if column[k] is not ABSENT]
                    if not present:
                        continue  # as one event at a time: no window where no event has it
                    kind = stream.features[name]
                    sname = segment_feature(name, column_name, segment)
                    stream.segments.setdefault(sname, kind)
                    apply_rows(feature_window(sname, kind), column, present)

    def expire(self, stream: StreamState) -> None:
        """After windows expired: forget the segments no retained window has, and what the
        judge kept of their tests once no incident of theirs is open."""
        if stream.segments:
            # A segment no retained window has: no window of its features is left either.
            alive = {
                (column, value)
                for chosen in stream.segment_values.values()
                for column, values in chosen.items()
                for value in (*values, OTHER)
            }
            for name in [n for n in stream.segments if split_segment_feature(n)[1:] not in alive]:
                del stream.segments[name]
        if self.columns:
            book = stream.incidents
            for key in [
                k
                for k in book.last_window
                if is_segment_feature(k)
                and k.removesuffix("#missing") not in stream.segments
                and k not in book.open
            ]:
                del book.last_window[key]
