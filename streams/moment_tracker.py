"""The engine's multivariate side: each window's moments of a stream's numeric features.

:mod:`streams.moments` is the statistics (mergeable moment summaries); this module keeps them
per (stream, window) in the engine's state store, as the engine's feature windows are kept:
which features a window tracks, the batch's rows into their time blocks, closing and expiry.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import numpy as np

from schemas import PredictionEvent
from streams.config import EngineConfig
from streams.importance import ScoreBatch
from streams.keyed_state import Position, Run, StateCache, StateStore, Write, guard_many
from streams.moments import MomentWindow, moment_key
from streams.state import ABSENT, StreamState


class MomentTracker:
    """The moments of every (stream, window), cached and dirty-tracked like the engine's
    other state (``streams.keyed_state.StateCache``)."""

    def __init__(self, config: EngineConfig, store: StateStore) -> None:
        self.config = config
        self.cache: StateCache[MomentWindow] = StateCache(
            store, MomentWindow.from_bytes, MomentWindow.to_bytes, config.cached_windows
        )

    def start(self, stream: StreamState, window: float) -> None:
        """A window's first event: which numeric features its moments track (those the
        stream knows now, the first ``multivariate_max_features`` by name), fixed for the
        window. Decided per event, not per batch, so live and backtest choose the same."""
        names = sorted(name for name, kind in stream.features.items() if kind == "numeric")
        names = names[: self.config.multivariate_max_features]
        if len(names) < 2:
            return
        key = moment_key(stream.tenant, stream.model, window)
        if self.cache.get(key, stream.partition) is None:
            blocks = self.config.moment_blocks
            self.cache.put(key, MomentWindow.new(tuple(names), blocks), stream.partition)

    def apply(
        self,
        stream: StreamState,
        window: float,
        items: list[tuple[PredictionEvent, Position | None]],
        positions: list[Position | None],
        run: Run | None,
        columns: dict[str, list[object]],
        complete: bool = False,
        batch: ScoreBatch | None = None,
    ) -> None:
        """The events' rows of the tracked features into the window's moments (in bulk), from
        the batch's ``columns`` (per feature, a value, None or ``ABSENT`` per event;
        ``complete``: no ``ABSENT`` in any); ``batch``: the finished :class:`ScoreBatch` of
        these columns, whose float rows are taken where it has them all (a column with an
        ``ABSENT`` is applied by subset, never handed to it)."""
        key = moment_key(stream.tenant, stream.model, window)
        mw = self.cache.get(key, stream.partition)
        if mw is None:
            # Made at the window's first event, but a flush's records are not stored all or
            # nothing: a worker killed while they were on the way leaves the stream state
            # (which counted that event) without the moments, and the events read again are
            # no window's first any more.
            self.start(stream, window)
            mw = self.cache.get(key, stream.partition)
            if mw is None:
                return
        keep = guard_many(mw.offsets, positions, run)
        if not keep:
            return
        n = len(items)
        nothing = [None] * n  # a tracked feature absent from every event of the batch
        picked = [columns.get(name, nothing) for name in mw.features]
        made = None if batch is None else batch.rows_of(picked)  # never a column with ABSENT
        if made is not None:
            table = made  # the association's conversion of the same columns
        elif complete:  # None becomes NaN in the conversion, in C
            table = np.array(picked, dtype=np.float64)
        else:
            # An object array, missing and absent values replaced in C (a list comprehension
            # per value cost a third of the multivariate test's ingestion).
            table = np.array(picked, dtype=object)
            table[(table == None) | (table == ABSENT)] = math.nan  # noqa: E711  # elementwise
        rows = table.T.astype(np.float64, order="C")  # C order: see MomentSummary.add_rows
        events = [e for e, _ in items]
        if len(keep) < n:
            rows = rows[keep]
            events = [events[k] for k in keep]
        span, last = self.config.moment_block_seconds, len(mw.blocks) - 1
        blocks = [min(int((e.timestamp - window) // span), last) for e in events]
        if blocks[0] == blocks[-1] and blocks.count(blocks[0]) == len(blocks):
            mw.blocks[blocks[0]].add_rows(rows)
        else:
            index = np.array(blocks)
            for b in dict.fromkeys(blocks):
                mw.blocks[b].add_rows(rows[index == b])  # in arrival order within a block
        self.cache.mark(key, stream.partition)

    def close(self, stream: StreamState, window: float) -> None:
        key = moment_key(stream.tenant, stream.model, window)
        mw = self.cache.get(key, stream.partition)
        if mw is not None and mw.close():
            self.cache.mark(key, stream.partition)

    def expire(self, stream: StreamState, window: float) -> None:
        key = moment_key(stream.tenant, stream.model, window)
        if self.cache.get(key, stream.partition) is not None:
            self.cache.delete(key, stream.partition)

    def flush(self) -> list[Write]:
        return self.cache.flush()

    def forget(self, partitions: Collection[int] | None = None) -> None:
        self.cache.forget(partitions)
