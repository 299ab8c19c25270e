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

from schemas import DriftEvent, InvalidEvent, OutcomeEvent, PredictionEvent, format_timestamp
from streams.config import EngineConfig
from streams.engine import DriftEngine, MemoryStore
from streams.ingest import PredictionValidator
from streams.join import JoinConfig, OutcomeJoiner

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
) -> BacktestReport:
    """Sort by event time (stable: file order breaks ties) and replay through the engine;
    outcomes, if given, are joined in the same time order into the performance history."""
    started = time.perf_counter()
    report = BacktestReport()
    ordered = sorted(events, key=lambda e: e.timestamp)
    joiner = OutcomeJoiner(JoinConfig(window_seconds=config.window_seconds), MemoryStore())
    _join_outcomes(ordered, sorted(outcomes, key=lambda o: o.timestamp), joiner, report)
    store = MemoryStore()
    engine = DriftEngine(config, store)
    for i, event in enumerate(ordered, start=1):
        try:
            drifts = engine.observe(event)
        except InvalidEvent as exc:
            report.rejected[exc.reason] += 1
            continue
        report.events += 1
        report.feature_values += len(event.features)
        for drift in drifts:
            report.drift_events.append(drift)
            if out is not None:
                out.write(drift.to_json().decode() + "\n")
        if i % FLUSH_EVERY == 0:
            store.apply(engine.flush(keep_cache=True))
    store.apply(engine.flush())
    report.engine_stats = engine.stats
    report.seconds = time.perf_counter() - started
    return report


def _join_outcomes(
    predictions: list[PredictionEvent],
    outcomes: list[OutcomeEvent],
    joiner: OutcomeJoiner,
    report: BacktestReport,
) -> None:
    if not outcomes:
        return
    timeline = heapq.merge(
        ((p.timestamp, 0, i) for i, p in enumerate(predictions)),
        ((o.timestamp, 1, i) for i, o in enumerate(outcomes)),
    )
    windows: set[tuple[str, str, str, float]] = set()
    for _, kind, i in timeline:
        try:
            if kind == 0:
                p = predictions[i]
                windows.add(
                    (p.tenant, p.model, p.model_version, joiner.config.window_start(p.timestamp))
                )
                joined = joiner.on_prediction(p)
            else:
                joined = joiner.on_outcome(outcomes[i])
        except InvalidEvent as exc:
            report.rejected[exc.reason] += 1
            continue
        if joined is not None:
            report.outcomes_joined += 1
    for tenant, model, version, window in sorted(windows):
        summary = joiner.performance(tenant, model, version, window)
        if summary is None:
            continue
        report.performance.append(
            {
                "tenant": tenant,
                "model": model,
                "model_version": version,
                "window_start": format_timestamp(window),
                "predictions": summary.predictions,
                "labelled": summary.labelled,
                "label_rate": summary.label_rate,
                "accuracy": summary.accuracy(),
                "precision": summary.precision(),
                "recall": summary.recall(),
                "f1": summary.f1(),
                "roc_auc": summary.roc_auc(),
                "pr_auc": summary.pr_auc(),
                "brier": summary.brier(),
                "calibration_error": summary.calibration_error(),
                "positive_rate": summary.positive_rate,
            }
        )
