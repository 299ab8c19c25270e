"""Records the client handed over that never reached an agent: when the worker reads them
again, and when it leaves a partition alone (the decision is the doctest's; here the worker's
side: what it reads of the consumer and what counts as still in hand)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace as NS
from typing import Any

import pytest
from faust.types import TP
from intervaltree import IntervalTree  # type: ignore[import-untyped]

from agents.faust_compat import batches, bulk_delivery, eager_delivery, guards, undelivered
from agents.faust_compat.counters import COUNTERS

TOPIC = "t-predictions"
P0, P1 = TP(TOPIC, 0), TP(TOPIC, 1)


class Flag:
    def __init__(self, on: bool) -> None:
        self.on = on

    def is_set(self) -> bool:
        return self.on


def make_app(positions: dict[TP, int], committed: dict[TP, int], **over: Any) -> Any:
    """A worker as :func:`undelivered.check` reads it: assignment, client positions, flow."""
    state = NS(
        tps=list(positions),
        state_value=lambda tp: NS(has_valid_position=True, position=positions[tp]),
    )
    client = NS(
        _subscription=NS(subscription=NS(assignment=state)),
        _fetcher=NS(_records=over.pop("waiting", {})),
    )
    consumer = NS(
        _thread=NS(_consumer=client),
        _committed_offset=dict(committed),
        flow_active=True,
        assignment=lambda: set(positions),
    )
    app: Any = App()
    app.consumer = app._consumer = consumer
    app.rebalancing = app.in_recovery = False
    app.tables = NS(recovery=NS(completed=Flag(True)))
    app.flow_control = NS(is_active=lambda: True, manage_queue=lambda queue: None)
    app.topics = NS(_topics=[])
    bulk_delivery.register(app, TOPIC, capacity=100, place_bytes=1000, size=10)
    for name, value in over.items():
        setattr(app, name, value)
    return app


class App:
    """A stand-in worker app (its sinks are kept by weak reference to it)."""


@pytest.fixture
def order(monkeypatch: pytest.MonkeyPatch) -> guards.SourceOrder:
    async def probe(topic: str, partition: int, offset: int) -> int | None:
        return None

    order = guards.SourceOrder(probe)
    monkeypatch.setattr(guards, "ORDER", order)
    monkeypatch.setattr(guards, "GUARD", None)
    monkeypatch.setattr(guards, "GUARDED_TOPICS", {TOPIC})
    return order


@pytest.fixture
def seeks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[TP, int]]:
    done: list[tuple[TP, int]] = []
    monkeypatch.setattr(guards, "seek_back", lambda consumer, tp, offset: done.append((tp, offset)))
    return done


def test_a_partition_fetched_past_what_its_agent_got_is_read_again(
    order: guards.SourceOrder, seeks: list[tuple[TP, int]]
) -> None:
    order.expect[P0] = 3020  # admitted up to 3019; the client handed over up to 3419
    app = make_app({P0: 3420, P1: 900}, {P0: 2520, P1: 900})
    watch = undelivered.UndeliveredWatch(quiet_seconds=5.0)
    before = COUNTERS["undelivered_refetch"]
    assert undelivered.check(app, watch, now=0.0) == {}
    assert undelivered.check(app, watch, now=4.0) == {}  # not still long enough yet
    assert undelivered.check(app, watch, now=5.0) == {P0: 3020}  # from the next to admit
    assert seeks == [(P0, 3020)]
    assert COUNTERS["undelivered_refetch"] == before + 1
    # P1 is caught up (position at its committed offset): never read again


def test_nothing_is_read_again_while_the_partition_is_in_the_worker_s_hands(
    order: guards.SourceOrder, seeks: list[tuple[TP, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    watch = undelivered.UndeliveredWatch(quiet_seconds=1.0)
    # queued in the topic's sink
    app = make_app({P0: 50}, {P0: 10})
    sink = bulk_delivery.sink_for(app, TOPIC)
    assert sink is not None
    sink.messages.append(NS(topic=TOPIC, partition=0, offset=10))
    assert [undelivered.check(app, watch, now=t) for t in (0.0, 9.0)] == [{}, {}]
    # taken out of it as a batch, not done with (waiting for the broker, the stages after it)
    app = make_app({P0: 50}, {P0: 10})
    monkeypatch.setattr(batches, "_HELD", {1: frozenset({P0})})
    assert [undelivered.check(app, watch, now=t) for t in (10.0, 19.0)] == [{}, {}]
    del batches._HELD[1]
    # in the fetch the loop is handing over (it may wait to hand a message over: the rest
    # of its fetch waits with it)
    monkeypatch.setattr(eager_delivery, "FETCHING", {P0})
    assert [undelivered.check(app, watch, now=t) for t in (20.0, 29.0)] == [{}, {}]
    monkeypatch.setattr(eager_delivery, "FETCHING", set())
    # one offset Faust read over without a record: a transaction marker, not a loss
    app = make_app({P0: 11}, {P0: 10})
    app.consumer._gap = {P0: IntervalTree.from_tuples([(10, 11)])}
    assert [undelivered.check(app, watch, now=t) for t in (30.0, 39.0)] == [{}, {}]
    # fetched, not handed over yet: the next getmany brings it
    app = make_app({P0: 50}, {P0: 10}, waiting={P0: object()})
    assert [undelivered.check(app, watch, now=t) for t in (40.0, 49.0)] == [{}, {}]
    # paused by Faust (a recovery): what it fetches is dropped, and its resume seeks
    app = make_app({P0: 50}, {P0: 10})
    app.consumer._paused_partitions = {P0}
    assert [undelivered.check(app, watch, now=t) for t in (50.0, 59.0)] == [{}, {}]
    # held by the order guard (it reads the partition again itself)
    order.held[P0] = guards._Hold(10, 0.0, None)
    app = make_app({P0: 50}, {P0: 10})
    assert [undelivered.check(app, watch, now=t) for t in (60.0, 69.0)] == [{}, {}]
    assert seeks == []
    del order.held[P0]
    assert undelivered.check(app, watch, now=70.0) == {}  # quiet from here
    assert undelivered.check(app, watch, now=75.0) == {P0: 10}  # the committed offset


def test_an_idle_partition_is_read_again_while_the_busy_one_beside_it_is_in_hand(
    order: guards.SourceOrder, seeks: list[tuple[TP, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under sustained load the topic always has a batch in hand and the loop a fetch: of the
    busy partition only. The idle one's lost tail is not starved by them."""
    watch = undelivered.UndeliveredWatch(quiet_seconds=5.0)
    order.expect[P0], order.expect[P1] = 5000, 120  # P1's last records never reached it
    app = make_app({P0: 5400, P1: 160}, {P0: 4000, P1: 100})
    monkeypatch.setattr(batches, "_HELD", {1: frozenset({P0})})
    monkeypatch.setattr(eager_delivery, "FETCHING", {P0})
    assert [undelivered.check(app, watch, now=t) for t in (0.0, 4.0)] == [{}, {}]
    assert undelivered.check(app, watch, now=5.0) == {P1: 120}
    assert seeks == [(P1, 120)]


def test_a_partition_nothing_was_admitted_of_is_read_again_from_where_the_group_starts(
    order: guards.SourceOrder, seeks: list[tuple[TP, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing of P1 admitted since the assignment, no commit known there, and the client
    past offset 0 with nothing of it in hand: its head was lost, and the worker has no next
    offset for it. Once that has lasted ``quiet_seconds``, the broker is asked where the group
    starts (not while in hand, not twice at once, not again soon after a failure), and P1 is
    read again from there. P0, caught up at its commit, asks nothing."""
    asked: list[int] = []
    answers: list[int | None] = [None, 0, 0]  # the broker away, then the log start

    async def start(topic: str, partition: int) -> int:
        asked.append(partition)
        answer = answers.pop(0)
        if answer is None:
            raise OSError("broker away")
        return answer

    order.start = start

    async def scenario() -> None:
        watch = undelivered.UndeliveredWatch(quiet_seconds=5.0)

        async def look(now: float) -> dict[TP, int]:
            again = undelivered.check(app, watch, now=now)
            await asyncio.sleep(0.01)  # a lookup, if one started, answers
            return again

        app = make_app({P0: 900, P1: 40}, {P0: 900})
        monkeypatch.setattr(eager_delivery, "FETCHING", {P1})  # its fetch on its way: in hand
        assert [await look(t) for t in (0.0, 9.0)] == [{}, {}]
        assert asked == []
        monkeypatch.setattr(eager_delivery, "FETCHING", set())
        assert [await look(t) for t in (10.0, 14.0)] == [{}, {}]
        assert asked == []  # not quiet for 5 s yet
        assert await look(15.0) == {}  # asked: the broker is away
        assert asked == [1] and order.starts == {}
        # The failure is seen at the next look, and its back-off timed from there (a lookup
        # that fails slowly, on its timeouts, is not asked again at once).
        assert await look(16.0) == {}
        assert await look(25.0) == {}  # not again within twice the quiet time of the failure
        assert asked == [1]
        assert await look(26.0) == {}  # asked again: the log start, 0
        assert asked == [1, 1] and order.starts == {P1: 0}  # kept by the order guard
        assert watch.failed == {}, "an answer ends the back-off"
        assert await look(27.0) == {}  # still since here
        assert await look(32.0) == {P1: 0}
        assert seeks == [(P1, 0)]
        order.reset()  # a rebalance: the new assignment asks again
        assert [await look(t) for t in (33.0, 37.0)] == [{}, {}]
        assert asked == [1, 1]
        assert await look(38.0) == {}
        assert asked == [1, 1, 1] and order.starts == {P1: 0}
        # A commit the consumer knows goes before the answer kept: P1 is caught up at it
        # (read from the answer, 0, it would be read again from there at 44).
        app.consumer._committed_offset[P1] = 40
        assert [await look(t) for t in (39.0, 45.0, 60.0)] == [{}] * 3
        assert seeks == [(P1, 0)]

    asyncio.run(scenario())


def test_a_rebalance_ends_a_failed_lookup_s_back_off(
    order: guards.SourceOrder, seeks: list[tuple[TP, int]]
) -> None:
    asked: list[int] = []

    async def start(topic: str, partition: int) -> int:
        asked.append(partition)
        if len(asked) == 1:
            raise OSError("broker away")
        return 0

    order.start = start

    async def scenario() -> None:
        watch = undelivered.UndeliveredWatch(quiet_seconds=5.0)
        app = make_app({P1: 40}, {})
        for now in (0.0, 5.0, 6.0):  # asked at 5, failed; seen so at 6: not before 16
            undelivered.check(app, watch, now=now)
            await asyncio.sleep(0.01)
        assert asked == [1] and watch.failed == {P1: 6.0}
        order.reset()  # the new assignment asks after its own 5 s of quiet, not at 16
        for now in (7.0, 12.0):
            undelivered.check(app, watch, now=now)
            await asyncio.sleep(0.01)
        assert asked == [1, 1] and order.starts == {P1: 0}

    asyncio.run(scenario())


def test_the_start_lookup_leaves_alone_what_it_should_and_asks_one_at_a_time(
    order: guards.SourceOrder, seeks: list[tuple[TP, int]]
) -> None:
    """One lookup at a time (each is a client in a thread of the compute's pool), and after
    a failed one, the other partition's turn; an answer the broker gave for the old
    assignment is not the new one's; a partition at offset 0 asks nothing, and one whose
    commit Faust did not know but the broker did (the answer is its position) is caught up,
    not read again."""
    asked: list[tuple[int, asyncio.Future[int]]] = []

    async def start(topic: str, partition: int) -> int:
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        asked.append((partition, answer))
        return await answer

    order.start = start

    async def scenario() -> None:
        watch = undelivered.UndeliveredWatch(quiet_seconds=5.0)

        async def look(now: float) -> dict[TP, int]:
            again = undelivered.check(app, watch, now=now)
            await asyncio.sleep(0.01)
            return again

        app = make_app({P0: 30, P1: 40}, {})
        assert [await look(t) for t in (0.0, 5.0, 6.0)] == [{}] * 3
        assert len(asked) == 1 and len(watch.asking) == 1  # both want one: one at a time
        first, answer = asked[0]
        answer.set_exception(OSError("broker away"))
        await asyncio.sleep(0.01)
        assert await look(7.0) == {}
        assert len(asked) == 2 and asked[1][0] != first  # the other one's turn
        other, answer = asked[1]
        # The broker knew its commit: the client's position itself, so caught up.
        answer.set_result({0: 30, 1: 40}[other])
        await asyncio.sleep(0.01)
        assert [await look(t) for t in (8.0, 16.0)] == [{}, {}]
        assert order.starts == {TP(TOPIC, other): {0: 30, 1: 40}[other]}
        assert len(asked) == 2  # the failed one waits twice the quiet time from the look
        assert await look(17.0) == {}  # that saw it fail (7)
        assert [p for p, _ in asked] == [first, other, first]
        order.reset()  # a rebalance while it is asked: its answer is the old assignment's
        assert await look(18.0) == {}  # the look sees the new assignment first
        asked[2][1].set_result(0)
        await asyncio.sleep(0.01)
        assert order.starts == {} and not watch.asking and len(asked) == 3
        # At offset 0 nothing was handed over: nothing to ask.
        app = make_app({TP(TOPIC, 2): 0}, {})
        assert [await look(t) for t in (40.0, 50.0)] == [{}, {}]
        # Without a lookup (``order.start`` None), such a partition is left as it is.
        order.start = None
        app = make_app({P0: 30}, {})
        assert [await look(t) for t in (60.0, 70.0, 80.0)] == [{}] * 3
        assert len(asked) == 3 and not watch.asking

    asyncio.run(scenario())
    assert seeks == []


def test_during_a_rebalance_nothing_is_judged_and_the_clocks_start_again(
    order: guards.SourceOrder, seeks: list[tuple[TP, int]]
) -> None:
    watch = undelivered.UndeliveredWatch(quiet_seconds=5.0)
    app = make_app({P0: 50}, {P0: 10})
    assert undelivered.check(app, watch, now=0.0) == {}
    app.rebalancing = True  # the rebalance's own seek reads it again
    assert undelivered.check(app, watch, now=10.0) == {}
    app.rebalancing = False
    assert undelivered.check(app, watch, now=11.0) == {}  # still since 11, not since 0
    assert undelivered.check(app, watch, now=16.0) == {P0: 10}
    app.consumer._thread = None  # no client (yet): nothing to compare
    assert undelivered.check(app, watch, now=40.0) == {}
    assert seeks == [(P0, 10)]


def test_the_watch_forgets_partitions_given_up_and_counts_tries_per_pair() -> None:
    watch = undelivered.UndeliveredWatch(quiet_seconds=1.0, tries=1)
    assert watch.look(0.0, {P0: (10, 20), P1: (5, 9)}, busy=()) == {}
    assert watch.look(1.0, {P0: (10, 20)}, busy=()) == {P0: 10}  # P1 given up: forgotten
    assert set(watch._still) == {P0}
    assert watch.look(5.0, {P0: (10, 20)}, busy=()) == {}  # the one try spent on this pair
    assert watch.look(6.0, {P0: (15, 20)}, busy=()) == {}  # a new pair: tries start over
    assert watch.look(7.0, {P0: (15, 20)}, busy=()) == {P0: 15}


def test_nothing_is_judged_before_the_first_recovery_ends_or_when_the_flow_cannot_be_read(
    order: guards.SourceOrder, seeks: list[tuple[TP, int]]
) -> None:
    watch = undelivered.UndeliveredWatch(quiet_seconds=1.0)
    app = make_app({P0: 50}, {P0: 10})
    app.tables.recovery.completed = Flag(False)
    assert [undelivered.check(app, watch, now=t) for t in (0.0, 9.0)] == [{}, {}]

    def broken() -> bool:
        raise RuntimeError("gone")

    app = make_app({P0: 50}, {P0: 10})
    app.flow_control = NS(is_active=broken)
    assert [undelivered.check(app, watch, now=t) for t in (10.0, 19.0)] == [{}, {}]
    assert seeks == []


def test_the_lose_hook_drops_bulk_records_for_a_while_after_letting_some_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr("agents.faust_compat.eager_delivery.time.monotonic", lambda: clock[0])
    monkeypatch.setattr(eager_delivery, "LOSE_NEXT_FETCH", True)
    monkeypatch.setattr(eager_delivery, "LOSE_AFTER", 2)
    monkeypatch.setattr(eager_delivery, "LOSE_PARTITION", None)
    monkeypatch.setattr(eager_delivery, "_let_through", 0)
    monkeypatch.setattr(eager_delivery, "_lose_until", None)
    sinks = {TOPIC: object()}
    before = COUNTERS["test_lost"]
    dropped = [
        eager_delivery._lose(NS(topic=t, partition=0), sinks)
        for t in ("t-alerts", TOPIC, TOPIC, TOPIC, TOPIC)
    ]
    assert dropped == [False, False, False, True, True]  # another topic's and the first 2 go on
    clock[0] += eager_delivery.LOSE_SECONDS - 0.1  # a split fetch's next part: lost too
    assert eager_delivery._lose(NS(topic=TOPIC, partition=1), sinks) is True
    assert COUNTERS["test_lost"] == before + 3
    clock[0] += 0.1  # the stretch is over: what comes now reaches the agent, and the hook is off
    assert eager_delivery._lose(NS(topic=TOPIC, partition=0), sinks) is False
    assert eager_delivery.LOSE_NEXT_FETCH is False
    # lose:N:P: only partition P's records go
    monkeypatch.setattr(eager_delivery, "LOSE_NEXT_FETCH", True)
    monkeypatch.setattr(eager_delivery, "LOSE_PARTITION", 1)
    monkeypatch.setattr(eager_delivery, "_lose_until", None)
    kept = [eager_delivery._lose(NS(topic=TOPIC, partition=p), sinks) for p in (0, 1, 0, 1)]
    assert kept == [False, True, False, True]


def test_a_failed_look_is_logged_once_a_minute_and_never_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(app: Any) -> dict[Any, int]:
        raise RuntimeError("a consumer half torn down")

    monkeypatch.setattr(undelivered, "check", broken)
    monkeypatch.setattr(undelivered, "_FAILED_AT", [])
    with caplog.at_level("ERROR", logger=undelivered.__name__):
        found = [undelivered.check_quietly(None, now=t) for t in (100.0, 101.0, 159.0, 160.0)]
    assert found == [{}, {}, {}, {}]
    said = [r for r in caplog.records if "comparing fetch positions" in r.getMessage()]
    assert len(said) == 2 and said[0].exc_info is not None  # at 100 and at 160


def test_a_look_that_works_is_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(undelivered, "check", lambda app: {P0: 10})
    assert undelivered.check_quietly(None) == {P0: 10}


def test_a_lookup_that_raises_is_logged_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    """The order guard's lookup catches what the broker throws; anything else a lookup task
    raises is logged (a task's exception is otherwise only reported when it is collected)."""

    async def scenario() -> None:
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(RuntimeError("a bug"))
        undelivered._log_failure(failed)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        undelivered._log_failure(done)

    with caplog.at_level("ERROR"):
        asyncio.run(scenario())
    assert [r.getMessage() for r in caplog.records] == [
        "asking the broker where a group starts failed"
    ]
