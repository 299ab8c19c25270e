"""The offset-bookkeeping fixes of agents.faust_compat, on Faust's real consumer class."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP
from intervaltree import IntervalTree  # type: ignore[import-untyped]

from agents import faust_compat
from agents.faust_compat.guards import HeadGuard


class FakeConsumer:
    """The attributes Faust's ``Consumer._new_offset`` and ``ack`` read."""

    def __init__(self, committed: int | None, acked: list[int]) -> None:
        self.tp = TP("join-input", 0)
        self._acked: dict[Any, list[int]] = defaultdict(list, {self.tp: list(acked)})
        self._acked_index: dict[Any, set[int]] = defaultdict(set, {self.tp: set(acked)})
        self._committed_offset: dict[Any, int | None] = defaultdict(
            lambda: None, {self.tp: committed}
        )
        self._gap: dict[Any, IntervalTree] = defaultdict(IntervalTree)
        self.seeks: list[dict[Any, int]] = []
        self.flow = True
        self.app = SimpleNamespace(
            consumer_generation_id=3,
            flow_control=SimpleNamespace(is_active=lambda: self.flow),
        )
        self.n_acked = 0

    async def seek_wait(self, partitions: dict[Any, int]) -> None:
        self.seeks.append(dict(partitions))


def faust_new_offset(consumer: Any, tp: Any) -> int | None:
    from faust.transport.consumer import Consumer

    # the original, unpatched method, kept by each patch as its closure's ``original``
    fn: Any = Consumer._new_offset
    while getattr(fn, "__closure__", None):
        fn = fn.__closure__[0].cell_contents
    return fn(consumer, tp)  # type: ignore[no-any-return]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def install(first_record: int | None) -> list[tuple[str, int, int]]:
    asked: list[tuple[str, int, int]] = []

    async def probe(topic: str, partition: int, offset: int) -> int | None:
        asked.append((topic, partition, offset))
        return first_record

    guard = faust_compat.guards.install(probe)
    guard.gaps.clear()
    return asked


def test_contiguous_acks_commit_as_faust_does() -> None:
    install(None)
    c = FakeConsumer(committed=10, acked=[10, 11, 12])
    from faust.transport.consumer import Consumer

    assert Consumer._new_offset(c, c.tp) == 13  # type: ignore[arg-type]


def test_one_dropped_message_at_the_head_is_read_again_not_committed_past() -> None:
    async def main() -> None:
        asked = install(first_record=10)  # a record exists at the committed offset
        c = FakeConsumer(committed=10, acked=[11, 12])
        from faust.transport.consumer import Consumer

        # Faust's own logic would commit 13 here, skipping offset 10 for good.
        assert faust_new_offset(FakeConsumer(committed=10, acked=[11, 12]), c.tp) == 13
        assert Consumer._new_offset(c, c.tp) is None  # type: ignore[arg-type]
        await asyncio.sleep(0.01)  # the probe and the seek run in the background
        assert asked == [("join-input", 0, 10)]
        assert c.seeks == [{c.tp: 10}]
        assert Consumer._new_offset(c, c.tp) is None  # type: ignore[arg-type]  # still held
        # read again: offset 10 is processed and acked; the commit moves on
        c._acked[c.tp] = [10, 11, 12]
        assert Consumer._new_offset(c, c.tp) == 13  # type: ignore[arg-type]
        assert faust_compat.guards.GUARD is not None and not faust_compat.guards.GUARD.gaps

    run(main())


def test_transaction_markers_at_the_head_are_committed_past() -> None:
    async def main() -> None:
        install(first_record=12)  # offsets 10 and 11 hold no record
        c = FakeConsumer(committed=10, acked=[12, 13])
        from faust.transport.consumer import Consumer

        assert Consumer._new_offset(c, c.tp) is None  # type: ignore[arg-type]  # asks first
        await asyncio.sleep(0.01)
        assert c.seeks == []
        assert Consumer._new_offset(c, c.tp) == 14  # type: ignore[arg-type]

    run(main())


def test_a_head_faust_took_for_a_longer_gap_is_asked_of_the_broker() -> None:
    async def main() -> None:
        asked = install(first_record=10)  # records at 10..13: dropped, not markers
        c = FakeConsumer(committed=10, acked=[14, 15])
        c._gap[c.tp].addi(10, 14)  # recorded around a seek
        from faust.transport.consumer import Consumer

        unguarded = FakeConsumer(committed=10, acked=[14, 15])
        unguarded._gap[c.tp].addi(10, 14)
        assert faust_new_offset(unguarded, c.tp) == 16  # Faust alone: past 10..13 for good
        assert Consumer._new_offset(c, c.tp) is None  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        assert asked == [("join-input", 0, 10)] and c.seeks == [{c.tp: 10}]

    run(main())


def test_markers_faust_recorded_too_are_committed_past_as_faust_would() -> None:
    """The broker says a longer recorded gap holds markers: the commit then moves past them
    to where Faust's own ends up. Faust records a jump 11 -> 15 as 12..15, the read offset
    included, and so commits in two steps (16, then 19); offset 15 was acked, so it is no
    gap here, and the commit takes one. The guard's own interval is merged into Faust's:
    kept apart, the offsets of both counted as acked twice, and the commit crept one offset
    per commit interval."""

    def commits(c: FakeConsumer, new_offset: Any) -> list[int | None]:
        out = []
        for _ in range(3):
            offset = new_offset(c, c.tp)
            out.append(offset)
            if offset is not None:
                c._committed_offset[c.tp] = offset
        return out

    def consumer() -> FakeConsumer:
        c = FakeConsumer(committed=12, acked=[15, 16, 17, 18])
        c._gap[c.tp].addi(12, 16)  # as Faust's _add_gap records a jump from 11 to 15
        return c

    async def main() -> None:
        from faust.transport.consumer import Consumer

        asked = install(first_record=None)
        c = consumer()
        assert Consumer._new_offset(c, c.tp) is None  # type: ignore[arg-type]  # asks first
        await asyncio.sleep(0.01)
        assert asked == [("join-input", 0, 12)]
        assert commits(consumer(), faust_new_offset) == [16, 19, None]
        assert commits(c, Consumer._new_offset) == [19, None, None]
        assert c._committed_offset[c.tp] == 19

    run(main())


def test_a_failing_probe_holds_the_commit_and_is_tried_again() -> None:
    calls = []

    async def probe(topic: str, partition: int, offset: int) -> int | None:
        calls.append(offset)
        raise ConnectionError("broker away")

    async def main() -> None:
        faust_compat.guards.install(probe).gaps.clear()
        c = FakeConsumer(committed=5, acked=[7])
        from faust.transport.consumer import Consumer

        for _ in range(2):
            assert Consumer._new_offset(c, c.tp) is None  # type: ignore[arg-type]
            await asyncio.sleep(0.01)
        assert calls == [5, 5] and c.seeks == []

    run(main())


def test_a_second_seek_waits_and_stalls_are_reported() -> None:
    now = [0.0]
    guard = HeadGuard(probe=lambda *a: asyncio.sleep(0, 3), clock=lambda: now[0])

    async def main() -> None:
        c = FakeConsumer(committed=3, acked=[5])
        assert not guard.allow(c, c.tp, 3, 5)
        await asyncio.sleep(0.01)  # the probe says: a record at 3 was dropped -> seek
        assert c.seeks == [{c.tp: 3}]
        now[0] = 1.0
        assert not guard.allow(c, c.tp, 3, 5)
        await asyncio.sleep(0.01)
        assert len(c.seeks) == 1  # not again within SEEK_RETRY_SECONDS
        now[0] = 1.0 + faust_compat.guards.SEEK_RETRY_SECONDS
        assert not guard.allow(c, c.tp, 3, 5)
        await asyncio.sleep(0.01)
        assert len(c.seeks) == 2
        assert guard.stalled(older_than=5.0) == {c.tp: (3, 5)}
        assert guard.stalled(older_than=60.0) == {}
        guard.forget({c.tp})  # given up at a rebalance: another worker's to read
        assert guard.stalled(older_than=0.0) == {} and guard.gaps == {}

    run(main())


def test_acks_of_skipped_messages_are_ignored() -> None:
    install(None)
    from faust.transport.consumer import Consumer

    c = FakeConsumer(committed=0, acked=[])
    c.app.topics = SimpleNamespace(acks_enabled_for=lambda topic: True)
    c._unacked_messages = set()  # type: ignore[attr-defined]
    c._n_acked = 0  # type: ignore[attr-defined]
    c._waiting_for_ack = None  # type: ignore[attr-defined]

    class Message(SimpleNamespace):
        __hash__ = object.__hash__  # type: ignore[assignment]

    def message(offset: int) -> Any:
        return Message(
            topic="join-input", partition=0, tp=c.tp, offset=offset, generation_id=3,
            acked=False,
        )  # fmt: skip

    class Stream:
        """What mark_delivered uses of a Faust stream."""

        def __init__(self) -> None:
            self.current_event: Any = None
            self.processors: list[Any] = []

        def add_processor(self, fn: Any) -> None:
            self.processors.append(fn)

        def process(self, msg: Any) -> None:
            self.current_event = SimpleNamespace(message=msg)
            for fn in self.processors:
                fn(msg)

    stream = Stream()
    faust_compat.guards.mark_delivered(stream, "join-input")
    skipped, processed, late = message(0), message(1), message(2)
    stream.process(processed)
    stream.process(late)
    before = faust_compat.counters.COUNTERS["stale_ack_ignored"]
    assert not Consumer.ack(c, skipped)  # type: ignore[arg-type]  # never processed
    assert Consumer.ack(c, processed)  # type: ignore[arg-type]
    c.flow = False  # a batch that finishes while the partitions are being revoked
    assert Consumer.ack(c, late)  # type: ignore[arg-type]
    assert c._acked[c.tp] == [1, 2]
    assert faust_compat.counters.COUNTERS["stale_ack_ignored"] == before + 1


def test_tables_read_from_other_threads_stay_on_the_main_loop(tmp_path: Any) -> None:
    """A metrics scrape or API request (other threads) must not be the first to touch a
    table's store: Faust would bind the table to that thread's loop, and a graceful stop
    would wait forever for tasks that never run there."""
    import threading

    import faust

    app = faust.App("t-bind", broker="kafka://127.0.0.1:1", store="rocksdb://",
                    datadir=str(tmp_path), autodiscover=False)  # fmt: skip
    lazy: Any = app.Table("lazy", key_type=bytes, value_type=bytes)
    bound: Any = app.Table("bound", key_type=bytes, value_type=bytes)
    faust_compat.introspection.bind_to_this_loop(bound)
    main_loop = bound.loop
    seen: dict[str, Any] = {}

    def scrape() -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())  # as the web thread has
        seen["dbs"] = (
            faust_compat.introspection.table_dbs(lazy),
            faust_compat.introspection.table_dbs(bound),
        )
        seen["active"] = faust_compat.introspection.active_partitions(app, lazy)

    t = threading.Thread(target=scrape)
    t.start()
    t.join()
    assert seen == {"dbs": ({}, {}), "active": set()}
    assert lazy._data is None  # the scrape did not create the store (nor pick its loop)
    assert bound.data.loop is main_loop


# ---------------------------------------------------------------------- SourceOrder


class OrderMessage(SimpleNamespace):
    __hash__ = object.__hash__  # type: ignore[assignment]


def order_events(consumer: FakeConsumer, offsets: list[int]) -> list[Any]:
    """Events as the agents get them: each message marked as delivered to processing."""
    out = []
    for offset in offsets:
        message = OrderMessage(tp=consumer.tp, topic=consumer.tp.topic,
                               partition=consumer.tp.partition, offset=offset)  # fmt: skip
        faust_compat.guards._DELIVERED.add(message)
        out.append(SimpleNamespace(message=message))
    return out


def source_order(first_record: int | None) -> tuple[faust_compat.guards.SourceOrder, list[int]]:
    asked: list[int] = []

    async def probe(topic: str, partition: int, offset: int) -> int | None:
        asked.append(offset)
        return first_record

    return faust_compat.guards.SourceOrder(probe, clock=lambda: 0.0), asked


def admitted(
    order: faust_compat.guards.SourceOrder, consumer: FakeConsumer, offsets: list[int]
) -> list[int]:
    async def go() -> list[int]:
        events = order_events(consumer, offsets)
        out = [e.message.offset for e in await order.admit(consumer, events)]
        await asyncio.sleep(0)  # let a seek back run
        for e in events:  # what was held is not marked: its ack is ignored
            assert (e.message.offset in out) == (e.message in faust_compat.guards._DELIVERED)
        return out

    result: list[int] = run(go())
    return result


def test_messages_in_order_are_admitted_from_the_committed_offset() -> None:
    consumer = FakeConsumer(committed=10, acked=[])
    order, asked = source_order(first_record=10)
    assert admitted(order, consumer, [10, 11, 12]) == [10, 11, 12]
    assert admitted(order, consumer, [13, 14]) == [13, 14]
    assert asked == [] and consumer.seeks == []


def test_a_skipped_message_holds_the_partition_and_it_is_read_again_from_there() -> None:
    # Faust dropped 13 and 14 (fetched, never delivered): 15 and later must wait, or the offset
    # guards, which keep the highest offset applied, would refuse 13 and 14 when they come back.
    consumer = FakeConsumer(committed=10, acked=[])
    order, asked = source_order(first_record=13)
    before = faust_compat.counters.COUNTERS["order_refetch"]
    assert admitted(order, consumer, [10, 11, 12, 15, 16]) == [10, 11, 12]
    assert asked == [13] and consumer.seeks == [{consumer.tp: 13}]
    # More of the same fetch arrives before the seek takes effect: held, no new probe or seek.
    assert admitted(order, consumer, [17, 18]) == []
    assert asked == [13] and len(consumer.seeks) == 1
    assert faust_compat.counters.COUNTERS["order_refetch"] == before + 1
    # Read again from 13: everything in order.
    assert admitted(order, consumer, [13, 14, 15, 16, 17, 18]) == [13, 14, 15, 16, 17, 18]
    assert not order.held


def test_a_held_message_is_not_waited_for_by_a_rebalance() -> None:
    """Faust's rebalance waits until every message it counts unacked is acked before it
    revokes partitions (``stream_wait_empty``); a held one never is, so it must not count:
    a partition held at a gap when a rebalance began kept the worker rebalancing for good."""
    consumer = FakeConsumer(committed=10, acked=[])
    order, _ = source_order(first_record=13)

    async def go() -> tuple[list[int], list[int]]:
        events = order_events(consumer, [10, 11, 12, 15, 16])
        unacked = {e.message for e in events}  # the stream counts each one it hands over
        consumer._unacked_messages = unacked  # type: ignore[attr-defined]
        admitted = [e.message.offset for e in await order.admit(consumer, events)]
        await asyncio.sleep(0)
        return admitted, sorted(m.offset for m in unacked)

    admitted_offsets, still_unacked = run(go())
    assert admitted_offsets == [10, 11, 12]
    assert still_unacked == [10, 11, 12]  # in flight until processed and acked; 15, 16 not


def test_a_missing_head_after_an_assignment_is_read_again() -> None:
    consumer = FakeConsumer(committed=100, acked=[])
    order, asked = source_order(first_record=100)
    assert admitted(order, consumer, [104, 105]) == []
    assert asked == [100] and consumer.seeks == [{consumer.tp: 100}]
    assert admitted(order, consumer, [100, 101]) == [100, 101]


def test_offsets_without_records_are_jumped_over() -> None:
    # Transaction markers take offsets that are never delivered: Faust records the gaps it
    # reads over, and where it did not (at the head), the broker says there is nothing there.
    consumer = FakeConsumer(committed=10, acked=[])
    consumer._gap[consumer.tp].addi(12, 13)  # one offset read over: a commit marker
    order, asked = source_order(first_record=None)
    assert admitted(order, consumer, [10, 11, 13, 14]) == [10, 11, 13, 14]
    assert asked == []  # Faust's gap list settles a single offset
    assert admitted(order, consumer, [18]) == [18]
    assert asked == [15] and consumer.seeks == []


def test_a_longer_jump_is_asked_of_the_broker_whatever_faust_recorded() -> None:
    """Faust's gap list also records jumps over records dropped around a seek: trusted, the
    records were skipped for good (a failover run lost ~9 predictions of the days the killed
    worker was processing)."""
    consumer = FakeConsumer(committed=10, acked=[])
    consumer._gap[consumer.tp].addi(12, 20)
    order, asked = source_order(first_record=12)
    assert admitted(order, consumer, [10, 11, 20, 21]) == [10, 11]
    assert asked == [12] and consumer.seeks == [{consumer.tp: 12}]
    assert admitted(order, consumer, list(range(12, 22))) == list(range(12, 22))


def test_a_partition_of_markers_is_asked_until_it_shows_itself_transactional() -> None:
    """Interleaved transactional producers leave jumps of two markers and more: each asked
    of the broker (and let through) until MARKER_STREAK in a row said markers; then Faust's
    list settles them, so batches do not wait for a probe at every commit marker."""
    consumer = FakeConsumer(committed=0, acked=[])
    order, asked = source_order(first_record=None)
    offsets, at = [0], 0
    for _ in range(faust_compat.guards.MARKER_STREAK + 2):
        consumer._gap[consumer.tp].addi(at + 1, at + 3)  # two markers after each record
        at += 3
        offsets.append(at)
    assert admitted(order, consumer, offsets) == offsets
    assert asked == [1, 4, 7][: faust_compat.guards.MARKER_STREAK]
    order.reset()  # a new assignment: asked again
    consumer._committed_offset[consumer.tp] = at
    consumer._gap[consumer.tp].addi(at + 1, at + 3)
    assert admitted(order, consumer, [at, at + 3]) == [at, at + 3]
    assert asked[-1] == at + 1


def test_a_gap_faust_recorded_over_a_record_the_broker_has_does_not_admit_the_jump() -> None:
    # 13 was skipped (the broker says a record is there) and the partition held; then Faust's
    # gap list comes to cover 13..14 (a gap recorded around a seek): the broker's answer
    # wins, and 15 waits for 13 rather than being processed first.
    consumer = FakeConsumer(committed=10, acked=[])
    order, asked = source_order(first_record=13)
    before = faust_compat.counters.COUNTERS["order_gap_overruled"]
    assert admitted(order, consumer, [10, 11, 12, 15]) == [10, 11, 12]
    consumer._gap[consumer.tp].addi(13, 15)
    assert admitted(order, consumer, [15, 16]) == []
    assert faust_compat.counters.COUNTERS["order_gap_overruled"] == before + 1
    assert asked == [13]
    assert admitted(order, consumer, [13, 14, 15, 16]) == [13, 14, 15, 16]


def test_repeats_below_the_expected_offset_pass_to_the_offset_guards() -> None:
    consumer = FakeConsumer(committed=10, acked=[])
    order, _ = source_order(first_record=10)
    assert admitted(order, consumer, [10, 11, 12]) == [10, 11, 12]
    assert admitted(order, consumer, [11, 12, 13]) == [11, 12, 13]
    assert order.expect[consumer.tp] == 14


def test_after_a_rebalance_reading_starts_at_the_committed_offset_again() -> None:
    consumer = FakeConsumer(committed=10, acked=[])
    order, _ = source_order(first_record=10)
    assert admitted(order, consumer, [10, 11, 12]) == [10, 11, 12]
    order.reset()
    consumer._committed_offset[consumer.tp] = 11  # sought back to the commit: 11 comes again
    assert admitted(order, consumer, [11, 12, 13]) == [11, 12, 13]


def test_a_broker_that_cannot_be_asked_holds_rather_than_skips() -> None:
    consumer = FakeConsumer(committed=10, acked=[])

    async def probe(topic: str, partition: int, offset: int) -> int | None:
        raise OSError("broker away")

    order = faust_compat.guards.SourceOrder(probe, clock=lambda: 0.0)
    assert admitted(order, consumer, [12]) == []
    assert consumer.seeks == [{consumer.tp: 10}]


def test_held_messages_acks_are_ignored_by_the_patched_consumer() -> None:
    from faust.transport.consumer import Consumer

    install(first_record=None)
    consumer = FakeConsumer(committed=10, acked=[])
    consumer.app.topics = SimpleNamespace(acks_enabled_for=lambda topic: True)
    order, _ = source_order(first_record=10)
    events = order_events(consumer, [12])
    assert run(order.admit(consumer, events)) == []
    message = events[0].message
    message.acked = False
    assert Consumer.ack(consumer, message) is False  # type: ignore[arg-type]
    assert consumer._acked[consumer.tp] == []


def test_a_seek_that_brought_nothing_back_is_retried() -> None:
    # Records fetched before a seek can move Faust's read offset past the missing one again;
    # then nothing arrives to notice, as everything after it is held.
    consumer = FakeConsumer(committed=10, acked=[])
    now = [0.0]

    async def probe(topic: str, partition: int, offset: int) -> int | None:
        return 10

    order = faust_compat.guards.SourceOrder(probe, clock=lambda: now[0])
    assert admitted(order, consumer, [12]) == []
    order.retry()  # too soon: no seek started (outside a loop, one would fail)
    assert len(consumer.seeks) == 1
    now[0] = faust_compat.guards.ORDER_RETRY_SECONDS

    async def retry() -> None:
        order.retry()
        await asyncio.sleep(0)

    run(retry())
    assert consumer.seeks == [{consumer.tp: 10}, {consumer.tp: 10}]
    # How long it has been held counts from the first hold, not from the last seek: the
    # watchdog ends a worker held past its stall time (a restart re-reads from the commit).
    now[0] = 75.0
    run(retry())
    assert order.stalled(older_than=60.0) == {consumer.tp: (10, 75.0)}
    assert order.stalled(older_than=80.0) == {}
    assert admitted(order, consumer, [10]) == [10] and not order.held
    assert order.stalled(older_than=0.0) == {}


def test_a_batch_cancelled_mid_way_is_not_acked() -> None:
    """Faust's take_events acks a batch's events when it is closed, processed or not: a batch
    cancelled by a stop must stay unacked, or the final commit moves past it."""
    from faust.transport.consumer import Consumer

    install(first_record=None)
    consumer = FakeConsumer(committed=0, acked=[])
    consumer.app.topics = SimpleNamespace(acks_enabled_for=lambda topic: True)
    consumer._unacked_messages = set()  # type: ignore[attr-defined]
    consumer._waiting_for_ack = None  # type: ignore[attr-defined]
    consumer._n_acked = 0  # type: ignore[attr-defined]
    batches = [order_events(consumer, [0, 1]), order_events(consumer, [2, 3])]
    for batch in batches:
        for event in batch:
            event.message.acked = False

    def faust_acks(event: Any) -> None:  # what Faust does when a batch closes, processed or not
        Consumer.ack(consumer, event.message)  # type: ignore[arg-type]

    stream = FakeStream(consumer, batches, on_close=faust_acks)
    # In order by construction here: no SourceOrder.
    run_batches(stream, None, asyncio.CancelledError)  # a stop while the second batch runs
    assert consumer._acked[consumer.tp] == [0, 1]  # 2 and 3 will be read again


class FakeStream:
    """What :func:`faust_compat.batches.process_batches` uses of a Faust stream: its batches."""

    def __init__(
        self, consumer: FakeConsumer, batches: list[list[Any]], on_close: Any = None
    ) -> None:
        self.app = SimpleNamespace(consumer=consumer, producer=SlowProducer([]))
        self.batches = batches
        self.on_close = on_close

    def add_processor(self, fn: Any) -> None:
        pass

    async def take_events(self, size: int, within: float) -> Any:
        for batch in self.batches:
            try:
                yield batch
            finally:
                for event in batch if self.on_close is not None else ():
                    self.on_close(event)


def run_batches(
    stream: FakeStream, order: faust_compat.guards.SourceOrder | None, failure: type[BaseException]
) -> None:
    """Process ``stream``'s batches under ``order``; the batch at offset 2 fails."""

    async def process(batch: list[Any]) -> None:
        if batch[0].message.offset == 2:
            raise failure

    async def go() -> None:
        with contextlib.suppress(failure):
            await faust_compat.batches.process_batches(stream, "join-input", 10, 0.1, process)
        await asyncio.sleep(0)

    saved, faust_compat.guards.ORDER = faust_compat.guards.ORDER, order
    try:
        run(go())
    finally:
        faust_compat.guards.ORDER = saved


class SlowBuffer:
    """Faust's ProducerBuffer as a slow broker makes it: one record sent every 0.3 s."""

    def __init__(self, records: list[str]) -> None:
        self.records = records
        self.message_sent = asyncio.Event()

    @property
    def size(self) -> int:
        return len(self.records)

    async def send_slowly(self, sent: list[str]) -> None:
        while self.records:
            await asyncio.sleep(0.3)
            sent.append(self.records.pop(0))
            self.message_sent.set()


class SlowProducer:
    def __init__(self, records: list[str]) -> None:
        self.buffer = SlowBuffer(records)
        self.flushed = 0

    async def flush(self) -> None:
        self.flushed += 1


def test_a_batch_is_acked_only_after_its_changelog_records_are_sent() -> None:
    """Faust's buffer flush gives up after 0.1 s without a send; the batch must wait for
    every record (its table changelogs) before its acks, or a commit can pass them."""
    producer = SlowProducer(["changelog-1", "changelog-2"])
    sent: list[str] = []
    acked_with: list[list[str]] = []

    class Stream:
        app = SimpleNamespace(consumer=None, producer=producer)

        def add_processor(self, fn: Any) -> None:
            pass

        async def take_events(self, size: int, within: float) -> Any:
            yield [SimpleNamespace(message=object())]
            acked_with.append(list(sent))  # Faust acks the batch when the loop comes back

    async def go() -> None:
        task = asyncio.ensure_future(producer.buffer.send_slowly(sent))

        async def process(batch: list[Any]) -> None:
            pass

        await faust_compat.batches.process_batches(Stream(), "drift-state", 10, 0.1, process)
        await task

    order, faust_compat.guards.ORDER = faust_compat.guards.ORDER, None
    before = faust_compat.counters.COUNTERS["slow_changelog_drained"]
    try:
        run(go())
    finally:
        faust_compat.guards.ORDER = order
    assert acked_with == [["changelog-1", "changelog-2"]]
    assert producer.flushed == 1
    assert faust_compat.counters.COUNTERS["slow_changelog_drained"] == before + 1


def test_the_retry_task_outlives_an_error_in_one_round() -> None:
    """A held partition is re-read by ``retry_forever``; if one round raised, the task died
    and the partition stayed held for good. Now the error is logged and the rounds go on."""
    order, _ = source_order(first_record=None)
    calls: list[int] = []

    def flaky_retry() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("one bad round")

    order.retry = flaky_retry  # type: ignore[method-assign]

    async def main() -> None:
        task = asyncio.ensure_future(order.retry_forever(every=0.001))
        for _ in range(200):
            await asyncio.sleep(0.001)
            if len(calls) >= 3:
                break
        assert not task.done(), "the retry task died"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    run(main())
    assert len(calls) >= 3


def order_with_start(
    first_record: int | None, start: int | Exception | list[int]
) -> tuple[faust_compat.guards.SourceOrder, list[int]]:
    order, _asked = source_order(first_record)
    looked: list[int] = []

    async def lookup(topic: str, partition: int) -> int:
        looked.append(partition)
        if isinstance(start, Exception):
            raise start
        return start[0] if isinstance(start, list) else start

    order.start = lookup
    return order, looked


def test_an_unknown_commit_is_asked_of_the_broker_and_a_lost_head_read_again() -> None:
    # Right after an assignment Faust may not know the committed offset (None): a partition
    # never committed whose first records Faust dropped must not start at the first one read.
    consumer = FakeConsumer(committed=None, acked=[])
    committed = [0]
    order, looked = order_with_start(first_record=0, start=committed)
    assert admitted(order, consumer, [5, 6]) == []
    assert looked == [0] and consumer.seeks == [{consumer.tp: 0}]
    assert consumer._committed_offset[consumer.tp] == 0, "Faust's commit bookkeeping told"
    assert admitted(order, consumer, [0, 1, 2, 3, 4, 5, 6]) == [0, 1, 2, 3, 4, 5, 6]
    assert looked == [0], "asked once per assignment"
    order.reset()  # a rebalance: asked again, where the group has committed by now
    consumer._committed_offset[consumer.tp] = None  # unknown to Faust again
    committed[0] = 7
    assert admitted(order, consumer, [6, 7]) == [6, 7] and looked == [0, 0]
    assert order.expect[consumer.tp] == 8


def test_a_start_the_broker_told_once_is_not_asked_again_in_the_generation() -> None:
    # The undelivered check asked first (a partition's lost head): the first admission reads
    # the same answer, not another throw-away client's.
    consumer = FakeConsumer(committed=None, acked=[])
    order, looked = order_with_start(first_record=4, start=[4])
    assert run(order.group_start(consumer.tp)) == 4 and order.starts == {consumer.tp: 4}
    assert admitted(order, consumer, [4, 5]) == [4, 5]
    assert looked == [0], "the broker was asked once"
    order.reset()
    assert order.starts == {}
    assert run(order.group_start(consumer.tp)) == 4 and looked == [0, 0]


def test_the_consumer_s_commit_goes_before_a_start_the_broker_told() -> None:
    # A commit the consumer knows (its own, made since) is newer than any answer kept.
    consumer = FakeConsumer(committed=10, acked=[])
    order, looked = order_with_start(first_record=4, start=[4])  # records from 4 on
    order.starts[consumer.tp] = 4
    assert admitted(order, consumer, [10, 11]) == [10, 11] and looked == []
    assert consumer.seeks == []


def test_askers_of_one_start_at_once_share_the_broker_s_answer() -> None:
    """The undelivered check's lookup is under way when the partition's first records come:
    the admission waits for the same answer (one throw-away client, not two), and after a
    rebalance a new asker asks anew."""
    consumer = FakeConsumer(committed=None, acked=[])
    order, _ = order_with_start(first_record=0, start=0)
    tp = consumer.tp
    asked: list[asyncio.Future[int]] = []

    async def lookup(topic: str, partition: int) -> int:
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        asked.append(answer)
        return await answer

    order.start = lookup

    async def scenario() -> list[int | None]:
        first = asyncio.ensure_future(order.group_start(tp))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(order.group_start(tp))
        await asyncio.sleep(0.01)
        assert len(asked) == 1, "the second asker waits for the first's answer"
        asked[0].set_result(3)
        got = [await first, await second]
        assert order._looking == {}
        order.reset()
        third = asyncio.ensure_future(order.group_start(tp))
        await asyncio.sleep(0.01)
        order.reset()  # a rebalance while it is asked: a new asker does not wait for it
        fourth = asyncio.ensure_future(order.group_start(tp))
        await asyncio.sleep(0.01)
        assert len(asked) == 3
        asked[1].set_result(5)
        asked[2].set_result(6)
        got += [await third, await fourth]
        assert order.starts == {tp: 6} and order._looking == {}
        return got

    assert run(scenario()) == [3, 3, 5, 6]


def test_a_commit_the_broker_knows_is_where_processing_starts() -> None:
    # The failover case: the survivor's consumer does not know the dead worker's commit 2520.
    consumer = FakeConsumer(committed=None, acked=[])
    order, _looked = order_with_start(first_record=2520, start=2520)
    assert admitted(order, consumer, [2519, 2520, 2521]) == [2519, 2520, 2521]
    assert consumer.seeks == [] and order.expect[consumer.tp] == 2522


def test_a_broker_that_cannot_say_where_to_start_holds_the_partition() -> None:
    consumer = FakeConsumer(committed=None, acked=[])
    order, _looked = order_with_start(first_record=0, start=OSError("broker away"))
    assert admitted(order, consumer, [5, 6]) == []
    assert consumer.seeks == [{consumer.tp: 5}] and consumer.tp in order.held


def test_drained_partitions_are_guarded_ones_with_nothing_queued_or_held() -> None:
    class Queue:
        def __init__(self, n: int) -> None:
            self.n = n

        def qsize(self) -> int:
            return self.n

    channels = [
        SimpleNamespace(topics=("t-predictions",), _queue=Queue(0)),
        SimpleNamespace(topics=("t-outcomes",), _queue=Queue(3)),
        SimpleNamespace(topics=("t-alerts",), _queue=None),  # never iterated: not made here
    ]
    app = SimpleNamespace(topics=SimpleNamespace(_topics=channels))
    p0, p1 = TP("t-predictions", 0), TP("t-predictions", 1)
    o0, a0, x0 = TP("t-outcomes", 0), TP("t-alerts", 0), TP("t-unguarded", 0)
    before = set(faust_compat.guards.GUARDED_TOPICS)
    order = faust_compat.guards.SourceOrder(source_order(None)[0].probe)
    order.held[p1] = faust_compat.guards._Hold(5, 0.0, None, 0.0)
    saved = faust_compat.guards.ORDER
    faust_compat.guards.GUARDED_TOPICS.update({"t-predictions", "t-outcomes", "t-alerts"})
    faust_compat.guards.ORDER = order
    try:
        assert faust_compat.introspection.queued_by_topic(app) == {
            "t-predictions": 0,
            "t-outcomes": 3,
        }
        assert faust_compat.introspection.drained(app, [p0, p1, o0, a0, x0]) == {p0}
    finally:
        faust_compat.guards.ORDER = saved
        faust_compat.guards.GUARDED_TOPICS.clear()
        faust_compat.guards.GUARDED_TOPICS.update(before)


def faust_add_gap(consumer: Any, tp: Any, offset_from: int, offset_to: int) -> None:
    from faust.transport.consumer import Consumer

    patched = Consumer._add_gap  # install() wrapped it: its closure holds the original
    original = patched.__closure__[0].cell_contents  # type: ignore[index]
    assert original.__name__ == "_add_gap"
    run(patched(consumer, tp, offset_from, offset_to))


def test_a_jump_after_a_seek_back_over_offsets_already_read_is_not_a_gap() -> None:
    # Faust read 2520..3419 of which it dropped 3020..3398; SourceOrder sought back to 3020.
    # Records fetched before the seek (3400..3419) arrive next: Faust sees a jump 3020 ->
    # 3400 and would record 3021..3400 as offsets without records, counted as acked later.
    install(first_record=None)
    consumer = FakeConsumer(committed=2520, acked=[])
    tp = consumer.tp
    consumer._read_offset = {tp: 3419}  # type: ignore[attr-defined]
    faust_compat.guards._READ_HIGH.pop(tp, None)
    before = faust_compat.counters.COUNTERS["phantom_gap_ignored"]
    run(faust_compat.guards._seek(consumer, tp, 3020))
    assert consumer.seeks == [{tp: 3020}] and faust_compat.guards._READ_HIGH[tp] == 3419
    faust_add_gap(consumer, tp, 3021, 3400)  # the phantom
    assert not consumer._gap[tp].overlaps(3021, 3420), "offsets already read are not a gap"
    faust_add_gap(consumer, tp, 3421, 3425)  # a real one, past anything read: recorded
    assert consumer._gap[tp].overlaps(3421, 3426)
    faust_add_gap(consumer, tp, 3400, 3450)  # straddling: only the part past 3419
    assert not consumer._gap[tp].overlaps(3400, 3420) and consumer._gap[tp].overlaps(3420, 3451)
    assert faust_compat.counters.COUNTERS["phantom_gap_ignored"] == before + 2
    faust_compat.guards._READ_HIGH.pop(tp, None)


def test_messages_of_a_revoked_partition_are_refused_until_it_is_assigned_again() -> None:
    """A batch gathered before a revocation is handed over after it: its messages belong to
    the partition's new owner (processing them here wrote that owner's state and cached it,
    stale, for when the partition came back)."""
    consumer = FakeConsumer(committed=10, acked=[])
    order, _ = source_order(first_record=10)
    assert admitted(order, consumer, [10, 11]) == [10, 11]
    before = faust_compat.counters.COUNTERS["order_revoked"]
    order.reset(revoked={consumer.tp})
    assert admitted(order, consumer, [12, 13]) == []  # held: never acked, never processed
    assert faust_compat.counters.COUNTERS["order_revoked"] == before + 2
    order.assigned({TP("join-input", 1)})  # another partition: this one stays refused
    assert admitted(order, consumer, [12]) == []
    order.assigned({consumer.tp})  # ours again: reading starts at the committed offset
    consumer._committed_offset[consumer.tp] = 12
    assert admitted(order, consumer, [12, 13]) == [12, 13]


def test_a_revocation_while_a_batch_waits_for_a_probe_refuses_its_messages() -> None:
    consumer = FakeConsumer(committed=10, acked=[])
    order = faust_compat.guards.SourceOrder(lambda *_: never_called(), clock=lambda: 0.0)

    async def start(topic: str, partition: int) -> int:
        order.reset(revoked={consumer.tp})  # the rebalance runs while the broker is asked
        return 10

    consumer._committed_offset[consumer.tp] = None
    order.start = start
    before = faust_compat.counters.COUNTERS["order_superseded"]
    assert admitted(order, consumer, [10, 11]) == []
    assert faust_compat.counters.COUNTERS["order_superseded"] == before + 1


def test_a_rebalance_while_a_batch_waits_for_the_broker_writes_nothing_of_the_old_one() -> None:
    """The partition stays assigned, but reading starts again at the new generation's
    committed offset: what was learned before the rebalance (where to start, a jump's
    verdict) is not written over the reset bookkeeping, and no message of the batch goes
    through (read again)."""
    consumer = FakeConsumer(committed=None, acked=[])
    order = faust_compat.guards.SourceOrder(lambda *_: never_called(), clock=lambda: 0.0)

    async def start(topic: str, partition: int) -> int:
        order.reset()  # not revoked: only a new generation
        return 10

    order.start = start
    events = order_events(consumer, [10, 11])
    assert run(order.admit(consumer, events)) == []
    assert order.expect == {} and consumer._committed_offset.get(consumer.tp) is None
    assert all(e.message in faust_compat.guards._HELD for e in events)

    async def jump(topic: str, partition: int, offset: int) -> int | None:
        order.reset()
        return None  # "no records in between": the verdict of the old generation

    order.start, order.probe = None, jump
    consumer._committed_offset[consumer.tp] = 10
    assert admitted(order, consumer, [10, 15]) == []  # 10 admitted, then the probe at 15
    assert order.expect == {} and order.held == {} and consumer.seeks == []
    assert order._first == {}  # the answer came in the old generation: asked again


def never_called() -> Any:
    raise AssertionError("no probe expected")


def test_a_failed_batch_is_read_again_before_anything_after_it() -> None:
    """The offset guards keep the highest offset applied: had the messages after a failed
    batch gone first, the batch, read again, would have been refused as replays (a crashed
    join agent lost labels so)."""
    consumer = FakeConsumer(committed=10, acked=[])
    order, _ = source_order(first_record=11)
    events = order_events(consumer, [10, 11, 12])
    assert [e.message.offset for e in run(order.admit(consumer, events))] == [10, 11, 12]
    before = faust_compat.counters.COUNTERS["order_rewound"]
    run(rewound(order, consumer, events[1:]))  # 11 and 12 failed
    assert order.expect[consumer.tp] == 11 and consumer.seeks == [{consumer.tp: 11}]
    assert faust_compat.counters.COUNTERS["order_rewound"] == before + 1
    assert admitted(order, consumer, [13, 14]) == []  # the next fetch waits for 11
    assert admitted(order, consumer, [11, 12, 13, 14]) == [11, 12, 13, 14]
    order.reset(revoked={consumer.tp})  # another worker's now: nothing to read again here
    run(rewound(order, consumer, order_events(consumer, [11])))
    assert len(consumer.seeks) == 1


async def rewound(order: faust_compat.guards.SourceOrder, consumer: Any, events: list[Any]) -> None:
    order.rewind(consumer, events)
    await asyncio.sleep(0)  # let the seek back run


def test_process_batches_rewinds_the_order_of_a_batch_that_failed() -> None:
    consumer = FakeConsumer(committed=0, acked=[])
    order, _ = source_order(first_record=2)
    batches = [order_events(consumer, [0, 1]), order_events(consumer, [2, 3])]
    run_batches(FakeStream(consumer, batches), order, ValueError)  # a bug in the second
    assert order.expect[consumer.tp] == 2 and consumer.seeks == [{consumer.tp: 2}]


def test_a_batch_s_partitions_are_in_hand_from_its_take_until_it_is_done_with() -> None:
    """The undelivered check reads :func:`batches.in_hand` per partition: a taken batch's
    partitions are in hand while it is processed, and let go when it is done with, whether
    it was processed or failed."""
    consumer = FakeConsumer(committed=0, acked=[])
    order, _ = source_order(first_record=0)
    seen: list[set[Any]] = []

    async def process(batch: list[Any]) -> None:
        seen.append(faust_compat.batches.in_hand())
        if len(seen) == 2:
            raise ValueError("a bug")

    async def go() -> None:
        stream = FakeStream(consumer, [order_events(consumer, [k, k + 1]) for k in (0, 2, 4)])
        with contextlib.suppress(ValueError):
            await faust_compat.batches.process_batches(stream, "join-input", 10, 0.1, process)

    saved, faust_compat.guards.ORDER = faust_compat.guards.ORDER, order
    try:
        assert faust_compat.batches.in_hand() == set()
        run(go())
    finally:
        faust_compat.guards.ORDER = saved
    assert seen == [{consumer.tp}, {consumer.tp}]  # the second failed: the third never came
    assert faust_compat.batches.in_hand() == set()


def test_a_batch_the_order_guard_is_admitting_is_in_hand_until_it_is_given_up() -> None:
    """While the order guard waits for the broker's word on a batch, its partitions are in
    hand (its messages are in no queue); a stop then lets them go, or the undelivered check
    would never read those partitions again."""
    consumer = FakeConsumer(committed=0, acked=[])
    seen: list[set[Any]] = []

    class WaitingOrder:
        """An order guard asking a broker that does not answer."""

        held: dict[Any, Any] = {}

        async def admit(self, consumer: Any, events: list[Any]) -> list[Any]:
            await asyncio.Event().wait()
            return events

        async def retry_forever(self) -> None:
            await asyncio.Event().wait()

    async def process(batch: list[Any]) -> None:
        raise AssertionError("never admitted")

    async def go() -> None:
        stream = FakeStream(consumer, [order_events(consumer, [0, 1])])
        task = asyncio.ensure_future(
            faust_compat.batches.process_batches(stream, "join-input", 10, 0.1, process)
        )
        for _ in range(10):
            await asyncio.sleep(0)
        seen.append(faust_compat.batches.in_hand())
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        seen.append(faust_compat.batches.in_hand())
        retrying = faust_compat.batches._RETRYING
        if retrying is not None:
            retrying.cancel()

    saved, faust_compat.guards.ORDER = faust_compat.guards.ORDER, WaitingOrder()  # type: ignore[assignment]
    try:
        run(go())
    finally:
        faust_compat.guards.ORDER = saved
    assert seen == [{consumer.tp}, set()]


def test_a_batch_cut_short_by_the_worker_stopping_is_not_rewound() -> None:
    """Stopping, the consumer goes away and the next owner reads from the committed offsets:
    a seek back would only run on a closing consumer."""
    consumer = FakeConsumer(committed=0, acked=[])
    order, _ = source_order(first_record=2)
    stream = FakeStream(consumer, [order_events(consumer, [0, 1]), order_events(consumer, [2, 3])])
    stream.app.should_stop = True
    before = faust_compat.counters.COUNTERS["unfinished_batch"]
    run_batches(stream, order, asyncio.CancelledError)
    assert faust_compat.counters.COUNTERS["unfinished_batch"] == before + 1
    assert order.expect[consumer.tp] == 4 and consumer.seeks == []


def test_offsets_read_again_over_a_gap_faust_recorded_are_not_counted_twice() -> None:
    """Faust dropped records 12..19 (the race) and recorded the jump 11 -> 20 as a gap; the
    partition was held and read again, so 10..25 were all processed and acked. Faust's own
    commit then counts 12..19 twice (acked, and as gap), its run of consecutive offsets stops
    at the first duplicate, and the commit creeps a few offsets per commit interval (CI:
    test_failover's survivor had 1,389 acks pending for 880 records and did not commit what it
    had processed within two minutes). Offsets acked are no gap: the commit moves to 26."""
    install(None)
    from faust.transport.consumer import Consumer

    def consumer() -> FakeConsumer:
        c = FakeConsumer(committed=10, acked=list(range(10, 26)))
        c._gap[c.tp].addi(12, 20)
        c._gap[c.tp].addi(30, 31)  # a marker beyond what is acked: stays
        return c

    unguarded = consumer()
    assert faust_new_offset(unguarded, unguarded.tp) == 13  # Faust alone: the creep
    c = consumer()
    assert Consumer._new_offset(c, c.tp) == 26  # type: ignore[arg-type]
    assert sorted((iv.begin, iv.end) for iv in c._gap[c.tp]) == [(30, 31)]
    assert faust_compat.counters.COUNTERS["gap_over_acked"] >= 8


class FakeConn:
    def __init__(self) -> None:
        self.closed: list[Any] = []

    def close(self, reason: Any = None) -> None:
        self.closed.append(reason)


def test_a_fetch_left_unanswered_is_given_up_and_its_connection_closed() -> None:
    """Only fetches are timed (at FETCH_TIMEOUT_SECONDS, not the client's own request
    timeout); on the timeout the fetch's connection is closed, so the retry is sent on a new
    one, and it is counted. Other requests, and fetches answered in time, pass through."""
    from aiokafka.client import ConnectionGroup
    from aiokafka.errors import RequestTimedOutError
    from aiokafka.protocol.fetch import FetchRequest
    from aiokafka.protocol.metadata import MetadataRequest

    answers: dict[str, float] = {"fetch": 0.0, "other": 0.0}

    class Client:
        def __init__(self) -> None:
            self._conns = {(7, ConnectionGroup.DEFAULT): FakeConn()}

        async def send(self, node_id: Any, request: Any, **kw: Any) -> str:
            kind = "fetch" if isinstance(request, FetchRequest) else "other"
            await asyncio.sleep(answers[kind])
            return f"{kind} answer"

    send = faust_compat.fetch_timeout._timed_fetch(Client.send)
    client = Client()
    fetch = FetchRequest(max_wait_time=1500, min_bytes=1, max_bytes=1 << 20, isolation_level=0,
                         topics=[])  # fmt: skip
    other = MetadataRequest(topics=[])
    before = (
        faust_compat.fetch_timeout.FETCH_TIMEOUT_SECONDS,
        faust_compat.counters.COUNTERS["fetch_unanswered"],
    )
    try:
        faust_compat.fetch_timeout.FETCH_TIMEOUT_SECONDS = 0.05
        assert asyncio.run(send(client, 7, fetch)) == "fetch answer"
        answers["other"] = 0.1  # slower than the fetch timeout, but not a fetch
        assert asyncio.run(send(client, 7, other)) == "other answer"
        answers["fetch"] = 5.0
        with contextlib.suppress(RequestTimedOutError):
            asyncio.run(send(client, 7, fetch))
            raise AssertionError("an unanswered fetch was waited out")
        conn = client._conns[(7, ConnectionGroup.DEFAULT)]
        assert len(conn.closed) == 1
        assert faust_compat.counters.COUNTERS["fetch_unanswered"] == before[1] + 1
        # 0 (None): the client's own timeout only - nothing timed here
        faust_compat.fetch_timeout.FETCH_TIMEOUT_SECONDS = None
        answers["fetch"] = 0.1
        assert asyncio.run(send(client, 7, fetch)) == "fetch answer"
        assert len(conn.closed) == 1
    finally:
        faust_compat.fetch_timeout.FETCH_TIMEOUT_SECONDS = before[0]


def test_stream_buffers_bounded_by_bytes_as_well_as_messages() -> None:
    """A message takes ceil(bytes / (budget / maxsize)) places of an agent's buffer: small
    ones one (bounded by count as before), envelopes by their bytes; Faust's flow control
    reads the places (pressure high at maxsize / 1.25, dropped at maxsize * 0.4)."""

    async def main() -> None:
        from mode.utils.queues import FlowControlEvent

        app = SimpleNamespace(flow_control=FlowControlEvent())
        faust_compat.read_ahead.bound_stream_buffers(app, budget_bytes=10 * 1000)  # 1,000 B a place
        queue = app.FlowControlQueue(maxsize=10, clear_on_resume=False)

        def event(size: int) -> Any:
            return SimpleNamespace(message=SimpleNamespace(value=b"x" * size))

        high: list[str] = []
        for size in (10, 999, 1000, 1001):  # 1 + 1 + 1 + 2 places
            pressed = queue.put_nowait_enhanced(
                event(size), on_pressure_high=lambda: high.append("high"),
                on_pressure_drop=lambda: high.append("drop"),
            )  # fmt: skip
            assert not pressed
        assert (queue.qsize(), queue.messages(), queue.full()) == (5, 4, False)
        queue.put_nowait(event(3500))  # 4 places: 9 of 10, past the pressure mark (8)
        assert queue.qsize() == 9 and not queue.full()
        assert queue.put_nowait_enhanced(
            event(1), on_pressure_high=lambda: high.append("high"),
            on_pressure_drop=lambda: high.append("drop"),
        )  # fmt: skip
        assert high == ["high"] and queue.full() and queue.messages() == 6
        sizes = [len(queue.get_nowait().message.value) for _ in range(5)]
        assert sizes == [10, 999, 1000, 1001, 3500] and queue.qsize() == 1
        assert high == ["high"]  # Faust checks before taking: 5 places were left then
        queue.put_nowait(event(1))
        queue.get_nowait()  # 2 places, at most 4 (10 * 0.4): fetching resumes
        assert high == ["high", "drop"]
        queue.clear()
        assert (queue.qsize(), queue.messages()) == (0, 0)
        assert faust_compat.introspection.queued_by_topic(
            SimpleNamespace(topics=SimpleNamespace(_topics=[
                SimpleNamespace(topics=("t",), _queue=queue)]))
        ) == {"t": 0}  # fmt: skip
        # Without a budget (0) or a bound on messages, Faust's own queues.
        plain = SimpleNamespace(flow_control=FlowControlEvent(), FlowControlQueue=None)
        faust_compat.read_ahead.bound_stream_buffers(plain, budget_bytes=0)
        assert plain.FlowControlQueue is None
        assert not hasattr(app.FlowControlQueue(maxsize=0), "messages")

    asyncio.run(main())


def test_a_table_write_without_a_partition_is_dropped_and_counted(tmp_path: Any) -> None:
    """Outside of any event a write that names no partition has no store to go to: Faust
    would raise and its agent restart to fail again on the same batch; it is logged,
    counted and dropped instead."""
    import faust

    app = faust.App("t-nopart", broker="kafka://127.0.0.1:1", store="rocksdb://",
                    datadir=str(tmp_path), autodiscover=False)  # fmt: skip
    table: Any = app.Table("state", key_type=bytes, value_type=bytes, partitions=2,
                           options={"driver": "rocksdict"})  # fmt: skip
    before = faust_compat.counters.COUNTERS["write_without_partition"]
    run(faust_compat.bulk_writes.write(table, {None: [(b"k", b"v"), (b"j", None)]}))
    assert faust_compat.counters.COUNTERS["write_without_partition"] == before + 2
    assert faust_compat.introspection.table_dbs(table) == {}  # no store was even opened


class FakeKafkaProducer:
    """aiokafka's producer as far as bulk writes use it: real record batches, and a broker
    that takes the first ``delivered`` batches (a partition's log starting at offset 100)
    and fails the rest; with ``answer=False`` it answers none until told."""

    def __init__(
        self, delivered: int, batch_bytes: int = 64, max_request: int = 1 << 20,
        answer: bool = True, refuse_after: int | None = None,
    ) -> None:  # fmt: skip
        from aiokafka.producer.message_accumulator import BatchBuilder

        self._max_request_size = max_request
        self.make = lambda: BatchBuilder(batch_bytes, 0)  # 0: no compression
        self.delivered = delivered
        self.answer = answer
        self.refuse_after = refuse_after
        self.batches: list[Any] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.ends: dict[int, int] = {}

    def create_batch(self) -> Any:
        return self.make()

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        from aiokafka.errors import KafkaTimeoutError

        if self.refuse_after is not None and len(self.batches) >= self.refuse_after:
            raise KafkaTimeoutError()  # what add_batch raises when the queue stays full
        future = asyncio.get_running_loop().create_future()
        if not self.answer:
            pass
        elif len(self.batches) < self.delivered:
            base = self.ends.get(partition, 100)
            self.ends[partition] = base + batch._relative_offset
            future.set_result(SimpleNamespace(offset=base))
        else:
            future.set_exception(ConnectionError("the broker did not take it"))
        self.batches.append(batch)
        self.futures.append(future)
        return asyncio.shield(future)  # as aiokafka's add_batch returns it


def bulk_table(tmp_path: Any, producer: FakeKafkaProducer) -> Any:
    import faust

    app = faust.App("t-bulk", broker="kafka://127.0.0.1:1", store="rocksdb://",
                    datadir=str(tmp_path), autodiscover=False)  # fmt: skip
    table: Any = app.Table("state", key_type=bytes, value_type=bytes, partitions=2,
                           options={"driver": "rocksdict"})  # fmt: skip
    app.producer._producer = producer  # type: ignore[attr-defined]  # what a started one holds
    return table


def test_a_changelog_batch_the_broker_did_not_take_fails_the_write_and_stores_nothing(
    tmp_path: Any,
) -> None:
    """The agent batch whose state it is fails (and is read again): none of the values go
    into the store, so it never holds what the changelog may not. Every batch is closed when
    sent (no other send can join it), and all of them are waited for and counted."""
    producer = FakeKafkaProducer(delivered=1)
    table = bulk_table(tmp_path, producer)
    items = [(f"k{i}".encode(), b"v" * 40) for i in range(3)]  # one record per 64-byte batch
    before = faust_compat.counters.COUNTERS["changelog_batch_failed"]
    with pytest.raises(ConnectionError):
        run(faust_compat.bulk_writes.write(table, {1: items}))
    assert faust_compat.counters.COUNTERS["changelog_batch_failed"] == before + 2
    assert len(producer.batches) == 3 and all(b._closed for b in producer.batches)
    db = table.data._db_for_partition(1)
    assert [db.get(k) for k, _ in items] == [None, None, None]


def test_delivered_batches_are_stored_with_the_last_offset_persisted(tmp_path: Any) -> None:
    """The offset persisted is the last record's, however the records were batched; every
    delete is sent, also of a key the store does not have (it may be in the changelog)."""
    for batch_bytes in (64, 120, 1 << 20):
        producer = FakeKafkaProducer(delivered=10, batch_bytes=batch_bytes)
        table = bulk_table(tmp_path / str(batch_bytes), producer)
        items = [(b"a", b"x" * 40), (b"a", None), (b"b", b"y"), (b"c", b"z"), (b"never", None)]
        run(faust_compat.bulk_writes.write(table, {0: items}))
        db = table.data._db_for_partition(0)
        assert [db.get(k) for k in (b"a", b"b", b"c", b"never")] == [None, b"y", b"z", None]
        assert sum(b._relative_offset for b in producer.batches) == 5
        assert all(b._closed for b in producer.batches)
        tp = TP(table.changelog_topic.get_topic_name(), 0)
        assert table.data.persisted_offset(tp) == 100 + 5 - 1, batch_bytes


def test_a_cancelled_write_stores_nothing(tmp_path: Any) -> None:
    """A stop or a rebalance cancels the agent batch while its write waits for the broker:
    nothing is stored (the changelog may get the records; a restore brings them)."""
    producer = FakeKafkaProducer(delivered=0, answer=False)
    table = bulk_table(tmp_path, producer)

    async def go() -> None:
        task = asyncio.ensure_future(
            faust_compat.bulk_writes.write(table, {0: [(b"k", b"v")], 1: [(b"j", b"w")]})
        )
        for _ in range(100):
            await asyncio.sleep(0)  # the write hands both batches over
        assert len(producer.futures) == 2 and not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        producer.futures[0].set_result(SimpleNamespace(offset=0))
        await asyncio.sleep(0)

    run(go())
    for partition, key in ((0, b"k"), (1, b"j")):
        assert table.data._db_for_partition(partition).get(key) is None


def test_a_send_refused_half_way_fails_the_write_and_counts_what_was_handed_over(
    tmp_path: Any,
) -> None:
    """The producer refuses a batch (its queue stayed full): the write fails and stores
    nothing, and a batch it had already handed over that then fails is counted."""
    from aiokafka.errors import KafkaTimeoutError

    producer = FakeKafkaProducer(delivered=0, answer=False, refuse_after=1)
    table = bulk_table(tmp_path, producer)
    before = faust_compat.counters.COUNTERS["changelog_batch_failed"]

    async def go() -> None:
        with pytest.raises(KafkaTimeoutError):
            await faust_compat.bulk_writes.write(table, {0: [(b"k", b"v")], 1: [(b"j", b"w")]})
        producer.futures[0].set_exception(ConnectionError("the broker did not take it"))
        for _ in range(3):
            await asyncio.sleep(0)

    run(go())
    assert faust_compat.counters.COUNTERS["changelog_batch_failed"] == before + 1
    assert table.data._db_for_partition(0).get(b"k") is None


def test_a_record_larger_than_a_request_is_refused_before_anything_is_sent(
    tmp_path: Any,
) -> None:
    """What aiokafka's own send refuses: raised before any record of the call is sent or
    stored, in any partition."""
    from aiokafka.errors import MessageSizeTooLargeError

    producer = FakeKafkaProducer(delivered=10, batch_bytes=1 << 20, max_request=1000)
    table = bulk_table(tmp_path, producer)
    groups: dict[int | None, list[tuple[bytes, bytes | None]]] = {
        0: [(b"small", b"s")],
        1: [(b"fine", b"f"), (b"big", b"b" * 2000)],
    }
    with pytest.raises(MessageSizeTooLargeError):
        run(faust_compat.bulk_writes.write(table, groups))
    assert producer.batches == []
    assert table.data._db_for_partition(0).get(b"small") is None


class PartitioningProducer(FakeKafkaProducer):
    """The fake producer with what ``send_all`` asks of aiokafka's: the topic's metadata and
    the partitioner (here the key's last byte, even or odd)."""

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    def _partition(self, topic: str, partition: Any, key: bytes, *rest: Any) -> int:
        return key[-1] % 2


def _records(batch: Any) -> list[tuple[bytes, bytes, int]]:
    from aiokafka.record.default_records import DefaultRecordBatch

    return [(r.key, r.value, r.timestamp) for r in DefaultRecordBatch(bytes(batch._build()))]


def test_send_all_batches_messages_to_the_partitions_faust_would_pick() -> None:
    """The join's prediction log: each message to the partition the producer's partitioner
    gives its key (as Faust's send would), in order per partition, with its timestamp in
    milliseconds, in closed record batches, all delivered before it returns."""
    producer = PartitioningProducer(delivered=100, batch_bytes=1 << 10)
    app = SimpleNamespace(producer=SimpleNamespace(_producer=producer))
    messages = [(f"acme:m{i}".encode(), f"v{i}".encode(), 1000.0 + i) for i in range(6)]
    run(faust_compat.bulk_writes.send_all(app, "labeled", messages))
    assert all(b._closed for b in producer.batches)
    by_partition: dict[int, list[Any]] = {}
    for batch in producer.batches:
        for key, value, ts in _records(batch):
            by_partition.setdefault(key[-1] % 2, []).append((key, value, ts))
    assert by_partition == {
        0: [(b"acme:m0", b"v0", 1_000_000), (b"acme:m2", b"v2", 1_002_000),
            (b"acme:m4", b"v4", 1_004_000)],
        1: [(b"acme:m1", b"v1", 1_001_000), (b"acme:m3", b"v3", 1_003_000),
            (b"acme:m5", b"v5", 1_005_000)],
    }  # fmt: skip
    assert producer.ends == {0: 103, 1: 103}  # the broker took all six


def test_send_all_fails_when_the_broker_did_not_take_a_batch() -> None:
    """The join part that made them is read again (its state is not written)."""
    producer = PartitioningProducer(delivered=1, batch_bytes=64)
    app = SimpleNamespace(producer=SimpleNamespace(_producer=producer))
    messages = [(b"k0", b"x" * 40, None), (b"k1", b"x" * 40, None), (b"k2", b"x" * 40, None)]
    with pytest.raises(ConnectionError):
        run(faust_compat.bulk_writes.send_all(app, "labeled", messages))
    assert len(producer.batches) == 3
    assert all(f.done() for f in producer.futures)


def test_send_all_without_a_started_producer_sends_through_faust() -> None:
    sent: list[tuple[str, bytes | None, bytes, float | None]] = []

    class Channel:
        def __init__(self, name: str) -> None:
            self.name = name

        async def send(self, *, key: bytes | None, value: bytes, timestamp: float | None) -> Any:
            sent.append((self.name, key, value, timestamp))
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    app = SimpleNamespace(
        producer=SimpleNamespace(_producer=None),
        topic=lambda name, **kwargs: Channel(name),
    )
    run(faust_compat.bulk_writes.send_all(app, "labeled", [(b"k", b"v", 2.5)]))
    run(faust_compat.bulk_writes.send_all(app, "labeled", []))
    assert sent == [("labeled", b"k", b"v", 2.5)]


def test_changelog_records_after_the_restore_are_not_applied_over_newer_writes() -> None:
    """A real Faust table (in memory): while a restore runs, its records are applied; once it
    has ended, a record of an active partition (the tail of a write a crash cut, which the
    embedded broker's end left out of the restore) is dropped and counted, not applied over
    what the agents wrote since; a standby partition's records still are."""
    import faust

    from agents.faust_compat.counters import COUNTERS

    faust_compat.late_changelog.install()
    app = faust.App("late-changelog-test", store="memory://", broker="memory://")
    table = app.Table("t", partitions=2)
    recovery: Any = app.tables.recovery  # type: ignore[attr-defined]
    stored: Any = table.data  # the memory store's dict: ``stored.data``
    topic = table.changelog_topic.get_topic_name()
    active, standby = TP(topic, 0), TP(topic, 1)
    recovery.active_tps.add(active)

    def record(tp: TP, key: bytes, value: bytes, offset: int) -> Any:
        message = SimpleNamespace(
            tp=tp, partition=tp.partition, offset=offset, key=key, value=value
        )
        return SimpleNamespace(key=key, value=value, message=message)

    recovery.in_recovery = True
    table.apply_changelog_batch([record(active, b"k", b"restored", 0)])
    assert stored.data == {b"k": b"restored"}
    stored.data[b"k"] = b"written since"  # the agent's own write
    recovery.in_recovery = False
    before = COUNTERS["late_changelog_dropped"]
    table.apply_changelog_batch([record(active, b"k", b"late", 1), record(standby, b"s", b"1", 0)])
    assert stored.data == {b"k": b"written since", b"s": b"1"}
    assert COUNTERS["late_changelog_dropped"] == before + 1


def test_faust_monitor_stays_the_apps_but_is_not_fed_every_message(tmp_path: Path) -> None:
    """``quiet_monitor``: Faust adds its Monitor to the app's sensors when the app starts;
    after :func:`install` it is taken out again (Faust's consumer still reports to it
    directly), the worker's own sensors stay, and the one thing Faust reads of the Monitor's
    per-event feed (when each partition's stream last took an event) is still fed."""
    import faust

    from agents.faust_compat import quiet_monitor

    def started_sensors(quiet: bool) -> tuple[list[Any], Any]:
        app = faust.App(
            "quiet-monitor", broker="kafka://127.0.0.1:1", web_enabled=False,
            autodiscover=False, datadir=str(tmp_path),
        )  # fmt: skip
        own = faust.Sensor()
        app.sensors.add(own)
        if quiet:
            quiet_monitor.install(app)
        assert list(app.on_init_dependencies())  # what starting the app does
        sensors = list(app.sensors)
        assert own in sensors
        return sensors, app.monitor

    sensors, monitor = started_sensors(quiet=False)
    assert monitor in sensors  # Faust's own behaviour: fed every message
    sensors, monitor = started_sensors(quiet=True)
    assert monitor not in sensors and monitor is not None
    # What Faust's check for a stalled stream reads of the Monitor is still kept.
    (inbound,) = [s for s in sensors if isinstance(s, quiet_monitor.InboundTime)]
    tp = TP("predictions", 1)
    inbound.on_stream_event_in(tp, 7, None, None)
    assert tp in monitor.stream_inbound_time


def test_the_offset_key_scans_skip_is_faust_s() -> None:
    """Scans for records (and deletes) must never return the store's own offset record."""
    from faust.stores.rocksdb import Store

    from agents.faust_compat.direct_reads import FAUST_OFFSET_KEY

    assert Store.offset_key == FAUST_OFFSET_KEY
