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

from agents.dead_letters import DeadLetters, Rejected
from agents.envelopes import decode_perf
from agents.faust_compat.current_event import set_current_event
from agents.metrics import WorkerMetrics
from agents.processor import (
    BatchResult,
    SendFn,
    TableStore,
    in_thread,
    publish_alerts,
    publish_drifts,
)
from schemas import InvalidEvent
from streams.keyed_state import Write
from streams.perf_monitor import PerformanceMonitor

log = logging.getLogger(__name__)


@dataclass
class PerformanceProcessor:
    monitor: PerformanceMonitor
    store: TableStore
    metrics: WorkerMetrics
    send_drift: SendFn
    dead_letters: DeadLetters
    source_topic: str
    clock: Callable[[], float] = time.time
    send_alert: SendFn | None = None
    _homes: dict[tuple[str, str], int] = field(default_factory=dict)
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
        # The monitor's work (its looks run tests) in a worker thread, as for the engine
        # (agents.processor); delivering and writing state on the loop, in that order.
        phase = self.metrics.phase
        try:
            with phase("performance", "compute"):
                result = await in_thread(self._compute, events)
            with phase("performance", "deliver"):
                await self.dead_letters.put_all(result.rejected)
                await publish_drifts(self.send_drift, self.metrics, result.drifts)
                await publish_alerts(self.send_alert, self.metrics, result.notices)
            with phase("performance", "write"):
                await self._persist(result.writes)
        except BaseException:
            self.monitor.forget()
            raise

    def _compute(self, events: Sequence[Any]) -> BatchResult:
        out = BatchResult()
        mon = self.monitor
        for event in events:
            m = event.message
            set_current_event(event)
            try:
                jp, entries = decode_perf(event.value)
            except (ValueError, KeyError, TypeError) as exc:
                error = InvalidEvent("bad_envelope", repr(exc)[:500])
                out.rejected.append(Rejected.of(m, event.value, error))
                continue
            for e in entries:
                self._homes[(e.tenant, e.model)] = m.partition
                position = (jp, e.offset)
                try:
                    if e.label is None:
                        out.drifts += mon.observe_prediction(
                            e.tenant, e.model, e.version, e.prediction_ts, e.score, position
                        )
                    else:
                        out.drifts += mon.observe_label(
                            e.tenant, e.model, e.version, e.prediction_ts, e.score, e.label,
                            e.outcome_ts if e.outcome_ts is not None else e.prediction_ts,
                            position,
                        )  # fmt: skip
                except Exception as exc:  # a bug must not stop the agent or the others' entries
                    log.exception(
                        "internal error on a performance entry of %s/%s", e.tenant, e.model
                    )
                    error = InvalidEvent("internal_error", repr(exc)[:500])
                    raw = json.dumps(e.to_list()).encode()
                    out.rejected.append(Rejected.of(m, raw, error))
        out.writes = mon.flush()
        out.notices = mon.take_notices()
        return out

    async def _persist(self, writes: list[Write]) -> None:
        # Drift events first (delivered), then the state that records them, each in the
        # partition of its stream's home.
        homed = []
        for w in writes:
            _, tenant, model, *_ = json.loads(w.key)
            homed.append(Write(w.key, w.value, self._homes[(tenant, model)]))
        await self.store.write_all(homed)
        for what, n in self.monitor.stats.items():
            delta = n - self._seen.get(what, 0)
            if delta:
                self.metrics.engine.labels(f"performance_{what}").inc(delta)
                self._seen[what] = n
