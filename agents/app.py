"""The Faust application: app factory, topics, the RocksDB table, agents and timers.

Nothing happens at import time: :func:`create_app` builds everything from a
:class:`~driftwatch.settings.Settings`, so tests can run several apps with their own settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from agents import faust_compat
from agents.joining import JoinProcessor, OutcomeRouter
from agents.metrics import CountersCollector, WorkerMetrics
from agents.performance import PerformanceProcessor
from agents.processor import ForwardFn, PredictionProcessor, TableStore, deliver_all
from driftwatch.settings import Settings
from streams.engine import DriftEngine
from streams.ingest import OutcomeValidator, PredictionValidator
from streams.join import JoinConfig
from streams.perf_monitor import PerformanceMonitor

log = logging.getLogger(__name__)

PREDICTIONS = "predictions"
OUTCOMES = "outcomes"
DRIFT_EVENTS = "drift-events"
DEAD_LETTERS = "dead-letters"
LABELED_PREDICTIONS = "labeled-predictions"
JOIN_INPUT = "join-input"
PERFORMANCE_INPUT = "performance-input"
TOPICS = (
    PREDICTIONS,
    OUTCOMES,
    DRIFT_EVENTS,
    DEAD_LETTERS,
    LABELED_PREDICTIONS,
    JOIN_INPUT,
    PERFORMANCE_INPUT,
)
"""Every topic the worker reads or writes (besides its tables' changelogs), created up front
with the same partition count: the internal ones are routed by partition number."""
WINDOW_TABLE = "drift-state"
JOIN_TABLE = "join-state"
PERFORMANCE_TABLE = "performance"
TICK_SECONDS = 5.0


@dataclass
class Worker:
    app: faust.App
    processor: PredictionProcessor
    registry: CollectorRegistry


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> Worker:
    registry = registry if registry is not None else CollectorRegistry()
    # Faust can commit past a message it never processed; see agents.faust_compat.
    faust_compat.install(faust_compat.kafka_probe({"bootstrap.servers": settings.bootstrap}))
    app = faust.App(
        settings.app_id,
        broker=broker_urls(settings.bootstrap),
        store="rocksdb://",
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        topic_allow_declare=True,
        web_enabled=False,
        autodiscover=False,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
        broker_commit_interval=settings.commit_interval,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        stream_wait_empty=False,
        recovery_consistency_check=settings.recovery_consistency_check,
        producer_max_batch_size=settings.producer_max_batch_bytes,
        logging_config=None,
    )

    def raw_topic(name: str) -> Any:
        # Bytes in, bytes out: decoding and validation happen in our code, where a bad
        # message can be dead-lettered whole instead of crashing Faust's deserializer.
        return app.topic(
            settings.topic(name),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
        )

    def table(name: str, help: str) -> Any:
        return app.Table(
            name,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
            options={"driver": "rocksdict"},
            help=help,
        )

    predictions = raw_topic(PREDICTIONS)
    outcomes = raw_topic(OUTCOMES)
    drift_topic = raw_topic(DRIFT_EVENTS)
    dead_letters = raw_topic(DEAD_LETTERS)
    labeled_topic = raw_topic(LABELED_PREDICTIONS)
    join_input = raw_topic(JOIN_INPUT)
    performance_input = raw_topic(PERFORMANCE_INPUT)
    window_table = table(
        WINDOW_TABLE, "Window summaries, stream clocks and open incidents (streams.state)"
    )
    join_table = table(JOIN_TABLE, "Predictions waiting for outcomes and vice versa (streams.join)")
    performance_table = table(
        PERFORMANCE_TABLE, "Performance history and performance incidents (streams.perf_monitor)"
    )

    async def send_drift(key: bytes, value: bytes) -> None:
        fut = await drift_topic.send(key=key, value=value)
        await fut  # delivered before the state that records it is written

    async def send_dead_letter(key: bytes, value: bytes) -> None:
        fut = await dead_letters.send(key=key, value=value)
        await fut  # delivered before the offset (or the state that gave it up) moves on

    def sender(topic: Any) -> ForwardFn:
        async def send(messages: list[tuple[bytes, bytes, int]]) -> None:
            await deliver_all(
                [await topic.send(key=k, value=v, partition=p) for k, v, p in messages]
            )

        return send

    async def send_labeled(messages: list[tuple[bytes, bytes, float]]) -> None:
        await deliver_all(
            [await labeled_topic.send(key=k, value=v, timestamp=t) for k, v, t in messages]
        )

    metrics = WorkerMetrics.create(registry)
    registry.register(
        CountersCollector(
            "driftwatch_consumer_guard",
            "Offset-bookkeeping guards that fired (agents.faust_compat): acks of skipped "
            "messages ignored, commits held at a missing head, heads tolerated on input topics",
            lambda: faust_compat.COUNTERS,
        )
    )
    store = TableStore(window_table)
    processor = PredictionProcessor(
        engine=DriftEngine(settings.engine_config(), store),
        store=store,
        validator=PredictionValidator(
            max_bytes=settings.max_message_bytes,
            tenants=settings.tenant_allowlist,
            max_future_seconds=settings.max_future_seconds,
        ),
        metrics=metrics,
        send_drift=send_drift,
        send_dead_letter=send_dead_letter,
        source_topic=settings.topic(PREDICTIONS),
        idle_timeout=settings.idle_timeout,
        forward=sender(join_input) if settings.join_outcomes else None,
        join_partitions=settings.partitions,
    )
    router = OutcomeRouter(
        validator=OutcomeValidator(
            max_bytes=settings.max_message_bytes,
            tenants=settings.tenant_allowlist,
            max_future_seconds=settings.max_future_seconds,
        ),
        metrics=metrics,
        send_dead_letter=send_dead_letter,
        forward=sender(join_input),
        source_topic=settings.topic(OUTCOMES),
        partitions=settings.partitions,
    )
    perf_config = settings.performance_config()
    joins = JoinProcessor(
        config=JoinConfig(retention_days=perf_config.join_retention_days),
        store=TableStore(join_table),
        metrics=metrics,
        send_dead_letter=send_dead_letter,
        send_labeled=send_labeled,
        send_performance=sender(performance_input),
        source_topic=settings.topic(JOIN_INPUT),
        predictions_topic=settings.topic(PREDICTIONS),
        outcomes_topic=settings.topic(OUTCOMES),
        partitions=settings.partitions,
    )
    performance_store = TableStore(performance_table)
    performance = PerformanceProcessor(
        monitor=PerformanceMonitor(perf_config, performance_store),
        store=performance_store,
        metrics=metrics,
        send_drift=send_drift,
        send_dead_letter=send_dead_letter,
        source_topic=settings.topic(PERFORMANCE_INPUT),
    )

    @app.agent(predictions, name="detect-feature-drift")
    async def detect(stream: Any) -> None:
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_within):
            await processor.process_batch(batch)

    if settings.join_outcomes:

        @app.agent(outcomes, name="route-outcomes")
        async def route(stream: Any) -> None:
            async for batch in stream.take_events(
                settings.batch_size, within=settings.batch_within
            ):
                await router.process_batch(batch)

        @app.agent(join_input, name="join-outcomes")
        async def join(stream: Any) -> None:
            async for batch in stream.take_events(
                settings.batch_size, within=settings.batch_within
            ):
                await joins.process_batch(batch)

        @app.agent(performance_input, name="monitor-performance")
        async def monitor(stream: Any) -> None:
            async for batch in stream.take_events(
                settings.batch_size, within=settings.batch_within
            ):
                await performance.process_batch(batch)

        _ = (route, join, monitor)

    @app.timer(TICK_SECONDS)  # type: ignore[untyped-decorator]
    async def advance_quiet_streams() -> None:
        await processor.tick()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode types it loosely
    async def on_revoked(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        revoked = args[0] if args else kwargs.get("revoked", ())
        processor.forget_partitions({tp.partition for tp in revoked})

    _ = (detect, advance_quiet_streams, on_revoked)
    return Worker(app=app, processor=processor, registry=registry)
