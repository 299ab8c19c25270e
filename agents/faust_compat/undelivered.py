"""Records the Kafka client handed over that never reached an agent are read again.

Between the client and an agent, Faust can drop a fetched record in several places: its
``getmany`` gives up the rest of a fetched batch when the flow stops or the consumer
generation changes, and skips a partition no longer in its active set; flow control clears
the agents' buffers (and the bulk sinks, :mod:`.bulk_delivery`) at a revocation and at every
resume. Each drop counts on a seek to the committed offsets that follows it. When none
follows, the client's fetch position stays past records no agent has: nothing in the worker
will process them, and unless later records arrive for :class:`.guards.SourceOrder` to notice
the jump, the partition stays still with its lag showing (seen in CI, ``test_failover.py``:
after a takeover, a survivor processed a partition to 3,020 and committed it; the client's
position was at the log end, 3,420, and the 400 records between were nowhere in the worker).

:class:`UndeliveredWatch` compares, per source partition of the topics delivered in bulk
(:mod:`.bulk_delivery`: everything between the client and the agent is in sight there), the
client's position with the next offset the agent will admit. Past it, with nothing of the
partition in the worker's hands for ``quiet_seconds`` in a row (nothing of it in its sink, in
a batch taken and not done with, or in the fetch the loop is handing over, no guard holding
it, no fetched record waiting in the client, not paused by Faust, not a gap Faust read over
as transaction markers) and neither offset moving, the partition is read
again from the next offset to admit. A gap of markers Faust has not seen as such looks the
same: read again, it brings nothing, the same pair comes back, and after ``tries`` re-reads
(the first after 5 s of quiet, each next one twice as long after the one before) the
partition is left alone, and to the watchdog. A re-read that was
not needed costs a few records read twice: the offset guards skip what was applied.

A partition whose agent has admitted nothing since the assignment, and with no commit Faust
knows of there, has no next offset to admit in the worker's books: when every record the
client handed over of it was lost (the head of a new partition, say), the client's position
is past records nothing will process, and the worker would wait for the watchdog's restart.
Once such a partition has been past offset 0 with nothing of it in hand for ``quiet_seconds``,
the broker is asked where the group starts there (the order guard's lookup: its committed
offset, or the log start when there is none or the commit is below it, where the consumer's
``earliest`` reset reads; a throw-away client, one lookup awaited at a time; a partition
whose lookup failed is asked again no sooner than twice ``quiet_seconds`` after the failure
was seen, another meanwhile), and the answer, kept by the order guard for the assignment (its
first admission of the partition reads it too, not the broker again), is the next offset to
admit: the watch then judges it as any other.

>>> watch = UndeliveredWatch(quiet_seconds=5.0, tries=2)
>>> watch.look(0.0, {"p0": (100, 140)}, busy=())
{}
>>> watch.look(3.0, {"p0": (100, 140)}, busy={"p0"})  # in the worker's hands: not quiet
{}
>>> watch.look(6.0, {"p0": (100, 140)}, busy=())  # quiet again from here
{}
>>> watch.look(11.0, {"p0": (100, 140)}, busy=())  # 5 s quiet, nothing in hand: read again
{'p0': 100}
>>> watch.look(12.0, {"p0": (100, 140)}, busy=())  # nothing came: the same pair
{}
>>> watch.look(21.0, {"p0": (100, 140)}, busy=())  # twice the wait after the first try
{'p0': 100}
>>> watch.look(99.0, {"p0": (100, 140)}, busy=())  # tries spent: markers, or the watchdog's
{}
>>> watch.look(99.0, {"p0": (140, 150)}, busy=())  # new records processed: a new pair
{}
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.faust_compat import batches, bulk_delivery, eager_delivery, guards, introspection
from agents.faust_compat.counters import COUNTERS

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0
"""How often the worker compares positions (``agents.app``'s timer)."""
QUIET_SECONDS = 5.0
"""How long a partition must be behind its client's position with nothing of it in the
worker's hands, both offsets still, before it is read again (records on their way are seen as
in hand wherever they wait: a sink, a batch held for the broker's word or for the stages
after it, the fetch loop)."""
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
    _tried: dict[Any, tuple[Pair, int, float]] = field(default_factory=dict)
    """Per partition: the pair last read again, how often, and when last."""
    generation: int = 0
    """The order guard's generation the watch's clocks belong to."""
    asking: dict[Any, asyncio.Future[None]] = field(default_factory=dict)
    """The lookup of a start running, by partition (held: the loop keeps a task only
    weakly)."""
    unknown_since: dict[Any, float] = field(default_factory=dict)
    """Since when a partition with no next offset known has been past 0, nothing in hand."""
    failed: dict[Any, float] = field(default_factory=dict)
    """When a partition's last failed lookup was seen to have failed: the first look after
    it ended, so a lookup that failed slowly, on its timeouts, still waits its back-off from
    its end."""
    ended: set[Any] = field(default_factory=set)
    """Partitions whose lookup failed since the last look (:attr:`failed` from that look)."""

    def look(
        self,
        now: float,
        partitions: Mapping[Any, tuple[int | None, int | None]],
        busy: Collection[Any],
    ) -> dict[Any, int]:
        """The partitions to read again and the offset to read each from. ``partitions``: per
        partition, (the next offset its agent will admit, the client's fetch position), either
        None when not known; ``busy``: partitions with something in the worker's hands now
        (their quiet time starts again)."""
        out: dict[Any, int] = {}
        for gone in set(self._still) - set(partitions):
            del self._still[gone]
        for tp, (nxt, position) in partitions.items():
            if nxt is None or position is None or position <= nxt or tp in busy:
                self._still.pop(tp, None)
                continue
            pair = (nxt, position)
            still = self._still.get(tp)
            if still is None or still[0] != pair:
                self._still[tp] = (pair, now)
                continue
            tried_pair, tries, last = self._tried.get(tp, (pair, 0, now))
            if tried_pair != pair:
                tries, last = 0, now
            # Each try waits twice as long as the one before (5, 10, 20 s): a gap of markers
            # is not read again every few seconds.
            since = max(still[1], last) if tries else still[1]
            if tries > self.tries or now - since < self.quiet_seconds * 2**tries:
                continue
            self._tried[tp] = (pair, tries + 1, now)
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
        self.unknown_since.clear()
        self.failed.clear()  # a new assignment asks at once (a lookup running ends as it will)
        self.ended.clear()


WATCH = UndeliveredWatch()


def check(app: Any, watch: UndeliveredWatch = WATCH, now: float | None = None) -> dict[Any, int]:
    """Compare once and read again what was handed over and lost (on the worker's loop);
    returns the partitions sought back and where to."""
    now = time.monotonic() if now is None else now
    order = guards.ORDER
    if order is None or not _settled(app):
        watch.reset()
        return {}
    if watch.generation != order.generation:  # a rebalance the looks did not see
        watch.reset()
        watch.generation = order.generation
    consumer = app.consumer
    client = introspection.fetch_positions(consumer)
    if client is None:
        return {}
    positions, waiting = client
    committed = introspection.committed_offsets(consumer)
    gaps = guards.GUARD.gaps if guards.GUARD is not None else {}
    partitions: dict[Any, tuple[int | None, int | None]] = {}
    for tp in introspection.assignment(app):
        # Topics delivered in bulk only: what is in hand there is in sight (their sinks and
        # the batches taken out of them), not in a stream's gathering of its next batch.
        if tp.topic in guards.GUARDED_TOPICS and bulk_delivery.sink_for(app, tp.topic):
            nxt = order.expect.get(tp)
            if nxt is None:
                nxt = committed.get(tp, order.starts.get(tp))
            partitions[tp] = (nxt, positions.get(tp))
    busy: set[Any] = set()
    # Behind what the client handed over, or nothing admitted, no commit, and past offset 0.
    behind = {tp: (n, p) for tp, (n, p) in partitions.items() if p and (n is None or p > n)}
    if behind:
        fetching = eager_delivery.FETCHING  # the fetch the loop is handing over
        queued = bulk_delivery.queued_partitions(app)
        taken = batches.in_hand()
        paused = introspection.paused_partitions(consumer)
        consumer_gaps = getattr(consumer, "_gap", {})  # Faust's offsets read over as markers
        for tp, (nxt, position) in behind.items():
            if (
                tp in fetching
                or tp in queued
                or tp in taken
                or tp in paused  # Faust drops what it fetches of them, and seeks on resume
                or tp in order.held
                or tp in gaps
                or tp in waiting
                or (
                    nxt is not None
                    and order.known_markers(consumer_gaps.get(tp), tp, nxt, position)
                )
            ):
                busy.add(tp)
    unknown = {tp: p for tp, (n, p) in behind.items() if n is None and tp not in busy}
    if order.start is not None:
        _ask_starts(order, watch, now, unknown)
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


def _ask_starts(
    order: guards.SourceOrder, watch: UndeliveredWatch, now: float, unknown: Mapping[Any, int]
) -> None:
    """Ask the broker where the group starts on one of the ``unknown`` partitions (with their
    client positions) that has been so for ``quiet_seconds``, unless a lookup is running: each
    is a throw-away client in a thread of the pool the worker's compute runs in."""
    for gone in set(watch.unknown_since) - set(unknown):
        del watch.unknown_since[gone]
    for tp in watch.ended:  # failed since the last look: its back-off starts now
        watch.failed[tp] = now
    watch.ended.clear()
    for tp, position in unknown.items():
        since = watch.unknown_since.setdefault(tp, now)
        if (
            watch.asking
            or now - since < watch.quiet_seconds
            or now - watch.failed.get(tp, -math.inf) < 2 * watch.quiet_seconds
        ):
            continue
        task = asyncio.ensure_future(_ask_start(order, watch, tp, position))
        task.add_done_callback(_log_failure)
        watch.asking[tp] = task


async def _ask_start(
    order: guards.SourceOrder, watch: UndeliveredWatch, tp: Any, position: int
) -> None:
    """Learn where the group starts on ``tp`` (see the module), for the next looks: the order
    guard keeps the answer (:attr:`.guards.SourceOrder.starts`, for this generation only). A
    failed lookup (logged by the order guard) marks the partition failed, its back-off timed
    from the next look."""
    if tp not in order.starts:  # else its first admission has asked meanwhile
        log.info("%s[%d]: the client is at offset %d, and nothing of the partition reached "
                 "the agent since the assignment, with no commit known to the consumer; "
                 "asking the broker where the group starts", tp.topic, tp.partition,
                 position)  # fmt: skip
    try:
        start = await order.group_start(tp)
    finally:
        watch.asking.pop(tp, None)
    if start is None:
        watch.ended.add(tp)
    else:
        watch.failed.pop(tp, None)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("asking the broker where a group starts failed", exc_info=task.exception())


_FAILED_AT: list[float] = []
"""When a failed :func:`check` was last logged (:func:`check_quietly`)."""
FAILURE_LOG_SECONDS = 60.0


def check_quietly(app: Any, now: float | None = None) -> dict[Any, int]:
    """:func:`check` for the worker's timer: a failed look never ends the worker (a timer's
    error would), and is logged at most once every :data:`FAILURE_LOG_SECONDS` (``now``: the
    clock that paces the log, for tests; the check reads its own)."""
    try:
        return check(app)
    except Exception:
        now = time.monotonic() if now is None else now
        if not _FAILED_AT or now - _FAILED_AT[0] >= FAILURE_LOG_SECONDS:
            _FAILED_AT[:] = [now]
            log.exception("comparing fetch positions with what the agents got failed")
        return {}


def _settled(app: Any) -> bool:
    """No rebalance or recovery running and the flow on: a drop now has no seek coming."""
    if introspection.recovering(app):
        return False
    try:
        return bool(app.flow_control.is_active()) and bool(app.consumer.flow_active)
    except Exception:
        return False


__all__ = ["CHECK_SECONDS", "UndeliveredWatch", "check", "check_quietly"]
