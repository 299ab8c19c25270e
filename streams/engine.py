"""The drift detection engine: one code path for the live worker and the offline backtest.

The engine owns no I/O. It reads and writes opaque bytes through a :class:`StateStore`
(a Faust RocksDB table in the worker, a dict in a backtest), caches decoded state while a
batch is processed, and hands the caller the dirty values to persist with :meth:`flush`.

Order of work for one event (the same whatever the batching, so live and backtest agree):

1. advance the stream's event-time clock to the event's timestamp;
2. test every window that the clock has now passed by the allowed lateness, oldest first;
3. add the event's feature values to the summaries of its own window.
"""

from __future__ import annotations

import functools
import uuid
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass

from schemas import DriftEvent, DriftKind, InvalidEvent, PredictionEvent
from streams.categorical_summary import CategoricalSummary
from streams.config import CUMULATIVE_EVERY, DAY, EngineConfig
from streams.decision import benjamini_hochberg, severity_for
from streams.drift_tests import DRIFT_TESTS, DriftTest, TestResult
from streams.incidents import IncidentNotice
from streams.keyed_state import Position, StateCache, StateStore, Write, guard
from streams.numeric_summary import NumericSummary
from streams.state import (
    RECENT_LEVELS,
    FeatureKind,
    FeatureWindow,
    StreamState,
    Summary,
    _merge_summaries,
    event_hash,
    stream_key,
    window_key,
)

_BASELINE_CACHE_SIZE = 4096
Picker = Callable[[str, FeatureWindow], Summary | None]
"""Which summary of a feature's window a test looks at (the whole window, a recent span)."""


def _effect_floor(cfg: EngineConfig, test: str) -> float:
    return DRIFT_TESTS[test].effect_floor(cfg)


def _whole_window(feature: str, fw: FeatureWindow) -> Summary | None:
    return fw.summary


_Baseline = tuple[NumericSummary | CategoricalSummary, float, float] | None
_BaselineKey = tuple[str, str, str, float, tuple[tuple[float, int], ...]]
_DRIFT_NAMESPACE = uuid.UUID("6f1c2b1e-6d0b-4c55-9a59-3c1f4f8d2a10")


@dataclass(frozen=True, slots=True)
class FeatureTest:
    feature: str
    kind: FeatureKind
    result: TestResult
    window_count: int
    baseline_count: int
    baseline_start: float
    baseline_end: float
    window_summary: Summary
    baseline_summary: Summary

    @property
    def test(self) -> DriftTest[Summary]:
        """The registered test that produced :attr:`result`."""
        return DRIFT_TESTS[self.result.test]

    def severity_effect(self) -> float:
        """The effect size net of sampling noise (see :meth:`DriftTest.debiased_effect`)."""
        return self.test.debiased_effect(
            self.result.effect_size, self.window_count, self.baseline_count, self.baseline_summary
        )

    @property
    def incident_key(self) -> str:
        """One incident per feature and kind of change (distribution, missing rate)."""
        return self.feature + self.test.incident_suffix

    def describe(self) -> dict[str, object]:
        """Effect sizes and signals beyond the test's own, for the DriftEvent."""
        return self.test.describe(self.window_summary, self.baseline_summary)


class DriftEngine:
    """Windowed feature-drift detection over prediction events.

    >>> from streams.keyed_state import MemoryStore
    >>> engine = DriftEngine(EngineConfig(), MemoryStore())
    >>> engine.stats["events"]
    0
    """

    def __init__(self, config: EngineConfig, store: StateStore) -> None:
        self.config = config
        self.store = store
        self.stats: Counter[str] = Counter()
        self.notices: list[IncidentNotice] = []
        """Incident changes since the caller last took them (:meth:`take_notices`)."""
        self._streams: StateCache[StreamState] = StateCache(
            store, StreamState.from_bytes, StreamState.to_bytes, capacity=1 << 30
        )
        self._windows: StateCache[FeatureWindow] = StateCache(
            store, FeatureWindow.from_bytes, FeatureWindow.to_bytes, config.cached_windows
        )
        # Per (stream, window): the feature windows already loaded and marked dirty since the
        # last flush, so the per-value path is one dict lookup and an append.
        self._hot: dict[tuple[str, float], dict[str, FeatureWindow]] = {}
        # Values of events whose clock advance is done, not yet in their feature windows:
        # applied per (stream, window) and feature in bulk, before anything reads the windows
        # (a test, a flush), so the order of work per event is unchanged.
        self._pending: dict[tuple[str, float], list[tuple[PredictionEvent, Position | None]]] = {}
        # Merged baselines are derived data: kept across flushes (the same baseline serves a
        # window's 23 interim looks and its final test), keyed by the windows they merge.
        self._baselines: dict[_BaselineKey, _Baseline] = {}

    # ------------------------------------------------------------------ public API

    def observe(self, event: PredictionEvent, position: Position | None = None) -> list[DriftEvent]:
        """Apply one validated event; return the drift events its clock advance produced.

        Raises :class:`InvalidEvent` (nothing changed) for a feature whose type contradicts
        what the stream has seen, or an event older than the retained history.
        """
        cfg = self.config
        skey = stream_key(event.tenant, event.model)
        stream = self._stream(event.tenant, event.model)
        kinds = self._check_feature_kinds(stream, event)
        window = cfg.window_start(event.timestamp)
        if stream.watermark is not None and window < (
            cfg.window_start(stream.watermark) - cfg.retention_days * DAY
        ):
            raise InvalidEvent("too_late", "event is older than the retained history")

        partition = position[0] if position is not None else stream.partition
        if partition is not None:
            stream.partition = partition
        fresh = guard(stream.offsets, position)
        drifts = self._advance(stream, event.timestamp)
        if fresh:
            stream.events += 1
            stream.model_version = event.model_version
            stream.window_events[window] = stream.window_events.get(window, 0) + 1
            if stream.first_window is None or window < stream.first_window:
                stream.first_window = window
            for name, kind in kinds.items():
                stream.features.setdefault(name, kind)
            if stream.last_closed is not None and window <= stream.last_closed:
                stream.late_events += 1
                self.stats["late_events"] += 1
            self.stats["events"] += 1
        else:
            self.stats["duplicates_skipped"] += 1
        self._streams.mark(skey, stream.partition)

        self._pending.setdefault((skey, window), []).append((event, position))
        return drifts

    def _apply_pending(self) -> None:
        """Put the buffered events' values into their feature windows, one bulk update per
        (stream, window, feature): the same values, guards and samples as one at a time."""
        if not self._pending:
            return
        cfg = self.config
        looks = bool(cfg.interim_looks)
        missing = object()
        for (skey, window), items in self._pending.items():
            stream = self._streams.cached(skey)
            assert stream is not None
            tenant, model = stream.tenant, stream.model
            hot = self._hot.setdefault((skey, window), {})
            positions = [p for _, p in items]
            if looks:
                slots = [int((e.timestamp - window) // cfg.interim_seconds) for e, _ in items]
                hashes = [event_hash(e.event_id) for e, _ in items]
            else:
                slots = hashes = [0] * len(items)
            names: dict[str, None] = {}
            for e, _ in items:
                names.update(dict.fromkeys(e.features))
            for name in names:
                fw = hot.get(name)
                if fw is None:
                    feature_kind = stream.features.get(name)
                    if feature_kind is None:
                        continue  # only ever seen as null: no type to summarise it by yet
                    wkey = window_key(tenant, model, window, name)
                    fw = self._window(wkey)
                    if fw is None:
                        is_open = stream.last_closed is None or window > stream.last_closed
                        fw = FeatureWindow.new(feature_kind, recent=is_open and looks)
                        self._windows.put(wkey, fw, stream.partition)
                    else:
                        self._windows.mark(wkey, stream.partition)
                    hot[name] = fw
                column = [e.features.get(name, missing) for e, _ in items]
                if any(v is missing for v in column):
                    present = [k for k, v in enumerate(column) if v is not missing]
                    fw.apply_many(
                        [column[k] for k in present],  # type: ignore[misc]
                        [positions[k] for k in present],
                        [slots[k] for k in present],
                        [hashes[k] for k in present],
                    )
                else:
                    fw.apply_many(column, positions, slots, hashes)  # type: ignore[arg-type]
        self._pending.clear()

    def take_notices(self) -> list[IncidentNotice]:
        out, self.notices = self.notices, []
        return out

    def advance(self, tenant: str, model: str, event_time: float) -> list[DriftEvent]:
        """Move a stream's clock without an event (a quiet stream, driven by a wall-clock timer)."""
        key = stream_key(tenant, model)
        if self.store.get(key) is None and key not in self._streams:
            return []
        stream = self._stream(tenant, model)
        drifts = self._advance(stream, event_time)
        self._streams.mark(key, stream.partition)
        return drifts

    def flush(self, keep_cache: bool = True) -> list[Write]:
        """The state changed since the last flush, to persist. Decoded state stays cached
        (bounded: ``EngineConfig.cached_windows``) unless ``keep_cache`` is false."""
        self._apply_pending()
        writes = self._streams.flush() + self._windows.flush()
        self._hot.clear()
        if not keep_cache:
            self.forget()
        return writes

    def forget(self, partitions: Collection[int] | None = None) -> None:
        """Drop decoded state (of ``partitions``, or all): after those partitions were given up
        to another worker, the store is the truth again. Call after :meth:`flush`."""
        self._apply_pending()
        self._hot.clear()
        self._streams.forget(partitions)
        self._windows.forget(partitions)
        self._baselines.clear()

    def stream_state(self, tenant: str, model: str) -> StreamState | None:
        return self._streams.get(stream_key(tenant, model))

    def feature_window(
        self, tenant: str, model: str, window_start: float, feature: str
    ) -> FeatureWindow | None:
        self._apply_pending()
        return self._window(window_key(tenant, model, window_start, feature))

    # ------------------------------------------------------------------ state access

    def _stream(self, tenant: str, model: str) -> StreamState:
        key = stream_key(tenant, model)
        stream = self._streams.get(key)
        if stream is None:
            stream = StreamState(tenant, model)
            self._streams.put(key, stream)  # written once it has a partition (observe)
        return stream

    def _window(self, key: str) -> FeatureWindow | None:
        return self._windows.get(key)

    def _delete(self, key: str, partition: int | None) -> None:
        self._windows.delete(key, partition)
        self._hot.clear()

    # ------------------------------------------------------------------ detection

    def _check_feature_kinds(
        self, stream: StreamState, event: PredictionEvent
    ) -> dict[str, FeatureKind]:
        """The kinds of the event's features that the stream does not know yet (what the
        event would add); raises for a value whose kind contradicts the stream's."""
        known = stream.features
        new: dict[str, FeatureKind] = {}
        untyped = 0
        for name, value in event.features.items():
            was = known.get(name)
            if value is None:
                if was is None and name not in new:
                    untyped += 1  # first seen as null: no type yet, its value is dropped
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
            self.stats["untyped_nulls"] += untyped
        return new

    def _advance(self, stream: StreamState, event_time: float) -> list[DriftEvent]:
        if stream.watermark is not None and event_time <= stream.watermark:
            return []
        stream.watermark = event_time
        cfg = self.config
        drifts: list[DriftEvent] = []
        closable = sorted(
            w
            for w in stream.window_events
            if (stream.last_closed is None or w > stream.last_closed)
            and w + cfg.window_seconds + cfg.allowed_lateness_seconds <= event_time
        )
        if closable or self._look_due(stream, event_time):
            self._apply_pending()  # the tests read the windows: every earlier value is in
        for window in closable:
            drifts.extend(self._judge(stream, window, event_time, cfg.final_alpha, None))
            self._drop_recent(stream, window)
            stream.last_closed = window
            self.stats["windows_closed"] += 1
        if closable:
            self._expire(stream, closable[-1])
        drifts.extend(self._interim_look(stream, event_time))
        return drifts

    def _look_due(self, stream: StreamState, event_time: float) -> bool:
        """Would :meth:`_interim_look` look at ``event_time``? (Its own checks, no work.)"""
        cfg = self.config
        if not cfg.interim_looks:
            return False
        window = cfg.window_start(event_time)
        look = min(int((event_time - window) // cfg.interim_seconds), cfg.interim_looks)
        if look < 1 or window not in stream.window_events:
            return False
        return not (stream.interim_window == window and stream.interim_look >= look)

    def _interim_look(self, stream: StreamState, event_time: float) -> list[DriftEvent]:
        """Test the open window when the clock crosses an interim boundary (one look per
        crossing, however many boundaries a gap in the traffic skipped): the window so far,
        then the spans of the last 1, 2, 4 and 8 slots that end at this boundary."""
        cfg = self.config
        if not cfg.interim_looks:
            return []
        window = cfg.window_start(event_time)
        look = min(int((event_time - window) // cfg.interim_seconds), cfg.interim_looks)
        if look < 1 or window not in stream.window_events:
            return []
        if stream.interim_window == window and stream.interim_look >= look:
            return []
        stream.interim_window = window
        stream.interim_look = look
        self.stats["interim_looks"] += 1
        looked_at = window + look * cfg.interim_seconds
        drifts: list[DriftEvent] = []
        if look % CUMULATIVE_EVERY == 0:
            drifts += self._judge(stream, window, event_time, cfg.interim_alpha, looked_at)
        for k in range(RECENT_LEVELS):
            slots = 1 << k
            if look % slots:
                continue

            def pick(feature: str, fw: FeatureWindow, slots: int = slots) -> Summary | None:
                return fw.span_summary(look - 1, slots, cfg.min_window_count)

            drifts.extend(
                self._judge(
                    stream,
                    window,
                    event_time,
                    cfg.interim_alpha,
                    looked_at,
                    pick,
                    span=slots * cfg.interim_seconds,
                )
            )
        return drifts

    def _count_untested_as_clean(
        self, stream: StreamState, window: float, tested: set[str]
    ) -> None:
        """An open incident whose feature was not tested in a closed window (too few values, or
        the feature is gone) got no new evidence of drift: that window counts as clean."""
        book = stream.incidents
        for key in list(book.open):
            if key in tested or book.last_window.get(key, -1) >= window:
                continue
            book.last_window[key] = window
            self._clean(stream, key, window)

    def _drop_recent(self, stream: StreamState, window: float) -> None:
        for feature in stream.features:
            key = window_key(stream.tenant, stream.model, window, feature)
            fw = self._window(key)
            if fw is not None and fw.recent is not None:
                fw.recent = None
                self._windows.mark(key, stream.partition)

    def _expire(self, stream: StreamState, newest_closed: float) -> None:
        horizon = newest_closed - self.config.retention_days * DAY
        for window in [w for w in stream.window_events if w < horizon]:
            for feature in stream.features:
                self._delete(
                    window_key(stream.tenant, stream.model, window, feature), stream.partition
                )
            del stream.window_events[window]
            self.stats["windows_expired"] += 1

    def _baseline(
        self, stream: StreamState, feature: str, window: float
    ) -> tuple[NumericSummary | CategoricalSummary, float, float] | None:
        cfg = self.config
        counts = stream.window_events
        used = [w for w in cfg.baseline_candidates(window) if w in counts]
        # Keyed by what went into it: a late event into a baseline window changes its count,
        # so a stale merge is never found again (and is dropped with the oldest entries).
        cache_key = (stream.tenant, stream.model, feature, window,
                     tuple((w, counts[w]) for w in used))  # fmt: skip
        if cache_key in self._baselines:
            return self._baselines[cache_key]
        merged: NumericSummary | CategoricalSummary | None = None
        with_data: list[float] = []
        for w in used:
            fw = self._window(window_key(stream.tenant, stream.model, w, feature))
            if fw is None or fw.count == 0:
                continue
            summary = fw.summary
            merged = summary if merged is None else _merge_summaries(merged, summary)
            with_data.append(w)
        result = None
        if merged is not None and len(with_data) >= cfg.min_baseline_windows:
            result = (merged, with_data[0], with_data[-1] + cfg.window_seconds)
        if len(self._baselines) >= _BASELINE_CACHE_SIZE:
            self._baselines.clear()
        self._baselines[cache_key] = result
        return result

    def _test_features(self, stream: StreamState, window: float, pick: Picker) -> list[FeatureTest]:
        tests: list[FeatureTest] = []
        whole_window = pick is _whole_window
        for feature, kind in sorted(stream.features.items()):
            fw = self._window(window_key(stream.tenant, stream.model, window, feature))
            if fw is None:
                continue
            summary = pick(feature, fw)
            min_count = self.config.min_window_count
            if summary is None or summary.count + summary.missing < min_count:
                continue
            baseline = self._baseline(stream, feature, window)
            if baseline is None:
                self.stats["tests_skipped_no_baseline"] += 1
                continue
            base, b_start, b_end = baseline
            for test in DRIFT_TESTS.for_kind(kind, whole_window):
                n_window = test.size(summary)
                if n_window < min_count:
                    continue
                if test.sample == "values":
                    self.stats["tests"] += 1  # the metric counts the tests of the values
                # A result of p = 1 (say, nothing missing on either side) is a clean one too.
                tests.append(
                    FeatureTest(
                        feature,
                        kind,
                        test.run(summary, base),
                        n_window,
                        test.size(base),
                        b_start,
                        b_end,
                        summary,
                        base,
                    )
                )
        return tests

    def _judge(
        self,
        stream: StreamState,
        window: float,
        detected_at: float,
        alpha: float,
        partial_end: float | None,
        pick: Picker | None = None,
        span: float | None = None,
    ) -> list[DriftEvent]:
        """Test a window's features against their baselines and update the incidents.

        ``partial_end`` is set for an interim look at the still-open window: only drifts count
        there (a partial window is no evidence that a feature is clean), and a feature found
        drifting is not judged again in this window.
        """
        cfg = self.config
        book = stream.incidents
        all_tests = self._test_features(stream, window, pick or _whole_window)
        tests = [t for t in all_tests if book.last_window.get(t.incident_key, -1) < window]
        # Judged at an interim look already: found drifting in this window.
        judged = {t.incident_key for t in all_tests} - {t.incident_key for t in tests}
        if partial_end is None:
            self._count_untested_as_clean(stream, window, {t.incident_key for t in tests})
            if not tests:
                self._record_results(stream, window, all_tests, judged)
        if not tests:
            return []
        # A missing-rate test with nothing missing on either side (p = 1) cannot be a
        # discovery: it counts as a clean result but stays out of the BH family, where it
        # would only make the other tests stricter.
        family = [
            t for t in tests if not (t.result.test == "missing_rate" and t.result.p_value >= 1)
        ]
        significant = benjamini_hochberg([t.result.p_value for t in family], alpha)
        drifting = [
            t
            for t, sig in zip(family, significant, strict=True)
            if sig and t.result.effect_size >= _effect_floor(cfg, t.result.test)
        ]
        if partial_end is not None and not drifting:
            return []
        share = len(drifting) / max(len(family), 1)
        drifting_names = {t.incident_key for t in drifting}
        if partial_end is None:
            self._record_results(stream, window, all_tests, drifting_names | judged)
        events: list[DriftEvent] = []
        for t in tests:
            incident = book.open.get(t.incident_key)
            if t.incident_key not in drifting_names:
                if partial_end is not None:
                    continue
                book.last_window[t.incident_key] = window
                if incident is not None:
                    self._clean(stream, t.incident_key, window)
                continue
            book.last_window[t.incident_key] = window
            severity = severity_for(t.severity_effect(), share, len(drifting))
            incident, changes = book.drifting(
                t.incident_key, window, severity, t.result.test,
                functools.partial(_drift_id, stream, t.incident_key, window),
                confirm_windows=cfg.confirm_windows, remember=1,  # windows are judged in order
            )  # fmt: skip
            for change in changes:
                if change != "escalated":
                    self.stats[f"incidents_{change}"] += 1
            for change in changes:
                self.notices.append(
                    IncidentNotice(
                        change, incident.drift_id, DriftKind.STATISTICAL.value, stream.tenant,
                        stream.model, stream.model_version, t.feature, t.result.test,
                        incident.max_severity, incident.confirmed, incident.persistence, window,
                        detected_at, t.result.statistic, t.result.p_value, t.result.effect_size,
                    )
                )  # fmt: skip
            events.append(
                DriftEvent(
                    drift_id=incident.drift_id,
                    kind=DriftKind.STATISTICAL,
                    tenant=stream.tenant,
                    model=stream.model,
                    model_version=stream.model_version,
                    feature=t.feature,
                    test=t.result.test,
                    statistic=t.result.statistic,
                    p_value=t.result.p_value,
                    effect_size=t.result.effect_size,
                    window_start=window,
                    window_end=partial_end
                    if partial_end is not None
                    else window + cfg.window_seconds,
                    baseline_start=t.baseline_start,
                    baseline_end=t.baseline_end,
                    severity=severity,
                    confirmed=incident.confirmed,
                    detected_at=detected_at,
                    persistence=incident.persistence,
                    window_count=t.window_count,
                    baseline_count=t.baseline_count,
                    drifting_share=share,
                    partial=partial_end is not None,
                    extra=t.describe() | ({} if span is None else {"span_seconds": span}),
                )
            )
        self._streams.mark(stream_key(stream.tenant, stream.model), stream.partition)
        self.stats["drift_events"] += len(events)
        return events

    def _record_results(
        self, stream: StreamState, window: float, tests: list[FeatureTest], drifting: set[str]
    ) -> None:
        """Keep each end-of-window test on its feature-window (for the API and the report)."""
        cfg = self.config
        for t in tests:
            key = window_key(stream.tenant, stream.model, window, t.feature)
            fw = self._window(key)
            if fw is None:
                continue
            r = t.result
            fw.results[r.test] = [
                round(r.statistic, 6), r.p_value, round(r.effect_size, 6),
                _effect_floor(cfg, r.test), t.incident_key in drifting, t.window_count,
                t.baseline_count,
            ]  # fmt: skip
            self._windows.mark(key, stream.partition)

    def _clean(self, stream: StreamState, key: str, window: float) -> None:
        """A clean window for ``key``; tells of the resolution if that resolved it."""
        cfg = self.config
        incident = stream.incidents.clean(
            key, window, resolve_windows=cfg.resolve_windows, window_seconds=cfg.window_seconds
        )
        if incident is None:
            return
        self.stats["incidents_resolved"] += 1
        feature = key.removesuffix("#missing")
        self.notices.append(
            IncidentNotice(
                "resolved", incident.drift_id, DriftKind.STATISTICAL.value, stream.tenant,
                stream.model, stream.model_version, feature, incident.test,
                incident.max_severity, incident.confirmed, incident.persistence, window,
                stream.watermark if stream.watermark is not None else window,
            )
        )  # fmt: skip


def _drift_id(stream: StreamState, feature: str, window: float) -> str:
    """Deterministic, so a replay after a crash (or a backtest) names the incident the same."""
    return str(
        uuid.uuid5(
            _DRIFT_NAMESPACE, f"{stream.tenant}\x1f{stream.model}\x1f{feature}\x1f{int(window)}"
        )
    )
