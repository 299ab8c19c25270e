"""A batch's table writes in bulk: to the changelog in record batches of the producer's batch
size, then into the partitions' RocksDB stores, instead of one Faust send per key.

Faust writes a table key by key: each ``table[key] = value`` puts it into RocksDB and hands
one message to the changelog topic through its producer buffer (a ``FutureMessage``, a
publish, an aiokafka send and its future, a callback that writes the persisted offset back to
RocksDB). The join writes one record per prediction, and that path cost about 100 us a
record: a quarter of the worker's time with envelopes of 500 (``bench.throughput``).

Here the same records go in the same order, per partition: to the changelog as aiokafka
record batches of ``batch_bytes`` (``DRIFTWATCH_CHANGELOG_MAX_BATCH_BYTES``; by default the
producer's ``max_batch_size``), each partition's last record in a batch of its own with
``last_alone`` (``DRIFTWATCH_CHANGELOG_LAST_RECORD_ALONE``: the embedded broker reports a
partition's end as its last batch's first offset + 1, and a restore stops there; a last
batch of one record makes that the true end, at one batch more a write rather than a batch
per record, as a batch size of 1 does); once the broker has them all, into the partition's
store in one RocksDB write batch (and Faust's key index), then the persisted offset, as
Faust's callback writes it per record. The records are Faust's (raw keys and
values, a delete a ``None`` value), so its recovery and standbys read them as before; one
difference: every delete is sent, also of a key the store does not have (Faust sends none
then), because here the store can be behind the changelog: a write that fails stores none of
its values, though the broker may have taken some of its batches, and a later delete of such
a key must reach the changelog too. A tombstone for a key the changelog never had is
harmless (compaction drops it, a restore deletes nothing).

:func:`write` returns once its records are delivered and stored, and raises if a batch was
not delivered, or a record is larger than the producer takes (checked before anything is
sent); the agent batch that made them fails and is read again, and writes its state again
(a later record of a key supersedes what the failed write left in the changelog). It
expects one writer per table partition at a time (each agent serialises its batches and
timers with a lock): two overlapping writes of one partition could store in either order.

:func:`send_all` sends any topic's messages the same way (the join's prediction log: one
message per outcome), each to the partition Faust's send would pick.

Anything else (a table not in RocksDB, serializers other than raw, a partitioner, a global or
windowed table, a transaction) goes Faust's own way, key by key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import rocksdict
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from faust.streams import current_event
from faust.types import TP

from agents.faust_compat.counters import COUNTERS
from agents.faust_compat.current_event import PartitionContext
from agents.faust_compat.direct_reads import direct_capable
from agents.faust_compat.version import check_version

check_version()
log = logging.getLogger(__name__)

Item = tuple[bytes, bytes | None]
"""A key and its new value (None deletes it)."""
Record = tuple[bytes | None, bytes | None, int | None]
"""A key, a value and a timestamp in milliseconds (None: the producer's clock)."""


def _partition_now() -> int | None:
    """The current event's partition: where Faust itself writes a key without one."""
    event = current_event()
    return None if event is None else int(event.message.partition)


def _bulk_capable(table: Any) -> bool:
    return (
        direct_capable(table)  # a plain raw-bytes table in RocksDB partitions
        and hasattr(table, "changelog_topic")
        and not table.app.in_transaction
        and getattr(table.app.producer, "_producer", None) is not None
    )


async def write(
    table: Any,
    groups: Mapping[int | None, Sequence[Item]],
    batch_bytes: int = 0,
    last_alone: bool = False,
) -> None:
    """Write each partition's items (in order) to ``table`` and its changelog; ``None``: the
    current event's partition (Faust's rule), and where there is none the items are dropped,
    logged and counted (Faust would raise, and the agent fail again on the same batch: state
    no code gave a partition to is a bug to report, not a reason to stop). A plain dict (a
    benchmark's, a unit test's) takes them as they are."""
    if isinstance(table, dict):
        for items in groups.values():
            for key, value in items:
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value
        return
    resolved: dict[int, list[Item]] = {}
    for partition, items in groups.items():
        if not items:
            continue
        if partition is None:
            partition = _partition_now()
            if partition is None:
                COUNTERS["write_without_partition"] += len(items)
                log.error("table %s: %d writes without a partition dropped (first key %r)",
                          table.name, len(items), items[0][0][:200])  # fmt: skip
                continue
        resolved.setdefault(partition, []).extend(items)
    if not resolved:
        return
    if not _bulk_capable(table):
        for partition, items in resolved.items():
            _one_by_one(table, partition, items)
        return
    store = table.data
    topic = table.changelog_topic.get_topic_name()
    producer = table.app.producer._producer  # aiokafka's, under Faust's
    _check_sizes(topic, resolved, producer._max_request_size)
    sent: dict[int, list[tuple[asyncio.Future[Any], int]]] = {}
    try:
        for partition, records in resolved.items():
            sent[partition] = []
            await _send(
                producer, TP(topic, partition), records, sent[partition], batch_bytes, last_alone
            )
        futures = [future for batches in sent.values() for future, _ in batches]
        results = await asyncio.gather(*futures, return_exceptions=True)
    except BaseException:  # a send refused, or cancelled (a stop, a rebalance)
        for batches in sent.values():
            for future, _ in batches:
                future.add_done_callback(_count_failure)
        raise
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        COUNTERS["changelog_batch_failed"] += len(errors)
        for error in errors:
            log.error("table %s: a changelog batch failed: %r", table.name, error)
        raise errors[0]
    key_index = store._key_index
    for partition, records in resolved.items():
        db = store._db_for_partition(partition)
        # One RocksDB write batch a partition, as Faust's own changelog restore writes: a
        # single write-ahead-log append rather than one per record (2.5x faster a record).
        batch = _write_batch(store)
        into = db if batch is None else batch
        for key, value in records:
            if value is None:
                into.delete(key)
                key_index.pop(key, None)
            else:
                into.put(key, value)
                key_index[key] = partition
        if batch is not None:
            db.write(batch)
        if sent[partition]:
            # What Faust's changelog callback writes per record: the offset the store now
            # holds (the last batch's first offset, and its records after that one).
            last, count = sent[partition][-1]
            store.set_persisted_offset(TP(topic, partition), last.result().offset + count - 1)


def _write_batch(store: Any) -> Any:
    """An empty write batch for a rocksdict store (raw keys and values, as Faust opens it);
    None for python-rocksdb's (then written record by record)."""
    if not getattr(store, "use_rocksdict", False):
        return None  # pragma: no cover - python-rocksdb is not installed here
    return rocksdict.WriteBatch(raw_mode=True)


Message = tuple[bytes | None, bytes, float | None]
"""A key, a value and a timestamp in seconds (None: the producer's clock)."""


async def send_all(app: Any, topic: str, messages: Sequence[Message], batch_bytes: int = 0) -> None:
    """Send ``messages`` to ``topic`` as record batches, each to the partition Faust's own send
    would choose (the producer's partitioner on the key), in order per partition; returns once
    the broker has them all and raises if it did not take one. What Faust's ``Topic.send``
    costs per message (about 100 us, as for a changelog record) was most of the join's time
    with its prediction log: one message per outcome. Without a started aiokafka producer (a
    unit test's app), one Faust send each."""
    if not messages:
        return
    producer = getattr(app.producer, "_producer", None)
    if producer is None:
        channel = app.topic(topic, key_type=bytes, value_type=bytes)
        futures = [await channel.send(key=k, value=v, timestamp=t) for k, v, t in messages]
        await asyncio.gather(*futures)
        return
    await producer.partitions_for(topic)  # the topic's metadata, for the partitioner
    groups: dict[int, list[Record]] = {}
    for key, value, ts in messages:
        partition = producer._partition(topic, None, key, value, key, value)
        groups.setdefault(partition, []).append(
            (key, value, None if ts is None else int(ts * 1000))
        )
    _check_sizes(topic, groups, producer._max_request_size)
    sent: list[tuple[asyncio.Future[Any], int]] = []
    try:
        for partition, records in groups.items():
            await _send(producer, TP(topic, partition), records, sent, batch_bytes)
        results = await asyncio.gather(*(f for f, _ in sent), return_exceptions=True)
    except BaseException:  # a send refused, or cancelled (a stop, a rebalance)
        for future, _ in sent:
            future.add_done_callback(_count_failure)
        raise
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]


def _check_sizes(topic: str, groups: Mapping[int, Sequence[Item | Record]], limit: int) -> None:
    """What aiokafka's own send refuses, refused before any record of the write is sent."""
    for items in groups.values():
        for key, value, *_ in items:
            if value is not None and len(value) > limit // 2:
                size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [])
                if size > limit:
                    raise MessageSizeTooLargeError(
                        f"a {size}-byte changelog record of {topic}: more than the "
                        f"producer's max_request_size ({limit})"
                    )


def _count_failure(future: asyncio.Future[Any]) -> None:
    """A batch of a write that gave up before it was delivered: its outcome retrieved (no
    'exception never retrieved'), a failure counted and logged."""
    if not future.cancelled() and future.exception() is not None:
        COUNTERS["changelog_batch_failed"] += 1
        log.error("a changelog batch failed: %r", future.exception())


def _new_batch(producer: Any, batch_bytes: int) -> Any:
    """An empty record batch of ``batch_bytes`` (0: the producer's own size). Never
    transactional: bulk writes are not used in a transaction (:func:`_bulk_capable`)."""
    if batch_bytes <= 0:
        return producer.create_batch()
    return BatchBuilder(
        batch_bytes, producer._message_accumulator._compression_type, is_transactional=False,
        key_serializer=producer._key_serializer, value_serializer=producer._value_serializer,
    )  # fmt: skip


async def _send(
    producer: Any,
    tp: TP,
    records: Sequence[Item | Record],
    out: list[tuple[asyncio.Future[Any], int]],
    batch_bytes: int = 0,
    last_alone: bool = False,
) -> None:
    """Hand ``records`` to the producer as record batches (closed, so that no other send
    joins them); appends each batch's future and record count to ``out``, in order, as it
    is handed over (so a caller interrupted half-way knows what was). ``last_alone``: the
    last record in a batch of its own."""
    last = None
    if last_alone and len(records) > 1:
        records, last = records[:-1], records[-1:]
    batch, count = _new_batch(producer, batch_bytes), 0
    for key, value, *stamp in records:
        timestamp = stamp[0] if stamp else None
        if batch.append(key=key, value=value, timestamp=timestamp) is None:
            out.append((await _submit(producer, tp, batch), count))
            batch, count = _new_batch(producer, batch_bytes), 0
            # The first record of a batch always fits, whatever the batch size.
            batch.append(key=key, value=value, timestamp=timestamp)
        count += 1
    if count:
        out.append((await _submit(producer, tp, batch), count))
    if last:
        await _send(producer, tp, last, out, batch_bytes)


async def _submit(producer: Any, tp: TP, batch: Any) -> asyncio.Future[Any]:
    batch.close()
    future: asyncio.Future[Any] = await producer.send_batch(batch, tp.topic, partition=tp.partition)
    return future


def _one_by_one(table: Any, partition: int, items: Sequence[Item]) -> None:
    context = PartitionContext(table.changelog_topic.get_topic_name())
    context.enter(partition)
    for key, value in items:
        if value is None:
            if key in table:
                del table[key]
        else:
            table[key] = value
