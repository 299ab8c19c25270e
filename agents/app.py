"""The Faust application: app factory, topics, the RocksDB table, agents and timers.

Nothing happens at import time: :func:`create_app` builds everything from a
:class:`~runtime.settings.Settings`, so tests can run several apps with their own settings.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from agents import client_logs, faust_compat
from agents.api.catalog import Catalog
from agents.api.front_process import FrontProcess, free_local_port
from agents.api.install import install_api
from agents.api.server import Api
from agents.dead_letters import DeadLetters
from agents.health import FaustSensor, WorkerHealth, state_gauges
from agents.joining import JoinProcessor, OutcomeRouter
from agents.metrics import (
    CountersCollector,
    GaugesCollector,
    RocksDBCollector,
    StateCollector,
    WorkerMetrics,
)
from agents.notify import AlertNotifier, RetrainAlertRouter, webhook_notifier
from agents.outcome_drain import drain_marks, refresh_marks
from agents.performance import PerformanceProcessor
from agents.processor import (
    WRITE_CHECK_SECONDS,
    ForwardFn,
    PredictionProcessor,
    TableStore,
    deliver_all,
)
from agents.redelivery import CHECK_SECONDS as REDELIVERY_CHECK_SECONDS
from agents.redelivery import Redelivery
from agents.watchdog import QUIET_RECONNECTS, StallHook, Watchdog
from runtime.kafka_connection import confluent_config, faust_credentials
from runtime.malloc_arenas import can_trim, trim_heap
from runtime.settings import Settings
from runtime.topics import (
    ALERTS,
    DEAD_LETTERS,
    DRIFT_EVENTS,
    JOIN_INPUT,
    LABELED_PREDICTIONS,
    MODEL_EVENTS,
    OUTCOMES,
    PERFORMANCE_INPUT,
    PREDICTIONS,
    RETRAIN_EVENTS,
    TABLES,
)
from streams.engine import DriftEngine
from streams.ingest import OutcomeValidator, PredictionValidator
from streams.join import JoinConfig
from streams.perf_monitor import PerformanceMonitor

log = logging.getLogger(__name__)

WINDOW_TABLE, JOIN_TABLE, PERFORMANCE_TABLE, DELIVERY_TABLE = TABLES
TICK_SECONDS = 5.0
STOP_WRITE_SECONDS = 15.0
"""Longest a clean stop waits to write the state the drift agent holds in memory."""


@dataclass
class Worker:
    app: faust.App
    processor: PredictionProcessor
    registry: CollectorRegistry
    joins: JoinProcessor | None = None
    api: Api | None = None
    ready: Callable[[], str | None] | None = None
    front: FrontProcess | None = None
    watchdog: Watchdog | None = None


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def rocksdb_options(memory_mb: int) -> dict[str, int]:
    """Faust RocksDB store options for about ``memory_mb`` per partition store: two write
    buffers of a quarter each (one filling, one flushing) and a block cache of half (the hot
    state is in the engine's decoded cache; the store is read on a miss). With the worker's
    shared budget (``DRIFTWATCH_ROCKSDB_WORKER_MEMORY_MB``) the stores use its one cache
    instead, and its memtable budget flushes write buffers before they fill.

    >>> {k: v // 1024**2 if k != "max_write_buffer_number" else v
    ...  for k, v in rocksdb_options(16).items()}
    {'write_buffer_size': 4, 'max_write_buffer_number': 2, 'block_cache_size': 8}
    """
    mib = 1024 * 1024
    return {
        "write_buffer_size": max(1, memory_mb // 4) * mib,
        "max_write_buffer_number": 2,
        "block_cache_size": max(1, memory_mb // 2) * mib,
    }


FAUST_DEFAULT_WEB_PORT = 6066
"""Faust's own default, given when the API is off and its web server never starts."""


def join_batch_messages(batch_size: int) -> int:
    """join-input messages per batch of the join agent: each carries up to ``MAX_FRAMES``
    predictions and outcomes (a part of a prediction batch, per join partition), so a batch of
    ``DRIFTWATCH_BATCH_SIZE`` of them after a backlog was up to 4M frames, whose state records
    all waited in the producer's buffer until the batch's end (614 MB of a worker's peak in
    ``bench.worker_memory``). A sixty-fourth of it keeps a batch to two parts of ``CHUNK_BYTES``
    (15 messages of at most 256 KB).

    >>> join_batch_messages(1000)
    15
    """
    return max(1, batch_size // 64)


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> Worker:
    registry = registry if registry is not None else CollectorRegistry()
    # Faust's web server holds the API on loopback; the public port is the API front's.
    internal_port = settings.api_internal_port or (free_local_port() if settings.api_port else 0)
    # Faust can commit past a message it never processed; see agents.faust_compat.
    kafka = confluent_config(settings)  # checks the security settings (KafkaConfigError)
    faust_compat.guards.install(
        faust_compat.probes.kafka_probe(kafka),
        faust_compat.probes.kafka_start_lookup(kafka, settings.app_id),  # Faust's group id
    )
    faust_compat.commit_cap.install()  # nor past one whose state is not written yet
    faust_compat.fetch_timeout.install_fetch_timeout(settings.fetch_timeout_seconds)
    faust_compat.eager_delivery.install()  # no four tasks a message in the fetch loop
    faust_compat.request_encoding.install()  # a produce request's batches copied once
    faust_compat.late_changelog.install()  # no changelog record applied after the restore
    gate = faust_compat.backpressure.DownstreamGate(
        settings.downstream_backlog, settings.downstream_max_wait_seconds
    )
    faust_compat.backpressure.GATE = gate  # upstream agents wait for the join and monitor
    if 0 < settings.stall_seconds <= settings.fetch_timeout_seconds:
        log.warning(
            "DRIFTWATCH_FETCH_TIMEOUT_SECONDS (%g) is not under DRIFTWATCH_STALL_SECONDS (%g): "
            "an unanswered fetch will end the worker as a stall before it is sent again",
            settings.fetch_timeout_seconds, settings.stall_seconds,
        )  # fmt: skip
    app = faust.App(
        settings.app_id,
        broker=broker_urls(settings.bootstrap),
        broker_credentials=faust_credentials(settings),
        store="rocksdb://",
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        # Topics are created (or, with DRIFTWATCH_CREATE_TOPICS=false, only checked) before
        # the app starts (runtime.topics.prepare_topics); Faust adds what a newer version needs.
        topic_allow_declare=settings.create_topics,
        web_enabled=settings.api_port > 0,
        # Faust checks the port even with its web server off (0 is out of its range).
        web_port=internal_port or FAUST_DEFAULT_WEB_PORT,
        web_bind="127.0.0.1",
        web_in_thread=True,  # a slow request never delays a batch
        canonical_url=settings.api_advertised_url
        or f"http://{socket.gethostname()}:{settings.api_port or 6066}",
        web_router_enabled=False,  # Faust's own pages would show tables to anyone
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        web_application_options={"client_max_size": settings.api_max_body_bytes},
        autodiscover=False,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
        broker_commit_interval=settings.commit_interval,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        # Wait for in-flight batches before giving partitions up: a batch that finished after
        # its partition moved would write state another worker now owns.
        stream_wait_empty=True,
        table_standby_replicas=settings.standby_replicas,
        broker_max_poll_records=settings.max_poll_records or None,
        consumer_max_fetch_size=settings.max_fetch_kb << 10,
        stream_buffer_maxsize=settings.stream_buffer_size or 4096,  # 0: Faust's own default
        stream_recovery_delay=settings.recovery_delay_seconds,
        recovery_consistency_check=settings.recovery_consistency_check,
        producer_max_batch_size=settings.producer_max_batch_bytes,
        logging_config=None,
    )
    faust_compat.read_ahead.bound_stream_buffers(app, settings.read_ahead_mb << 20)
    faust_compat.quiet_monitor.install(app)  # Faust's web statistics are off: no per-message feed

    def raw_topic(name: str, maxsize: int | None = None) -> Any:
        # Bytes in, bytes out: decoding and validation happen in our code, where a bad
        # message can be dead-lettered whole instead of crashing Faust's deserializer.
        topic = app.topic(
            settings.topic(name),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
        )
        topic.maxsize = maxsize  # app.topic() takes it and drops it (Faust 0.15.3)
        return topic

    tables: dict[str, Any] = {}

    store_options: dict[str, Any] = dict(rocksdb_options(settings.rocksdb_memory_mb))
    shared_memory = None
    if settings.rocksdb_worker_memory_mb:
        faust_compat.rocksdb_memory.install()
        shared_memory = faust_compat.rocksdb_memory.SharedRocksMemory.of(
            settings.rocksdb_worker_memory_mb
        )
        store_options[faust_compat.rocksdb_memory.SHARED_OPTION] = shared_memory

    def table(name: str, help: str) -> Any:
        t = tables[name] = app.Table(
            name,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
            extra_topic_configs=(
                {"min.insync.replicas": str(settings.min_insync_replicas)}
                if settings.min_insync_replicas > 0
                else None
            ),
            options={"driver": "rocksdict", **store_options},
            help=help,
        )
        # Metrics scrapes and the API read tables from other threads: bind it to this loop.
        faust_compat.introspection.bind_to_this_loop(t)
        return t

    predictions = raw_topic(PREDICTIONS)
    outcomes = raw_topic(OUTCOMES)
    drift_topic = raw_topic(DRIFT_EVENTS)
    dead_letters = raw_topic(DEAD_LETTERS)
    labeled_topic = raw_topic(LABELED_PREDICTIONS)
    join_input = raw_topic(JOIN_INPUT, settings.stream_buffer_size or None)
    performance_input = raw_topic(PERFORMANCE_INPUT)
    window_table = table(
        WINDOW_TABLE, "Window summaries, stream clocks and open incidents (streams.state)"
    )
    join_table = table(JOIN_TABLE, "Predictions waiting for outcomes and vice versa (streams.join)")
    performance_table = table(
        PERFORMANCE_TABLE, "Performance history and performance incidents (streams.perf_monitor)"
    )
    alerts_topic = raw_topic(ALERTS)
    retrain_events = raw_topic(RETRAIN_EVENTS)
    model_events = raw_topic(MODEL_EVENTS)
    delivery_table = table(DELIVERY_TABLE, "Alert ids delivered to people (agents.notify)")

    async def send_drift(key: bytes, value: bytes) -> None:
        fut = await drift_topic.send(key=key, value=value)
        await fut  # delivered before the state that records it is written

    async def send_dead_letter(key: bytes, value: bytes) -> None:
        fut = await dead_letters.send(key=key, value=value)
        await fut  # delivered before the offset (or the state that gave it up) moves on

    async def send_alert(key: bytes, value: bytes) -> None:
        fut = await alerts_topic.send(key=key, value=value)
        await fut  # delivered before the state that records the change

    def sender(topic: Any) -> ForwardFn:
        async def send(messages: list[tuple[bytes, bytes, int]]) -> None:
            delivered = await deliver_all(
                [await topic.send(key=k, value=v, partition=p) for k, v, p in messages]
            )
            gate.sent(delivered)  # the later stage's backlog, as it is now

        return send

    async def send_labeled(messages: list[tuple[bytes, bytes, float]]) -> None:
        # One message per outcome joined: in record batches, not one Faust send each.
        await faust_compat.bulk_writes.send_all(app, labeled_topic.get_topic_name(), messages)

    metrics = WorkerMetrics.create(registry)
    dead_letter_path = DeadLetters(send_dead_letter, metrics)
    registry.register(
        CountersCollector(
            "driftwatch_consumer_guard",
            "Offset-bookkeeping guards that fired (agents.faust_compat): acks of skipped "
            "messages ignored, commits held at a missing head, heads tolerated on input topics",
            lambda: faust_compat.counters.COUNTERS,
        )
    )
    registry.register(
        CountersCollector(
            "driftwatch_backpressure_wait_seconds",
            "Seconds an agent waited before its batches for this worker's later stages (the "
            "join, the performance monitor) to catch up, by source topic "
            "(DRIFTWATCH_DOWNSTREAM_BACKLOG)",
            lambda: faust_compat.backpressure.WAITED,
            label="topic",
        )
    )
    registry.register(
        GaugesCollector(
            "driftwatch_stream_buffer_messages",
            "Input messages read and waiting in an agent's queue or bulk sink, by source topic "
            "(DRIFTWATCH_STREAM_BUFFER_SIZE bounds it)",
            "topic",
            lambda: faust_compat.introspection.queued_by_topic(app),
        )
    )
    registry.register(
        RocksDBCollector(
            lambda: {n: faust_compat.introspection.table_dbs(t) for n, t in tables.items()},
            shared_memory,
        )
    )

    def table_store(table: Any) -> TableStore:
        return TableStore(
            table,
            settings.changelog_max_batch_bytes,
            settings.changelog_last_record_alone,
            metrics,
            table.name,
        )

    store = table_store(window_table)
    # The registry's feature importances reach a worker on model-events, which its API's
    # catalog reads: the engine asks it (once the API is installed below; without an API the
    # incidents rank by the features' association with the score).
    catalogs: list[Catalog] = []

    def registry_importances(tenant: str, model: str) -> dict[str, float] | None:
        return catalogs[0].importances(tenant, model) if catalogs else None

    processor = PredictionProcessor(
        engine=DriftEngine(settings.engine_config(), store, importances=registry_importances),
        store=store,
        validator=PredictionValidator(
            max_bytes=settings.max_message_bytes,
            tenants=settings.tenant_allowlist,
            max_future_seconds=settings.max_future_seconds,
            max_batch_bytes=settings.max_batch_bytes,
        ),
        metrics=metrics,
        send_drift=send_drift,
        dead_letters=dead_letter_path,
        source_topic=settings.topic(PREDICTIONS),
        idle_timeout=settings.idle_timeout,
        forward=sender(join_input) if settings.join_outcomes else None,
        join_partitions=settings.partitions,
        send_alert=send_alert,
        state_flush_seconds=settings.state_flush_seconds,
    )
    router = OutcomeRouter(
        validator=OutcomeValidator(
            max_bytes=settings.max_message_bytes,
            tenants=settings.tenant_allowlist,
            max_future_seconds=settings.max_future_seconds,
        ),
        metrics=metrics,
        dead_letters=dead_letter_path,
        forward=sender(join_input),
        source_topic=settings.topic(OUTCOMES),
        partitions=settings.partitions,
    )
    perf_config = settings.performance_config()
    joins = JoinProcessor(
        config=JoinConfig(
            retention_days=perf_config.join_retention_days,
            stall_grace_seconds=settings.join_stall_grace_seconds,
            cache_mb=settings.join_cache_mb,
        ),
        store=table_store(join_table),
        metrics=metrics,
        dead_letters=dead_letter_path,
        send_labeled=send_labeled,
        send_performance=sender(performance_input),
        source_topic=settings.topic(JOIN_INPUT),
        predictions_topic=settings.topic(PREDICTIONS),
        outcomes_topic=settings.topic(OUTCOMES),
        partitions=settings.partitions,
    )
    performance_store = table_store(performance_table)
    performance = PerformanceProcessor(
        monitor=PerformanceMonitor(perf_config, performance_store),
        store=performance_store,
        metrics=metrics,
        send_drift=send_drift,
        dead_letters=dead_letter_path,
        source_topic=settings.topic(PERFORMANCE_INPUT),
        send_alert=send_alert,
    )
    webhook = webhook_notifier(settings, metrics)
    notifier = AlertNotifier(
        webhook=webhook,
        store=table_store(delivery_table),
        metrics=metrics,
        send_alert=send_alert,
        source_topic=settings.topic(ALERTS),
        redelivery=Redelivery(
            settings.alert_redelivery_hours, settings.alert_redelivery_first_seconds
        ),
        retention_seconds=settings.alert_delivery_retention_days * 86400.0,
    )
    retrain_router = RetrainAlertRouter(send_alert, metrics, "retrain")
    model_router = RetrainAlertRouter(send_alert, metrics, "model")

    # The stages after the drift agent and the outcome router, which wait for them.
    downstream = (
        [settings.topic(JOIN_INPUT), settings.topic(PERFORMANCE_INPUT)]
        if settings.join_outcomes
        else []
    )

    if downstream:

        async def wait_for_downstream(longest: float) -> float:
            # A batch's parts each forward to the join: the gate between them as before it.
            return await gate.wait(app, settings.topic(PREDICTIONS), downstream, longest)

        processor.between_parts = wait_for_downstream
        processor.parts_wait_seconds = settings.downstream_max_wait_seconds
        if 0 < settings.downstream_backlog < join_batch_messages(settings.batch_size):
            log.warning(
                "DRIFTWATCH_DOWNSTREAM_BACKLOG=%d is below a join batch (%d messages, "
                "DRIFTWATCH_BATCH_SIZE / 64): the join will wait for batches the gate holds back",
                settings.downstream_backlog, join_batch_messages(settings.batch_size),
            )  # fmt: skip

    # The data agents gather their next batch while one is processed (the alert agents see
    # a few messages a day: Faust's take_events serves them).
    ahead = (settings.read_ahead_mb << 20) if settings.gather_ahead else None

    def in_bulk(topic: Any, size: int) -> None:
        """Its agent takes ``topic``'s messages from the fetch loop in bulk, past Faust's
        per-message path (:mod:`agents.faust_compat.bulk_delivery`), with the read-ahead the
        stream buffer and the batch gathered ahead would have had."""
        if not settings.bulk_delivery:
            return
        maxsize = topic.maxsize or app.conf.stream_buffer_maxsize
        faust_compat.bulk_delivery.register(
            app,
            topic.get_topic_name(),
            capacity=maxsize * (2 if settings.gather_ahead else 1),
            place_bytes=faust_compat.read_ahead.place_bytes(settings.read_ahead_mb << 20, maxsize),
            size=size,
        )

    in_bulk(predictions, settings.batch_size)

    @app.agent(predictions, name="detect-feature-drift")
    async def detect(stream: Any) -> None:
        await faust_compat.batches.process_batches(
            stream,
            settings.topic(PREDICTIONS),
            settings.batch_size,
            settings.batch_within,
            processor.process_batch,
            downstream,
            ahead_bytes=ahead,
        )

    if settings.join_outcomes:
        in_bulk(outcomes, settings.batch_size)
        in_bulk(join_input, join_batch_messages(settings.batch_size))
        in_bulk(performance_input, settings.batch_size)

        @app.agent(outcomes, name="route-outcomes")
        async def route(stream: Any) -> None:
            await faust_compat.batches.process_batches(
                stream,
                settings.topic(OUTCOMES),
                settings.batch_size,
                settings.batch_within,
                router.process_batch,
                downstream,
                ahead_bytes=ahead,
            )

        @app.agent(join_input, name="join-outcomes")
        async def join(stream: Any) -> None:
            await faust_compat.batches.process_batches(
                stream,
                settings.topic(JOIN_INPUT),
                join_batch_messages(settings.batch_size),
                settings.batch_within,
                joins.process_batch,
                [settings.topic(PERFORMANCE_INPUT)],
                ahead_bytes=ahead,
            )

        @app.agent(performance_input, name="monitor-performance")
        async def monitor(stream: Any) -> None:
            await faust_compat.batches.process_batches(
                stream,
                settings.topic(PERFORMANCE_INPUT),
                settings.batch_size,
                settings.batch_within,
                performance.process_batch,
                ahead_bytes=ahead,
            )

        _ = (route, join, monitor)

    @app.agent(alerts_topic, name="notify-alerts")
    async def notify(stream: Any) -> None:
        await faust_compat.batches.process_batches(
            stream, settings.topic(ALERTS), settings.batch_size, 0.1, notifier.process_batch
        )

    @app.agent(retrain_events, name="retrain-alerts")
    async def retrain_alerts(stream: Any) -> None:
        await faust_compat.batches.process_batches(
            stream,
            settings.topic(RETRAIN_EVENTS),
            settings.batch_size,
            0.1,
            retrain_router.process_batch,
        )

    @app.agent(model_events, name="model-alerts")
    async def model_alerts(stream: Any) -> None:
        await faust_compat.batches.process_batches(
            stream,
            settings.topic(MODEL_EVENTS),
            settings.batch_size,
            0.1,
            model_router.process_batch,
        )

    health = WorkerHealth(app, metrics)
    watchdog = None
    if settings.stall_seconds > 0:
        # A commit waits for the drift agent's next state write at most the write interval,
        # its check's and the commit interval: twice that is not yet a stall.
        held_longest = settings.state_flush_seconds + WRITE_CHECK_SECONDS + settings.commit_interval
        watchdog = Watchdog(
            app,
            {**kafka, **QUIET_RECONNECTS},
            metrics,
            stall_seconds=settings.stall_seconds,
            batch_seconds=settings.stall_batch_seconds,
            recovery_seconds=settings.stall_recovery_seconds,
            hold_grace_seconds=2 * held_longest,
            data_dir=settings.data_dir,
            on_stall=health.mark_stalled,
        )
    faust_compat.batches.AFTER_BATCH = (
        StallHook(settings.test_stall, settings.data_dir) if settings.test_stall else None
    )

    if settings.join_outcomes and settings.join_drain_check_seconds > 0:
        drain_check = partial(
            drain_marks, kafka, settings.app_id, settings.topic(OUTCOMES),
            settings.topic(JOIN_INPUT),
        )  # fmt: skip

        @app.timer(settings.join_drain_check_seconds)  # type: ignore[untyped-decorator]
        async def check_outcomes_drained() -> None:
            await refresh_marks(joins, drain_check)

    @app.timer(faust_compat.undelivered.CHECK_SECONDS)  # type: ignore[untyped-decorator]
    async def read_undelivered_again() -> None:
        faust_compat.undelivered.check_quietly(app)

    @app.timer(REDELIVERY_CHECK_SECONDS)  # type: ignore[untyped-decorator]
    async def redeliver_alerts() -> None:
        try:  # (not while tables recover: both read a partition's records)
            await notifier.check(
                partial(faust_compat.introspection.active_partitions, app, delivery_table),
                partial(faust_compat.introspection.recovering, app),
            )
        except Exception:  # a timer's exception would stop the worker: the next check redoes it
            log.exception("alert redelivery (or pruning) failed; tried again in %.0f s",
                          REDELIVERY_CHECK_SECONDS)  # fmt: skip

    @app.timer(TICK_SECONDS)  # type: ignore[untyped-decorator]
    async def advance_quiet_streams() -> None:
        processor.tick_in_background()
        health.sample()

    @app.timer(WRITE_CHECK_SECONDS)  # type: ignore[untyped-decorator]
    async def write_due_state() -> None:
        processor.write_in_background()

    # What the drift agent holds in memory, written while Faust can still commit past it.
    faust_compat.commit_cap.before_stop(app, processor.write_held, STOP_WRITE_SECONDS)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode types it loosely
    async def cancel_background(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        processor.cancel_tick()
        await notifier.stop()  # rounds under way: their alerts are held in the table

    if settings.malloc_trim_seconds > 0 and can_trim():

        @app.timer(settings.malloc_trim_seconds)  # type: ignore[untyped-decorator]
        async def return_free_memory() -> None:
            await asyncio.to_thread(trim_heap)

    app.sensors.add(FaustSensor(metrics))
    registry.register(
        StateCollector(lambda: state_gauges(app, window_table, performance_table, settings))
    )
    api = front = None
    if settings.api_port > 0:
        api, front = install_api(
            app, settings, metrics, window_table, performance_table, health.ready,
            perf_config, lambda: health.loop, internal_port,
        )  # fmt: skip
        catalogs.append(api.catalog)

    @app.task  # type: ignore[untyped-decorator]
    async def capture_loop() -> None:
        health.loop = asyncio.get_running_loop()
        if watchdog is not None:
            watchdog.start(health.loop)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode types it loosely
    async def on_revoked(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        revoked = args[0] if args else kwargs.get("revoked", ())
        # Decoded state stays cached between batches; what another worker may now change
        # is dropped (the tables are the truth when a partition comes back).
        parts = {tp.partition for tp in revoked}
        gate.forget(revoked)
        if faust_compat.guards.ORDER is not None:  # reading starts again at the committed offsets
            faust_compat.guards.ORDER.reset(revoked)
        if faust_compat.guards.GUARD is not None:
            faust_compat.guards.GUARD.forget(revoked)
        await processor.forget_partitions(parts)
        notifier.forget({tp.partition for tp in revoked if tp.topic == settings.topic(ALERTS)})
        if settings.join_outcomes:
            await joins.forget(parts)
            await performance.forget(parts)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        assigned = args[0] if args else kwargs.get("assigned", ())
        if client_logs.FRESH_ASSIGNMENTS is not None:
            client_logs.FRESH_ASSIGNMENTS.assigned((tp.topic, tp.partition) for tp in assigned)
        if faust_compat.guards.ORDER is not None:  # messages read from here on are ours again
            faust_compat.guards.ORDER.assigned(assigned)

    _ = (detect, advance_quiet_streams, write_due_state, redeliver_alerts,
         read_undelivered_again, on_revoked, on_assigned,
         notify, retrain_alerts, model_alerts, capture_loop)  # fmt: skip
    return Worker(app=app, processor=processor, registry=registry, joins=joins, api=api,
                  ready=health.ready, front=front, watchdog=watchdog)  # fmt: skip
