"""Small synchronous Kafka helpers for integration tests (confluent-kafka based).

They work against Tansu and Apache Kafka alike. Remember that on Tansu anything that names a
missing topic in a metadata request auto-creates it with 4 partitions, so create topics with
:func:`driftwatch.devbroker.ensure_topics` before producing to or consuming from them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

__all__ = [
    "TEST_CONSUMER_GROUP_CONFIG",
    "Record",
    "consume_all",
    "produce",
    "topic_partitions",
]

# Tansu completes a group join after roughly half the session timeout; keep it short in tests.
TEST_CONSUMER_GROUP_CONFIG: dict[str, int] = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
}


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


class KafkaHelperError(RuntimeError):
    """A produce/consume helper failed."""


def produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes]],
    *,
    partition: int | None = None,
    timeout: float = 30.0,
) -> None:
    """Produce ``(key, value)`` pairs to ``topic`` and wait until all are acknowledged.

    Keys are partitioned by the client's default partitioner unless ``partition`` is given.
    Raises :class:`KafkaHelperError` if any delivery fails or does not finish in ``timeout``.
    """
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": int(timeout * 1000),
        }
    )
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    count = 0
    for key, value in messages:
        while True:
            try:
                if partition is None:
                    producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                else:
                    producer.produce(
                        topic, value=value, key=key, partition=partition, on_delivery=on_delivery
                    )
                break
            except BufferError:  # local queue full: serve delivery reports, then retry
                producer.poll(0.1)
        producer.poll(0)
        count += 1
    remaining = producer.flush(timeout)
    if remaining:
        raise KafkaHelperError(
            f"{remaining} of {count} messages to {topic!r} not delivered within {timeout}s"
        )
    if errors:
        raise KafkaHelperError(
            f"{len(errors)} of {count} messages to {topic!r} failed; first error: {errors[0]}"
        )


def topic_partitions(bootstrap: str, topic: str, *, timeout: float = 10.0) -> list[int]:
    """Partition ids of ``topic``, waiting up to ``timeout`` for it to appear.

    Lists all topics instead of asking for ``topic`` by name, which on Tansu would create it.
    Raises :class:`KafkaHelperError` if the topic does not show up.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": _throwaway_group()})
    try:
        return _wait_for_partitions(consumer, bootstrap, topic, time.monotonic() + timeout)
    finally:
        consumer.close()


def consume_all(
    bootstrap: str,
    topic: str,
    *,
    min_messages: int = 0,
    timeout: float = 30.0,
    idle: float = 3.0,
) -> list[Record]:
    """Read ``topic`` from the beginning of every partition and return what was there.

    Uses ``assign()`` (no consumer-group join, nothing committed). Stops once at least
    ``min_messages`` records have arrived and nothing new came for ``idle`` seconds, or when
    ``timeout`` seconds have passed (then it returns whatever it has; callers assert on the
    result). End of partition is deliberately not used to stop: Tansu's high watermark is the
    base offset of the last batch + 1, so reaching it does not mean everything was read.

    Records keep the order they arrived in, which preserves order within each partition.
    """
    deadline = time.monotonic() + timeout
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": _throwaway_group(),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
    )
    records: list[Record] = []
    try:
        partitions = _wait_for_partitions(consumer, bootstrap, topic, deadline)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        last_progress = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            if len(records) >= min_messages and now - last_progress >= idle:
                break
            wait = min(0.2, deadline - now)
            for msg in consumer.consume(num_messages=500, timeout=wait):
                err = msg.error()
                if err is not None:
                    if err.fatal():
                        raise KafkaHelperError(f"fatal consumer error on {topic!r}: {err}")
                    continue  # transient (leader change, partition EOF, ...): keep polling
                timestamp_type, timestamp = msg.timestamp()
                records.append(
                    Record(
                        topic=msg.topic() or topic,
                        partition=msg.partition() or 0,
                        offset=msg.offset() or 0,
                        key=msg.key(),
                        value=msg.value(),
                        timestamp_ms=timestamp if timestamp_type else None,
                    )
                )
                last_progress = time.monotonic()
    finally:
        consumer.close()
    return records


def _throwaway_group() -> str:
    return f"driftwatch-test-{uuid.uuid4().hex[:12]}"


def _wait_for_partitions(
    consumer: Consumer, bootstrap: str, topic: str, deadline: float
) -> list[int]:
    last_error = "topic not in metadata"
    while True:
        try:
            metadata = consumer.list_topics(timeout=max(min(deadline - time.monotonic(), 5.0), 0.1))
        except Exception as exc:  # KafkaException while the broker is unreachable
            last_error = str(exc)
        else:
            info = metadata.topics.get(topic)
            if info is not None and info.error is None and info.partitions:
                return sorted(info.partitions)
            if info is not None and info.error is not None:
                last_error = str(info.error)
        if time.monotonic() >= deadline:
            raise KafkaHelperError(f"topic {topic!r} not found on {bootstrap}: {last_error}")
        time.sleep(0.1)
