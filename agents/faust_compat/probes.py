"""Asking the broker directly (throw-away confluent-kafka clients, in threads) what Faust's
bookkeeping cannot be trusted to know: the first record at an offset, where a group starts."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from agents.faust_compat.guards import Probe, StartLookup


def kafka_probe(config: dict[str, Any], timeout: float = 10.0) -> Probe:
    """A :data:`Probe` on a throw-away confluent-kafka consumer (``config``: its client
    settings, bootstrap servers and security), run in a thread."""

    async def probe(topic: str, partition: int, offset: int) -> int | None:
        return await asyncio.to_thread(first_record_offset, config, topic, partition, offset,
                                       timeout)  # fmt: skip

    return probe


def kafka_start_lookup(config: dict[str, Any], group_id: str, timeout: float = 10.0) -> StartLookup:
    """A :data:`StartLookup` for consumer group ``group_id`` (a throw-away confluent-kafka
    client in a thread; it never joins the group or commits)."""

    async def start(topic: str, partition: int) -> int:
        # The deadline from now: the thread may wait in the pool (the compute's) first.
        deadline = time.monotonic() + timeout
        return await asyncio.to_thread(group_start_offset, config, group_id, topic, partition,
                                       timeout, deadline)  # fmt: skip

    return start


def group_start_offset(
    config: dict[str, Any],
    group_id: str,
    topic: str,
    partition: int,
    timeout: float = 10.0,
    deadline: float | None = None,
) -> int:
    """The group's committed offset of a partition, or its log start when it has none or the
    commit is below it (deleted by retention): where the worker's consumer reads from
    (``auto.offset.reset=earliest``); blocking, for a thread. Both broker calls end by
    ``deadline`` (``time.monotonic()``; ``timeout`` from now if None), so the thread ends
    then (plus the client's close), not after the caller's own wait
    (:data:`.guards.PROBE_TIMEOUT_SECONDS`, longer) has given up on it."""
    from confluent_kafka import Consumer, TopicPartition

    if deadline is None:
        deadline = time.monotonic() + timeout

    def left(what: str) -> float:
        rest = deadline - time.monotonic()
        if rest <= 0:
            raise TimeoutError(f"no {what} for {topic}[{partition}] in {timeout}s")
        return rest

    wait = left("commit")  # queued in the pool past it: no client at all
    consumer = Consumer({**config, "group.id": group_id, "enable.auto.commit": False})
    try:
        tp = TopicPartition(topic, partition)
        [got] = consumer.committed([tp], wait)
        if got.error is not None:
            raise RuntimeError(str(got.error))
        low, _ = consumer.get_watermark_offsets(tp, timeout=left("watermarks"), cached=False)
        return max(0, int(got.offset), int(low))  # no commit: -1001
    finally:
        consumer.close()


def first_record_offset(
    config: dict[str, Any], topic: str, partition: int, offset: int, timeout: float = 10.0
) -> int | None:
    """The offset of the first record at or after ``offset``, None at the log end (what lies
    between holds transaction markers only); blocking, for a thread."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            **config,
            # assign() only: never joins or commits; its own id keeps probes apart
            "group.id": f"driftwatch-head-probe-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_uncommitted",  # what the worker's consumer reads
            # An offset before the log's start (deleted by retention) means the first record
            # there, as for the worker's consumer.
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is None:
                return int(msg.offset() or 0)
            if err.code() == KafkaError._PARTITION_EOF:
                return None
            raise RuntimeError(str(err))
        raise TimeoutError(f"no answer for {topic}[{partition}]@{offset} in {timeout}s")
    finally:
        consumer.close()
