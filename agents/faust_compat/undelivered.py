"""Records the Kafka client handed over that never reached an agent are read again.

Between the client and an agent, Faust can drop a fetched record in several places: its
``getmany`` gives up the rest of a fetched batch when the flow stops or the consumer
generation changes, and skips a partition no longer in its active set; flow control clears
the agents' buffers (and the bulk sinks, :mod:`.bulk_delivery`) at a revocation and at every
resume. Each drop counts on a seek to the committed offsets that follows it. When none
follows, the client's fetch position stays past records no agent has: nothing in the worker
will process them, and unless later records arrive for :class:`.guards.SourceOrder` to notice
the jump, the partition stays still with its lag showing (seen in CI, ``test_failover.py``:
after a takeover, a survivor processed 500 of a partition's 900 records; the client's
position was at the log end and the other 400 were nowhere; its commit never moved again).

:class:`UndeliveredWatch` compares, per source partition, the client's position with the
next offset the agent will admit. Past it, with nothing of the partition anywhere in the
worker (no message queued for the topic, no batch of it running, no guard holding it, no
fetched record waiting in the client) and neither offset moving for ``quiet_seconds``, the
partition is read again from the next offset to admit. A gap of transaction markers looks
the same: read again, it brings nothing, the same offsets come back, and after ``tries``
re-reads of the same pair the partition is left alone (and to the watchdog).

>>> watch = UndeliveredWatch(quiet_seconds=5.0, tries=2)
>>> watch.look(0.0, {"p0": (100, 140)}, busy=())
{}
>>> watch.look(6.0, {"p0": (100, 140)}, busy=())  # still, past the next offset: read again
{'p0': 100}
>>> watch.look(7.0, {"p0": (100, 100)}, busy=())  # the seek
{}
>>> watch.look(8.0, {"p0": (100, 140)}, busy=())  # nothing came: the same pair again
{}
>>> watch.look(15.0, {"p0": (100, 140)}, busy={"p0"})  # in the worker's hands: not now
{}
>>> watch.look(18.0, {"p0": (100, 140)}, busy=())  # twice the quiet time: second try
{'p0': 100}
>>> watch.look(99.0, {"p0": (100, 140)}, busy=())  # tries spent: markers, or the watchdog's
{}
>>> watch.look(99.0, {"p0": (140, 150)}, busy=())  # new records processed: a new pair
{}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.faust_compat import batches, bulk_delivery, eager_delivery, guards, introspection
from agents.faust_compat.counters import COUNTERS

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0
"""How often the worker compares positions (``agents.app``'s timer)."""
QUIET_SECONDS = 5.0
"""How long a partition's position and next offset must stay still, with nothing of it in
the worker, before it is read again (a batch waits at most ``DRIFTWATCH_BATCH_WITHIN``, 0.5 s
by default, to fill: records between the client and an agent move on within that)."""
TRIES = 3
"""Re-reads of one (next offset, position) pair before it is taken for transaction markers."""

Pair = tuple[int, int]


@dataclass
class UndeliveredWatch:
    """Remembers, per partition, since when its (next offset, position) pair has been still
    and how often it was read again."""

    quiet_seconds: float = QUIET_SECONDS
    tries: int = TRIES
    _still: dict[Any, tuple[Pair, float]] = field(default_factory=dict)
    _tried: dict[Any, tuple[Pair, int]] = field(default_factory=dict)

    def look(
        self,
        now: float,
        partitions: Mapping[Any, tuple[int | None, int | None]],
        busy: Collection[Any] | Callable[[], Collection[Any]],
    ) -> dict[Any, int]:
        """The partitions to read again and the offset to read each from. ``partitions``: per
        partition, (the next offset its agent will admit, the client's fetch position), either
        None when not known; ``busy``: partitions with something in the worker's hands, or a
        function that tells them (called only when a partition is due)."""
        out: dict[Any, int] = {}
        held: Collection[Any] | None = None if callable(busy) else busy
        for gone in set(self._still) - set(partitions):
            del self._still[gone]
        for tp, (nxt, position) in partitions.items():
            if nxt is None or position is None or position <= nxt:
                self._still.pop(tp, None)
                continue
            pair = (nxt, position)
            still = self._still.get(tp)
            if still is None or still[0] != pair:
                self._still[tp] = (pair, now)
                continue
            tried_pair, tries = self._tried.get(tp, (pair, 0))
            if tried_pair != pair:
                tries = 0
            # Each try waits twice as long: a gap of markers is not read again every few
            # seconds, and the watchdog's stall time is reached before the tries are spent.
            if tries > self.tries or now - still[1] < self.quiet_seconds * 2**tries:
                continue
            if held is None:
                held = busy() if callable(busy) else busy
            if tp in held:
                continue
            self._tried[tp] = (pair, tries + 1)
            if tries == self.tries:  # said once
                log.info("%s: %d re-reads from %d brought nothing up to %d; left as it is "
                         "(transaction markers, or the watchdog's to judge)", tp, self.tries,
                         nxt, position)  # fmt: skip
                continue
            out[tp] = nxt
        return out

    def reset(self) -> None:
        """A rebalance: reading starts again from the committed offsets."""
        self._still.clear()
        self._tried.clear()


WATCH = UndeliveredWatch()


def check(app: Any, watch: UndeliveredWatch = WATCH, now: float | None = None) -> dict[Any, int]:
    """Compare once and read again what was handed over and lost (on the worker's loop);
    returns the partitions sought back and where to."""
    now = time.monotonic() if now is None else now
    order = guards.ORDER
    if order is None or not _settled(app):
        watch.reset()
        return {}
    consumer = app.consumer
    client = introspection.fetch_positions(consumer)
    if client is None:
        return {}
    positions, waiting = client
    committed = introspection.committed_offsets(consumer)
    partitions: dict[Any, tuple[int | None, int | None]] = {}
    for tp in introspection.assignment(app):
        if tp.topic in guards.GUARDED_TOPICS:
            nxt = order.expect.get(tp)
            partitions[tp] = (committed.get(tp) if nxt is None else nxt, positions.get(tp))

    def busy() -> set[Any]:
        """The partitions with something still in the worker's hands."""
        queued = introspection.queued_partitions(app)
        running = batches.busy_batches()
        gaps = guards.GUARD.gaps if guards.GUARD is not None else {}
        blocked = eager_delivery.BLOCKED_ON
        return {
            tp
            for tp in partitions
            if tp in queued
            or tp.topic == blocked
            or tp in order.held
            or tp in gaps
            or tp in waiting
            # a batch gathered ahead of a running one is out of its queue and not admitted
            # yet (a bulk topic's agent admits what it takes at once)
            or (tp.topic in running and bulk_delivery.sink_for(app, tp.topic) is None)
        }

    again = watch.look(now, partitions, busy)
    for tp, offset in again.items():
        COUNTERS["undelivered_refetch"] += 1
        log.warning(
            "%s[%d]: the client handed over records up to offset %d, but none from %d on "
            "reached the agent and nothing of the partition is left in the worker; reading it "
            "again from %d", tp.topic, tp.partition, (partitions[tp][1] or 0) - 1, offset, offset,
        )  # fmt: skip
        guards.seek_back(consumer, tp, offset)
    return again


def _settled(app: Any) -> bool:
    """No rebalance or recovery running and the flow on: a drop now has no seek coming."""
    if getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False):
        return False
    recovery = getattr(getattr(app, "tables", None), "recovery", None)
    completed = getattr(recovery, "completed", None)
    if completed is None or not completed.is_set():
        return False
    try:
        return bool(app.flow_control.is_active()) and bool(app.consumer.flow_active)
    except Exception:
        return False


__all__ = ["CHECK_SECONDS", "UndeliveredWatch", "check"]
