"""Bulk delivery (``agents.faust_compat.bulk_delivery``): the fetch loop's messages of the input
agents' topics go to a sink, bounded and flow-controlled as Faust's stream buffers are, and
come out as tracked, marked batches acked after processing. (Every worker of the integration
tests runs with it: rebalances, kills, scale-out and the head guards' probes included.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from types import SimpleNamespace as NS
from typing import Any

import pytest
from faust.types import TP
from mode.utils.queues import FlowControlEvent

from agents.faust_compat import batches, bulk_delivery, eager_delivery, guards
from agents.faust_compat.bulk_delivery import BulkEvent, Sink
from agents.faust_compat.counters import COUNTERS


class Consumer:
    """What a sink and the fetch loop use of Faust's consumer."""

    def __init__(self) -> None:
        self.full: list[Any] = []
        self.dropped: list[Any] = []
        self.unacked: set[Any] = set()
        self.acked: list[Any] = []
        self.seeks: list[dict[Any, int]] = []
        self._read_offset: dict[Any, int] = {}

    def on_buffer_full(self, tp: Any) -> None:
        assert isinstance(tp, TP)  # Faust's consumer asserts it of its active partitions
        self.full.append(tp)

    def on_buffer_drop(self, tp: Any) -> None:
        self.dropped.append(tp)

    def ack(self, message: Any) -> bool:
        self.acked.append(message)
        return True

    async def seek_wait(self, partitions: dict[Any, int]) -> None:
        self.seeks.append(dict(partitions))


class Message:
    def __init__(self, partition: int, offset: int, size: int = 10, generation: int = 1) -> None:
        self.topic = "p"
        self.partition = partition
        self.offset = offset
        self.tp = TP("p", partition)
        self.value = b"x" * size
        self.generation_id = generation
        self.tracked = False

    def __repr__(self) -> str:
        return f"p[{self.partition}]@{self.offset}"


class App:
    """What a sink uses of Faust's app (a class: sinks are kept per app by weak reference)."""

    def __init__(self) -> None:
        self.flow_control = FlowControlEvent(initially_suspended=False)
        self.consumer = Consumer()
        self.consumer_generation_id = 1
        self.monitor = NS(stream_inbound_time={})


def _app() -> Any:
    return App()


def test_a_sink_bounds_places_pauses_under_pressure_and_resumes_as_it_drains() -> None:
    app = _app()
    sink = Sink(app, "p", capacity=100, place_bytes=100, size=1000)
    for k in range(39):  # 2 places each: 78 < 80, the high mark (100 / 1.25)
        sink.put(Message(k % 2, k, size=150))
    assert sink.places == 78 and not sink.ready.is_set() and app.consumer.full == []
    sink.put(Message(1, 39, size=150))
    assert sink.ready.is_set()  # under pressure: worth a batch, though under ``size``
    assert app.consumer.full == [TP("p", 1)]  # the partition whose message found it so
    sink.put(Message(0, 40, size=150))  # still fetched (already in memory): taken in
    assert app.consumer.full == [TP("p", 1), TP("p", 0)]
    for k in range(41, 50):
        sink.put(Message(0, k, size=150))
    assert sink.places == 100 and sink.full() and not sink.room.is_set()
    sink.pop(29)  # 42 places left: under the high mark, over the drop mark (40)
    assert sink.room.is_set() and app.consumer.dropped == [] and not sink.ready.is_set()
    sink.pop(1)  # 40: the paused partitions are fetched again
    assert sorted(app.consumer.dropped) == [TP("p", 0), TP("p", 1)]
    assert not sink.ready.is_set() and sink.paused == set()


def test_a_sink_is_ready_at_a_batch_of_messages() -> None:
    app = _app()  # held: a sink refers to its app weakly
    sink = Sink(app, "p", capacity=4096, place_bytes=2048, size=3)
    sink.put(Message(0, 0))
    sink.put(Message(0, 1))
    assert not sink.ready.is_set()
    sink.put(Message(0, 2))
    assert sink.ready.is_set()
    assert [e.message.offset for e in sink.take(2)] == [0, 1]
    assert not sink.ready.is_set()  # one left: wait for more (or the batch's timeout)


def test_nothing_is_delivered_while_a_rebalance_has_the_flow_suspended() -> None:
    app = _app()
    sink = Sink(app, "p", capacity=10, place_bytes=100, size=5)
    sink.put(Message(0, 0))
    app.flow_control.suspend()
    before = COUNTERS["bulk_dropped_suspended"]
    sink.put(Message(0, 1))
    assert [m.offset for m in sink.messages] == [0]
    assert COUNTERS["bulk_dropped_suspended"] == before + 1
    assert sink.take(5) == []  # nor taken: the rebalance clears it next


def test_faust_s_flow_control_clears_a_sink_with_the_stream_buffers() -> None:
    app = _app()
    sink = Sink(app, "p", capacity=10, place_bytes=100, size=2)
    for k in range(10):
        sink.put(Message(0, k))
    assert sink.full() and sink.ready.is_set() and app.consumer.full == [TP("p", 0)]
    app.flow_control.clear()  # what Faust calls at a revocation
    assert sink.messages == [] and sink.places == 0
    assert sink.room.is_set() and not sink.ready.is_set()
    assert app.consumer.dropped == [TP("p", 0)]
    sink.put(Message(0, 3))
    app.flow_control.suspend()
    app.flow_control.resume()  # and when the flow resumes
    assert sink.messages == []


def test_a_batch_is_tracked_marked_and_leaves_an_earlier_generation_out() -> None:
    app = _app()
    sink = Sink(app, "p", capacity=100, place_bytes=100, size=10)
    old = Message(0, 0, generation=0)  # fetched before a rebalance
    fresh = [Message(0, 1), Message(1, 0)]
    for m in (old, *fresh):
        sink.put(m)
    before = COUNTERS["bulk_stale_generation"]
    batch = sink.take(10)
    assert [e.message for e in batch] == fresh
    assert [e.value for e in batch] == [m.value for m in fresh]
    assert COUNTERS["bulk_stale_generation"] == before + 1
    assert app.consumer.unacked == set(fresh)  # a revocation waits for them
    assert all(m.tracked for m in fresh) and not old.tracked
    assert all(m in guards._DELIVERED for m in fresh) and old not in guards._DELIVERED
    assert set(app.monitor.stream_inbound_time) == {TP("p", 0), TP("p", 1)}
    assert sink.messages == []


def test_a_rewound_partition_s_messages_are_forgotten() -> None:
    app = _app()
    sink = Sink(app, "p", capacity=10, place_bytes=100, size=20)
    for k in range(9):
        sink.put(Message(k % 3, k))
    assert app.consumer.full == [TP("p", 1), TP("p", 2)]  # from the 8th, at the high mark
    sink.forget([0, 2])
    assert [m.offset for m in sink.messages] == [1, 4, 7]
    assert sink.places == 3 and sink.weights == [1, 1, 1]
    assert sorted(app.consumer.dropped) == [TP("p", 1), TP("p", 2)]  # under the drop mark
    sink.forget([5])  # none of them
    assert len(sink.messages) == 3


def test_a_bulk_event_is_what_the_processors_read_and_a_weak_reference_can_hold() -> None:
    import weakref

    message = Message(0, 7)
    event = BulkEvent(message)
    assert event.message is message and event.value == message.value
    assert weakref.ref(event)() is event  # Faust's current event is a weak reference


class Stream:
    """What ``take_bulk`` and ``process_batches`` use of the agent's stream."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.should_stop = False

    def add_processor(self, fn: Any) -> None:
        pass

    async def wait_for_stopped(
        self,
        event: asyncio.Event,
        timeout: float | None,  # noqa: ASYNC109  (Faust's signature)
    ) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)


def test_take_bulk_batches_by_size_or_time_and_acks_after_each_batch() -> None:
    app = _app()
    sink = Sink(app, "p", capacity=4096, place_bytes=2048, size=3)
    stream = Stream(app)
    seen: list[tuple[list[int], list[int]]] = []

    async def main() -> None:
        gen: AsyncIterator[list[Any]] = batches.take_bulk(stream, sink, 3, 0.05)
        for k in range(4):
            sink.put(Message(0, k))
        batch = await gen.__anext__()  # three at once: no wait for the timeout
        seen.append(([e.message.offset for e in batch], [m.offset for m in app.consumer.acked]))
        batch = await gen.__anext__()  # the fourth, after ``within``
        seen.append(([e.message.offset for e in batch], [m.offset for m in app.consumer.acked]))
        stream.should_stop = True
        with pytest.raises(StopAsyncIteration):
            await gen.__anext__()

    asyncio.run(main())
    # acked once the caller asked for the next batch: after processing the previous one
    assert seen == [([0, 1, 2], []), ([3], [0, 1, 2])]
    assert [m.offset for m in app.consumer.acked] == [0, 1, 2, 3]


def test_registered_topics_have_a_sink_per_app() -> None:
    a, b = _app(), _app()
    sink = bulk_delivery.register(a, "p", capacity=8, place_bytes=10, size=2)
    assert bulk_delivery.sink_for(a, "p") is sink
    assert bulk_delivery.sink_for(a, "q") is None and bulk_delivery.sink_for(b, "p") is None
    assert bulk_delivery.sinks_of(a) == {"p": sink}
    assert bulk_delivery.sink_for(NS(), "p") is None  # a stand-in app registers none


class FetchConsumer:
    """What the fetch loop (``eager_delivery._drain_messages``) uses of Faust's consumer."""

    consumer_stopped_errors = ()

    def __init__(self, app: Any, records: list[Message]) -> None:
        self.app = app
        self.records = records
        self.delivered: list[Message] = []
        self._stopped = asyncio.Event()
        self._read_offset: defaultdict[Any, int | None] = defaultdict(lambda: None)
        self.diag = NS(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self._commit_every = None
        self.should_stop = False
        self.suspend_flow = asyncio.Event()
        self.transport = NS(app=app)
        self.log = NS(dev=lambda *a: None, info=lambda *a: None, exception=lambda *a: None)
        app.topics = NS(acks_enabled_for=lambda topic: True)

    async def callback(self, message: Message) -> None:
        self.delivered.append(message)

    async def fetch(self, timeout: float) -> tuple[dict[Any, list[Message]], None]:  # noqa: ASYNC109
        """Faust's ``_wait_next_records``: the client's records by partition."""
        records, self.records = self.records, []
        by_tp: dict[Any, list[Message]] = {}
        for m in records:
            by_tp.setdefault(m.tp, []).append(m)
        return by_tp, None

    async def getmany(
        self,
        timeout: float,  # noqa: ASYNC109  (Faust's signature)
    ) -> AsyncIterator[tuple[Any, Message]]:
        # As Faust's: the records through ``_wait_next_records`` (installed: ours, which
        # notes the fetch's partitions), then handed over one by one.
        records, _ = await eager_delivery._wait_next_records(self, timeout)
        for tp, messages in records.items():
            for m in messages:
                yield tp, m
        self._stopped.set()  # one fetch, then the loop ends

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_first(self, *coros: Any) -> Any:
        tasks = [asyncio.ensure_future(c) for c in coros]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        return done


@pytest.fixture(autouse=True)
def _client_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eager_delivery, "ORIGINAL_WAIT", FetchConsumer.fetch)


async def _fetch_until_blocked(consumer: FetchConsumer) -> asyncio.Future[None]:
    """The fetch loop over ``consumer``'s records, run until it waits (or 50 loop turns)."""
    fetcher = NS(_stopped=asyncio.Event())
    loop = asyncio.ensure_future(eager_delivery._drain_messages(consumer, fetcher))
    for _ in range(50):
        await asyncio.sleep(0)
        if eager_delivery.BLOCKED_ON is not None:
            break
    return loop


def test_the_fetch_loop_hands_a_registered_topic_to_its_sink_and_waits_for_room() -> None:
    app = _app()
    sink = bulk_delivery.register(app, "p", capacity=3, place_bytes=100, size=10)
    records = [Message(0, k) for k in range(5)]
    other = Message(0, 0)
    other.topic, other.tp = "o", TP("o", 0)  # not registered: Faust's delivery
    records.insert(2, other)
    consumer = FetchConsumer(app, records)
    held: list[str | None] = []

    async def main() -> None:
        loop = await _fetch_until_blocked(consumer)
        held.append(eager_delivery.BLOCKED_ON)  # full at three: the fourth waits for room
        assert [m.offset for m in sink.messages] == [0, 1, 2] and not loop.done()
        # the rest of the fetch waits with it: its partitions are still being handed over
        assert set(eager_delivery.FETCHING) == {TP("p", 0), TP("o", 0)}
        sink.pop(2)
        await asyncio.wait_for(loop, 5)

    asyncio.run(main())
    assert held == ["p"] and eager_delivery.BLOCKED_ON is None
    assert not eager_delivery.FETCHING  # gone through
    assert consumer.delivered == [other]
    assert [m.offset for m in sink.messages] == [2, 3, 4]
    assert consumer._read_offset[TP("p", 0)] == 4


def test_a_failed_batch_forgets_only_the_partitions_its_rewind_reads_again() -> None:
    """The batch of p[0] fails: p[0] is sought back to its first offset, so what the sink
    fetched past it is dropped (read again after the seek). p[1] had a commit hold where its
    processing stands (its state written): no seek, so its fetched messages stay in the sink
    (dropped, nothing would read them again until a rebalance)."""
    from agents.faust_compat import commit_cap

    app = _app()
    sink = bulk_delivery.register(app, "p", capacity=100, place_bytes=100, size=2)
    for k in (10, 11, 12, 13):
        sink.put(Message(0, k))
    for k in (500, 501):
        sink.put(Message(1, k))
    order = guards.SourceOrder(lambda *_: asyncio.sleep(0, None), clock=lambda: 0.0)
    order.expect[TP("p", 0)] = 10
    order.expect[TP("p", 1)] = 500
    commit_cap.hold("p", 1, 500)

    async def process(batch: list[Any]) -> None:
        raise RuntimeError("a bug")

    async def go() -> None:
        with pytest.raises(RuntimeError):
            await batches.process_batches(Stream(app), "p", 2, 0.05, process)
        await asyncio.sleep(0.01)  # the seek back runs

    saved, guards.ORDER = guards.ORDER, order
    try:
        asyncio.run(go())
    finally:
        guards.ORDER = saved
        commit_cap.release("p")
    assert app.consumer.seeks == [{TP("p", 0): 10}]
    assert [(m.partition, m.offset) for m in sink.messages] == [(1, 500), (1, 501)]
    assert sink.places == 2


def test_a_sink_s_messages_count_as_queued_for_the_watchdog() -> None:
    """The watchdog's orphaned-messages check takes a partition with nothing queued for its
    topic and no batch running for a stall: messages waiting in a sink are queued."""
    from agents.faust_compat import introspection

    app = _app()
    sink = bulk_delivery.register(app, "p", capacity=100, place_bytes=100, size=50)
    app.topics = NS(_topics=[])
    assert introspection.queued_by_topic(app) == {"p": 0}
    sink.put(Message(0, 0))
    sink.put(Message(1, 0))
    assert introspection.queued_by_topic(app) == {"p": 2}
    guards.GUARDED_TOPICS.add("p")
    try:
        assert introspection.drained(app, [TP("p", 0)]) == set()
        sink.take(50)
        assert introspection.drained(app, [TP("p", 0)]) == {TP("p", 0)}
    finally:
        guards.GUARDED_TOPICS.discard("p")


def test_a_fetch_loop_waiting_for_room_gives_the_message_up_when_a_rebalance_begins() -> None:
    """As Faust's loop gives a blocked delivery up: the flow is suspended (a revocation), the
    wait ends, the sink drops the message (read again after the rebalance's seek) and the
    loop goes on."""
    app = _app()
    sink = bulk_delivery.register(app, "p", capacity=2, place_bytes=100, size=10)
    records = [Message(0, k) for k in range(4)]
    consumer = FetchConsumer(app, records)
    before = COUNTERS["bulk_dropped_suspended"]

    async def main() -> None:
        loop = await _fetch_until_blocked(consumer)
        assert eager_delivery.BLOCKED_ON == "p" and not loop.done()
        app.flow_control.suspend()
        consumer.suspend_flow.set()
        await asyncio.wait_for(loop, 5)

    asyncio.run(main())
    assert [m.offset for m in sink.messages] == [0, 1]  # 2 and 3 given up, not delivered
    assert COUNTERS["bulk_dropped_suspended"] == before + 2
    assert consumer._read_offset[TP("p", 0)] == 3 and eager_delivery.BLOCKED_ON is None
    assert not eager_delivery.FETCHING  # given up: what it held is for the check to see
