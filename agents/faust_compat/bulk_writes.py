"""A batch's table writes in bulk: into the partition's RocksDB store, and to the changelog in
record batches of the producer's batch size, instead of one Faust send per key.

Faust writes a table key by key: each ``table[key] = value`` puts it into RocksDB and hands
one message to the changelog topic through its producer buffer (a ``FutureMessage``, a
publish, an aiokafka send and its future, a callback that writes the persisted offset back to
RocksDB). The join writes one record per prediction, and that path cost about 100 us a
record: a quarter of the worker's time with envelopes of 500 (``bench.throughput``).

Here the same records go in the same order: each key into the store of its partition (and
Faust's key index), then the changelog as aiokafka record batches of the producer's
``max_batch_size`` (``DRIFTWATCH_PRODUCER_MAX_BATCH_BYTES``: at 1, one record per batch, as
the tests that restore on the embedded broker need), the persisted offset written once a
batch is delivered, as Faust's callback does per record. The changelog is what Faust writes
key by key (raw keys and values; a delete a ``None`` value), so its recovery and standbys
read it as before. A batch's acks wait for these batches too (:func:`settle`, called by
``batches.drain_producer``), and a batch that failed to be delivered fails its agent batch,
which is read again.

Anything else (a table not in RocksDB, serializers other than raw, a transaction) goes
Faust's own way, key by key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from faust.streams import current_event
from faust.types import TP

from agents.faust_compat.counters import COUNTERS
from agents.faust_compat.current_event import PartitionContext
from agents.faust_compat.version import check_version

check_version()
log = logging.getLogger(__name__)

Item = tuple[bytes, bytes | None]
"""A key and its new value (None deletes it)."""

_PENDING: set[asyncio.Future[Any]] = set()
"""Changelog batches handed to the producer and not delivered yet, or failed and not yet
raised by :func:`settle`."""


def _partition_now() -> int | None:
    """The current event's partition: where Faust itself writes a key without one."""
    event = current_event()
    return None if event is None else int(event.message.partition)


def _bulk_capable(table: Any) -> bool:
    store = getattr(table, "data", None)
    return (
        hasattr(store, "_db_for_partition")
        and hasattr(table, "changelog_topic")
        and table.key_serializer == "raw"
        and table.value_serializer == "raw"
        and not table.app.in_transaction
        and getattr(table.app.producer, "_producer", None) is not None
    )


async def write(table: Any, partition: int | None, items: Sequence[Item]) -> None:
    """Write ``items`` (in order) to ``partition`` of ``table`` (None: the current event's)
    and its changelog. A plain dict (a benchmark's, a unit test's) takes them as they are."""
    if not items:
        return
    if isinstance(table, dict):
        for key, value in items:
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
        return
    if partition is None:
        partition = _partition_now()
        if partition is None:
            # Faust would raise (and the agent restart, to fail again on the same batch):
            # state no code gave a partition to is a bug, reported, not a reason to stop.
            COUNTERS["write_without_partition"] += len(items)
            log.error("table %s: %d writes without a partition dropped (first key %r)",
                      table.name, len(items), items[0][0][:200])  # fmt: skip
            return
    if not _bulk_capable(table):
        _one_by_one(table, partition, items)
        return
    store = table.data
    db = store._db_for_partition(partition)
    key_index = store._key_index
    records: list[Item] = []
    for key, value in items:
        if value is None:
            if db.get(key) is None:
                continue  # as ``del`` after ``in``: no tombstone for a key never written
            db.delete(key)
            key_index.pop(key, None)
        else:
            db.put(key, value)
            key_index[key] = partition
        records.append((key, value))
    await _send(table, partition, records)


def _one_by_one(table: Any, partition: int, items: Sequence[Item]) -> None:
    context = PartitionContext(table.changelog_topic.get_topic_name())
    context.enter(partition)
    for key, value in items:
        if value is None:
            if key in table:
                del table[key]
        else:
            table[key] = value


async def _send(table: Any, partition: int, records: list[Item]) -> None:
    producer = table.app.producer._producer  # aiokafka's AIOKafkaProducer
    topic = table.changelog_topic.get_topic_name()
    tp = TP(topic, partition)
    store = table.data
    batch, count = producer.create_batch(), 0
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None) is None:
            await _submit(producer, store, tp, batch, count)
            batch, count = producer.create_batch(), 0
            # The first record of a batch always fits, whatever the batch size.
            batch.append(key=key, value=value, timestamp=None)
        count += 1
    if count:
        await _submit(producer, store, tp, batch, count)


async def _submit(producer: Any, store: Any, tp: TP, batch: Any, count: int) -> None:
    future = await producer.send_batch(batch, tp.topic, partition=tp.partition)
    _PENDING.add(future)

    def delivered(done: asyncio.Future[Any]) -> None:
        if done.cancelled() or done.exception() is not None:
            return  # kept for settle() to raise
        _PENDING.discard(done)
        # What Faust's changelog callback writes per record: the offset the store now holds.
        store.set_persisted_offset(tp, done.result().offset + count - 1)

    future.add_done_callback(delivered)


async def settle() -> None:
    """Wait for every changelog batch handed over since the last call; raise the first
    failure (the agent batch whose state it carried is then not acked, and is read again)."""
    while _PENDING:
        pending = list(_PENDING)
        _PENDING.difference_update(pending)
        await asyncio.wait(pending)
        for future in pending:
            if future.cancelled():
                raise asyncio.CancelledError("a changelog batch was cancelled")
            error = future.exception()
            if error is not None:
                COUNTERS["changelog_batch_failed"] += 1
                log.error("a changelog batch to %s failed: %r", future, error)
                raise error
