"""Batches of an agent's stream, processed so that a batch's acks mean its work is done:
every message marked as it reaches processing and admitted in offset order
(:mod:`agents.faust_compat.guards`), the batch's changelog records delivered before its acks,
an unfinished batch read again; and what is being processed now, for the watchdog."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

from agents.faust_compat import backpressure, bulk_delivery, commit_cap, guards
from agents.faust_compat.counters import COUNTERS
from agents.faust_compat.read_ahead import value_bytes
from agents.faust_compat.version import check_version

_BUSY: dict[object, tuple[str, float]] = {}
_LAST_BATCH: dict[str, tuple[float, int, dict[int, int]]] = {}
_HELD: dict[int, frozenset[Any]] = {}
"""Per batch taken out of a sink or stream buffer and not done with (by the ``id`` of a token
while the order guard admits it, then of the list handed to :func:`process_batches`), the
source partitions of its messages (:func:`in_hand`)."""
AFTER_BATCH: Callable[[Any, int], None] | None = None
"""Called on the loop after each processed batch with (stream, events): the watchdog's
test-only stall hook (:mod:`agents.watchdog`)."""
_RETRYING: asyncio.Future[None] | None = None


async def process_batches(
    stream: Any,
    topic: str,
    size: int,
    within: float,
    process: Callable[[list[Any]], Awaitable[None]],
    downstream: Collection[str] = (),
    ahead_bytes: int | None = None,
) -> None:
    """Run ``process`` over :func:`ordered_batches`, each batch once the stages reading the
    ``downstream`` topics are not too far behind (:mod:`.backpressure`). ``ahead_bytes``:
    gather the next batch while this one is processed (:func:`take_ahead`); None: Faust's
    ``take_events``. A batch whose
    processing did not finish (cancelled by a stop or a rebalance, or failed) is unmarked
    first: Faust's ``take_events`` acks every event of a batch when it is closed, whatever
    became of it, and a final commit on stop then moved past events whose state was never
    written (counts lost when a worker left the group with a batch in flight: found by the
    scale-out test)."""
    async for batch in ordered_batches(stream, topic, size, within, ahead_bytes):
        try:
            await _process_one(stream, topic, batch, process, downstream)
        finally:
            _HELD.pop(id(batch), None)  # done with: processed, or failed


async def _process_one(
    stream: Any,
    topic: str,
    batch: list[Any],
    process: Callable[[list[Any]], Awaitable[None]],
    downstream: Collection[str],
) -> None:
    """One batch of :func:`process_batches`: the gate, the work, its changelog, the rewind
    of a batch that did not finish."""
    gate = backpressure.GATE
    if gate is not None and downstream:
        try:
            await gate.wait(stream.app, topic, downstream)
        except BaseException:  # a stop while waiting: the batch was never processed
            _unmark(batch)
            raise
    token = object()
    _BUSY[token] = (topic, time.monotonic())
    try:
        await process(batch)
        await drain_producer(stream.app)  # its state's changelog records, before its acks
    except BaseException:
        _unmark(batch)
        COUNTERS["unfinished_batch"] += 1
        # Stopping, the next owner reads from the committed offsets: no seek on a
        # consumer that is going away.
        # Also from every commit hold: what was processed since the state was last
        # written is gone with the failure (:mod:`.commit_cap`).
        if guards.ORDER is not None and not getattr(stream.app, "should_stop", False):
            points = commit_cap.rewind_points(topic, batch)
            sought = guards.ORDER.rewind_to(stream.app.consumer, points)
            sink = bulk_delivery.sink_for(stream.app, topic)
            if sink is not None and sought:  # fetched past the rewind: read again after it
                sink.forget(tp.partition for tp in sought)
        raise
    finally:
        del _BUSY[token]
    if gate is not None:
        gate.processed(batch)
    _LAST_BATCH[topic] = (time.monotonic(), len(batch), _partition_counts(batch))
    if AFTER_BATCH is not None:
        AFTER_BATCH(stream, len(batch))


async def drain_producer(app: Any, poll: float = 0.5) -> None:
    """Until every record handed to Faust's producer (the batch's table changelogs among
    them) is delivered: the batch's acks come after this.

    Faust's own ``ProducerBuffer.flush`` gives up as soon as no buffered record is sent within
    0.1 s, and the consumer commits right after it: with a slow broker the group committed
    past events whose state was still in the buffer, and a worker that left (or was killed)
    then lost them - the new owner restored a changelog without those writes (24 counts of
    one window in the scale-out test under coverage)."""
    producer = app.producer
    buffer = getattr(producer, "buffer", None)
    waited = False
    while buffer is not None and buffer.size:
        waited = True
        buffer.message_sent.clear()
        try:
            await asyncio.wait_for(buffer.message_sent.wait(), timeout=poll)
        except TimeoutError:
            continue
    if waited:
        COUNTERS["slow_changelog_drained"] += 1
    # The buffer's size drops when its sender takes a record, before the record reaches the
    # Kafka client: the client flush covers that one too (and waits for delivery).
    await producer.flush()


def busy_since() -> float | None:
    """When the oldest batch still being processed started (``time.monotonic``), or None:
    the watchdog tells a slow batch from a stuck worker by it. Safe from any thread."""
    return min((since for _, since in list(_BUSY.values())), default=None)


def _partition_counts(batch: list[Any]) -> dict[int, int]:
    counts: Counter[int] = Counter(
        getattr(getattr(event, "message", None), "partition", -1) for event in batch
    )
    return dict(counts)


def last_batches() -> dict[str, dict[str, Any]]:
    """Per source topic, the last batch processed: how long ago (seconds), its size and its
    messages per partition (for the watchdog's account of a slow or stuck worker)."""
    now = time.monotonic()
    return {
        topic: {"seconds_ago": round(now - at, 1), "events": n, "by_partition": parts}
        for topic, (at, n, parts) in list(_LAST_BATCH.items())
    }


def in_hand() -> set[Any]:
    """Source partitions with messages in a batch taken out of their topic's sink or stream
    buffer and not done with yet (waiting for the broker's word on its order, for the stages
    after it, or being processed): they are in no queue, and while the order guard waits for
    the broker they are not admitted yet either. Per partition, not per topic: a busy
    partition's batches say nothing of an idle one beside it. Safe from any thread."""
    return set().union(*list(_HELD.values()))


def _partitions(batch: list[Any]) -> frozenset[Any]:
    tps = {getattr(getattr(event, "message", None), "tp", None) for event in batch}
    tps.discard(None)
    return frozenset(tps)


def busy_batches() -> dict[str, float]:
    """Per source topic, how long its oldest running batch has run (seconds): for the
    watchdog's account of why it is not judging. Safe from any thread."""
    now = time.monotonic()
    out: dict[str, float] = {}
    for topic, since in list(_BUSY.values()):
        out[topic] = max(out.get(topic, 0.0), round(now - since, 1))
    return out


async def ordered_batches(
    stream: Any, topic: str, size: int, within: float, ahead_bytes: int | None = None
) -> AsyncIterator[list[Any]]:
    """``stream.take_events`` (or :func:`take_ahead`, given ``ahead_bytes``) with every
    message marked (:func:`.guards.mark_delivered`) and admitted in offset order
    (:class:`.guards.SourceOrder`); batches left empty are not yielded."""
    guards.mark_delivered(stream, topic)
    global _RETRYING
    order = guards.ORDER
    if order is not None and (
        _RETRYING is None or _RETRYING.get_loop() is not asyncio.get_running_loop()
    ):
        _RETRYING = asyncio.ensure_future(order.retry_forever())
    sink = bulk_delivery.sink_for(stream.app, topic)
    if sink is not None:
        batches = take_bulk(stream, sink, size, within)
    elif ahead_bytes is None:
        batches = stream.take_events(size, within=within)
    else:
        batches = take_ahead(stream, size, within, ahead_bytes)
    async for batch in batches:
        token = object()  # in hand while admitted; then, if any is left, until processed
        _HELD[id(token)] = _partitions(batch)
        try:
            if guards.ORDER is not None:
                try:
                    batch = await guards.ORDER.admit(stream.app.consumer, list(batch))
                except BaseException:  # stopped while the broker was asked: none processed
                    _unmark(batch)
                    raise
            if batch:  # process_batches lets it go (no await between here and its ``try``)
                _HELD[id(batch)] = _partitions(batch)
        finally:
            del _HELD[id(token)]
        if batch:
            try:
                yield batch
            finally:  # process_batches lets it go itself; another caller's is let go here
                _HELD.pop(id(batch), None)


def _unmark(batch: list[Any]) -> None:
    """The batch's messages were not processed: the acks its generator sends when it is
    closed are ignored (:mod:`.guards`), so the commit never moves past them."""
    for event in batch:
        guards._DELIVERED.discard(event.message)


async def take_ahead(
    stream: Any, size: int, within: float, ahead_bytes: int
) -> AsyncIterator[list[Any]]:
    """Faust's ``take_events`` (batches of up to ``size`` events, or what came ``within``
    seconds; each batch's events acked once the caller is done with it, processed or not),
    but the next batch is gathered while this one is processed.

    ``take_events`` stops reading its stream while a batch is out, so a worker's interpreter
    did one thing at a time: Faust's per-message work for a whole batch, then the batch's
    computing, then waiting for the broker (its changelog records, its outputs), idle. Here
    the stream goes on into the next batch meanwhile, up to ``size`` events and
    ``ahead_bytes`` of their values (0: no byte bound), so that work fills the waits. The
    events gathered ahead are neither processed nor acked before their own batch is: a
    worker that stops or fails reads them again, as it does the rest of its read-ahead.
    """
    check_version()  # the stream's passive drainer is Faust's private machinery
    events: list[Any] = []  # gathered, not yet handed out
    gathered_bytes = 0
    out = False  # a batch is being processed
    closed = False  # this generator is done: its processor hands nothing on
    ready = asyncio.Event()  # a whole batch is gathered
    room = asyncio.Event()  # the stream may add the next event
    room.set()
    timeout = within or None

    def full() -> bool:
        return len(events) >= size or (out and 0 < ahead_bytes <= gathered_bytes)

    async def add_to_buffer(value: Any) -> Any:
        nonlocal gathered_bytes
        if closed:
            return value
        event = stream.current_event
        if event is None:  # pragma: no cover - Faust sets it for every event it delivers
            raise RuntimeError("take_ahead found no current event")
        events.append(event)
        gathered_bytes += value_bytes(event)
        if len(events) >= size:
            ready.set()
        if full():
            room.clear()
            await stream.wait(room)
        return value

    stream.enable_acks = False  # acked here, after their batch
    stream.add_processor(add_to_buffer)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(ready, timeout=timeout)
            if not events:
                continue
            batch = events[:size]
            del events[:size]
            gathered_bytes = sum(map(value_bytes, events))
            if len(events) < size:
                ready.clear()
            out = True
            if not full():
                room.set()
            try:
                yield list(batch)  # the caller's own list: what is acked is what was taken
            finally:
                out = False
                if not full():
                    room.set()
                await _ack_all(stream, batch)
                # No reference kept to a batch whose messages a failure unmarked (or the
                # offset order held back): Faust's consumer waits for them at a rebalance
                # until they are acked or gone.
                batch = []
    finally:
        # Closed (a stop, or a failure Faust's supervisor answers with a new actor on the same
        # stream): the stream's reader must not wait for room here, nor hand anything to this
        # generator again. What was gathered ahead was never handed out or acked: a failed
        # batch's rewind (process_batches) reads it again, as a stop's next owner does.
        closed = True
        with contextlib.suppress(ValueError):
            stream._processors.remove(add_to_buffer)
        events.clear()
        room.set()
        # Acks stay off: the reader would otherwise ack messages that nobody processed
        # before the next generator turned them off again.


async def take_bulk(
    stream: Any, sink: bulk_delivery.Sink, size: int, within: float
) -> AsyncIterator[list[Any]]:
    """:func:`take_ahead`'s batches from a topic delivered in bulk (:mod:`.bulk_delivery`):
    up to ``size`` messages, as soon as there are that many or the sink is under pressure,
    else what came ``within`` seconds; each batch's messages acked once the caller is done
    with it (an ack of one whose processing failed is ignored: :func:`_unmark`). The fetch
    loop fills the sink meanwhile, as far as its read-ahead allows."""
    timeout = within or None
    while not stream.should_stop:
        await stream.wait_for_stopped(sink.ready, timeout=timeout)
        batch = sink.take(size)
        if not batch:
            continue
        try:
            yield batch
        finally:
            ack = stream.app.consumer.ack
            for event in batch:
                ack(event.message)
            batch = []  # no reference kept (see take_ahead)


async def _ack_all(stream: Any, events: list[Any]) -> None:
    for event in events:
        await stream.ack(event)
