"""Table writes in bulk (agents.faust_compat.bulk_writes) against a real broker and real
RocksDB stores: the changelog holds what Faust's own key-by-key writes put there."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import faust
import pytest
from confluent_kafka import Consumer, TopicPartition

from agents.faust_compat import bulk_writes, direct_reads
from runtime.topics import ensure_topics

ITEMS: list[tuple[bytes, bytes | None]] = [
    (b"a", b"1"),
    (b"b", b"2"),
    (b"a", b"3"),  # a key written twice in one batch: both records, in order
    (b"b", None),  # a delete of a key the store has: a tombstone
    (b"never", None),  # a delete of a key it never had: nothing
    (b"c", b"x" * 3000),
    (b"d", b"4"),
    (b"d", None),  # written and deleted in one batch: a tombstone (the store had it)
    (b"d", None),  # deleted again: nothing
]
EXPECTED = [(b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (b"b", None), (b"c", b"x" * 3000),
            (b"d", b"4"), (b"d", None)]  # fmt: skip
"""What Faust's key-by-key writes send: a delete only of a key the store has."""
EXPECTED_BULK = [(b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (b"b", None), (b"never", None),
                 (b"c", b"x" * 3000), (b"d", b"4"), (b"d", None), (b"d", None)]  # fmt: skip
"""What bulk writes send: every delete (their store can be behind their changelog)."""


def changelog(
    bootstrap: str, topic: str, partition: int, group: str, want: int
) -> list[tuple[Any, Any]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})  # fmt: skip
    consumer.assign([TopicPartition(topic, partition, 0)])
    out: list[tuple[Any, Any]] = []
    try:
        for _ in range(100):
            for m in consumer.consume(100, timeout=0.5):
                if m.error() is None:
                    out.append((m.key(), m.value()))
            if len(out) >= want:
                break
    finally:
        consumer.close()
    return out


@pytest.mark.parametrize("batch_bytes", [16384, 150, 1])
def test_bulk_writes_leave_the_changelog_faust_writes(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, batch_bytes: int
) -> None:
    """Partition 0 is written by Faust key by key, partition 1 in bulk: the same records
    (and a tombstone for each delete), the same store contents, and the persisted offset at
    the last record (with all records in one batch, a few per batch, and one per batch as
    the embedded broker's restore tests use)."""
    app_id = f"{unique_prefix}-bulk"
    app = faust.App(app_id, broker=f"kafka://{kafka_bootstrap}", store="rocksdb://",
                    datadir=str(tmp_path), autodiscover=False,
                    producer_max_batch_size=batch_bytes)  # fmt: skip
    table: Any = app.Table("state", key_type=bytes, value_type=bytes, partitions=2,
                           options={"driver": "rocksdict"})  # fmt: skip
    topic = table.changelog_topic.get_topic_name()
    ensure_topics(kafka_bootstrap, {topic: 2})

    async def go() -> None:
        await app.producer.start()
        try:
            bulk_writes._one_by_one(table, 0, ITEMS)  # Faust's own way
            await app.producer.flush()
            assert bulk_writes._bulk_capable(table)  # not Faust's way again
            await bulk_writes.write(table, {1: ITEMS})  # returns once delivered
        finally:
            await app.producer.stop()

    asyncio.run(go())
    faust_way = changelog(kafka_bootstrap, topic, 0, f"{unique_prefix}-g0", len(EXPECTED))
    bulk_way = changelog(kafka_bootstrap, topic, 1, f"{unique_prefix}-g1", len(EXPECTED_BULK))
    assert faust_way == EXPECTED
    assert bulk_way == EXPECTED_BULK
    assert [r for r in bulk_way if r[1] is not None] == [r for r in faust_way if r[1] is not None]
    store = table.data
    for partition in (0, 1):
        db = store._db_for_partition(partition)
        assert [db.get(k) for k in (b"a", b"b", b"c", b"d", b"never")] == [
            b"3", None, b"x" * 3000, None, None]  # fmt: skip
    tp = faust.types.TP(topic, 1)
    assert store.persisted_offset(tp) == len(EXPECTED_BULK) - 1
    # Reads straight from a partition's RocksDB answer what Faust's table.get answers.
    assert direct_reads.direct_capable(table)
    for partition in (0, 1):
        for key in (b"a", b"b", b"c", b"d", b"never"):
            faust_read = direct_reads.read(table, key, partition, direct=False)
            assert direct_reads.read(table, key, partition, direct=True) == faust_read
            assert faust_read == {b"a": b"3", b"c": b"x" * 3000}.get(key)
        # Scans of a partition's RocksDB (the alert notifier's at a takeover, and to prune).
        every = direct_reads.scan_keys(table, partition, lambda value: True, direct=True)
        assert sorted(every or []) == [b"a", b"c"]
        assert direct_reads.scan_keys(table, partition, b"3".__eq__, direct=True) == [b"a"]
        assert direct_reads.scan(table, partition, b"xx", direct=True) == [b"x" * 3000]
    assert direct_reads.scan_keys(table, 7, bool, direct=True) is None  # no such store open


@pytest.mark.parametrize(("batch_bytes", "last_alone"), [(0, False), (1, False), (0, True)])
def test_the_changelog_has_its_own_batch_size(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, batch_bytes: int, last_alone: bool
) -> None:
    """With the producer at 16 KiB, a changelog batch size of 1 sends one record per batch;
    0 keeps the producer's size: all nine records in one batch; the last record alone sends
    eight and one (what the embedded broker's restore tests need). The broker's end offset
    counts them all either way on Kafka; on the embedded broker only a last batch of one
    record makes it so."""
    app = faust.App(f"{unique_prefix}-size", broker=f"kafka://{kafka_bootstrap}",
                    store="rocksdb://", datadir=str(tmp_path), autodiscover=False,
                    producer_max_batch_size=16384)  # fmt: skip
    table: Any = app.Table("state", key_type=bytes, value_type=bytes, partitions=1,
                           options={"driver": "rocksdict"})  # fmt: skip
    topic = table.changelog_topic.get_topic_name()
    ensure_topics(kafka_bootstrap, {topic: 1})
    sent: list[tuple[asyncio.Future[Any], int]] = []

    async def go() -> None:
        await app.producer.start()
        try:
            producer = app.producer._producer  # type: ignore[attr-defined]
            tp = faust.types.TP(topic, 0)
            await bulk_writes._send(producer, tp, ITEMS, sent, batch_bytes, last_alone)
            await asyncio.gather(*(future for future, _ in sent))
        finally:
            await app.producer.stop()

    asyncio.run(go())
    expected = {(0, False): [len(ITEMS)], (1, False): [1] * len(ITEMS),
                (0, True): [len(ITEMS) - 1, 1]}  # fmt: skip
    assert [n for _, n in sent] == expected[batch_bytes, last_alone]
    assert len(changelog(kafka_bootstrap, topic, 0, f"{unique_prefix}-gs", len(ITEMS))) == len(
        ITEMS
    )
    if batch_bytes == 1 or last_alone:
        consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"{topic}-wm"})
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        finally:
            consumer.close()
        assert high == len(ITEMS)
