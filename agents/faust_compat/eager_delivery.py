"""Faust's fetch loop hands each message to its topic's streams without four tasks a message.

Faust's ``Consumer._drain_messages`` delivers every fetched message with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: four new tasks (the
delivery, the flow's wait, the consumer's stopped and crashed waits), an ``asyncio.wait`` and
three cancellations, so that a delivery blocked on a full stream queue is given up when a
rebalance suspends the flow. Nearly every delivery never blocks: it decodes the message and
puts it in a queue with room. Those cost ~15 % of a worker's interpreter time on single-event
messages (``py-spy --gil``: the no-op Faust agent pays the same per message).

:func:`install` replaces the loop with the same loop (faust-streaming 0.15.3's, read line by
line) whose delivery is started eagerly, as Python 3.12's eager tasks do: the delivery
coroutine runs at once until it finishes or first waits. Finished, nothing else is made; if
it waits (a full queue, flow control, the producer's buffer), the rest of it runs exactly as
before, under ``wait_first`` with the flow's wait, from the point where it stopped
(:class:`Resumed`). The loop also goes on yielding to the event loop every 100 messages, as
Faust's does, so the streams keep draining their queues.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any, Generic, TypeVar, cast

from mode import Service

from agents.faust_compat import bulk_delivery
from agents.faust_compat.counters import COUNTERS
from agents.faust_compat.version import check_version

_installed = False
BLOCKED_ON: str | None = None
"""The topic of the message whose delivery the fetch loop waits for (a full stream buffer,
flow control, the producer's buffer), None when it waits for none: nothing else is delivered
meanwhile (:mod:`.backpressure` reads it)."""
FETCHING: set[Any] = set()
"""The partitions of the fetch the loop is handing over, from when Faust's
``_wait_next_records`` returns it until the loop has gone through it or given it up: their
records may be on their way to the agents (:mod:`.undelivered` leaves them alone meanwhile;
partitions not in it, it need not). Between the client's thread moving its position and this
being set there is a moment in neither: one look of the check's, which wants several in a
row before it reads a partition again."""
ORIGINAL: Any = None
"""Faust's own loop, once :func:`install` replaced it (its test compares the two)."""
ORIGINAL_WAIT: Any = None
"""Faust's own ``Consumer._wait_next_records``, once :func:`install` wrapped it."""
LOSE_NEXT_FETCH = False
"""Testing only (``DRIFTWATCH_TEST_STALL=lose:N``): of the records of topics delivered in bulk
fetched from now on, the first :data:`LOSE_AFTER` reach the agents and those of the next
:data:`LOSE_SECONDS` are dropped on their way to them, as Faust's races do
(:mod:`.undelivered` must read them again)."""
LOSE_PARTITION: int | None = None
"""Testing only (``lose:N:P``): only partition P's records are dropped; None: every partition's."""
LOSE_AFTER = 100
"""So the agent commits inside the lost records' produce batch, as in the CI run the hook
imitates: past the log end the embedded broker reports (its last batch's first offset + 1).
``lose:N:P:K`` lets K through instead (0: a partition's head is lost)."""
LOSE_SECONDS = 2.0
"""Every record of the stretch is lost, also one a split fetch brings next: no later record
may reach the agents and make the jump visible to the order guard."""
_let_through = 0
_lose_until: float | None = None


T = TypeVar("T")


class Resumed(Generic[T]):
    """The rest of a coroutine stepped once by hand (it yielded ``pending``): awaiting this
    yields ``pending`` to the awaiting task and then drives the coroutine on, as ``await``
    would have from the start.

    >>> async def two_steps() -> int:
    ...     await asyncio.sleep(0)
    ...     return 7
    >>> coro = two_steps()
    >>> pending = coro.send(None)  # it waits: sleep(0) yields None to the loop
    >>> async def main() -> int:
    ...     return await Resumed(coro, pending)
    >>> asyncio.run(main())
    7
    """

    def __init__(self, coro: Coroutine[Any, Any, T], pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, T]:
        coro, pending = self.coro, self.pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # a cancellation, thrown in where it waits
                try:
                    pending = coro.throw(exc)
                except StopIteration as done:
                    return cast(T, done.value)
                continue
            try:
                pending = coro.send(sent)
            except StopIteration as done:
                return cast(T, done.value)


def start_eagerly(coro: Coroutine[Any, Any, T]) -> Resumed[T] | None:
    """Run ``coro`` until it finishes (None: its result is dropped) or first waits (what is
    left of it); what it raises, this raises."""
    try:
        pending = coro.send(None)
    except StopIteration:
        return None
    return Resumed(coro, pending)


def install() -> None:
    """Replace Faust's fetch loop (once per process)."""
    global _installed
    if _installed:
        return
    check_version()
    from faust.transport import consumer as consumer_mod

    global ORIGINAL, ORIGINAL_WAIT
    ORIGINAL = consumer_mod.Consumer._drain_messages
    ORIGINAL_WAIT = consumer_mod.Consumer._wait_next_records
    consumer_mod.Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]
    consumer_mod.Consumer._wait_next_records = _wait_next_records  # type: ignore[method-assign]
    _installed = True


async def _wait_next_records(self: Any, timeout: float) -> tuple[Any, Any]:  # noqa: ASYNC109
    """Faust's, noting the partitions of the records it returns for ``getmany`` to hand over
    (:data:`FETCHING`; the loop forgets them once it has gone through them)."""
    records, active_partitions = await ORIGINAL_WAIT(self, timeout)
    FETCHING.clear()
    if records:
        FETCHING.update(records)
    return records, active_partitions


async def _finish_delivery(consumer: Any, rest: Resumed[Any], topic: str) -> None:
    """A delivery (of a message of ``topic``) that had to wait goes on as Faust's: under
    ``wait_first`` with the flow's wait (a rebalance gives it up); meanwhile nothing else is
    delivered."""
    global BLOCKED_ON
    COUNTERS["delivery_waited"] += 1
    BLOCKED_ON = topic
    try:
        await consumer.wait_first(rest, consumer.suspend_flow.wait())
    finally:
        BLOCKED_ON = None


async def _wait_for_room(consumer: Any, sink: bulk_delivery.Sink) -> None:
    """A full sink holds the fetch loop as a full stream buffer does: until its agent takes a
    batch, or a rebalance begins (the message is then dropped by the sink: flow is off)."""
    global BLOCKED_ON
    COUNTERS["delivery_waited"] += 1
    BLOCKED_ON = sink.topic
    try:
        await consumer.wait_first(sink.room.wait(), consumer.suspend_flow.wait())
    finally:
        BLOCKED_ON = None


def _lose(message: Any, sinks: dict[str, Any]) -> bool:
    """Whether to drop a fetched message as a race would (testing only:
    :data:`LOSE_NEXT_FETCH`): a bulk topic's, once :data:`LOSE_AFTER` went through, for
    :data:`LOSE_SECONDS` from the first dropped (only :data:`LOSE_PARTITION`'s, if set)."""
    global LOSE_NEXT_FETCH, _let_through, _lose_until
    if message.topic not in sinks:
        return False
    if LOSE_PARTITION is not None and message.partition != LOSE_PARTITION:
        return False
    if _let_through < LOSE_AFTER:
        _let_through += 1
        return False
    now = time.monotonic()
    if _lose_until is None:
        _lose_until = now + LOSE_SECONDS
    elif now >= _lose_until:
        LOSE_NEXT_FETCH = False  # the stretch is over: this one goes on
        return False
    COUNTERS["test_lost"] += 1
    return True


async def _drain_messages(self: Any, fetcher: Any) -> None:
    """faust-streaming 0.15.3's ``Consumer._drain_messages``, but for the delivery (see the
    module's docstring, and :mod:`.bulk_delivery` for the topics delivered in bulk); every
    other line as it is there."""
    from faust.transport.consumer import CONSUMER_FETCHING

    callback = self.callback
    sinks = bulk_delivery.sinks_of(self.app)  # topics delivered in bulk (filled as registered)
    getmany = self.getmany
    consumer_should_stop = cast(Service, self)._stopped.is_set
    fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for

    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            ait = cast(AsyncIterator, getmany(timeout=1.0))  # type: ignore[type-arg]

            # Sleeping because sometimes getmany is called in a loop
            # never releasing to the event loop
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    if LOSE_NEXT_FETCH and _lose(message, sinks):  # testing only
                        continue
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0

                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        # We have a gap in income messages
                        if gap > 1 and r_offset:
                            acks_enabled = acks_enabled_for(message.topic)
                            if acks_enabled:
                                await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None:  # noqa: SIM102  (Faust's lines)
                            if self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                        sink = sinks.get(message.topic) if sinks else None
                        if sink is not None:
                            if sink.full():
                                await _wait_for_room(self, sink)
                            sink.put(message)
                        else:
                            rest = start_eagerly(callback(message))
                            if rest is not None:
                                await _finish_delivery(self, rest, message.topic)
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev(
                            "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                            offset,
                            message.key,
                            message.value,
                        )
                FETCHING.clear()  # gone through, or given up (flow or generation changed)
                unset_flag(flag_consumer_fetching)

    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        FETCHING.clear()
        unset_flag(flag_consumer_fetching)


__all__ = ["Resumed", "install", "start_eagerly"]
