"""Upstream agents wait for the worker's later stages (agents.faust_compat.backpressure)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from agents.faust_compat import backpressure, batches, eager_delivery, guards
from agents.faust_compat.backpressure import DownstreamGate

JOIN = "join-input"


class Consumer:
    """What the gate reads of Faust's consumer: the assignment, the ends, the commits."""

    def __init__(self, ends: dict[TP, int], committed: dict[TP, int] | None = None) -> None:
        self.ends = ends
        self._committed_offset: dict[TP, int | None] = dict(committed or {})

    def assignment(self) -> set[TP]:
        return set(self.ends)

    def highwater(self, tp: TP) -> int:
        return self.ends[tp]


def event(topic: str, partition: int, offset: int) -> Any:
    tp = TP(topic, partition)
    return SimpleNamespace(message=SimpleNamespace(tp=tp, topic=topic, partition=partition,
                                                   offset=offset))  # fmt: skip


def app_of(consumer: Consumer) -> Any:
    return SimpleNamespace(consumer=consumer, should_stop=False)


def test_a_partition_is_behind_by_its_messages_past_the_next_to_process() -> None:
    p0, p1 = TP(JOIN, 0), TP(JOIN, 1)
    consumer = Consumer({p0: 100, p1: 100, TP("predictions", 0): 10_000}, {p0: 50, p1: 95})
    gate = DownstreamGate(limit=10)
    # committed offsets first: p0 is 50 behind, p1 5
    assert gate.behind(consumer, {JOIN}) == {p0: 50}
    # a processed batch moves its partition past its last offset, whatever was committed
    gate.processed([event(JOIN, 0, 80), event(JOIN, 0, 88), event(JOIN, 1, 96)])
    assert gate.next_offsets(consumer) == {p0: 89, p1: 97}
    assert gate.behind(consumer, {JOIN}) == {p0: 11}
    gate.processed([event(JOIN, 0, 89)])
    assert gate.behind(consumer, {JOIN}) == {}
    # a batch read again after a failure does not move the position back
    gate.processed([event(JOIN, 0, 60)])
    assert gate.next_offsets(consumer)[p0] == 90
    # partitions given up start again at their committed offset when they come back
    gate.forget([p0])
    assert gate.behind(consumer, {JOIN}) == {p0: 50}
    # topics the agent does not feed, and partitions this worker does not own, are not judged
    assert gate.behind(consumer, {"performance-input"}) == {}


def test_what_this_worker_sent_counts_before_the_consumer_fetches_it() -> None:
    """The consumer's high watermark moves with its fetches only (and not at all while the
    fetch loop waits on a full buffer), and a group that committed nothing has no position:
    the messages this worker sent downstream bound both."""
    p0, p1 = TP(JOIN, 0), TP(JOIN, 1)
    consumer = Consumer({p0: 10, p1: 10}, {p1: 10})  # p0: nothing committed yet
    consumer._committed_offset[p0] = None
    gate = DownstreamGate(limit=8)
    assert gate.behind(consumer, {JOIN}) == {}  # p0 has no position: not judged
    sent = [SimpleNamespace(topic=JOIN, partition=p, offset=o) for p in (0, 1) for o in (10, 29)]
    gate.sent([*sent, SimpleNamespace(topic=JOIN, partition=0, offset=-1), object()])
    assert gate.behind(consumer, {JOIN}) == {p0: 20, p1: 20}  # ends 30; p0 from its first, 10
    gate.processed([event(JOIN, 0, o) for o in range(10, 25)])
    assert gate.behind(consumer, {JOIN}) == {p1: 20}
    consumer.ends[p1] = 40  # a fetch saw more (another worker's messages): the larger end
    assert gate.behind(consumer, {JOIN}) == {p1: 30}
    gate.forget([p0])  # given up: back to what the group committed (nothing)
    assert gate.behind(consumer, {JOIN}) == {p1: 30}


def test_an_agent_waits_until_the_later_stage_has_caught_up() -> None:
    p0 = TP(JOIN, 0)
    consumer = Consumer({p0: 100}, {p0: 0})
    gate = DownstreamGate(limit=10, max_wait=30.0, poll=0.001)
    backpressure.WAITED.clear()

    async def later_stage() -> None:
        for offset in range(0, 100, 10):  # batches of ten, as a join agent's
            await asyncio.sleep(0.005)
            gate.processed([event(JOIN, 0, o) for o in range(offset, offset + 10)])

    async def main() -> tuple[float, int]:
        stage = asyncio.ensure_future(later_stage())
        waited = await gate.wait(app_of(consumer), "predictions", [JOIN])
        behind_at_release = consumer.ends[p0] - gate.next_offsets(consumer)[p0]
        await stage
        return waited, behind_at_release

    waited, behind = asyncio.run(main())
    assert 0.0 < waited < 30.0
    assert behind <= 10  # released as soon as it was within the limit, not before
    assert backpressure.WAITED["predictions"] == pytest.approx(waited)


def test_an_agent_does_not_wait_for_a_fetch_loop_blocked_on_its_own_buffer() -> None:
    """The later stage's messages may be queued behind the waiting agent's: while the fetch
    loop waits to deliver another topic's message, the agent goes on (else neither would
    ever move)."""
    p0 = TP(JOIN, 0)
    consumer = Consumer({p0: 1_000}, {p0: 0})
    gate = DownstreamGate(limit=10, max_wait=30.0, poll=0.001)
    eager_delivery.BLOCKED_ON = "predictions"
    try:
        waited = asyncio.run(gate.wait(app_of(consumer), "predictions", [JOIN]))
    finally:
        eager_delivery.BLOCKED_ON = None
    assert waited == 0.0


def test_an_agent_waits_while_the_loop_is_blocked_on_the_later_stage_buffer() -> None:
    """A full buffer of the later stage's own topic is work at hand for that stage: the agent
    keeps waiting until the stage has caught up (giving up there let the drift agent run
    ahead of the join without bound)."""
    p0 = TP(JOIN, 0)
    consumer = Consumer({p0: 100}, {p0: 0})
    gate = DownstreamGate(limit=10, max_wait=30.0, poll=0.001)

    async def later_stage() -> None:
        await asyncio.sleep(0.05)
        gate.processed([event(JOIN, 0, o) for o in range(95)])
        eager_delivery.BLOCKED_ON = None  # its buffer has room again

    async def main() -> float:
        eager_delivery.BLOCKED_ON = JOIN
        stage = asyncio.ensure_future(later_stage())
        waited = await gate.wait(app_of(consumer), "predictions", [JOIN])
        await stage
        return waited

    try:
        waited = asyncio.run(main())
    finally:
        eager_delivery.BLOCKED_ON = None
    assert 0.05 <= waited < 30.0


def test_a_stage_that_stopped_holds_an_agent_for_the_longest_wait_only() -> None:
    p0 = TP(JOIN, 0)
    consumer = Consumer({p0: 1_000}, {p0: 0})
    gate = DownstreamGate(limit=10, max_wait=0.05, poll=0.001)
    waited = asyncio.run(gate.wait(app_of(consumer), "outcomes", [JOIN]))
    assert 0.05 <= waited < 1.0
    patient = DownstreamGate(limit=10, max_wait=30.0, poll=0.001)  # a batch's remaining budget
    assert 0.02 <= asyncio.run(patient.wait(app_of(consumer), "predictions", [JOIN], 0.02)) < 1.0
    off = DownstreamGate(limit=0)  # DRIFTWATCH_DOWNSTREAM_BACKLOG=0: never waits
    assert asyncio.run(off.wait(app_of(consumer), "outcomes", [JOIN])) == 0.0
    # nor while the worker stops or a rebalance runs (the batch goes on; Faust waits for it)
    for flag in ("should_stop", "rebalancing"):
        app = app_of(consumer)
        setattr(app, flag, True)
        assert asyncio.run(gate.wait(app, "outcomes", [JOIN])) == 0.0


def test_the_fetch_loop_says_when_a_delivery_waits() -> None:
    seen: list[str | None] = []

    class Waiting:
        suspend_flow = asyncio.Event()

        async def wait_first(self, *coros: Any) -> None:
            seen.append(eager_delivery.BLOCKED_ON)
            coros[1].close()
            await coros[0]

    async def deliver() -> int:
        await asyncio.sleep(0)
        return 1

    async def main() -> None:
        rest = eager_delivery.start_eagerly(deliver())
        assert rest is not None
        await eager_delivery._finish_delivery(Waiting(), rest, JOIN)

    asyncio.run(main())
    assert seen == [JOIN]
    assert eager_delivery.BLOCKED_ON is None


def test_process_batches_waits_before_a_batch_and_records_it_processed() -> None:
    """An agent's batches go through the gate: a wait before each one that feeds a later
    stage, and its offsets recorded once its work is done."""
    p0 = TP(JOIN, 0)
    consumer = Consumer({p0: 5}, {p0: 0})
    order: list[str] = []

    class Gate(DownstreamGate):
        async def wait(
            self, app: Any, source: str, topics: Any, longest: float | None = None
        ) -> float:
            order.append(f"wait {source} for {sorted(topics)}")
            return 0.0

    gate = Gate(limit=1)

    class Stream:
        app = SimpleNamespace(consumer=consumer, should_stop=False)

        def add_processor(self, fn: Any) -> None:
            pass

        async def take_events(self, size: int, within: float) -> Any:
            yield [event("predictions", 0, 0), event("predictions", 0, 1)]

    async def process(batch: list[Any]) -> None:
        order.append(f"process {len(batch)}")

    async def main() -> None:
        previous = backpressure.GATE
        backpressure.GATE = gate
        try:
            await batches.process_batches(Stream(), "predictions", 10, 0.1, process, [JOIN])
        finally:
            backpressure.GATE = previous

    drain = batches.drain_producer
    batches.drain_producer = _no_drain
    guard_order, guarded = guards.ORDER, set(guards.GUARDED_TOPICS)
    guards.ORDER = None
    try:
        asyncio.run(main())
    finally:
        batches.drain_producer = drain
        guards.ORDER = guard_order
        guards.GUARDED_TOPICS.clear()
        guards.GUARDED_TOPICS.update(guarded)
    assert order == ["wait predictions for ['join-input']", "process 2"]
    assert gate.next_offsets(consumer)[TP("predictions", 0)] == 2


async def _no_drain(app: Any, poll: float = 0.5) -> None:
    return None


def test_a_batch_stopped_before_processing_is_unmarked() -> None:
    """A stop while a batch waits for the gate, or while the offset order asks the broker
    about it, leaves the batch unprocessed: it is unmarked, so the acks its generator sends
    when closed are ignored and the commit does not move past it."""
    p0 = TP(JOIN, 0)
    consumer = Consumer({p0: 5}, {p0: 0})

    class Message:  # weakly referable, as Faust's messages are (the marks are a WeakSet)
        def __init__(self, offset: int) -> None:
            self.tp, self.topic, self.partition, self.offset = (
                TP("predictions", 0),
                "predictions",
                0,
                offset,
            )

    marked = [SimpleNamespace(message=Message(k)) for k in (0, 1)]

    class Stream:
        app = SimpleNamespace(consumer=consumer, should_stop=False)

        def add_processor(self, fn: Any) -> None:
            pass

        async def take_events(self, size: int, within: float) -> Any:
            for e in marked:
                guards._DELIVERED.add(e.message)
            yield list(marked)

    class StoppedGate(DownstreamGate):
        async def wait(
            self, app: Any, source: str, topics: Any, longest: float | None = None
        ) -> float:
            raise asyncio.CancelledError

    class StoppedOrder:
        async def admit(self, consumer: Any, events: list[Any]) -> list[Any]:
            raise asyncio.CancelledError

        async def retry_forever(self) -> None:
            return None

    async def process(batch: list[Any]) -> None:
        raise AssertionError("never processed")

    def run_with(gate: Any, order: Any) -> None:
        previous, guard_order = backpressure.GATE, guards.ORDER
        backpressure.GATE, guards.ORDER = gate, order
        try:
            with pytest.raises(asyncio.CancelledError):
                asyncio.run(
                    batches.process_batches(Stream(), "predictions", 10, 0.1, process, [JOIN])
                )
        finally:
            backpressure.GATE, guards.ORDER = previous, guard_order

    run_with(StoppedGate(limit=1), None)
    assert not any(e.message in guards._DELIVERED for e in marked)
    run_with(None, StoppedOrder())
    assert not any(e.message in guards._DELIVERED for e in marked)


def test_a_consumer_that_cannot_answer_is_judged_by_what_was_sent() -> None:
    """No assignment (a rebalance): nothing is judged. No high watermark for a partition:
    its end is what this worker sent there."""
    p0 = TP(JOIN, 0)

    class Rebalancing(Consumer):
        def assignment(self) -> set[TP]:
            raise RuntimeError("no assignment")

    class Unknown(Consumer):
        def highwater(self, tp: TP) -> int:
            raise KeyError(tp)

    gate = DownstreamGate(limit=4)
    gate.sent([SimpleNamespace(topic=JOIN, partition=0, offset=o) for o in range(20)])
    assert gate.behind(Rebalancing({p0: 20}, {p0: 0}), {JOIN}) == {}
    assert gate.behind(Unknown({p0: 0}, {p0: 10}), {JOIN}) == {p0: 10}
    assert gate.behind(Unknown({p0: 0}, {p0: 18}), {JOIN}) == {}
