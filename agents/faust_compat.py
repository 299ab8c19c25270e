"""The one module that reaches into Faust's private internals (written for faust-streaming
0.15.3; :func:`install` refuses any other version rather than patch code it has not read).

Two fixes to the consumer's offset bookkeeping, each a way a message could be committed
without ever having been processed, which showed up here as valid outcomes dead-lettered
``unknown_prediction`` after a SIGKILL (a whole ``join-input`` message of prediction frames
never applied, its offset committed):

1. **Skipped messages were acked.** A stream that takes a message from its queue after a
   rebalance began (flow control suspended) or that was fetched in an earlier consumer
   generation *skips* it, and Faust acks the skipped message "so the lag does not grow"
   (``Stream.__aiter__``). After a restart the group rebalances again once the dead member's
   session expires; messages fetched in the first generation are then skipped, acked, and a
   commit before the recovery's seek moves the committed offset past them: they are never
   read again. Here, an ack of a message from another generation, or while flow control is
   suspended, is ignored. The recovery that follows every suspension seeks back to the
   committed offset, so the message is read again and processed then (our state is
   offset-guarded: processing it twice is harmless).
2. **A missing head was committed past.** ``Consumer._new_offset`` refuses to commit when the
   lowest acked offset is more than one past the committed offset, but lets exactly one
   missing offset through (a transaction marker at the head takes an offset that is never
   delivered). On the internal topics, which only this worker writes, without transactions,
   there are no markers: a missing head is a lost message, and the commit waits for it
   (:data:`STRICT_TOPICS`). On input topics the tolerance stays (producers may be
   transactional) and each use of it is logged and counted.

What is counted is in :data:`COUNTERS` (exported as ``driftwatch_consumer_guard_total``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

FAUST_VERSION = "0.15.3"
COUNTERS: Counter[str] = Counter()
"""``stale_ack_ignored``, ``head_gap_held`` (strict topic), ``head_gap_tolerated`` (input)."""
STRICT_TOPICS: set[str] = set()
"""Topics whose offsets are contiguous (written only by us, without transactions)."""
HEAD_GAPS: dict[Any, tuple[int, int]] = {}
"""Per topic-partition, the missing head a commit is waiting for: (committed, lowest acked)."""

_installed = False
_LOGGED: set[tuple[str, int, int | None]] = set()


def install(strict_topics: Iterable[str] = ()) -> None:
    """Patch Faust's consumer (idempotent); ``strict_topics`` get the strict head check."""
    global _installed
    STRICT_TOPICS.update(strict_topics)
    if _installed:
        return
    import faust
    from faust.transport import consumer as consumer_mod

    if faust.__version__ != FAUST_VERSION:
        raise RuntimeError(
            f"agents.faust_compat was written for faust-streaming {FAUST_VERSION}, "
            f"found {faust.__version__}: review its patches before upgrading"
        )
    cls = consumer_mod.Consumer
    cls.ack = _guarded_ack(cls.ack)  # type: ignore[method-assign,assignment]
    cls._new_offset = _strict_new_offset(cls._new_offset)  # type: ignore[method-assign,assignment]
    _installed = True


def _guarded_ack(original: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def ack(self: Any, message: Any) -> bool:
        app = self.app
        stale = message.generation_id is not None and (
            message.generation_id != app.consumer_generation_id
        )
        if stale or not app.flow_control.is_active():
            # Skipped (or finished during a rebalance): read again after the recovery's seek.
            COUNTERS["stale_ack_ignored"] += 1
            seen = (message.topic, message.partition, message.generation_id)
            if seen not in _LOGGED:
                _LOGGED.add(seen)
                log.info(
                    "ignored ack of %s[%d]@%d: skipped or finished during a rebalance "
                    "(generation %s, now %s, flow %s); it is read again after the seek",
                    message.topic, message.partition, message.offset, message.generation_id,
                    app.consumer_generation_id,
                    "active" if app.flow_control.is_active() else "suspended",
                )  # fmt: skip
            return False
        return original(self, message)

    return ack


def _strict_new_offset(original: Callable[[Any, Any], int | None]) -> Callable[[Any, Any], Any]:
    def new_offset(self: Any, tp: Any) -> int | None:
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if acked and committed is not None:
            gaps = self._gap[tp]
            head = min(acked)
            covered = bool(gaps) and bool(gaps.overlaps(committed, head))
            if head > committed and not covered:
                if tp.topic in STRICT_TOPICS:
                    if HEAD_GAPS.get(tp) != (committed, head):
                        HEAD_GAPS[tp] = (committed, head)
                        COUNTERS["head_gap_held"] += 1
                        log.error(
                            "%s[%d]: offsets %d..%d were never processed but later ones were; "
                            "holding the commit at %d (a message Faust dropped)",
                            tp.topic, tp.partition, committed, head - 1, committed,
                        )  # fmt: skip
                    return None
                if head == committed + 1:
                    COUNTERS["head_gap_tolerated"] += 1
                    log.warning(
                        "%s[%d]: committing past offset %d, which this worker never received "
                        "(a transaction marker, or a message the consumer dropped)",
                        tp.topic, tp.partition, committed,
                    )  # fmt: skip
        HEAD_GAPS.pop(tp, None)
        return original(self, tp)

    return new_offset
