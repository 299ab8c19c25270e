"""Prometheus metrics of the worker: one typed bundle, created from a registry passed in.

Labels are bounded: reasons and kinds are fixed vocabularies; tenants and models appear only
on the per-stream gauges (one series per stream, not per feature).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class CountersCollector(Collector):
    """Exports a mapping of counts kept outside prometheus_client (e.g. by a patch of Faust)
    as one counter with a ``what`` label, read at scrape time."""

    def __init__(self, name: str, doc: str, counts: Callable[[], Mapping[str, int]]) -> None:
        self.name, self.doc, self.counts = name, doc, counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.doc, labels=["what"])
        for what, n in sorted(self.counts().items()):
            family.add_metric([what], float(n))
        yield family


@dataclass(frozen=True)
class WorkerMetrics:
    events: Counter
    dead_letters: Counter
    drift_events: Counter
    engine: Counter
    joins: Counter
    batch_seconds: Histogram
    watermark: Gauge
    watermark_lag: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WorkerMetrics:
        return cls(
            events=Counter(
                "driftwatch_events",
                "Input messages by topic and result",
                ["topic", "result"],
                registry=registry,
            ),
            dead_letters=Counter(
                "driftwatch_dead_letters",
                "Messages dead-lettered, by reason",
                ["topic", "reason"],
                registry=registry,
            ),
            drift_events=Counter(
                "driftwatch_drift_events",
                "Drift events emitted",
                ["kind", "severity", "confirmed"],
                registry=registry,
            ),
            engine=Counter(
                "driftwatch_engine",
                "Detection engine counters (windows closed, tests, ...)",
                ["what"],
                registry=registry,
            ),
            joins=Counter(
                "driftwatch_joins",
                "Join results: joined, pending (outcome waits), waiting (prediction waits), "
                "replayed (a redelivered message, ignored)",
                ["result"],
                registry=registry,
            ),
            batch_seconds=Histogram(
                "driftwatch_batch_seconds",
                "Time to apply one batch of events",
                buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                registry=registry,
            ),
            watermark=Gauge(
                "driftwatch_stream_watermark_seconds",
                "Event time reached by each stream",
                ["tenant", "model"],
                registry=registry,
            ),
            watermark_lag=Gauge(
                "driftwatch_stream_lag_seconds",
                "Wall clock minus the stream's event time",
                ["tenant", "model"],
                registry=registry,
            ),
        )
