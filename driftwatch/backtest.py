"""Offline replay: the live engine over JSON-lines files, in event-time order."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from schemas import DriftEvent, InvalidEvent, PredictionEvent
from streams.config import EngineConfig
from streams.engine import DriftEngine, MemoryStore
from streams.ingest import PredictionValidator

log = logging.getLogger(__name__)

FLUSH_EVERY = 20_000


@dataclass
class BacktestReport:
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


def run_backtest(
    events: Iterable[PredictionEvent],
    config: EngineConfig,
    out: IO[str] | None = None,
) -> BacktestReport:
    """Sort by event time (stable: file order breaks ties) and replay through the engine."""
    started = time.perf_counter()
    report = BacktestReport()
    ordered = sorted(events, key=lambda e: e.timestamp)
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
