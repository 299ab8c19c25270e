"""``faust_compat.batches.take_ahead``: Faust's ``take_events`` batches and acks, with the next
batch gathered while one is processed, bounded by messages and bytes.

The stream here is a stand-in with the few members of a Faust ``Stream`` that ``take_ahead``
uses, delivering like Faust's passive drainer (each event becomes ``current_event``, then the
processors run). The real stream is what every integration test's worker reads with.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agents.faust_compat.batches import take_ahead


class Channel:
    def __init__(self, events: list[Any]) -> None:
        self.events = events

    async def _gen(self) -> AsyncIterator[Any]:
        for event in self.events:
            yield event

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._gen()


class AheadStream:
    """What ``take_ahead`` uses of a Faust stream."""

    def __init__(self, values: list[bytes]) -> None:
        events = [
            SimpleNamespace(value=v, message=SimpleNamespace(value=v, offset=k))
            for k, v in enumerate(values)
        ]
        self.channel = Channel(events)
        self.enable_acks = True
        self.current_event: Any = None
        self.should_stop = False
        self._processors: list[Any] = []
        self.delivered = 0  # events the drainer handed to the processors
        self.acked: list[int] = []
        self.drainer: asyncio.Task[None] | None = None

    def add_processor(self, fn: Any) -> None:
        self._processors.append(fn)

    def _enable_passive(self, it: AsyncIterator[Any]) -> None:
        async def drain() -> None:
            async for event in it:
                self.current_event = event
                self.delivered += 1
                for fn in self._processors:
                    await fn(event.value)

        self.drainer = asyncio.ensure_future(drain())

    async def wait(self, event: asyncio.Event) -> None:
        await event.wait()

    async def wait_for_stopped(
        self,
        event: asyncio.Event,
        timeout: float | None,  # noqa: ASYNC109 - Faust's signature
    ) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def ack(self, event: Any) -> None:
        self.acked.append(event.message.offset)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_the_next_batch_is_gathered_while_one_is_processed_and_acked_after_its_own() -> None:
    stream = AheadStream([b"x"] * 25)
    seen: list[tuple[list[int], int, list[int]]] = []

    async def go() -> None:
        async for batch in take_ahead(stream, 10, 0.05, 0):
            await settle()  # processing: the drainer runs meanwhile
            # (offsets, events delivered so far, acks so far) while this batch is out
            seen.append(([e.message.offset for e in batch], stream.delivered, list(stream.acked)))
            if batch[-1].message.offset == 24:
                break

    asyncio.run(asyncio.wait_for(go(), 5))
    assert stream.enable_acks is False  # the batches ack, not the stream
    assert [s[0] for s in seen] == [list(range(10)), list(range(10, 20)), list(range(20, 25))]
    # While the first batch was out, the whole second one was gathered, and no more: ten
    # gathered while waiting for the first batch, ten ahead (the eleventh waits for room).
    assert seen[0][1] == 20
    assert seen[1][1] == 25
    # Each batch is acked once its processing is done, before the next is handed out.
    assert seen[0][2] == [] and seen[1][2] == list(range(10))
    assert seen[2][2] == list(range(20))


def test_what_is_gathered_ahead_is_bounded_by_bytes_too() -> None:
    stream = AheadStream([b"x" * 100] * 30)
    delivered: list[int] = []
    firsts: list[int] = []

    async def go() -> None:
        async for batch in take_ahead(stream, 10, 0.05, 250):
            await settle()
            delivered.append(stream.delivered)
            firsts.append(batch[0].message.offset)
            if len(delivered) == 2:
                break

    asyncio.run(asyncio.wait_for(go(), 5))
    # While a batch is out, gathering stops at the first event that reaches 250 bytes
    # (three of 100); once it is done, the next batch fills up to ten as before.
    assert delivered[0] == 10 + 3
    assert delivered[1] == 20 + 3
    assert firsts == [0, 10]  # the batches are whole all the same


def test_a_failed_batch_is_acked_as_faust_acks_it_and_nothing_gathered_ahead_is() -> None:
    """As ``take_events``: the batch is acked when closed, processed or not
    (``process_batches`` unmarks it first, so those acks are ignored); the events gathered
    ahead were never handed out and stay unacked, to be read again."""
    stream = AheadStream([b"x"] * 30)

    async def go() -> None:
        async for _ in take_ahead(stream, 10, 0.05, 0):
            await settle()
            raise RuntimeError("processing failed")

    with pytest.raises(RuntimeError):
        asyncio.run(asyncio.wait_for(go(), 5))
    assert stream.acked == list(range(10))
    assert not stream._processors  # the closed generator no longer takes the reader's events


def test_a_partial_batch_comes_when_nothing_more_arrives_within_the_wait() -> None:
    stream = AheadStream([b"x"] * 4)
    got: list[int] = []

    async def go() -> None:
        async for batch in take_ahead(stream, 10, 0.05, 0):
            got.append(len(batch))
            break

    asyncio.run(asyncio.wait_for(go(), 5))
    assert got == [4]


def test_an_actor_restarted_on_the_same_real_stream_gets_every_later_event(
    tmp_path: Path,
) -> None:
    """Faust's supervisor answers a crashed agent with a new actor on the *same* stream (its
    reader still running). The failed generator's processor must not stay behind holding the
    reader (waiting for room, or taking events nobody will process), and nothing it had
    gathered may stay unacked and referenced, or a rebalance's ``wait_empty`` waits for ever.
    A real Faust stream over an in-memory channel; messages of an acking topic."""
    import gc

    import faust
    from faust.types.tuples import ConsumerMessage

    async def go() -> None:
        # Made on the running loop: a Faust stream runs its reader on the app's loop.
        app = faust.App(
            "take-ahead-restart", broker="kafka://127.0.0.1:1", web_enabled=False,
            autodiscover=False, datadir=str(tmp_path),
        )  # fmt: skip
        app.flow_control.resume()
        app.topics.acking_topics.add("t")
        channel = app.channel(maxsize=10_000)
        stream = app.stream(channel)
        got: list[int] = []

        async def put(lo: int, hi: int) -> None:
            for k in range(lo, hi):
                message = ConsumerMessage(
                    topic="t", partition=0, offset=k, timestamp=0.0, timestamp_type=0,
                    headers={}, key=None, value=b"x", checksum=None,
                    generation_id=app.consumer_generation_id,
                )  # fmt: skip
                message.incref()
                await channel.put(faust.Event(app, None, k, {}, message))

        async def actor(fail: bool) -> None:
            async for batch in take_ahead(stream, 10, 0.05, 0):
                await asyncio.sleep(0.01)
                got.extend(e.value for e in batch)
                if fail:
                    raise RuntimeError("processing failed")

        await put(0, 25)
        with contextlib.suppress(RuntimeError):
            await asyncio.wait_for(actor(fail=True), 2)
        gc.collect()
        await settle()
        assert got == list(range(10))
        assert stream.enable_acks is False  # no ack of what nobody processed
        got.clear()
        restarted = asyncio.ensure_future(actor(fail=False))
        await put(25, 80)
        for _ in range(200):
            if len(got) >= 55:
                break
            await asyncio.sleep(0.01)
        # Every event offered after the restart; 10-24 (gathered ahead by the failed actor,
        # or still queued) are read again after the failed batch's rewind, not here.
        assert got == list(range(25, 80))
        gc.collect()
        assert not app.consumer._unacked_messages  # type: ignore[attr-defined]
        restarted.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await restarted
        await stream.stop()

    asyncio.run(go())
