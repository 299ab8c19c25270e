"""The agents' read-ahead bounded by bytes as well as by messages."""

from __future__ import annotations

from typing import Any

from agents.faust_compat.version import check_version


def value_bytes(item: Any) -> int:
    """The bytes of an event's message value (0 for anything else): what the read-ahead
    bounds, in the stream buffers and in a batch gathered ahead (:mod:`.batches`)."""
    value = getattr(getattr(item, "message", None), "value", None)
    return len(value) if isinstance(value, bytes | bytearray) else 0


def place_bytes(budget_bytes: int, maxsize: int) -> int:
    """The bytes of one of a buffer's ``maxsize`` places under ``budget_bytes`` (0: no byte
    bound, every message one place).

    >>> place_bytes(8 << 20, 4096), place_bytes(0, 4096) > 1 << 60
    (2048, True)
    """
    return max(1, budget_bytes // maxsize) if budget_bytes > 0 else 1 << 62


def bound_stream_buffers(app: Any, budget_bytes: int) -> None:
    """Every agent's stream buffer (the messages read ahead, not yet processed) holds at most
    ``budget_bytes`` of message values as well as its ``maxsize`` messages.

    Faust bounds the read-ahead in messages only (``stream_buffer_maxsize``): a buffer of
    4,096 envelopes of 500 predictions is two million predictions, and through a backlog the
    worker's memory grew by that much before it levelled off (``bench.worker_memory``).
    Here a message takes ``ceil(bytes / (budget_bytes / maxsize))`` of the buffer's places,
    so small messages (one prediction) are bounded as before and large ones by their bytes;
    Faust's own flow control then pauses fetching a partition as its buffer fills, as it
    always does. Faust builds each buffer with ``app.FlowControlQueue``: this replaces that
    factory. 0: Faust's count-only buffers.
    """
    if budget_bytes <= 0:
        return
    check_version()
    from mode.utils.queues import ThrowableQueue

    class ByteBudgetQueue(ThrowableQueue):  # type: ignore[type-arg]
        """``qsize`` is the places taken (what Faust's flow control and ``full`` read)."""

        def __init__(self, maxsize: int, *, place_bytes: int, **kwargs: Any) -> None:
            self.place_bytes = place_bytes
            self.places = 0
            super().__init__(maxsize, **kwargs)

        def _places(self, item: Any) -> int:
            return max(1, -(-value_bytes(item) // self.place_bytes))

        def _put(self, item: Any) -> None:
            super()._put(item)
            self.places += self._places(item)

        def _get(self) -> Any:
            item = super()._get()
            self.places -= self._places(item)
            return item

        def qsize(self) -> int:
            return self.places

        def messages(self) -> int:
            return len(self._queue)  # type: ignore[attr-defined]  # asyncio.Queue's deque

        def clear(self) -> None:
            super().clear()
            self.places = 0

    def flow_control_queue(maxsize: int | None = None, *, clear_on_resume: bool = False) -> Any:
        if not maxsize or maxsize <= 0:
            return ThrowableQueue(
                maxsize=maxsize, flow_control=app.flow_control, clear_on_resume=clear_on_resume
            )
        return ByteBudgetQueue(
            maxsize,
            place_bytes=place_bytes(budget_bytes, maxsize),
            flow_control=app.flow_control,
            clear_on_resume=clear_on_resume,
        )

    app.FlowControlQueue = flow_control_queue
