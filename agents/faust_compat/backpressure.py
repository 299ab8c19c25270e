"""Upstream agents wait for this worker's downstream stages: a backlog stays in the source
topics, where its lag shows, not between the stages.

The worker is a pipeline in one process: ``predictions`` and ``outcomes`` feed ``join-input``,
the join feeds ``performance-input``. All its agents share one event loop, one fetch loop and
the interpreter, and nothing made an upstream agent wait for the stages after it: under a
sustained load near the worker's capacity the drift agent took what it could read, and the join
and the performance monitor fell behind without bound (``make demo`` after the eager delivery:
the performance incidents, days of event time behind the features, were confirmed only after
the producer had stopped). Their backlog sat in internal topics, invisible to an alert on the
input topics' lag, bounded only by those topics' retention; performance drift, the reason the
join runs, was found late by as much as the backlog.

:class:`DownstreamGate` makes an agent wait, before each batch, while any partition of the
topics it feeds that this worker owns has more than ``limit`` messages past the next one its
agent will process. The wait gives up early when the fetch loop itself is blocked on a full
stream buffer of another topic (:data:`.eager_delivery.BLOCKED_ON`: the downstream messages
may be queued behind the waiting agent's own), not when the full buffer is a downstream
stage's (that stage has its work at hand, and its progress frees the loop: giving up there
let the drift agent run ahead of a join 180,000 predictions behind, in ``bench.throughput
--live --batch 500``), and after ``max_wait`` seconds whatever happens, so a stage that
stopped cannot stop the others (the watchdog judges that stage). It also ends when
the worker stops or a rebalance starts: the batch then runs at once, as any batch in flight,
and Faust's revocation waits for it. Partitions other workers own are theirs to keep up with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from faust.types import TP

from agents.faust_compat import eager_delivery

WAITED: dict[str, float] = {}
"""Seconds each source topic's agent waited for the stages after it
(``driftwatch_backpressure_wait_seconds_total``)."""


def over_limit(
    ends: Mapping[Any, int | None], next_offsets: Mapping[Any, int | None], limit: int
) -> dict[Any, int]:
    """The partitions whose unprocessed messages (end minus the next offset to process) exceed
    ``limit``; a partition with either offset unknown is not judged.

    >>> over_limit({"a": 100, "b": 100, "c": None}, {"a": 60, "b": 90, "c": 0}, 20)
    {'a': 40}
    """
    out = {}
    for tp, end in ends.items():
        nxt = next_offsets.get(tp)
        if end is None or nxt is None:
            continue
        if end - nxt > limit:
            out[tp] = end - nxt
    return out


class DownstreamGate:
    """Where each source partition's processing has got to, and the wait of upstream agents.

    ``limit`` messages per downstream partition (0: no wait); ``max_wait`` seconds at most
    before a batch."""

    def __init__(self, limit: int, max_wait: float = 10.0, poll: float = 0.02) -> None:
        self.limit = limit
        self.max_wait = max_wait
        self.poll = poll
        self._next: dict[Any, int] = {}
        self._sent_end: dict[Any, int] = {}
        """Per downstream partition, the offset after the last message this worker sent."""
        self._sent_start: dict[Any, int] = {}
        """Per downstream partition, the first offset this worker sent there."""

    def sent(self, records: Iterable[Any]) -> None:
        """Messages this worker sent were delivered (their record metadata): each partition's
        end is past them, whatever the consumer last fetched. The consumer's high watermark
        moves only with its fetches, and the fetch loop stops while it waits to deliver a
        message to a full stream buffer: judged by it alone, the join was "not behind" while
        the drift agent forwarded 120,000 predictions more (``bench.throughput --live
        --batch 500``)."""
        for r in records:
            offset = getattr(r, "offset", None)
            if offset is None or offset < 0 or not hasattr(r, "partition"):
                continue
            tp = TP(r.topic, r.partition)
            self._sent_end[tp] = max(self._sent_end.get(tp, 0), offset + 1)
            self._sent_start.setdefault(tp, offset)

    def processed(self, batch: Iterable[Any]) -> None:
        """A batch's work is done: its partitions' next offsets move past it."""
        nxt = self._next
        for event in batch:
            m = event.message
            tp, offset = getattr(m, "tp", None), getattr(m, "offset", None)
            if tp is not None and offset is not None and offset >= nxt.get(tp, -1):
                nxt[tp] = offset + 1

    def forget(self, tps: Collection[Any]) -> None:
        """Partitions given up: when one comes back, its committed offset is the start."""
        for tp in tps:
            self._next.pop(tp, None)
            self._sent_start.pop(tp, None)

    def next_offsets(self, consumer: Any) -> dict[Any, int]:
        """Per assigned partition, the next offset to process: this worker's own record past
        a processed batch, else the group's committed offset, else (a group that has
        committed nothing there yet, as at a first start) the first offset this worker sent
        there: nothing of it is processed yet, or the first would say so."""
        from agents.faust_compat.introspection import committed_offsets

        out = dict(committed_offsets(consumer))
        out.update(self._next)
        for tp, first in self._sent_start.items():
            if out.get(tp) is None:
                out[tp] = first
        return out

    def behind(self, consumer: Any, topics: Collection[str]) -> dict[Any, int]:
        """The partitions of ``topics`` this worker owns that are more than ``limit`` behind."""
        try:
            assigned = [tp for tp in consumer.assignment() if tp.topic in topics]
        except Exception:  # no assignment yet (a rebalance)
            return {}
        ends: dict[Any, int | None] = {}
        for tp in assigned:
            try:
                end = consumer.highwater(tp)
            except Exception:
                end = None
            known = [e for e in (end, self._sent_end.get(tp)) if e is not None]
            ends[tp] = max(known) if known else None
        return over_limit(ends, self.next_offsets(consumer), self.limit)

    async def wait(
        self, app: Any, source: str, topics: Collection[str], longest: float | None = None
    ) -> float:
        """Before a batch of ``source`` (or a part of it): wait while the stages reading
        ``topics`` are behind (see the module), at most ``longest`` seconds (None:
        ``max_wait``); the seconds waited."""
        if self.limit <= 0 or not topics:
            return 0.0
        consumer = app.consumer
        started = time.monotonic()
        deadline = started + (self.max_wait if longest is None else longest)
        slept = False
        # Polled: the fetch loop's state and the broker's ends are what move, and no event
        # tells of them.
        while (
            self.behind(consumer, topics)
            and not _blocked_elsewhere(topics)
            and not getattr(app, "should_stop", False)
            and not getattr(app, "rebalancing", False)  # the batch's partitions may move
            and time.monotonic() < deadline
        ):
            slept = True
            await asyncio.sleep(self.poll)
        if not slept:
            return 0.0
        waited = time.monotonic() - started
        WAITED[source] = WAITED.get(source, 0.0) + waited
        return waited


def _blocked_elsewhere(topics: Collection[str]) -> bool:
    """Whether the fetch loop waits to deliver a message of a topic other than ``topics``."""
    blocked = eager_delivery.BLOCKED_ON
    return blocked is not None and blocked not in topics


GATE: DownstreamGate | None = None
"""The worker's gate (set by ``agents.app.create_app``; None: no agent waits)."""


__all__ = ["GATE", "WAITED", "DownstreamGate", "over_limit"]
