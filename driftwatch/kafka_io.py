"""Plain Kafka clients for the CLI: producing simulated traffic, reading drift events."""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from driftwatch.simulate import SimulationConfig, generate, generate_outcomes
from runtime.kafka_connection import KafkaTarget, check_connection, client_config, confluent_config
from runtime.settings import Settings
from runtime.topics import OUTCOMES, PREDICTIONS
from schemas import OutcomeEvent, PredictionEvent
from schemas.events import BATCH_SCHEMA


def make_producer(kafka: KafkaTarget) -> Producer:
    """A fast producer; ``kafka``: ``host:port`` or a configuration with its security
    (:func:`runtime.kafka_connection.confluent_config`)."""
    return Producer(
        client_config(
            kafka,
            **{
                "linger.ms": 20,
                "batch.num.messages": 5000,
                "compression.type": "none",
                "queue.buffering.max.messages": 200_000,
                "enable.idempotence": False,
            },
        )
    )


def produce_messages(
    producer: Producer,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes]],
    ends: dict[int, int] | None = None,
    partition: int | None = None,
) -> int:
    """Produce and wait for delivery; raise if any message was not delivered. With ``ends``,
    record per partition the offset after the last delivered message. ``partition``: all of
    them to that one (else by key, the producer's partitioner)."""
    n = 0
    errors: list[Any] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        elif ends is not None:
            ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

    for key, value in messages:
        while True:
            try:
                if partition is None:
                    producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                else:
                    producer.produce(topic, value, key, partition, on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        n += 1
        if n % 1000 == 0:
            producer.poll(0)
    producer.flush(60)
    if errors:
        raise RuntimeError(f"{len(errors)} messages not delivered, first: {errors[0]}")
    return n


def prediction_messages(
    events: Iterable[PredictionEvent], batch: int = 1
) -> Iterator[tuple[bytes, bytes]]:
    """``predictions`` messages: one event each, or with ``batch`` > 1 envelopes of up to that
    many consecutive events of one tenant and model (``driftwatch.prediction-batch/v1``)."""
    if batch <= 1:
        for e in events:
            yield e.stream_key.encode(), e.to_json()
        return
    pending: dict[str, list[PredictionEvent]] = {}
    for e in events:
        group = pending.setdefault(e.stream_key, [])
        group.append(e)
        if len(group) >= batch:
            yield envelope(e.stream_key, group)
            pending[e.stream_key] = []
    for key, group in pending.items():
        if group:
            yield envelope(key, group)


def envelope(key: str, events: list[PredictionEvent]) -> tuple[bytes, bytes]:
    body = {"schema": BATCH_SCHEMA, "events": [e.to_dict() for e in events]}
    return key.encode(), json.dumps(body, separators=(",", ":")).encode()


def outcome_messages(events: Iterable[OutcomeEvent]) -> Iterator[tuple[bytes, bytes]]:
    for e in events:
        yield e.event_id.encode(), e.to_json()


def produce_simulation(
    settings: Settings, cfg: SimulationConfig, with_outcomes: bool = False, batch: int = 1
) -> tuple[int, int]:
    """Produce the simulation; returns (predictions, outcomes) produced (events, not
    messages: with ``batch`` > 1 predictions go in envelopes)."""
    kafka = confluent_config(settings)
    check_connection(kafka, timeout=settings.kafka_connect_timeout)
    producer = make_producer(kafka)
    n = 0

    def counted(events: Iterable[PredictionEvent]) -> Iterator[PredictionEvent]:
        nonlocal n
        for e in events:
            n += 1
            yield e

    produce_messages(
        producer, settings.topic(PREDICTIONS), prediction_messages(counted(generate(cfg)), batch)
    )
    m = 0
    if with_outcomes:
        m = produce_messages(
            producer, settings.topic(OUTCOMES), outcome_messages(generate_outcomes(cfg))
        )
    return n, m


def merge_by_time(*streams: Iterable[PredictionEvent]) -> Iterator[PredictionEvent]:
    return heapq.merge(*streams, key=lambda e: e.timestamp)


def tail_consumer(kafka: KafkaTarget, topic: str, partitions: int) -> Consumer:
    """A group-less consumer reading ``topic`` from the beginning (no join delay)."""
    consumer = Consumer(
        client_config(
            kafka,
            **{
                "group.id": "driftwatch-cli-tail",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            },
        )
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    return consumer


def poll_json(consumer: Consumer, timeout: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for msg in consumer.consume(num_messages=500, timeout=timeout):
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                raise RuntimeError(str(err))
            continue
        value = msg.value()
        if value:
            out.append(json.loads(value))
    return out
