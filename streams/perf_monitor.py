"""Performance drift: the per-window performance history and the tests that watch it.

Pure logic over a :class:`~streams.keyed_state.StateStore`, like the feature-drift engine: a
worker keeps it in a Faust table, a backtest in a dict, and both get the same DriftEvents for
the same joined data in the same order.

State per (tenant, model), in :mod:`streams.perf_state`: one :class:`PerfWindow` per window of
**prediction** time (a summary per model version, which late labels keep filling in) and one
:class:`PerfStream` (the clock, the windows with data, the open incidents). The tests are pure
functions in :mod:`streams.perf_findings`; this module keeps the history and decides when a
window is looked at; :class:`~streams.perf_judge.PerformanceJudge`, which findings count and
what they do to the incidents.

Five signals, all of them DriftEvents of kind ``performance``:

* ``accuracy_drop`` / ``pr_auc_drop``: a window (per version) against the merged baseline
  windows (the feature-drift baseline rule), one-sided tests, Benjamini-Hochberg over the
  two, and a minimum drop (for accuracy scaled to the baseline's error rate,
  :func:`~streams.perf_findings.accuracy_floor`). A window is looked at when its labelled
  count reaches ``min_labels`` and each doubling, then once more after
  ``label_horizon_days``; alpha is split over the looks (Bonferroni), so re-testing a window
  as labels arrive does not inflate the false-alarm rate;
* ``sequential_error_rate``: between the looks, at every label, an anytime-valid sequential
  test (:class:`~streams.sequential.RateRiseTest`) of the window's error rate against the
  upper confidence bound of the baseline's, on its own share of alpha: a large drop is found
  from a few dozen labels, without spending the window's alpha once per label. (It replaces
  river's ADWIN on the error stream, whose alarms, tested on the cut ADWIN found worst and
  at every signal, had no controlled false-alarm rate.)
* ``recent_accuracy_drop``: at each window's end, the labels so far of it and the
  ``span_windows - 1`` windows before it, merged, against the union of their baselines
  (:func:`~streams.perf_findings.span_test`), one more look on the looks' alpha: a small drop
  of a model with few labels a day shows over a week of them, in no single window;
* ``estimated_accuracy_drop`` / ``estimated_pr_auc_drop``: for a closed window whose labels
  are still mostly missing, CBPE estimates from its score distribution and the calibration
  learned on the baseline; marked ``estimated: true`` and never more than MEDIUM. They see
  covariate shift days before the labels do; they cannot see concept drift.

Beside them, per-model **objectives** (``DRIFTWATCH_PERF_OBJECTIVES``, e.g. PR-AUC >= 0.70):
a metric significantly below its floor at a look opens an incident of kind ``objective``,
told in notices (alerts), never as a DriftEvent, so it never starts a retraining.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Collection
from typing import Any

from schemas import DriftEvent
from streams.config import DAY, PerformanceConfig
from streams.incidents import IncidentNotice
from streams.keyed_state import Position, StateCache, StateStore, Write, crash_ordered, guard
from streams.perf_incidents import PerfIncidents
from streams.perf_judge import PerformanceJudge
from streams.perf_state import (
    PerfStream,
    PerfWindow,
    history_row,
    perf_stream_key,
    perf_window_key,
)
from streams.performance import PerformanceSummary

__all__ = ["PerformanceMonitor"]


class PerformanceMonitor:
    """Keeps the performance history of joined predictions and raises performance drift.

    >>> import numpy as np
    >>> from streams.keyed_state import MemoryStore
    >>> mon = PerformanceMonitor(PerformanceConfig(pr_auc_floor=0.5), MemoryStore())
    >>> rng = np.random.default_rng(3)
    >>> events = []
    >>> for day in range(66):  # labels turn to coin flips on day 63
    ...     for _ in range(300):
    ...         s = float(rng.random())
    ...         y = int(rng.random() < s) if day < 63 else int(rng.random() < 0.5)
    ...         ts = day * DAY + float(rng.random()) * DAY
    ...         _ = mon.observe_prediction("acme", "fraud", "v1", ts, s)
    ...         events += mon.observe_label("acme", "fraud", "v1", ts, s, y, ts + 3600)
    >>> sorted({(int(e.window_start // DAY), e.test) for e in events})  # nothing before day 63
    ... # doctest: +NORMALIZE_WHITESPACE
    [(63, 'accuracy_drop'), (63, 'pr_auc_drop'), (63, 'sequential_error_rate'),
     (64, 'accuracy_drop'), (64, 'pr_auc_drop'), (64, 'recent_accuracy_drop'),
     (64, 'sequential_error_rate'),
     (65, 'accuracy_drop'), (65, 'pr_auc_drop'), (65, 'recent_accuracy_drop'),
     (65, 'sequential_error_rate')]
    """

    def __init__(self, config: PerformanceConfig, store: StateStore) -> None:
        self.config = config
        self.store = store
        self.stats: Counter[str] = Counter()
        self.notices: list[IncidentNotice] = []
        """Incident changes since the caller last took them (:meth:`take_notices`)."""
        self._streams: StateCache[PerfStream] = StateCache(
            store, self._decode_stream, PerfStream.to_bytes, capacity=1 << 30
        )
        self._orphans: list[PerfStream] = []
        """Streams read with windows their last write meant to delete (``flush``)."""
        self._windows: StateCache[PerfWindow] = StateCache(
            store, PerfWindow.from_bytes, PerfWindow.to_bytes, config.engine.cached_windows
        )
        self._incidents = PerfIncidents(config, self.stats, self.notices, self._mark)
        self._hot: tuple[float, str, str, PerfStream, PerfWindow, str] | None = None
        """The window the last prediction went to (window start, tenant, model, stream,
        window, key): the next ones nearly always go there too. Held until a flush (which
        renumbers windows and may drop them from the cache), a forget or a dropped window
        (an expired one: ``_expired`` is asked on every prediction all the same)."""
        self._judge = PerformanceJudge(config, self.stats, self._incidents, self.window)

    # ------------------------------------------------------------------ events

    def observe_prediction(
        self,
        tenant: str,
        model: str,
        version: str,
        ts: float,
        score: float,
        position: Position | None = None,
    ) -> list[DriftEvent]:
        w = self.config.engine.window_start(ts)
        hot = self._hot
        if hot is not None and hot[0] == w and hot[1] == tenant and hot[2] == model:
            stream, win, wkey = hot[3], hot[4], hot[5]
            if self._expired(stream, w):
                return []
        else:
            stream = self._stream(tenant, model)
            if self._expired(stream, w):
                return []
            win, wkey = self._window_for(stream, w)
            self._hot = (w, tenant, model, stream, win, wkey)
        if guard(win.offsets, position):
            _summary(win.versions, version).add_prediction(score)
            self._windows.mark(wkey)
        if not guard(stream.offsets, position):
            return []
        stream.latest_version = version
        return self._advance(stream, ts)

    def observe_label(
        self,
        tenant: str,
        model: str,
        version: str,
        prediction_ts: float,
        score: float,
        label: int,
        outcome_ts: float,
        position: Position | None = None,
    ) -> list[DriftEvent]:
        cfg = self.config
        stream = self._stream(tenant, model)
        w = cfg.engine.window_start(prediction_ts)
        if self._expired(stream, w):
            return []
        win, wkey = self._window_for(stream, w)
        events: list[DriftEvent] = []
        if guard(win.offsets, position):
            summary = _summary(win.versions, version)
            summary.add_label(score, label)
            self._windows.mark(wkey)
            self.stats["labels"] += 1
            look = win.looks.get(version, 0)
            if look < cfg.max_looks and summary.labelled >= cfg.milestone(look):
                while look < cfg.max_looks and summary.labelled >= cfg.milestone(look):
                    look += 1
                win.looks[version] = look
                events += self._judge.look(stream, w, win, version, outcome_ts, final=False)
            events += self._judge.sequential(stream, w, win, version, outcome_ts)
        if not guard(stream.offsets, position):
            return events
        return events + self._advance(stream, outcome_ts)

    def take_notices(self) -> list[IncidentNotice]:
        out = self.notices.copy()
        self.notices.clear()  # in place: the incident side tells into this same list
        return out

    def advance(self, tenant: str, model: str, event_time: float) -> list[DriftEvent]:
        """Move a quiet stream's clock (wall-clock timer in the worker, end of a backtest)."""
        stream = self._stream(tenant, model)
        return self._advance(stream, event_time)

    def streams(self) -> list[tuple[str, str]]:
        return sorted((s.tenant, s.model) for s in self._streams.values())

    def window(self, tenant: str, model: str, window: float) -> PerfWindow | None:
        return self._windows.get(perf_window_key(tenant, model, window))

    def stream_state(self, tenant: str, model: str) -> PerfStream | None:
        return self._streams.get(perf_stream_key(tenant, model))

    def history(self, tenant: str, model: str) -> list[dict[str, Any]]:
        """The performance history of a stream, oldest window first."""
        stream = self.stream_state(tenant, model)
        rows: list[dict[str, Any]] = []
        for w in [] if stream is None else stream.windows:
            win = self.window(tenant, model, w)
            for version, s in sorted(({} if win is None else win.versions).items()):
                rows.append(history_row(tenant, model, version, w, s))
        return rows

    def flush(self, keep_cache: bool = True) -> list[Write]:
        """The state changed since the last flush, to persist (decoded state stays cached,
        bounded, unless ``keep_cache`` is false)."""
        # In the order a crash can cut short (``crash_ordered``), as the feature engine's.
        # The deletes a prefix lost are made again by whoever reads the stream next
        # (``PerfStream.dropped``). A window whose record was kept without its stream's tells
        # the stream's incident book again what it told it in that write (``_window_for``,
        # ``PerfWindow.told``). Each cache flushes in key order.
        self._number_writes()
        self._hot = None
        writes = crash_ordered(self._windows.flush(), self._streams.flush())
        self._judge.forget()
        if not keep_cache:
            self.forget()
        return writes

    def _decode_stream(self, raw: bytes) -> PerfStream:
        stream = PerfStream.from_bytes(raw)
        if stream.dropped:
            self._orphans.append(stream)
        return stream

    def _number_writes(self) -> None:
        """Every stream with a changed window is written, one write later than its last; its
        changed windows carry that number, and its record the windows this write deletes."""
        streams = self._streams
        # Deleted again (their deletes may have been lost), without writing their stream
        # for it: if these are lost too, its record still names them.
        orphans = [(s, [w for w in s.dropped if w not in s.windows]) for s in self._orphans]
        self._orphans.clear()
        changed: list[tuple[str, float, PerfWindow | None]] = []
        for key in self._windows.dirty():
            _, tenant, model, w = json.loads(key)
            changed.append((perf_stream_key(tenant, model), float(w), self._windows.cached(key)))
        for skey, _, _ in changed:
            streams.mark(skey)
        for skey in streams.dirty():
            stream = streams.cached(skey)
            if stream is not None:
                stream.writes += 1
                stream.dropped = []
        for skey, w, win in changed:
            stream = streams.cached(skey)
            assert stream is not None  # a window is reached through its stream
            if win is None:
                stream.dropped.append(w)
            else:
                win.written = stream.writes
        for stream, gone in orphans:
            skey = perf_stream_key(stream.tenant, stream.model)
            for w in gone:
                self._windows.delete(perf_window_key(stream.tenant, stream.model, w))
                if skey in streams.dirty() and w not in stream.dropped:
                    stream.dropped.append(w)  # it is written now: it must still name them

    def forget(self, partitions: Collection[int] | None = None) -> None:
        """Drop decoded state (after partitions were given up; see ``StateCache.forget``)."""
        self._orphans.clear()  # their records still name them: whoever reads one next
        self._hot = None
        self._streams.forget(partitions)
        self._windows.forget(partitions)
        self._judge.forget()

    # ------------------------------------------------------------------ clock

    def _advance(self, stream: PerfStream, event_time: float) -> list[DriftEvent]:
        if event_time <= stream.clock:
            return []
        stream.clock = event_time
        self._streams.mark(perf_stream_key(stream.tenant, stream.model))
        if event_time < stream.next_due:
            return []
        cfg = self.config
        ecfg = cfg.engine
        events: list[DriftEvent] = []
        next_due = math.inf
        for w in list(stream.windows):
            end = w + ecfg.window_seconds
            close_at = end + ecfg.allowed_lateness_seconds
            settle_at = end + cfg.label_horizon_days * DAY
            # kept until the last final look that can use it as a baseline window is done
            expire_at = end + (ecfg.retention_days + cfg.label_horizon_days) * DAY
            if expire_at <= event_time:
                self._drop_window(stream, w)
                continue
            ended = end <= event_time
            closed = close_at <= event_time
            settled = settle_at <= event_time
            next_due = min(next_due, expire_at)
            if not ended and cfg.span_looks:
                next_due = min(next_due, end)
            if not closed:
                next_due = min(next_due, close_at)
            if not settled:
                next_due = min(next_due, settle_at)
            if not ((ended and cfg.span_looks) or closed or settled):
                continue
            win, _ = self._window_for(stream, w)
            if ended and cfg.span_looks and not win.spanned:
                # At the window's end, not its close: the span's labels are its earlier
                # windows', which a late prediction of this one does not change.
                win.spanned = True
                self._windows.mark(perf_window_key(stream.tenant, stream.model, w))
                events += self._judge.span(stream, w, win, event_time)
            if closed and not win.estimated:
                win.estimated = True
                self._windows.mark(perf_window_key(stream.tenant, stream.model, w))
                events += self._judge.estimate(stream, w, win, event_time)
            if settled and not win.final:
                win.final = True
                self._windows.mark(perf_window_key(stream.tenant, stream.model, w))
                for version in sorted(win.versions):
                    events += self._judge.look(stream, w, win, version, event_time, final=True)
        stream.next_due = next_due
        return events

    # ------------------------------------------------------------------ storage

    def _mark(self, stream: PerfStream, window: float | None) -> None:
        """The stream (and its window ``window``) changed: to be written at the flush."""
        if window is not None:
            self._windows.mark(perf_window_key(stream.tenant, stream.model, window))
        self._streams.mark(perf_stream_key(stream.tenant, stream.model))

    def _stream(self, tenant: str, model: str) -> PerfStream:
        key = perf_stream_key(tenant, model)
        stream = self._streams.get(key)
        if stream is None:
            stream = PerfStream(tenant, model)
            self._streams.put(key, stream)
        return stream

    def _expired(self, stream: PerfStream, w: float) -> bool:
        """Window ``w`` is past the history kept at the stream's clock: an entry for it (a
        replay after a restart, or a label weeks late) must not bring it back - its offset
        guard went with it, and the clock, already past, would never expire it again."""
        cfg = self.config
        end = w + cfg.engine.window_seconds
        if end + (cfg.engine.retention_days + cfg.label_horizon_days) * DAY > stream.clock:
            return False
        self.stats["expired_window_entries"] += 1
        return True

    def _window_for(self, stream: PerfStream, w: float) -> tuple[PerfWindow, str]:
        key = perf_window_key(stream.tenant, stream.model, w)
        win = self._windows.get(key)
        if win is None:
            win = PerfWindow()
            self._windows.put(key, win)
        elif win.written > stream.writes:  # the stream's record of that write was lost
            win.written = stream.writes
            self._incidents.retell(stream, w, win)
        if not stream.windows or stream.windows[-1] < w or w not in stream.windows:
            stream.windows.append(w)
            stream.windows.sort()
            ecfg = self.config.engine
            due = w + ecfg.window_seconds  # its end (the span test), else its close
            due += 0.0 if self.config.span_looks else ecfg.allowed_lateness_seconds
            stream.next_due = min(stream.next_due, due)
            self._streams.mark(perf_stream_key(stream.tenant, stream.model))
        return win, key

    def _drop_window(self, stream: PerfStream, w: float) -> None:
        key = perf_window_key(stream.tenant, stream.model, w)
        stream.windows.remove(w)
        self._windows.delete(key)
        self._hot = None
        self._streams.mark(perf_stream_key(stream.tenant, stream.model))


def _summary(versions: dict[str, PerformanceSummary], version: str) -> PerformanceSummary:
    """The version's summary in a window, made on first use (``setdefault`` would build and
    drop seven arrays per prediction)."""
    summary = versions.get(version)
    if summary is None:
        summary = versions[version] = PerformanceSummary()
    return summary
