"""``driftwatch retrain-worker``: the retrain consumer's Kafka loop (a plain confluent-kafka
client, not Faust: it reads little, and its heavy work happens in a child process).

At start it reads ``retrain-control`` and ``retrain-events`` whole and replays them into the
service (flags, approvals, and every decision it ever published), then consumes
``drift-events``, ``labeled-predictions`` and ``retrain-control`` in one consumer group,
storing each message's offset only after it was handled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from prometheus_client import CollectorRegistry, Counter

from retrain.policy import RetrainPolicy
from retrain.registry import ModelRegistry
from retrain.service import STEPS, RetrainConfig, RetrainService
from retrain.training import TrainingLimits
from retrain.validation import GatePolicy, PostDeployPolicy
from runtime.kafka_connection import (
    KafkaTarget,
    check_connection,
    client_config,
    confluent_config,
    security,
)
from runtime.metrics_http import metrics_served
from runtime.process_exit import hard_exit
from runtime.topics import (
    ALERTS,
    DEAD_LETTERS,
    DRIFT_EVENTS,
    LABELED_PREDICTIONS,
    MODEL_EVENTS,
    RETRAIN_CONTROL,
    RETRAIN_EVENTS,
    RETRAIN_WORKER_TOPICS,
)
from schemas import (
    ControlMessage,
    DeadLetter,
    DriftEvent,
    InvalidEvent,
    ModelEvent,
    RetrainEvent,
    Severity,
    parse_timestamp,
)
from schemas.alerts import Alert
from schemas.names import name_problem

log = logging.getLogger(__name__)

IDLE_END = 0.5
"""After reaching a partition's reported end, read on until this long without a message (the
embedded broker reports ends low; see the README)."""


def retrain_config(settings: Any) -> RetrainConfig:
    return RetrainConfig(
        policy=RetrainPolicy(
            auto_retrain=settings.auto_retrain,
            kinds=frozenset(k.strip() for k in settings.retrain_kinds.split(",") if k.strip()),
            min_persistence=settings.retrain_min_persistence,
            approval_severity=Severity(settings.approval_severity.upper()),
            cooldown_days=settings.retrain_cooldown_days,
            min_new_labels=settings.retrain_min_new_labels,
        ),
        gate=GatePolicy(min_pr_auc=settings.min_pr_auc, champion_margin=settings.champion_margin),
        post_deploy=PostDeployPolicy(
            window_hours=settings.post_deploy_hours,
            settle_days=settings.post_deploy_settle_days,
            max_drop=settings.rollback_max_drop,
        ),
        limits=TrainingLimits(
            max_seconds=settings.training_max_seconds,
            max_memory_mb=settings.training_max_memory_mb,
        ),
        training_days=settings.training_days,
        validation_share=settings.validation_share,
        retry_seconds=settings.retrain_retry_seconds,
    )


def _consumer(kafka: KafkaTarget, group: str, **extra: Any) -> Consumer:
    return Consumer(
        client_config(
            kafka,
            **{
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                # A consumer with a group id otherwise tries a broker that refuses connections
                # every 50 ms, and librdkafka prints a line for each try (20 a second while
                # the broker restarts); a second's wait to reconnect costs this worker nothing.
                "reconnect.backoff.ms": 1000,
                **extra,
            },
        )
    )


def read_topic(
    kafka: KafkaTarget, topic: str, start_ms: int | None = None, timeout: float = 30.0
) -> Iterator[Message]:
    """Every message of ``topic`` (from ``start_ms`` message time, if given) up to its end
    as of now. Group-less: assigns all partitions itself."""
    consumer = _consumer(kafka, "driftwatch-reader")
    try:
        meta = consumer.list_topics(topic, timeout=10)
        parts = sorted(meta.topics[topic].partitions) if topic in meta.topics else []
        tps = [TopicPartition(topic, p, 0) for p in parts]
        if start_ms is not None and tps:
            try:
                found = consumer.offsets_for_times(
                    [TopicPartition(topic, p, start_ms) for p in parts], timeout=10
                )
                tps = [
                    TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else 0)
                    for tp in found
                ]
            except Exception:  # a broker without time index lookups: read it all
                log.info("offsets_for_times failed on %s: reading from the start", topic)
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        pending = {tp.partition for tp in tps if ends[tp.partition] > tp.offset}
        if not tps:
            return
        consumer.assign(tps)
        deadline = time.monotonic() + timeout
        idle_since = time.monotonic()
        while time.monotonic() < deadline:
            msgs = consumer.consume(num_messages=1000, timeout=0.2)
            if not msgs:
                if not pending and time.monotonic() - idle_since >= IDLE_END:
                    return
                continue
            idle_since = time.monotonic()
            for msg in msgs:
                if msg.error() is not None:
                    continue
                part, offset = msg.partition() or 0, msg.offset() or 0
                if offset + 1 >= ends.get(part, 0):
                    pending.discard(part)
                yield msg
        raise TimeoutError(f"read_topic {topic}: not at its end after {timeout:.0f} s")
    finally:
        consumer.close()


class KafkaPublisher:
    """Each event is flushed before the next step runs: the topic is the recovery log."""

    def __init__(self, producer: Producer, settings: Any) -> None:
        self.producer = producer
        self.settings = settings

    def _send(self, topic: str, key: str, value: bytes) -> None:
        self.producer.produce(self.settings.topic(topic), key=key.encode(), value=value)
        if self.producer.flush(30) != 0:
            raise RuntimeError(f"could not deliver to {topic}")

    def retrain_event(self, event: RetrainEvent) -> None:
        self._send(RETRAIN_EVENTS, event.stream_key, event.to_json())

    def model_event(self, event: ModelEvent) -> None:
        self._send(MODEL_EVENTS, event.stream_key, event.to_json())

    def alert(self, alert: Alert) -> None:
        self._send(ALERTS, alert.stream_key, alert.to_json())


class KafkaTrainingData:
    """Training rows read from ``labeled-predictions`` by time. The worker stamps each row
    with its outcome time, and an outcome never precedes its prediction, so seeking to the
    window's start by message time never skips a row predicted inside it."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def rows(self, tenant: str, model: str, start: float, end: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        key = f"{tenant}:{model}".encode()
        topic = self.settings.topic(LABELED_PREDICTIONS)
        kafka = confluent_config(self.settings)
        for msg in read_topic(kafka, topic, int(start * 1000), timeout=120):
            if msg.key() != key:
                continue
            try:
                row = json.loads(msg.value() or b"")
                ts = parse_timestamp(row["prediction_timestamp"], "prediction_timestamp")
            except (ValueError, KeyError, TypeError, InvalidEvent):
                continue
            if start <= ts <= end:
                out.append(row)
        return out


def run_retrain_worker(settings: Any, stop: threading.Event | None = None) -> int:
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    # A port taken is one line, before any broker work; the server stops when the worker does.
    with _metrics(settings) as counters:
        return _run(settings, stop, counters)


def _run(settings: Any, stop: threading.Event, counters: dict[str, Counter]) -> int:
    from runtime.topics import prepare_topics, topic_specs

    # Refused credentials, an untrusted certificate, missing topics: one clear line and a
    # non-zero exit (driftwatch.cli) instead of retrying for ever.
    kafka = confluent_config(settings)
    log.info("Kafka at %s: %s", settings.bootstrap, security(settings).describe())
    check_connection(kafka, timeout=settings.kafka_connect_timeout)
    prepare_topics(settings, topic_specs(settings, RETRAIN_WORKER_TOPICS), kafka)
    registry = ModelRegistry(settings.registry_dir)
    cleaned = registry.cleanup()
    if cleaned:
        log.warning("registry: removed %d leftovers of an interrupted write", cleaned)
    producer = Producer(client_config(kafka, **{"linger.ms": 0}))
    service = RetrainService(
        retrain_config(settings),
        registry,
        _CountingPublisher(KafkaPublisher(producer, settings), counters),
        KafkaTrainingData(settings),
    )
    if settings.test_crash_at:
        service.step = crash_hook(settings.test_crash_at, Path(settings.registry_dir))
    controls = []
    for msg in read_topic(kafka, settings.topic(RETRAIN_CONTROL)):
        try:
            c = ControlMessage.parse(msg.key(), msg.value())
        except InvalidEvent:
            continue
        controls.append((c.key, c.value))
    history = []
    for msg in read_topic(kafka, settings.topic(RETRAIN_EVENTS)):
        try:
            history.append(RetrainEvent.from_dict(json.loads(msg.value() or b"")))
        except (ValueError, RecursionError, InvalidEvent):
            continue
    service.replay(history, controls)
    log.info("retrain worker: replayed %d events, %d control messages", len(history), len(controls))
    consumer = _consumer(
        kafka,
        f"{settings.app_id}-retrain",
        **{
            "enable.auto.offset.store": False,
            "session.timeout.ms": int(settings.session_timeout * 1000),
            "heartbeat.interval.ms": int(settings.heartbeat_interval * 1000),
            # a training runs in a child process, but be generous anyway
            "max.poll.interval.ms": max(300_000, int(settings.training_max_seconds * 2000)),
        },
    )
    consumer.subscribe(
        [settings.topic(t) for t in (DRIFT_EVENTS, LABELED_PREDICTIONS, RETRAIN_CONTROL)]
    )
    try:
        while not stop.is_set():
            handled = 0
            for msg in consumer.consume(num_messages=500, timeout=0.2):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer: %s", err)
                    continue
                _handle(service, msg, settings, producer, counters)
                consumer.store_offsets(msg)
                handled += 1
            service.poll()
            if handled:
                _commit(consumer)
    finally:
        service.close()
        _commit(consumer)
        consumer.close()
        producer.flush(10)
    return 0


def _commit(consumer: Consumer) -> None:
    # "no offset to commit" and the like are not worth stopping for
    with contextlib.suppress(Exception):
        consumer.commit(asynchronous=False)


def _handle(
    service: RetrainService,
    msg: Message,
    settings: Any,
    producer: Producer,
    counters: dict[str, Counter],
) -> None:
    topic = msg.topic()
    key = (msg.key() or b"").decode(errors="replace")
    if topic != settings.topic(RETRAIN_CONTROL) and ":" in key:
        seen = getattr(service.publisher, "model_seen", None)
        tenant, model = key.split(":", 1)
        if seen is not None and name_problem(tenant) is None and name_problem(model) is None:
            seen(tenant, model)  # metric labels: only safe names (schemas.names)
    try:
        if topic == settings.topic(DRIFT_EVENTS):
            service.on_drift(DriftEvent.from_dict(json.loads(msg.value() or b"")))
        elif topic == settings.topic(LABELED_PREDICTIONS):
            service.on_labeled(json.loads(msg.value() or b""))
        else:
            c = ControlMessage.parse(msg.key(), msg.value())
            service.on_control(c.key, c.value)
        counters["messages"].labels(topic, "ok").inc()
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, InvalidEvent) as exc:
        # RecursionError: json.loads of JSON nested too deeply (a RuntimeError, not a
        # ValueError), which stopped the retrain worker before.
        reason = exc.reason if isinstance(exc, InvalidEvent) else "bad_value"
        letter = DeadLetter(
            str(topic), msg.partition() or 0, msg.offset() or 0, reason, repr(exc)[:500],
            msg.value() or b"", time.time(), msg.key(),
        )  # fmt: skip
        producer.produce(settings.topic(DEAD_LETTERS), key=msg.key() or b"", value=letter.to_json())
        producer.flush(10)
        counters["messages"].labels(topic, "dead_letter").inc()
        counters["dead_letters"].labels(topic, reason).inc()
        log.warning("dead-lettered %s[%d]@%d: %s", topic, msg.partition(), msg.offset(), exc)


class _CountingPublisher:
    def __init__(self, inner: KafkaPublisher, counters: dict[str, Counter]) -> None:
        self.inner = inner
        self.counters = counters
        self.seen: set[tuple[str, str]] = set()

    def model_seen(self, tenant: str, model: str) -> None:
        """Promotions and rollbacks of a model exist at 0 from the first time it is seen, so
        Prometheus' increase() sees the first one."""
        if (tenant, model) not in self.seen:
            self.seen.add((tenant, model))
            for action in ("promoted", "rolled_back"):
                self.counters["models"].labels(tenant, model, action)

    def retrain_event(self, event: RetrainEvent) -> None:
        self.inner.retrain_event(event)
        self.counters["retrain"].labels(event.tenant, event.model, event.status.value).inc()

    def model_event(self, event: ModelEvent) -> None:
        self.inner.model_event(event)
        self.counters["models"].labels(event.tenant, event.model, event.action.value).inc()

    def alert(self, alert: Alert) -> None:
        self.inner.alert(alert)


@contextlib.contextmanager
def _metrics(settings: Any) -> Iterator[dict[str, Counter]]:
    """The worker's counters, served on ``retrain_metrics_port`` (0: not served) until the
    block ends: a worker stopped, or failed, in-process must not keep the port."""
    registry = CollectorRegistry()
    counters = {
        "messages": Counter(
            "driftwatch_retrain_messages",
            "Messages handled",
            ["topic", "result"],
            registry=registry,
        ),
        "dead_letters": Counter(
            "driftwatch_dead_letters",
            "Messages dead-lettered, by reason (as the worker's)",
            ["topic", "reason"],
            registry=registry,
        ),
        "retrain": Counter(
            "driftwatch_retrain_events",
            "Retrain decisions and steps",
            ["tenant", "model", "status"],
            registry=registry,
        ),
        "models": Counter(
            "driftwatch_model_events",
            "Promotions and rollbacks",
            ["tenant", "model", "action"],
            registry=registry,
        ),
    }
    if not settings.retrain_metrics_port:
        yield counters
        return
    with metrics_served(settings.retrain_metrics_port, settings.metrics_bind, registry,
                        "DRIFTWATCH_RETRAIN_METRICS_PORT"):  # fmt: skip
        yield counters


CRASH_EXIT_CODE = 86


def crash_hook(step: str, registry_dir: Path) -> Callable[[str], None]:
    """Testing only (``DRIFTWATCH_TEST_CRASH_AT``): end the process abruptly, as SIGKILL
    would, when a request reaches ``step``; once per registry directory."""
    if step not in STEPS:
        raise ValueError(f"DRIFTWATCH_TEST_CRASH_AT: {step!r} is not one of {', '.join(STEPS)}")
    marker = registry_dir / f".test-crashed-at-{step}"

    def at(name: str) -> None:
        if name != step or marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(step)
        log.warning("TEST HOOK: dying at step %s", step)
        hard_exit(CRASH_EXIT_CODE)

    return at
