"""Offline replay: the live engine over JSON-lines files, in event-time order."""

from __future__ import annotations

import heapq
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from schemas import DriftEvent, InvalidEvent, OutcomeEvent, PredictionEvent
from streams.config import DAY, EngineConfig, PerformanceConfig
from streams.engine import DriftEngine, MemoryStore
from streams.incidents import IncidentNotice
from streams.ingest import PredictionValidator
from streams.join import JoinConfig, JoinResult, OutcomeJoiner, binary_label
from streams.perf_monitor import PerformanceMonitor

log = logging.getLogger(__name__)

FLUSH_EVERY = 20_000


@dataclass
class BacktestReport:
    performance: list[dict[str, object]] = field(default_factory=list)
    """Per (tenant, model, model_version, window): the performance history (with outcomes)."""
    outcomes_joined: int = 0
    events: int = 0
    feature_values: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    drift_events: list[DriftEvent] = field(default_factory=list)
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
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield validator.validate(line.rstrip(b"\r\n"), now=None)
            except InvalidEvent as exc:
                rejected[exc.reason] += 1
                log.warning("%s:%d: %s", path, lineno, exc)


def read_outcomes(path: Path, rejected: Counter[str]) -> Iterator[OutcomeEvent]:
    with path.open("rb") as fh:
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
) -> BacktestReport:
    """Replay predictions (and outcomes, if any) in event-time order through the same engine,
    joiner and performance monitor as the worker. Ties keep file order, and predictions go
    before outcomes stamped the same instant."""
    started = time.perf_counter()
    report = BacktestReport()
    perf_cfg = performance or PerformanceConfig(engine=config)
    predictions = sorted(events, key=lambda e: e.timestamp)
    labels = sorted(outcomes, key=lambda o: o.timestamp)
    timeline = heapq.merge(
        ((p.timestamp, 0, i) for i, p in enumerate(predictions)),
        ((o.timestamp, 1, i) for i, o in enumerate(labels)),
    )
    store = MemoryStore()
    engine = DriftEngine(config, store)
    join_store, perf_store = MemoryStore(), MemoryStore()
    joiner = OutcomeJoiner(JoinConfig(perf_cfg.join_retention_days), join_store)
    monitor = PerformanceMonitor(perf_cfg, perf_store)
    with_outcomes = bool(labels)
    last_day = -1
    for i, (ts, kind, j) in enumerate(timeline, start=1):
        drifts: list[DriftEvent] = []
        try:
            if kind == 0:
                event = predictions[j]
                drifts += engine.observe(event)
                report.events += 1
                report.feature_values += len(event.features)
                if with_outcomes:
                    drifts += _join(joiner.on_prediction(event), monitor, report)
                    drifts += monitor.observe_prediction(
                        event.tenant, event.model, event.model_version, ts, event.score
                    )
            else:
                drifts += _join(joiner.on_outcome(labels[j]), monitor, report)
        except InvalidEvent as exc:
            report.rejected[exc.reason] += 1
        for drift in drifts:
            report.drift_events.append(drift)
            if out is not None:
                out.write(drift.to_json().decode() + "\n")
        if engine.notices or monitor.notices:
            report.notices += engine.take_notices() + monitor.take_notices()
        if with_outcomes and ts // DAY > last_day:
            last_day = int(ts // DAY)
            for gone in joiner.expire():
                report.rejected["unknown_prediction"] += 1
                log.info("outcome %s never found its prediction", gone.outcome.event_id)
        if i % FLUSH_EVERY == 0:
            store.apply(engine.flush(keep_cache=True))
            join_store.apply(joiner.flush())
            perf_store.apply(monitor.flush(keep_cache=True))
    store.apply(engine.flush())
    perf_store.apply(monitor.flush(keep_cache=True))
    for tenant, model in monitor.streams():
        report.performance += monitor.history(tenant, model)
    report.engine_stats = engine.stats + monitor.stats
    report.notices += engine.take_notices() + monitor.take_notices()
    report.feature_state, report.performance_state = store, perf_store
    report.seconds = time.perf_counter() - started
    return report


def _join(
    result: JoinResult, monitor: PerformanceMonitor, report: BacktestReport
) -> list[DriftEvent]:
    pair = result.joined
    if pair is None:
        return []
    report.outcomes_joined += 1
    p = pair.prediction
    return monitor.observe_label(
        p.tenant, p.model, p.model_version, p.timestamp, p.score, binary_label(pair.label),
        pair.outcome_timestamp,
    )  # fmt: skip
