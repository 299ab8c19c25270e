"""Offline replay: the live engine over JSON-lines files, in event-time order."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from driftwatch.disk_store import DiskStore
from driftwatch.join_keys import JoinKeys, JoinKeyScan
from driftwatch.sortedio import CHUNK_BYTES, CHUNK_LINES, SortedJsonLines, open_lines
from schemas import DriftEvent, DriftKind, InvalidEvent, OutcomeEvent, PredictionEvent
from streams.config import DAY, EngineConfig, PerformanceConfig
from streams.engine import DriftEngine
from streams.incidents import IncidentNotice
from streams.ingest import PredictionValidator
from streams.join import JoinConfig, JoinResult, OutcomeJoiner, binary_label
from streams.keyed_state import MemoryStore
from streams.perf_monitor import PerformanceMonitor

log = logging.getLogger(__name__)

FLUSH_EVERY = 20_000
RUN = 1_000
"""Items a run (predictions; with outcomes, predictions and outcomes): a run's predictions go
to :meth:`DriftEngine.observe_many` in one call (a divisor of :data:`FLUSH_EVERY`, or runs
end early to spill where one item at a time would)."""


@dataclass
class BacktestReport:
    performance: list[dict[str, object]] = field(default_factory=list)
    """Per (tenant, model, model_version, window): the performance history (with outcomes)."""
    outcomes_joined: int = 0
    events: int = 0
    feature_values: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    drift_events: list[DriftEvent] = field(default_factory=list)
    """Every DriftEvent, in order (unless run with ``keep_drift_events=False``)."""
    drift_events_total: int = 0
    performance_drift_events_total: int = 0
    engine_stats: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    notices: list[IncidentNotice] = field(default_factory=list)
    """Incident changes (opened, confirmed, escalated, resolved), in order."""
    feature_state: MemoryStore | None = None
    """The engine's state at the end (windows within the retention), for the report."""
    performance_state: MemoryStore | None = None


def read_predictions(
    path: Path, validator: PredictionValidator, rejected: Counter[str]
) -> Iterator[PredictionEvent]:
    with open_lines(path) as fh:  # (decompressed if gzip)
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield validator.validate(line.rstrip(b"\r\n"), now=None)
            except InvalidEvent as exc:
                rejected[exc.reason] += 1
                log.warning("%s:%d: %s", path, lineno, exc)


def read_outcomes(path: Path, rejected: Counter[str]) -> Iterator[OutcomeEvent]:
    with open_lines(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield OutcomeEvent.from_json(line.rstrip(b"\r\n"))
            except InvalidEvent as exc:
                rejected[exc.reason] += 1
                log.warning("%s:%d: %s", path, lineno, exc)


def run_backtest(
    events: Iterable[PredictionEvent],
    config: EngineConfig,
    out: IO[str] | None = None,
    outcomes: Iterable[OutcomeEvent] = (),
    performance: PerformanceConfig | None = None,
    *,
    presorted: bool = False,
    keep_drift_events: bool = True,
    join_store: MemoryStore | DiskStore | None = None,
    join_keys: Container[str] | None = None,
) -> BacktestReport:
    """Replay predictions (and outcomes, if any) in event-time order through the same engine,
    joiner and performance monitor as the worker. Ties keep file order, and predictions go
    before outcomes stamped the same instant.

    By default both inputs are sorted here (stably, by timestamp), in memory. With
    ``presorted=True`` they must already be in that order (e.g. :class:`SortedJsonLines`, or
    :func:`backtest_files`) and are consumed lazily, :data:`RUN` items at a time; an input out of
    order raises :class:`ValueError`. With ``keep_drift_events=False`` the DriftEvents are
    only written to ``out`` and counted (``drift_events_total``), not kept. ``join_store``:
    where the join keeps its records (a :class:`~driftwatch.disk_store.DiskStore` keeps the
    RSS of a large labelled input down; by default, memory).

    ``join_keys``: the ids of the predictions the join keeps, at least those an outcome names
    and those that come more than once (:mod:`driftwatch.join_keys`, whose scans find them);
    the others only move its clock. Found here when both inputs are sequences; else, by
    default, every prediction is kept, as a worker's join keeps them. The results are the
    same either way."""
    started = time.perf_counter()
    held = isinstance(events, Sequence) and isinstance(outcomes, Sequence)
    if join_keys is None and held and outcomes:  # (without outcomes there is no join)
        join_keys = JoinKeys.of((e.event_id for e in events), (o.event_id for o in outcomes))
    report = BacktestReport()
    perf_cfg = performance or PerformanceConfig(engine=config)
    predictions: Iterable[PredictionEvent]
    labels: Iterator[OutcomeEvent]
    if presorted:
        predictions = _in_order(events, "predictions")
        labels = _in_order(outcomes, "outcomes")
    else:
        predictions = sorted(events, key=_timestamp)
        labels = iter(sorted(outcomes, key=_timestamp))
    first_label = next(labels, None)
    with_outcomes = first_label is not None
    if first_label is not None:
        labels = itertools.chain((first_label,), labels)
    timeline: Iterator[tuple[float, PredictionEvent | OutcomeEvent]] = iter(())
    if with_outcomes:
        # heapq.merge is stable across its inputs: at equal keys predictions (the first) go
        # first.
        timeline = heapq.merge(
            ((p.timestamp, p) for p in predictions),
            ((o.timestamp, o) for o in labels),
            key=_first,
        )
    store = MemoryStore()
    engine = DriftEngine(config, store)
    perf_store = MemoryStore()
    if join_store is None:
        join_store = MemoryStore()
    joiner = OutcomeJoiner(JoinConfig(perf_cfg.join_retention_days), join_store)
    monitor = PerformanceMonitor(perf_cfg, perf_store)
    record = _Recorder(report, out, keep_drift_events)
    if with_outcomes:
        _replay_labelled(
            timeline, engine, joiner, monitor, join_keys, (store, join_store, perf_store),
            report, record,
        )  # fmt: skip
    else:  # the engine alone
        _observe_in_runs(predictions, engine, store, report, record)
    store.apply(engine.flush())
    perf_store.apply(monitor.flush(keep_cache=True))
    for tenant, model in monitor.streams():
        report.performance += monitor.history(tenant, model)
    report.engine_stats = engine.stats + monitor.stats
    report.notices += engine.take_notices() + monitor.take_notices()
    report.feature_state, report.performance_state = store, perf_store
    report.seconds = time.perf_counter() - started
    return report


def backtest_files(
    predictions: Path,
    config: EngineConfig,
    validator: PredictionValidator,
    *,
    outcomes: Path | None = None,
    out: IO[str] | None = None,
    performance: PerformanceConfig | None = None,
    keep_drift_events: bool = False,
    rejected: Counter[str] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    chunk_lines: int = CHUNK_LINES,
    tmp_dir: Path | None = None,
) -> BacktestReport:
    """:func:`run_backtest` over JSON-lines files with memory flat in their size: each file is
    scanned once (rejected lines counted by reason in ``report.rejected`` and logged with
    ``file:line``), then streamed in event-time order — in place if it already is, else
    through an external merge sort (:class:`SortedJsonLines`). The same DriftEvents as
    ``run_backtest(list(read_predictions(...)), ...)``; they are written to ``out`` and, with
    ``keep_drift_events``, kept."""
    scan_rejected: Counter[str] = Counter() if rejected is None else rejected
    scan = JoinKeyScan()  # the scans also find the predictions the join needs, if any
    with contextlib.ExitStack() as stack:
        preds = stack.enter_context(
            sorted_predictions(
                predictions, validator, scan_rejected,
                on_event=None if outcomes is None else scan.prediction,
                chunk_bytes=chunk_bytes, chunk_lines=chunk_lines, tmp_dir=tmp_dir,
            )
        )  # fmt: skip
        labels: Iterable[OutcomeEvent] = ()
        join_store = None
        if outcomes is not None:
            labels = stack.enter_context(
                sorted_outcomes(
                    outcomes, scan_rejected, on_event=scan.outcome,
                    chunk_bytes=chunk_bytes, chunk_lines=chunk_lines, tmp_dir=tmp_dir,
                )
            )  # fmt: skip
            # The join keeps the predictions it needs for their retention: on disk.
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=tmp_dir)))
            join_store = stack.enter_context(DiskStore(scratch / "join"))
        report = run_backtest(
            preds, config, out=out, outcomes=labels, performance=performance,
            presorted=True, keep_drift_events=keep_drift_events, join_store=join_store,
            join_keys=scan.keys() if outcomes is not None else None,
        )  # fmt: skip
    report.rejected.update(scan_rejected)
    return report


def sorted_predictions(
    path: Path,
    validator: PredictionValidator,
    rejected: Counter[str] | None = None,
    *,
    on_event: Callable[[PredictionEvent], object] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    chunk_lines: int = CHUNK_LINES,
    tmp_dir: Path | None = None,
) -> SortedJsonLines[PredictionEvent]:
    """The valid predictions of a file (as :func:`read_predictions` reads them), in event-time
    order; scanned now, read by iterating; close it (or use ``with``) to remove its
    temporary files. See :class:`SortedJsonLines`."""

    def parse(raw: bytes) -> PredictionEvent:
        return validator.validate(raw, now=None)

    return SortedJsonLines(
        path, parse, rejected, on_event=on_event,
        chunk_bytes=chunk_bytes, chunk_lines=chunk_lines, tmp_dir=tmp_dir,
    )  # fmt: skip


def sorted_outcomes(
    path: Path,
    rejected: Counter[str] | None = None,
    *,
    on_event: Callable[[OutcomeEvent], object] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    chunk_lines: int = CHUNK_LINES,
    tmp_dir: Path | None = None,
) -> SortedJsonLines[OutcomeEvent]:
    """The valid outcomes of a file (as :func:`read_outcomes` reads them), in event-time
    order; see :func:`sorted_predictions`."""
    return SortedJsonLines(
        path, OutcomeEvent.from_json, rejected, on_event=on_event,
        chunk_bytes=chunk_bytes, chunk_lines=chunk_lines, tmp_dir=tmp_dir,
    )  # fmt: skip


_E = TypeVar("_E", PredictionEvent, OutcomeEvent)
_T = TypeVar("_T")


class _Recorder:
    """Counts a run's drift events into its report, keeps them (unless asked not to) and
    writes them to ``out``."""

    def __init__(self, report: BacktestReport, out: IO[str] | None, keep: bool) -> None:
        self.report, self.out, self.keep = report, out, keep

    def __call__(self, drifts: Iterable[DriftEvent]) -> None:
        report = self.report
        for drift in drifts:
            report.drift_events_total += 1
            if drift.kind is DriftKind.PERFORMANCE:
                report.performance_drift_events_total += 1
            if self.keep:
                report.drift_events.append(drift)
            if self.out is not None:
                self.out.write(drift.to_json().decode() + "\n")


def _runs(items: Iterable[_T]) -> Iterator[tuple[list[_T], bool]]:
    """``items`` :data:`RUN` at a time, each run ending where one item at a time spilled
    (after every :data:`FLUSH_EVERY`), with whether a spill is due after it: the engine's
    state is then the same at every spill."""
    it = iter(items)
    done = 0
    while run := list(itertools.islice(it, min(RUN, FLUSH_EVERY - done % FLUSH_EVERY))):
        done += len(run)
        yield run, done % FLUSH_EVERY == 0


def _observe_in_runs(
    predictions: Iterable[PredictionEvent],
    engine: DriftEngine,
    store: MemoryStore,
    report: BacktestReport,
    record: _Recorder,
) -> None:
    """Predictions without outcomes, :data:`RUN` at a time through
    :meth:`DriftEngine.observe_many`: what one call per event does (the spills after the same
    events, the drift events and notices in the same order), at less cost per event."""
    for run, spill in _runs(predictions):
        done = engine.observe_many(run)
        record(drift for _, drift in done.drifts)  # (written out before a bug is raised)
        if engine.notices:
            report.notices += engine.take_notices()
        values = sum(len(event.features) for event in run)
        for k, exc in done.refused:
            if not isinstance(exc, InvalidEvent):
                raise exc
            report.rejected[exc.reason] += 1
            _log_refused(run[k], exc)
            values -= len(run[k].features)
        report.events += len(run) - len(done.refused)
        report.feature_values += values
        if spill:
            store.apply(engine.spill())


def _replay_labelled(
    timeline: Iterator[tuple[float, PredictionEvent | OutcomeEvent]],
    engine: DriftEngine,
    joiner: OutcomeJoiner,
    monitor: PerformanceMonitor,
    join_keys: Container[str] | None,
    stores: tuple[MemoryStore, MemoryStore | DiskStore, MemoryStore],
    report: BacktestReport,
    record: _Recorder,
) -> None:
    """Predictions and outcomes in event-time order, :data:`RUN` at a time: the run's
    predictions through :meth:`DriftEngine.observe_many` at once (the engine reads nothing
    of the join's or the performance history's), then item by item the join and the
    performance history, with each prediction's drift events and notices from the engine
    put back in its place. The same drift events, notices, spills and flushes, in the same
    order, as one item at a time through all three; a bug in the engine is raised at its
    prediction, with what came before it reported (and, as before, not its own results)."""
    store, join_store, perf_store = stores
    last_day = -1
    for run, spill in _runs(timeline):
        predictions = [event for _, event in run if isinstance(event, PredictionEvent)]
        done = engine.observe_many(predictions)
        told = engine.take_notices()
        drifts_of = _by_index(done.drifts)
        refused = dict(done.refused)
        noticed = dict(done.noticed)
        k = at = 0  # the next prediction's index; the next of the engine's notices
        for ts, event in run:
            drifts: list[DriftEvent] = []
            notices: list[IncidentNotice] = []
            try:
                if isinstance(event, PredictionEvent):
                    exc = refused.get(k)
                    if exc is not None and not isinstance(exc, InvalidEvent):
                        raise exc  # a bug: as observe raised it, its results with it
                    drifts += drifts_of.get(k, ())
                    if k in noticed:
                        notices += told[at : at + noticed[k]]
                        at += noticed[k]
                    k += 1
                    if exc is not None:
                        raise exc
                    report.events += 1
                    report.feature_values += len(event.features)
                    if join_keys is None or event.event_id in join_keys:
                        drifts += _join(joiner.on_prediction(event), monitor, report)
                    else:  # it can never join: only the join's clock, which expiry reads
                        joiner.advance_clock(ts)
                    drifts += monitor.observe_prediction(
                        event.tenant, event.model, event.model_version, ts, event.score
                    )
                else:
                    drifts += _join(joiner.on_outcome(event), monitor, report)
            except InvalidEvent as invalid:
                report.rejected[invalid.reason] += 1
                _log_refused(event, invalid)
            if drifts:
                record(drifts)
            if notices or monitor.notices:
                report.notices += notices + monitor.take_notices()
            if ts // DAY > last_day:
                last_day = int(ts // DAY)
                for gone in joiner.expire():
                    report.rejected["unknown_prediction"] += 1
                    log.info("outcome %s never found its prediction", gone.outcome.event_id)
        # Notices no event's advance told (none today: the judge tells only there) are kept.
        report.notices += told[at:]
        if spill:  # memory bounded; the windows kept are encoded once, last
            store.apply(engine.spill())
            join_store.apply(joiner.flush())
            perf_store.apply(monitor.flush(keep_cache=True))


def _log_refused(event: PredictionEvent | OutcomeEvent, exc: InvalidEvent) -> None:
    """A valid line the run refused (e.g. ``type_mismatch``: a feature's type differs from
    what its stream has seen), logged by event id as the scan logs ``file:line``: the run
    reads in event-time order, where line numbers are no longer at hand."""
    what = "prediction" if isinstance(event, PredictionEvent) else "outcome"
    log.warning("%s %s (%s/%s): %s", what, event.event_id, event.tenant, event.model, exc)


def _by_index(pairs: list[tuple[int, _T]]) -> dict[int, list[_T]]:
    """``(index, item)`` pairs grouped by index, in order."""
    out: dict[int, list[_T]] = {}
    for k, item in pairs:
        out.setdefault(k, []).append(item)
    return out


def _in_order(events: Iterable[_E], what: str) -> Iterator[_E]:
    previous = -math.inf
    for event in events:
        if event.timestamp < previous:
            raise ValueError(f"presorted {what} out of event-time order: {event!r:.200}")
        previous = event.timestamp
        yield event


def _timestamp(event: PredictionEvent | OutcomeEvent) -> float:
    return event.timestamp


def _first(item: tuple[float, object]) -> float:
    return item[0]


def _join(
    result: JoinResult, monitor: PerformanceMonitor, report: BacktestReport
) -> list[DriftEvent]:
    if result.dropped is not None:  # a waiting outcome its prediction gave up
        report.rejected[result.dropped.reason] += 1
    pair = result.joined
    if pair is None:
        return []
    report.outcomes_joined += 1
    p = pair.prediction
    return monitor.observe_label(
        p.tenant, p.model, p.model_version, p.timestamp, p.score, binary_label(pair.label),
        pair.outcome_timestamp,
    )  # fmt: skip
