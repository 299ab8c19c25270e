"""Applies ``performance-input`` to the performance history and publishes performance drift.

``performance-input`` is partitioned like ``predictions`` (by the partition a prediction came
from), so all of a stream's performance state is in one partition of the ``performance``
table, owned by the worker that owns its feature state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.envelopes import decode_perf
from agents.metrics import WorkerMetrics
from agents.processor import (
    PartitionContext,
    SendFn,
    TableStore,
    _set_current_event,
    dead_letter,
    publish_alerts,
    publish_drifts,
)
from schemas import DriftEvent, InvalidEvent
from streams.perf_monitor import PerformanceMonitor

log = logging.getLogger(__name__)


@dataclass
class PerformanceProcessor:
    monitor: PerformanceMonitor
    store: TableStore
    metrics: WorkerMetrics
    send_drift: SendFn
    send_dead_letter: SendFn
    source_topic: str
    clock: Callable[[], float] = time.time
    send_alert: SendFn | None = None
    _homes: dict[tuple[str, str], int] = field(default_factory=dict)
    _context: PartitionContext | None = None
    _seen: dict[str, int] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def process_batch(self, events: Sequence[Any]) -> None:
        async with self._lock:
            await self._process_batch(events)

    async def forget(self, partitions: Collection[int]) -> None:
        """After a rebalance: decoded state of given-up partitions is another worker's now
        (waits for a batch in progress, whose state is then written)."""
        async with self._lock:
            self.monitor.forget(partitions)

    async def _process_batch(self, events: Sequence[Any]) -> None:
        drifts: list[DriftEvent] = []
        for event in events:
            m = event.message
            _set_current_event(event)
            try:
                jp, entries = decode_perf(event.value)
            except (ValueError, KeyError, TypeError) as exc:
                await dead_letter(
                    self.send_dead_letter, self.metrics, topic=m.topic, partition=m.partition,
                    offset=m.offset, key=m.key, value=event.value,
                    exc=InvalidEvent("bad_envelope", repr(exc)[:500]), now=self.clock(),
                )  # fmt: skip
                continue
            mon = self.monitor
            for e in entries:
                self._homes[(e.tenant, e.model)] = m.partition
                position = (jp, e.offset)
                try:
                    if e.label is None:
                        drifts += mon.observe_prediction(
                            e.tenant, e.model, e.version, e.prediction_ts, e.score, position
                        )
                    else:
                        drifts += mon.observe_label(
                            e.tenant, e.model, e.version, e.prediction_ts, e.score, e.label,
                            e.outcome_ts if e.outcome_ts is not None else e.prediction_ts,
                            position,
                        )  # fmt: skip
                except Exception as exc:  # a bug must not stop the agent or the others' entries
                    log.exception(
                        "internal error on a performance entry of %s/%s", e.tenant, e.model
                    )
                    await dead_letter(
                        self.send_dead_letter, self.metrics, topic=m.topic,
                        partition=m.partition, offset=m.offset, key=m.key,
                        value=json.dumps(e.to_list()).encode(),
                        exc=InvalidEvent("internal_error", repr(exc)[:500]), now=self.clock(),
                    )  # fmt: skip
        await publish_drifts(self.send_drift, self.metrics, drifts)
        await publish_alerts(self.send_alert, self.metrics, self.monitor.take_notices())
        self._persist()

    def _persist(self) -> None:
        # Drift events first (delivered), then the state that records them.
        if self._context is None:
            self._context = PartitionContext(self.source_topic)
        for w in self.monitor.flush():
            _, tenant, model, *_ = json.loads(w.key)
            self._context.enter(self._homes[(tenant, model)])
            self.store.write(w)
        for what, n in self.monitor.stats.items():
            delta = n - self._seen.get(what, 0)
            if delta:
                self.metrics.engine.labels(f"performance_{what}").inc(delta)
                self._seen[what] = n
