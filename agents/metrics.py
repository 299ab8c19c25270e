"""Prometheus metrics of the worker: one typed bundle, created from a registry passed in.

Names and labels are documented in docs/metrics.md (Prometheus conventions: ``driftwatch_``
prefix, base units, ``_total`` counters). Labels are bounded: reasons and kinds are fixed
vocabularies; tenants, models and versions appear at most once per model, never per feature.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agents.faust_compat.rocksdb_memory import SharedRocksMemory

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
AGENT_PHASES: Mapping[str, tuple[str, ...]] = {
    "drift": ("compute", "deliver", "write"),
    "outcomes": ("compute", "deliver"),
    "join": ("compute", "deliver", "write"),
    "performance": ("compute", "deliver", "write"),
}
"""The phases of each input agent's batches (``driftwatch_agent_seconds_total``): compute
(validation, the engine's or the join's work, encoding the state), deliver (until what the batch
produced is delivered: dead letters, drift events, alerts, forwards to the next stage),
write (its state into the tables and their changelogs)."""


class CountersCollector(Collector):
    """Exports a mapping of counts kept outside prometheus_client (e.g. by a patch of Faust)
    as one counter with a ``what`` label (or ``label``), read at scrape time."""

    family: type[CounterMetricFamily] | type[GaugeMetricFamily] = CounterMetricFamily

    def __init__(
        self, name: str, doc: str, counts: Callable[[], Mapping[str, float]], label: str = "what"
    ) -> None:
        self.name, self.doc, self.counts, self.label = name, doc, counts, label

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        family = self.family(self.name, self.doc, labels=[self.label])
        for key, n in sorted(self.counts().items()):
            family.add_metric([key], float(n))
        yield family


class GaugesCollector(CountersCollector):
    """The same, as one gauge with one label (values that go down too)."""

    family = GaugeMetricFamily

    def __init__(
        self, name: str, doc: str, label: str, values: Callable[[], Mapping[str, float]]
    ) -> None:
        super().__init__(name, doc, values, label)


GaugeRows = Callable[[], Iterable[tuple[str, tuple[str, ...], float]]]
"""(metric name, label values, value) rows, computed at scrape time."""


class StateCollector(Collector):
    """Gauges read from the worker's own state when Prometheus scrapes: open incidents and
    model performance per model (exact, with no bookkeeping in the hot path)."""

    FAMILIES = {
        "driftwatch_open_incidents": (
            "Incidents open now, in the partitions this worker owns",
            ["tenant", "model", "kind", "severity"],
        ),
        "driftwatch_model_accuracy": (
            "Accuracy of the newest window with at least 100 labels",
            ["tenant", "model", "version"],
        ),
        "driftwatch_model_pr_auc": (
            "PR-AUC of the newest window with at least 100 labels",
            ["tenant", "model", "version"],
        ),
        "driftwatch_model_label_rate": (
            "Share of that window's predictions labelled",
            ["tenant", "model", "version"],
        ),
    }

    def __init__(
        self, rows: GaugeRows, max_age: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rows = rows
        self.max_age = max_age
        """Seconds a reading is reused: reading the state costs table reads and decoding, and
        scrapes can come often (several Prometheus servers, a dashboard, a benchmark)."""
        self.clock = clock
        self._cached: tuple[float, list[tuple[str, tuple[str, ...], float]]] | None = None
        self._lock = threading.Lock()

    def _rows(self) -> list[tuple[str, tuple[str, ...], float]]:
        with self._lock:
            now = self.clock()
            if self._cached is not None and now - self._cached[0] < self.max_age:
                return self._cached[1]
            try:
                rows = list(self.rows())
            except Exception as exc:  # tables closed mid-rebalance: skip this scrape's gauges
                log.info("state gauges skipped for this scrape: %r", exc)
                return []
            self._cached = (now, rows)
            return rows

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {
            name: GaugeMetricFamily(name, doc, labels=labels)
            for name, (doc, labels) in self.FAMILIES.items()
        }
        for name, labels, value in self._rows():
            families[name].add_metric(list(labels), value)
        yield from families.values()


ROCKSDB_MEMORY = {
    "memtables": "rocksdb.cur-size-all-mem-tables",
    "table_readers": "rocksdb.estimate-table-readers-mem",
    "block_cache": "rocksdb.block-cache-usage",
    "block_cache_pinned": "rocksdb.block-cache-pinned-usage",
}
"""What RocksDB holds in memory outside Python, by kind, and the property that tells it.
``table_readers`` (index and filter blocks of open files) is not bounded by the block cache:
it grows with the data on disk. ``block_cache_pinned`` is part of ``block_cache``."""

ROCKSDB_DISK = {
    "live": "rocksdb.live-sst-files-size",
    "total": "rocksdb.total-sst-files-size",
}
"""The files a store holds on disk, and the property that tells it: ``live`` the files of its
current version, ``total`` also those older versions still hold (an open iterator, a
compaction under way). Their size is what ``table_readers`` grows with; deleted keys leave it
only when compaction rewrites the files that hold them."""


class RocksDBCollector(Collector):
    """RocksDB's own memory per table (summed over the partition stores open in this worker)
    and the number of stores, read from the stores at scrape time: a worker's RSS beyond its
    Python heap is mostly these, and they are invisible to Python's allocator.

    ``stores``: table name -> {partition: rocksdict ``Rdict``} (a snapshot; a store closed
    mid-read is skipped). ``shared``: the block cache and memtable budget every store shares
    (``DRIFTWATCH_ROCKSDB_WORKER_MEMORY_MB``), if any. Each store reports the shared cache's
    whole usage as its own, so the cache is told once, as the table ``shared``, and the
    sum over tables stays the worker's total.
    """

    SHARED_TABLE = "shared"

    def __init__(
        self,
        stores: Callable[[], Mapping[str, Mapping[int, object]]],
        shared: SharedRocksMemory | None = None,
    ) -> None:
        self.stores = stores
        self.shared = shared

    def collect(self) -> Iterator[GaugeMetricFamily]:
        memory = GaugeMetricFamily(
            "driftwatch_rocksdb_memory_bytes",
            "Memory RocksDB holds for a table's partition stores open here, by kind "
            "(memtables, table_readers, block_cache, block_cache_pinned); a block cache "
            "shared by all stores is the table 'shared'",
            labels=["table", "kind"],
        )
        used = GaugeMetricFamily(
            "driftwatch_rocksdb_budget_used_bytes",
            "The worker's RocksDB budget in use by kind (block_cache, memtables: their arena "
            "blocks, as the budget counts them); absent with a cache per store",
            labels=["kind"],
        )
        limit = GaugeMetricFamily(
            "driftwatch_rocksdb_budget_limit_bytes",
            "The worker's RocksDB budget by kind (DRIFTWATCH_ROCKSDB_WORKER_MEMORY_MB: "
            "block_cache, memtables); absent with a cache per store",
            labels=["kind"],
        )
        disk = GaugeMetricFamily(
            "driftwatch_rocksdb_disk_bytes",
            "Files a table's partition stores open here hold on disk, by kind (live: the "
            "current version's; total: with older versions still in use)",
            labels=["table", "kind"],
        )
        count = GaugeMetricFamily(
            "driftwatch_rocksdb_stores",
            "Partition stores of a table open in this worker",
            labels=["table"],
        )
        per_store = dict(ROCKSDB_MEMORY)
        if self.shared is not None:
            del per_store["block_cache"], per_store["block_cache_pinned"]
        for table, dbs in sorted(self.stores().items()):
            totals = dict.fromkeys(per_store, 0)
            on_disk = dict.fromkeys(ROCKSDB_DISK, 0)
            for db in list(dbs.values()):
                try:
                    read = db.property_int_value  # type: ignore[attr-defined]
                    for kind, prop in per_store.items():
                        totals[kind] += int(read(prop) or 0)
                    for kind, prop in ROCKSDB_DISK.items():
                        on_disk[kind] += int(read(prop) or 0)
                except Exception:  # a store closed (stopping): nothing to tell of it
                    continue
            for kind, value in totals.items():
                memory.add_metric([table, kind], float(value))
            for kind, value in on_disk.items():
                disk.add_metric([table, kind], float(value))
            count.add_metric([table], float(len(dbs)))
        if self.shared is not None:
            usage = self.shared.usage()
            for kind in ("block_cache", "block_cache_pinned"):
                memory.add_metric([self.SHARED_TABLE, kind], float(usage[kind]))
            for kind, value in self.shared.limits().items():
                used.add_metric([kind], float(usage[kind]))
                limit.add_metric([kind], float(value))
        yield memory
        yield used
        yield limit
        yield disk
        yield count


@dataclass(frozen=True)
class WorkerMetrics:
    events: Counter
    dead_letters: Counter
    drift_events: Counter
    confirmed_drifts: Counter
    incident_changes: Counter
    engine: Counter
    state_records: Counter
    state_bytes: Counter
    joins: Counter
    join_expired: Counter
    batch_seconds: Histogram
    agent_seconds: Counter
    processing_latency: Histogram
    watermark: Gauge
    watermark_lag: Gauge
    consumer_lag: Gauge
    consumer_committed: Gauge
    faust_commits: Counter
    faust_commit_seconds: Histogram
    faust_rebalances: Counter
    faust_rebalance_seconds: Histogram
    worker_ready: Gauge
    stalls: Counter
    broker_reachable: Gauge
    alerts: Counter
    alert_deliveries: Counter
    alert_delivery_seconds: Histogram
    alerts_undelivered: Gauge
    api_requests: Counter
    api_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WorkerMetrics:
        specs: dict[str, tuple[type, str, str, list[str], dict[str, object]]] = {
            "events": (Counter, "driftwatch_events", "Input messages by topic and result",
                       ["topic", "result"], {}),
            "dead_letters": (Counter, "driftwatch_dead_letters",
                             "Messages dead-lettered, by reason", ["topic", "reason"], {}),
            "drift_events": (Counter, "driftwatch_drift_events", "DriftEvents published",
                             ["tenant", "model", "kind", "severity", "confirmed"], {}),
            "confirmed_drifts": (Counter, "driftwatch_confirmed_drifts",
                                 "Confirmed DriftEvents published (every child exists at 0 from "
                                 "a model's first event, so increase() sees the first one)",
                                 ["tenant", "model", "kind", "severity"], {}),
            "incident_changes": (Counter, "driftwatch_incident_changes",
                                 "Incident lifecycle changes", ["kind", "change", "severity"], {}),
            "engine": (Counter, "driftwatch_engine",
                       "Detection engine counters (windows closed, tests, ...)", ["what"], {}),
            "state_records": (Counter, "driftwatch_state_records_written",
                              "Table records written (each also a changelog record), by table",
                              ["table"], {}),
            "state_bytes": (Counter, "driftwatch_state_bytes_written",
                            "Bytes of table values written (and sent to the changelogs), by "
                            "table", ["table"], {}),
            "joins": (Counter, "driftwatch_joins",
                      "Join results: joined, pending (outcome waits), waiting (prediction waits), "
                      "replayed (a redelivered message, ignored)", ["result"], {}),
            "join_expired": (Counter, "driftwatch_join_expired_records",
                             "Join records expired (made a tombstone): a prediction or a "
                             "waiting outcome past the retention of the join's clock", [], {}),
            "batch_seconds": (Histogram, "driftwatch_batch_seconds",
                              "Time to apply one batch of predictions", [],
                              {"buckets": (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                           10)}),
            "agent_seconds": (Counter, "driftwatch_agent_seconds",
                              "Seconds the input agents spent on their batches, by agent and "
                              "phase: compute (CPU work), deliver (waiting for the outputs' "
                              "delivery), write (state to the tables and changelogs)",
                              ["agent", "phase"], {}),
            "processing_latency": (Histogram, "driftwatch_processing_latency_seconds",
                                   "From a message's broker timestamp to its batch being applied",
                                   ["topic"], {"buckets": LATENCY_BUCKETS}),
            "watermark": (Gauge, "driftwatch_stream_watermark_seconds",
                          "Event time reached by each stream", ["tenant", "model"], {}),
            "watermark_lag": (Gauge, "driftwatch_stream_lag_seconds",
                              "Wall clock minus the stream's event time", ["tenant", "model"], {}),
            "consumer_lag": (Gauge, "driftwatch_consumer_lag_messages",
                             "Messages between the next one the worker will process and the "
                             "partition's end",
                             ["topic", "partition"], {}),
            "consumer_committed": (Gauge, "driftwatch_consumer_committed_offset",
                                   "The group's committed offset", ["topic", "partition"], {}),
            "faust_commits": (Counter, "driftwatch_faust_commits", "Offset commits", [], {}),
            "faust_commit_seconds": (Histogram, "driftwatch_faust_commit_seconds",
                                     "Commit latency", [], {"buckets": API_BUCKETS}),
            "faust_rebalances": (Counter, "driftwatch_faust_rebalances", "Rebalances started",
                                 [], {}),
            "faust_rebalance_seconds": (Histogram, "driftwatch_faust_rebalance_seconds",
                                        "Rebalance duration (until recovered)", [],
                                        {"buckets": (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)}),
            "worker_ready": (Gauge, "driftwatch_worker_ready",
                             "1 once tables are recovered and the worker is not stalled", [], {}),
            "stalls": (Counter, "driftwatch_worker_stalls",
                       "Stalls the watchdog found (each ended this worker process for its "
                       "supervisor to restart; counted on from the data directory's stall log)",
                       ["kind"], {}),
            "broker_reachable": (Gauge, "driftwatch_broker_reachable",
                                 "1 while the watchdog's broker lookups are answered, 0 during "
                                 "an outage", [], {}),
            "alerts": (Counter, "driftwatch_alerts", "Alerts published to the alerts topic",
                       ["kind", "change", "severity"], {}),
            "alert_deliveries": (Counter, "driftwatch_alert_deliveries",
                                 "Webhook delivery attempts and outcomes", ["channel", "result"],
                                 {}),
            "alert_delivery_seconds": (Histogram, "driftwatch_alert_delivery_seconds",
                                       "From an alert's creation to its delivery", ["channel"],
                                       {"buckets": LATENCY_BUCKETS}),
            "alerts_undelivered": (Gauge, "driftwatch_alerts_undelivered",
                                   "Alerts whose delivery is still being retried", ["channel"],
                                   {}),
            "api_requests": (Counter, "driftwatch_api_requests",
                             "API requests (route is the pattern, not the path)",
                             ["route", "method", "status"], {}),
            "api_seconds": (Histogram, "driftwatch_api_request_seconds", "API latency", ["route"],
                            {"buckets": API_BUCKETS}),
        }  # fmt: skip
        made = {
            attr: kind(name, doc, labels, registry=registry, **extra)
            for attr, (kind, name, doc, labels, extra) in specs.items()
        }
        assert set(made) == {f.name for f in fields(cls)}
        for agent, phases in AGENT_PHASES.items():  # at 0 from the start, for rate()
            for phase in phases:
                made["agent_seconds"].labels(agent, phase)
        return cls(**made)

    @contextlib.contextmanager
    def phase(self, agent: str, phase: str) -> Iterator[None]:
        """Count the block's wall time as ``agent``'s ``phase`` (also when it raises: the
        time was spent). Why: whether a worker is short of CPU (compute grows as fast as the
        clock: add workers), waits for the broker (deliver, write) or for input (none of
        them grows) is the first question before scaling it."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.agent_seconds.labels(agent, phase).inc(time.perf_counter() - started)

    def model_seen(self, tenant: str, model: str) -> None:
        """Create a model's alerting counters at 0 (Prometheus' increase() misses the first
        increment of a series born at 1)."""
        for kind in ("statistical", "performance"):
            for severity in ("LOW", "MEDIUM", "HIGH", "CRITICAL"):
                self.confirmed_drifts.labels(tenant, model, kind, severity)
