"""The fetch loop's eager delivery (``agents.faust_compat.eager_delivery``): a coroutine run
by hand until it first waits, and the rest of it awaited as if it had been awaited whole.
(The loop itself runs in every integration test: every worker installs it.)"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import re

import pytest

from agents.faust_compat import eager_delivery
from agents.faust_compat.eager_delivery import start_eagerly


def test_a_coroutine_that_never_waits_is_finished_at_once() -> None:
    done: list[str] = []

    async def deliver() -> None:
        done.append("put")

    assert start_eagerly(deliver()) is None
    assert done == ["put"]  # no event loop ran it: it ran inside the call


def test_a_coroutine_that_waits_runs_to_its_wait_then_on_under_the_task() -> None:
    steps: list[str] = []

    async def main() -> int:
        gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def deliver() -> int:
            steps.append("before")
            value = await gate
            steps.append("after")
            return value + 1

        rest = start_eagerly(deliver())
        assert rest is not None and steps == ["before"]
        task = asyncio.ensure_future(rest)
        await asyncio.sleep(0)
        assert not task.done() and steps == ["before"]
        gate.set_result(41)
        return await task

    assert asyncio.run(main()) == 42
    assert steps == ["before", "after"]


def test_errors_come_out_where_they_would() -> None:
    async def fails_at_once() -> None:
        raise ValueError("bad message")

    with pytest.raises(ValueError, match="bad message"):
        start_eagerly(fails_at_once())

    async def main() -> None:
        async def fails_later() -> None:
            await asyncio.sleep(0)
            raise KeyError("later")

        rest = start_eagerly(fails_later())
        assert rest is not None
        await rest

    with pytest.raises(KeyError, match="later"):
        asyncio.run(main())


def test_a_waiting_delivery_given_up_is_cancelled_inside() -> None:
    """As under Faust's ``wait_first``: the flow's wait finishes first (a rebalance), the
    delivery still waiting on a full queue is cancelled, and the cancellation reaches the
    coroutine where it waits (its cleanup runs)."""
    cleaned: list[str] = []

    async def main() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        queue.put_nowait(0)  # full

        async def deliver() -> None:
            try:
                await queue.put(1)
            finally:
                cleaned.append("cancelled" if queue.qsize() == 1 else "put")

        rest = start_eagerly(deliver())
        assert rest is not None
        suspended = asyncio.Event()
        delivery = asyncio.ensure_future(rest)
        flow = asyncio.ensure_future(suspended.wait())
        suspended.set()
        done, pending = await asyncio.wait({delivery, flow}, return_when=asyncio.FIRST_COMPLETED)
        assert done == {flow} and pending == {delivery}
        delivery.cancel()
        with pytest.raises(asyncio.CancelledError):
            await delivery

    asyncio.run(main())
    assert cleaned == ["cancelled"]


def test_a_cancellation_the_coroutine_absorbs_lets_it_finish() -> None:
    async def main() -> str:
        async def stubborn() -> str:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                await asyncio.sleep(0)
                return "finished anyway"
            return "slept"

        rest = start_eagerly(stubborn())
        assert rest is not None
        task = asyncio.ensure_future(rest)
        await asyncio.sleep(0)
        task.cancel()
        return await task

    assert asyncio.run(main()) == "finished anyway"


def test_a_rest_never_awaited_closes_its_coroutine() -> None:
    closed: list[bool] = []

    async def deliver() -> None:
        try:
            await asyncio.sleep(1)
        finally:
            closed.append(True)

    async def main() -> None:
        rest = start_eagerly(deliver())
        assert rest is not None
        steps = rest.__await__()
        next(steps)  # the wait it stopped at
        steps.close()

    asyncio.run(main())
    assert closed == [True]


def _lines(function: object) -> list[str]:
    """Code lines of ``function``'s body (no signature, docstring, comments, blank lines or
    indentation)."""
    source = inspect.getsource(function)  # type: ignore[arg-type]
    body = re.sub(r'""".*?"""', "", source, count=1, flags=re.DOTALL).split("\n", 1)[1]
    out = []
    for line in body.splitlines():
        code = re.sub(r"\s+#.*$", "", line).strip()
        if code and not code.startswith("#"):
            out.append(code)
    return out


def test_the_loop_is_faust_s_but_for_the_delivery() -> None:
    """The replacement is faust-streaming 0.15.3's loop line for line, except the delivery
    (to a topic's sink, or started eagerly), the import of a constant its module had at
    hand, the test hook that drops a fetch's records (``DRIFTWATCH_TEST_STALL=lose:N``), and
    forgetting the fetch's partitions once gone through (:data:`FETCHING`; also on the way
    out). Faust's ``_wait_next_records`` is wrapped, not copied: it notes them."""
    from faust.transport.consumer import Consumer as Base

    eager_delivery.install()
    assert Base._wait_next_records is eager_delivery._wait_next_records
    assert eager_delivery.ORIGINAL_WAIT.__qualname__ == "Consumer._wait_next_records"
    eager_delivery.install()
    eager_delivery.install()  # once per process
    from faust.transport.consumer import Consumer

    assert Consumer._drain_messages is eager_delivery._drain_messages
    ours = _lines(eager_delivery._drain_messages)
    faust = _lines(eager_delivery.ORIGINAL)
    changed = [
        line
        for line in difflib.unified_diff(faust, ours, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed == [
        "+from faust.transport.consumer import CONSUMER_FETCHING",
        "+sinks = bulk_delivery.sinks_of(self.app)",
        "+if LOSE_NEXT_FETCH and _lose(message, sinks):",
        "+continue",
        "-await self.wait_first(",
        "-callback(message), self.suspend_flow.wait()",
        "-)",
        "+sink = sinks.get(message.topic) if sinks else None",
        "+if sink is not None:",
        "+if sink.full():",
        "+await _wait_for_room(self, sink)",
        "+sink.put(message)",
        "+else:",
        "+rest = start_eagerly(callback(message))",
        "+if rest is not None:",
        "+await _finish_delivery(self, rest, message.topic)",
        "+FETCHING.clear()",
        "+FETCHING.clear()",
    ]
