"""How the worker is doing: readiness, consumer lag, Faust's own events, state gauges.

:class:`WorkerHealth` is sampled on the worker's timer (its event loop) and read by the API
thread (``/readyz``) and Prometheus; :class:`FaustSensor` counts commits and rebalances;
:func:`state_gauges` reads open incidents and model performance from this worker's own
partitions when Prometheus scrapes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import faust

from agents import faust_compat
from agents.api.server import RocksView
from agents.metrics import WorkerMetrics
from runtime.settings import Settings
from streams import views
from streams.perf_state import OBJECTIVE_KIND, split_incident_key

MIN_LABELS_FOR_GAUGES = 100
STALL_SECONDS = 60.0
"""A commit held this long at a message that was never processed makes the worker unready."""


class WorkerHealth:
    """Readiness and lag, from the worker's own consumer (sampled on its event loop)."""

    def __init__(self, app: faust.App, metrics: WorkerMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stalled: str | None = None
        """Set by the watchdog when the worker stopped making progress."""

    def mark_stalled(self, reason: str) -> None:
        """The watchdog found a stall (from its thread): unready from now on."""
        self.stalled = reason

    def ready(self) -> str | None:
        """None when ready to serve; otherwise why not (for ``/readyz``)."""
        app = self.app
        if self.loop is None:
            return "starting"
        if self.stalled is not None:
            return f"stalled: {self.stalled}"
        guard = faust_compat.guards.GUARD
        held = guard.stalled(older_than=STALL_SECONDS) if guard is not None else {}
        if held:
            tp, (committed, head) = next(iter(held.items()))
            return (
                f"stalled: {tp.topic}[{tp.partition}] commit held at {committed} for over "
                f"{STALL_SECONDS:.0f} s (offsets up to {head - 1} not processed)"
            )
        if getattr(app, "rebalancing", False):
            return "rebalancing"
        recovery = getattr(app.tables, "recovery", None) if app.tables is not None else None
        if recovery is None or not recovery.completed.is_set():
            return "recovering tables from their changelogs"
        return None

    def sample(self) -> None:
        """On the worker's loop: lag per partition, and the ready gauge."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        self.metrics.worker_ready.set(1.0 if self.ready() is None else 0.0)
        consumer = self.app.consumer
        try:
            assignment = consumer.assignment()
        except Exception:
            return
        read = faust_compat.introspection.read_offsets(consumer)
        committed = faust_compat.introspection.committed_offsets(consumer)
        # Lag counts from the next message to process, not the last one read: read messages
        # can wait in an agent's buffer (8 MiB of envelopes is days of events).
        gate = faust_compat.backpressure.GATE
        pending = {} if gate is None else gate.next_offsets(consumer)
        for tp in assignment:
            if tp.topic.endswith("-changelog"):
                continue
            try:
                end = consumer.highwater(tp)
            except Exception:
                end = None
            last = read.get(tp)
            position = pending.get(tp, None if last is None else last + 1)
            if end is not None and position is not None:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(0, end - position)
                )
            done = committed.get(tp)
            if done is not None:
                self.metrics.consumer_committed.labels(tp.topic, str(tp.partition)).set(done)


class FaustSensor(faust.Sensor):
    """Faust's commits and rebalances as Prometheus metrics."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def on_commit_initiated(self, consumer: Any) -> Any:
        return time.perf_counter()

    def on_commit_completed(self, consumer: Any, state: Any) -> None:
        self.metrics.faust_commits.inc()
        if isinstance(state, float):
            self.metrics.faust_commit_seconds.observe(time.perf_counter() - state)

    def on_rebalance_start(self, app: Any) -> dict[str, Any]:
        self.metrics.faust_rebalances.inc()
        return {"time_start": time.monotonic()}

    def on_rebalance_end(self, app: Any, state: dict[str, Any]) -> None:
        start = state.get("time_start") if isinstance(state, dict) else None
        if isinstance(start, float):
            self.metrics.faust_rebalance_seconds.observe(time.monotonic() - start)


def local_view(app: faust.App, table: Any) -> RocksView:
    """This worker's active partitions of ``table``, for reading."""
    dbs = faust_compat.introspection.table_dbs(table)
    active = faust_compat.introspection.active_partitions(app, table)
    return RocksView(db for p, db in sorted(dbs.items()) if p in active)


def state_gauges(
    app: faust.App, window_table: Any, performance_table: Any, settings: Settings
) -> Iterator[tuple[str, tuple[str, ...], float]]:
    """Rows for :class:`agents.metrics.StateCollector`."""
    drift = local_view(app, window_table)
    perf = local_view(app, performance_table)
    models: set[tuple[str, str]] = set()
    for st in views.streams(drift):
        models.add((st.tenant, st.model))
    for key, _ in perf.scan('["ps", '):
        _, tenant, model = json.loads(key)
        models.add((tenant, model))
    for tenant, model in sorted(models):
        state = views.stream(drift, tenant, model)
        ps = views.perf_stream(perf, tenant, model)
        by_kind: dict[str, dict[str, int]] = {
            kind: dict.fromkeys(views.SEVERITIES, 0)
            for kind in ("statistical", "performance", OBJECTIVE_KIND)
        }
        for kind, book in (("statistical", None if state is None else state.incidents),
                           ("performance", None if ps is None else ps.incidents)):  # fmt: skip
            for key, incident in [] if book is None else book.open.items():
                # An objective's breach sits in the performance book; it is not drift.
                counts = by_kind[kind if kind == "statistical" else split_incident_key(key)[0]]
                counts[incident.max_severity] = counts.get(incident.max_severity, 0) + 1
        for kind, counts in by_kind.items():
            for severity, n in counts.items():
                yield "driftwatch_open_incidents", (tenant, model, kind, severity), float(n)
        latest: dict[str, tuple[float, Any]] = {}
        for window, win in views.perf_windows(perf, tenant, model).items():
            for version, summary in win.versions.items():
                if (
                    summary.labelled >= MIN_LABELS_FOR_GAUGES
                    and window >= latest.get(version, (-1e18, None))[0]
                ):
                    latest[version] = (window, summary)
        for version, (_, summary) in sorted(latest.items()):
            labels = (tenant, model, version)
            for name, value in (
                ("driftwatch_model_accuracy", summary.accuracy()),
                ("driftwatch_model_pr_auc", summary.pr_auc()),
                ("driftwatch_model_label_rate", summary.label_rate),
            ):
                if value is not None:
                    yield name, labels, float(value)
