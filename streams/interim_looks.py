"""When the open window is looked at before it closes: the interim looks' schedule.

A window is judged at its close (``DriftEngine``), and, with interim looks on, each time the
stream's event-time clock crosses a sub-day boundary: the window so far, then the spans of the
last 1, 2, 4 and 8 slots that end at the boundary, then the sequential scan over the slots.
This module decides which of those a look runs, from the per-slot event counts the engine
keeps in the stream's record, and leaves out what could run no test (a span with fewer events
than ``min_window_count``, a look before the stream has a baseline) without reading any
feature. What a test finds is :class:`~streams.judge.FeatureJudge`'s job.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from schemas import DriftEvent
from streams.categorical_summary import CategoricalSummary
from streams.config import CUMULATIVE_EVERY, EngineConfig
from streams.judge import FeatureJudge
from streams.look_screen import LookScreen
from streams.recent_slots import RECENT_LEVELS, RECENT_SLOTS
from streams.slot_series import SlotSeries, SlotSpan
from streams.state import FeatureWindow, StreamState

__all__ = ["InterimLooks"]


class InterimLooks:
    """The schedule of one engine's interim looks (``EngineConfig.interim_looks`` a window).

    >>> from streams.keyed_state import MemoryStore, StateCache
    >>> from streams.state import FeatureWindow
    >>> cfg = EngineConfig()
    >>> windows = StateCache(MemoryStore(), FeatureWindow.from_bytes, FeatureWindow.to_bytes)
    >>> looks = InterimLooks(cfg, FeatureJudge(cfg, windows, Counter(), []), Counter())
    >>> stream = StreamState("acme", "fraud")
    >>> looks.count_slot(stream, 0.0, 2 * cfg.interim_seconds + 1.0)
    >>> stream.slot_window, stream.slot_events
    (0.0, {2: 1})
    >>> looks.due(stream, 3 * cfg.interim_seconds)  # no window with events yet
    False
    """

    def __init__(self, config: EngineConfig, judge: FeatureJudge, stats: Counter[str]) -> None:
        self.config = config
        self.judge = judge
        self.stats = stats
        self.per_window = config.interim_looks  # a computed property: read once
        self.screen = LookScreen(config, stats)

    def count_slot(self, stream: StreamState, window: float, event_time: float) -> None:
        """Count a new event in its sub-day slot, for the newest window only, and only from
        that window's first event (before this event is counted in ``window_events``): the
        counts then bound every feature's values in a span exactly."""
        if stream.slot_window != window:
            newer = stream.slot_window is None or window > stream.slot_window
            if window in stream.window_events or not newer:
                return  # an older window, or one whose first events were not counted
            stream.slot_window = window
            stream.slot_events = {}
        slot = int((event_time - window) // self.config.interim_seconds)
        stream.slot_events[slot] = stream.slot_events.get(slot, 0) + 1

    def spans(self, stream: StreamState, window: float, look: int) -> tuple[list[int], int]:
        """The spans a look at ``look`` tests, in order: 0 for the window so far, else the
        number of slots. A span whose events are fewer than ``min_window_count`` is left out:
        no feature can have that many values in it, so it could run no test (a stream of a
        few events an hour skips nearly every look: 1,000 features cost ~36 ms a look).
        Returns the spans and how many were left out."""
        min_count = self.config.min_window_count
        spans = []
        skipped = 0
        if look % CUMULATIVE_EVERY == 0:
            if stream.window_events.get(window, 0) >= min_count:
                spans.append(0)
            else:
                skipped += 1
        counts = stream.slot_events if stream.slot_window == window else None
        for k in range(RECENT_LEVELS):
            slots = 1 << k
            if look % slots:
                continue
            if (
                counts is not None
                and sum(counts.get(slot, 0) for slot in range(look - slots, look)) < min_count
            ):
                skipped += 1
                continue
            spans.append(slots)
        return spans, skipped

    def _next(
        self, stream: StreamState, event_time: float, window: float | None = None
    ) -> tuple[float, int] | None:
        """The (window, look) a clock at ``event_time`` (in ``window``, if known) is due to
        look at, if any."""
        cfg = self.config
        if not self.per_window:
            return None
        if window is None:
            window = cfg.window_start(event_time)
        look = min(int((event_time - window) // cfg.interim_seconds), self.per_window)
        if look < 1 or window not in stream.window_events:
            return None
        if stream.interim_window == window and stream.interim_look >= look:
            return None
        return window, look

    def pending(self, stream: StreamState, event_time: float, window: float | None = None) -> bool:
        """Is a look due at ``event_time`` (in ``window``, if known) at all? (Most events'
        answer is no: they are inside the slot already looked at.) When not, :meth:`look`
        does nothing."""
        return self._next(stream, event_time, window) is not None

    def due(self, stream: StreamState, event_time: float) -> bool:
        """Would :meth:`look` test anything at ``event_time``? (No test work.)"""
        due = self._next(stream, event_time)
        if due is None or not self.has_baseline(stream, due[0]):
            return False  # nothing to test: the values can wait in the buffer
        window, look = due
        return (
            stream.slot_window != window
            or bool(self.spans(stream, window, look)[0])
            or self._scan_due(stream, window, look)
        )

    def has_baseline(self, stream: StreamState, window: float) -> bool:
        """Can any feature of ``window`` have a baseline? Not in a stream's first weeks: its
        looks then test nothing, and need no value applied (or span built) first."""
        windows = self.judge.baselines.windows_of(stream, window)
        return len(windows) >= self.config.min_baseline_windows

    def _scan_due(self, stream: StreamState, window: float, look: int) -> bool:
        """Does the sequential scan run at ``look``: on, and the last slots' events (up to
        ``RECENT_SLOTS``) at least ``min_window_count``?"""
        if not self.config.sequential_alpha:
            return False
        if stream.slot_window != window:
            return True  # counts unknown: the features' own sizes decide
        counts = stream.slot_events
        recent = sum(counts.get(slot, 0) for slot in range(max(0, look - RECENT_SLOTS), look))
        return recent >= self.config.min_window_count

    def look(self, stream: StreamState, event_time: float) -> list[DriftEvent]:
        """Test the open window when the clock crosses an interim boundary (one look per
        crossing, however many boundaries a gap in the traffic skipped): the window so far,
        then the spans of the last 1, 2, 4 and 8 slots that end at this boundary. The values
        must be in their windows (the engine applies its buffer first when :meth:`due`)."""
        due = self._next(stream, event_time)
        if due is None:
            return []
        window, look = due
        cfg, judge = self.config, self.judge
        stream.interim_window = window
        stream.interim_look = look
        self.stats["interim_looks"] += 1
        if not self.has_baseline(stream, window):
            self.stats["looks_without_baseline"] += 1
            return []
        looked_at = window + look * cfg.interim_seconds
        drifts: list[DriftEvent] = []
        spans, skipped = self.spans(stream, window, look)
        if skipped:
            self.stats["look_spans_skipped"] += skipped
        scan = self._scan_due(stream, window, look)
        # Each judgement below reads the same windows, baselines and recent slots: found once.
        inputs = judge.inputs(stream, window) if spans or scan else []
        recent: dict[str, list[tuple[np.ndarray, int]] | None] = {}

        def recent_of(feature: str, fw: FeatureWindow) -> list[tuple[np.ndarray, int]] | None:
            if feature not in recent:
                recent[feature] = fw.recent_arrays(look - 1)
            return recent[feature]

        # Most parts can find nothing: shown for all at once, they are not judged (once a
        # part judged before them finds drift, their families are asked again without it).
        screen = self.screen
        screened = screen.quiet(stream, window, look, spans, scan, inputs, recent_of)
        for slots in spans:
            if screen.part_quiet(screened, slots, stream, window, after_drift=bool(drifts)):
                screen.count(screened, slots)
                self.stats["look_parts_screened"] += 1
                continue
            if slots == 0:
                drifts += judge.judge(
                    stream, window, event_time, cfg.interim_alpha, looked_at, inputs=inputs
                )
                continue

            def pick(
                feature: str, fw: FeatureWindow, slots: int = slots
            ) -> SlotSpan | CategoricalSummary | None:
                return fw.span_summary(
                    look - 1, slots, cfg.min_window_count, recent_of(feature, fw)
                )

            drifts.extend(
                judge.judge(
                    stream,
                    window,
                    event_time,
                    cfg.interim_alpha,
                    looked_at,
                    pick,
                    span=slots * cfg.interim_seconds,
                    inputs=inputs,
                )
            )
        if scan:
            self.stats["scans"] += 1
        if scan and screen.part_quiet(screened, -1, stream, window, after_drift=bool(drifts)):
            screen.count(screened, -1)
            self.stats["look_parts_screened"] += 1
        elif scan:

            def pick_slots(feature: str, fw: FeatureWindow) -> SlotSeries | None:
                return fw.slot_series(
                    look - 1, cfg.interim_seconds, cfg.min_window_count, recent_of(feature, fw)
                )

            drifts += judge.judge(
                stream, window, event_time, cfg.sequential_alpha, looked_at, pick_slots,
                scan=True, inputs=inputs,
            )  # fmt: skip
        return drifts
