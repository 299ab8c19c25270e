"""Commits held at the first message whose state is not written (agents.faust_compat.commit_cap),
on Faust's real consumer class, and the drift agent's writes every few seconds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.transport.consumer import Consumer

from agents import faust_compat
from agents.faust_compat import commit_cap
from tests.unit.test_faust_compat import (
    FakeConsumer,
    FakeStream,
    install,
    order_events,
    run_batches,
    source_order,
)


@pytest.fixture(autouse=True)
def installed() -> Any:
    install(None)  # the guards first, as create_app does
    commit_cap.install()
    yield
    commit_cap.clear()


def new_offset(c: FakeConsumer) -> int | None:
    return Consumer._new_offset(c, c.tp)  # type: ignore[arg-type]


def test_a_hold_stops_the_commit_at_the_first_unwritten_message() -> None:
    c = FakeConsumer(committed=10, acked=list(range(10, 20)))
    before = faust_compat.counters.COUNTERS["commit_held"]
    commit_cap.hold(c.tp.topic, 0, 15)
    commit_cap.hold(c.tp.topic, 0, 17)  # a later batch: the first hold stays
    assert new_offset(c) == 15
    assert sorted(c._acked[c.tp]) == [15, 16, 17, 18, 19]  # still acked, waiting
    assert c._acked_index[c.tp] == {15, 16, 17, 18, 19}
    assert faust_compat.counters.COUNTERS["commit_held"] == before + 1
    c._committed_offset[c.tp] = 15
    assert new_offset(c) is None  # nothing below the hold left
    commit_cap.release(c.tp.topic)
    assert new_offset(c) == 20


def test_a_hold_ages_from_its_first_unwritten_message_until_a_write_passes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watchdog excuses a held commit by the age of the oldest message not written:
    later batches and a batch read again after a failure (held at the same offset) do not
    make it young again; a write that reaches what was applied ends it, one short of it
    (a partition left out after a failure) does not."""
    clock = [100.0]
    monkeypatch.setattr(commit_cap, "clock", lambda: clock[0])
    commit_cap.hold("p", 0, 40)
    clock[0] = 103.0
    commit_cap.hold("p", 0, 45)  # a later batch
    commit_cap.hold("p", 0, 40)  # the same messages read again after a failed batch
    clock[0] = 110.0
    assert commit_cap.unwritten_ages() == {("p", 0): 10.0}
    commit_cap.advance("p", {1: 99})  # another partition's write: not this one's
    assert commit_cap.unwritten_ages() == {("p", 0): 10.0}
    commit_cap.advance("p", {0: 50})
    assert commit_cap.unwritten_ages() == {} and commit_cap.holds("p") == {0: 50}
    clock[0] = 200.0
    commit_cap.hold("p", 0, 50)  # the next message after the write: new unwritten work
    clock[0] = 201.0
    assert commit_cap.unwritten_ages() == {("p", 0): 1.0}
    commit_cap.release("p", {0})
    assert commit_cap.unwritten_ages() == {}


def test_holds_are_per_topic_and_partition() -> None:
    c = FakeConsumer(committed=10, acked=[10, 11, 12])
    commit_cap.hold("another-topic", 0, 10)
    commit_cap.hold(c.tp.topic, 1, 10)
    assert new_offset(c) == 13
    commit_cap.release(c.tp.topic, {1})
    assert commit_cap.holds(c.tp.topic) == {} and commit_cap.holds("another-topic") == {0: 10}


def test_a_gap_at_the_hold_is_committed_past_once_released() -> None:
    c = FakeConsumer(committed=10, acked=[10, 11, 12, 14])
    c._gap[c.tp].addi(13, 14)  # a transaction marker at 13
    commit_cap.hold(c.tp.topic, 0, 14)
    assert new_offset(c) == 13
    c._committed_offset[c.tp] = 13
    commit_cap.release(c.tp.topic)
    assert new_offset(c) == 15


def test_a_commit_past_the_hold_is_cut_back_to_it() -> None:
    """A safety net: whatever the wrapped bookkeeping answers (Faust's gap list can be wrong,
    a jump recorded around a seek), the commit stops at the hold."""
    c = FakeConsumer(committed=10, acked=[10, 11, 12, 13, 14])
    capped = commit_cap._capped_new_offset(lambda consumer, tp: 20)
    commit_cap.hold(c.tp.topic, 0, 14)
    assert capped(c, c.tp) == 14
    assert sorted(c._acked[c.tp]) == [10, 11, 12, 13, 14]  # the stub took none of them


def test_a_failed_batch_is_read_again_from_the_hold() -> None:
    """What was processed since the last state write is lost with a failure (the engine
    forgets its decoded state): reading starts again at the hold, not at the failed batch."""
    consumer = FakeConsumer(committed=0, acked=[])
    order, _ = source_order(first_record=2)
    commit_cap.hold(consumer.tp.topic, consumer.tp.partition, 0)
    batches = [order_events(consumer, [0, 1]), order_events(consumer, [2, 3])]
    run_batches(FakeStream(consumer, batches), order, ValueError)  # the second fails
    assert order.expect[consumer.tp] == 0 and consumer.seeks == [{consumer.tp: 0}]


def test_a_clean_stop_writes_first_and_goes_on_whatever_the_write_does() -> None:
    from faust.app.base import App

    calls: list[str] = []

    class FakeApp:
        _consumer = None  # Faust's own stop then has nothing to do

    async def write(name: str, fail: bool) -> None:
        calls.append(name)
        if fail:
            raise RuntimeError("broker away")

    app = FakeApp()
    commit_cap.before_stop(app, lambda: write("failing", True), 1.0)
    commit_cap.before_stop(app, lambda: write("second", False), 1.0)
    asyncio.run(App._stop_consumer(app))  # type: ignore[arg-type]
    assert calls == ["failing", "second"]
