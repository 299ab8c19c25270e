"""The one path of unusable input to the ``dead-letters`` topic, for every agent.

Whatever the input (a prediction or a prediction inside an envelope, an outcome, an entry of
the internal join or performance topics) and wherever it fails (decoding, validation, the
engine, the join, an internal error), it becomes a :class:`Rejected`: where it came from, its
original bytes and why. :class:`DeadLetters` sends each whole, counts it and logs it, and is
awaited before the offset (or the state that gave the input up) moves on, so a rejected
message is never lost and never stops a worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agents.metrics import WorkerMetrics
from schemas import DeadLetter, InvalidEvent

log = logging.getLogger(__name__)

SendFn = Callable[[bytes, bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input given up, with where it came from (``index``: its place in an envelope)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    error: InvalidEvent
    index: int | None = None
    later: bool = False
    """Given up after it was counted as applied (the join refusing a prediction or outcome the
    edge accepted): counted in ``driftwatch_dead_letters_total`` but not again in
    ``driftwatch_events_total``, where the message already counts once, as ``ok``."""

    @classmethod
    def of(
        cls, message: Any, value: bytes | None, error: InvalidEvent, index: int | None = None
    ) -> Rejected:
        """From a Faust message (``value``: the bytes to keep, the message's or an entry's)."""
        return cls(message.topic, message.partition, message.offset, message.key, value, error,
                   index)  # fmt: skip


@dataclass
class DeadLetters:
    send: SendFn
    metrics: WorkerMetrics
    clock: Callable[[], float] = time.time

    async def put(self, rejected: Rejected) -> None:
        """Deliver one dead letter (returns once the broker has it)."""
        r = rejected
        letter = DeadLetter(
            source_topic=r.topic,
            source_partition=r.partition,
            source_offset=r.offset,
            reason=r.error.reason,
            detail=r.error.detail,
            original=r.value or b"",
            received_at=self.clock(),
            source_key=r.key,
            source_index=r.index,
        )
        await self.send(r.key or b"", letter.to_json())
        if not r.later:
            self.metrics.events.labels(r.topic, "dead_letter").inc()
        self.metrics.dead_letters.labels(r.topic, r.error.reason).inc()
        log.warning(
            "dead-lettered %s[%d]@%d%s: %s: %s", r.topic, r.partition, r.offset,
            "" if r.index is None else f"#{r.index}", r.error.reason, r.error.detail[:200],
        )  # fmt: skip

    async def put_all(self, rejected: Iterable[Rejected]) -> None:
        for r in rejected:
            await self.put(r)
