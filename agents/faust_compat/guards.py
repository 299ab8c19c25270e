"""The consumer's offset guards: Faust (faust-streaming 0.15.3, see :mod:`agents.faust_compat`)
never commits past a message the worker did not process, and applies each partition in order.

Faust's consumer can commit an offset past a message it never processed. Seen here as valid
outcomes dead-lettered ``unknown_prediction`` after a SIGKILL (a whole ``join-input``
message of prediction frames never applied), and caught in the act by a kill loop with a
peer worker joining and leaving (``tests/integration/test_join_kill_loop.py``): after a
restart, the first message of an ``outcomes`` partition was taken from its queue while flow
control was still suspended, skipped, and the commit moved past it. Two fixes:

1. **Skipped messages are not acked.** A stream skips a message it takes from its queue
   while a rebalance is under way (flow control suspended) or that was fetched in an earlier
   consumer generation, and Faust acks the skipped message "so the lag does not grow"
   (``Stream.__aiter__``); a commit then moves past it before the recovery's seek, and it is
   never read again. Our agents mark every message that reaches their processing
   (:func:`mark_delivered`, a stream processor: skipped messages never reach processors), and
   an ack of an unmarked message on their topics is ignored: it stays unacked and is read
   again after the seek. Acks of messages that were processed go through, also during a
   rebalance, so the worker can wait for its in-flight batches before giving partitions up
   (``stream_wait_empty``) instead of writing state for partitions another worker owns.
2. **A missing head is read again, not committed past.** ``Consumer._new_offset`` lets the
   commit move past exactly one missing offset at the head (a transaction marker takes an
   offset that is never delivered), so a single skipped message was still lost. Here any
   missing head holds the commit while :class:`HeadGuard` asks the broker (a throw-away
   client, :data:`Probe`) for the first record at the committed offset: if there is none
   before the lowest acked offset, the gap is transaction markers (or compaction) and the
   commit proceeds; if there is one, it was dropped, and the partition is sought back to
   the committed offset so it is read and processed again. Everything the worker keeps is
   offset-guarded, so messages read twice change nothing.

3. **Messages are processed in offset order, nothing skipped.** Every offset guard keeps the
   last offset applied per source partition (a high-water mark), so it is only right when each
   partition's messages are applied in order. A message Faust dropped and :class:`HeadGuard`
   had read again would arrive *after* later ones and be refused as a duplicate (lost: five
   predictions of one window in a CI run, after a restart from the changelog).
   :class:`SourceOrder` admits a batch's messages only in order: after a jump over offsets that
   hold records (Faust's own gap bookkeeping, else the broker is asked once), the partition's
   later messages are held back unprocessed and unacked, and it is read again from the first
   missing offset.

What fired is counted in :data:`.counters.COUNTERS` (``driftwatch_consumer_guard_total``)
and logged.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from agents.faust_compat.counters import COUNTERS
from agents.faust_compat.version import check_version

log = logging.getLogger(__name__)

Probe = Callable[[str, int, int], Awaitable[int | None]]
"""(topic, partition, offset) -> offset of the first record at or after ``offset``, or None
when there is none (the partition ends there)."""
StartLookup = Callable[[str, int], Awaitable[int]]
"""(topic, partition) -> where the group's processing of it starts, as the broker says: its
committed offset, or the log start when it has none."""

SEEK_RETRY_SECONDS = 5.0
"""A head still missing this long after a seek back is sought back again (records fetched
before the seek can overtake it once)."""
PROBE_TIMEOUT_SECONDS = 15.0
"""Longest wait for the broker to say what is at an offset."""
MARKER_STREAK = 3
"""Jumps in a row the broker called markers before a partition's jumps are taken from Faust's
gap list without asking (see ``SourceOrder._markers``)."""
ORDER_RETRY_SECONDS = 2.0
"""A skipped message not back this long after a seek is sought again. Right after a restart
the first seek usually comes too early (records already fetched move Faust's read offset past
it again), and the whole partition waits meanwhile; a repeat only re-reads a few messages."""


@dataclass
class _Gap:
    committed: int
    head: int
    since: float
    verdict: str | None = None
    """``markers`` or ``dropped`` once the probe answered."""
    probing: bool = False
    last_seek: float = -1e18
    seeks: int = 0


@dataclass
class HeadGuard:
    """Decides, per topic-partition, whether a commit may move past a missing head."""

    probe: Probe
    clock: Callable[[], float] = time.monotonic
    gaps: dict[Any, _Gap] = field(default_factory=dict)

    def allow(self, consumer: Any, tp: Any, committed: int, head: int) -> bool:
        """False holds the commit; may start a probe or a seek in the background."""
        now = self.clock()
        gap = self.gaps.get(tp)
        if gap is None or (gap.committed, gap.head) != (committed, head):
            gap = self.gaps[tp] = _Gap(committed, head, now)
            COUNTERS["head_gap_held"] += 1
            log.info("%s[%d]: commit held at %d: offsets up to %d not acked, later ones are; "
                     "asking the broker what is there", tp.topic, tp.partition, committed,
                     head - 1)  # fmt: skip
        if gap.verdict == "markers":
            return True
        if gap.verdict is None:
            if not gap.probing:
                gap.probing = True
                _spawn(self._probe(consumer, tp, gap))
            return False
        if now - gap.last_seek >= SEEK_RETRY_SECONDS:
            self._seek_back(consumer, tp, gap, now)
        return False

    def stalled(self, older_than: float) -> dict[Any, tuple[int, int]]:
        """Heads missing for longer than ``older_than`` seconds (for the watchdog)."""
        now = self.clock()
        return {
            tp: (g.committed, g.head) for tp, g in self.gaps.items() if now - g.since > older_than
        }

    def settled(self, tp: Any) -> None:
        self.gaps.pop(tp, None)

    def forget(self, revoked: Collection[Any]) -> None:
        """Partitions given up at a rebalance: their missing heads are another worker's now
        (kept, one would have read as a commit held for good: the watchdog's
        :meth:`stalled` judged a stall on a partition this worker no longer owned)."""
        for tp in revoked:
            self.gaps.pop(tp, None)

    async def _probe(self, consumer: Any, tp: Any, gap: _Gap) -> None:
        try:
            first = await self.probe(tp.topic, tp.partition, gap.committed)
        except Exception as exc:  # the broker may be away: try again at the next commit
            log.warning("%s[%d]: could not probe offset %d: %r", tp.topic, tp.partition,
                        gap.committed, exc)  # fmt: skip
            gap.probing = False
            return
        gap.probing = False
        if first is None or first >= gap.head:
            gap.verdict = "markers"
            COUNTERS["head_gap_markers"] += 1
            log.info(
                "%s[%d]: offsets %d..%d hold no records (transaction markers or compaction); "
                "committing past them", tp.topic, tp.partition, gap.committed, gap.head - 1,
            )  # fmt: skip
            return
        gap.verdict = "dropped"
        log.warning(
            "%s[%d]: offset %d was fetched but never processed (later ones were); reading "
            "the partition again from there", tp.topic, tp.partition, first,
        )  # fmt: skip
        self._seek_back(consumer, tp, gap, self.clock())

    def _seek_back(self, consumer: Any, tp: Any, gap: _Gap, now: float) -> None:
        gap.last_seek = now
        gap.seeks += 1
        COUNTERS["head_refetch"] += 1
        _spawn(_seek(consumer, tp, gap.committed))


async def _seek(consumer: Any, tp: Any, offset: int) -> None:
    # Remember how far the partition had been read: records fetched before the seek still
    # arrive after it, and Faust takes the jump from the sought offset to them for a gap
    # without records (see _checked_add_gap).
    read = getattr(consumer, "_read_offset", {}).get(tp)
    if read is not None:
        _READ_HIGH[tp] = max(_READ_HIGH.get(tp, -1), read)
    try:
        await consumer.seek_wait({tp: offset})
    except Exception as exc:
        log.warning("%s[%d]: seek to %d failed: %r", tp.topic, tp.partition, offset, exc)


def seek_back(consumer: Any, tp: Any, offset: int) -> None:
    """Read ``tp`` again from ``offset`` (in the background, as the guards' own seeks)."""
    _spawn(_seek(consumer, tp, offset))


_READ_HIGH: dict[Any, int] = {}
"""Per topic-partition, the highest offset read before one of our seeks back."""


def _checked_add_gap(
    original: Callable[[Any, Any, int, int], Awaitable[None]],
) -> Callable[[Any, Any, int, int], Awaitable[None]]:
    """Faust records offsets it reads over as a gap without records (transaction markers)
    and later counts them as acked. After a seek back, records fetched before the seek
    arrive next, and the jump from the sought offset to them was recorded as such a gap: a
    phantom over offsets that hold records. Those offsets then counted as acked twice (once
    as gap, once when really processed), so the commit crept one run per commit interval
    (found in test_failover: 1,519 acks pending for a partition of 900 records, the commit
    moving 15 offsets in 30 s), could move past records not yet processed, and SourceOrder
    would have admitted a jump over them as markers. Offsets at or below the highest ever
    read before a seek were read, so they are never a gap."""

    async def add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        high = _READ_HIGH.get(tp)
        if high is not None and offset_from <= high:
            COUNTERS["phantom_gap_ignored"] += 1
            offset_from = high + 1
            if offset_from > offset_to:
                return
        await original(self, tp, offset_from, offset_to)

    return add_gap


def _marker(gaps: Any, lo: int, hi: int) -> bool:
    """Whether Faust's gap list alone may settle that ``[lo, hi)`` holds no records: one
    offset it read over (a transaction's commit marker takes exactly one). A longer jump is
    asked of the broker: the list also records jumps over records dropped around a seek, and
    trusting it skipped them for good (SourceOrder stops asking on a partition whose jumps the
    broker has called markers several times in a row: a transactional source)."""
    return hi - lo == 1 and _covered(gaps, lo, hi)


def _covered(gaps: Any, lo: int, hi: int) -> bool:
    """Whether Faust's gap intervals (an IntervalTree; ends excluded) cover ``[lo, hi)``."""
    if gaps is None or hi - lo > 100_000:
        return False
    at = lo
    for iv in sorted(gaps.overlap(lo, hi)):
        if iv.begin > at:
            return False
        at = max(at, iv.end)
        if at >= hi:
            return True
    return at >= hi


@dataclass
class _Hold:
    expect: int
    last_seek: float
    consumer: Any
    since: float = 0.0
    """When the partition was first held at ``expect``."""


@dataclass
class SourceOrder:
    """Admits each source partition's messages to processing in offset order, none skipped.

    ``expect`` per partition is the next offset to apply: the consumer's committed offset
    after an assignment, then one past the last message admitted. A message below it was
    applied already (offset guards skip it); at it, it is admitted; past it, the offsets in
    between are either no records (transaction markers, compaction: admitted) or records
    Faust dropped (held: the batch's later messages of that partition are not processed or
    acked, and the partition is read again from ``expect``).
    """

    probe: Probe
    clock: Callable[[], float] = time.monotonic
    start: StartLookup | None = None
    """Asked when Faust does not know a partition's committed offset (right after an
    assignment it often does not, commit or none); without it, the first message read was
    taken for the start, and a worker that lost the head of a never-committed partition to
    Faust's restart race skipped it for good (valid outcomes dead-lettered after an early
    SIGKILL: their predictions' join frames were never read again)."""
    expect: dict[Any, int] = field(default_factory=dict)
    held: dict[Any, _Hold] = field(default_factory=dict)
    revoked: set[Any] = field(default_factory=set)
    """Partitions revoked and not assigned to this worker again: their messages read before
    the revocation are another worker's now, never processed here."""
    starts: dict[Any, int] = field(default_factory=dict)
    """Where the group starts per partition, as the broker said in this generation
    (:meth:`group_start`'s answers, kept for both its askers: the first admission and the
    undelivered check; a rebalance drops them)."""
    _looking: dict[Any, asyncio.Future[int | None]] = field(default_factory=dict)
    """:meth:`group_start`'s lookups under way, by partition: a second asker waits for the
    same answer rather than asking the broker again."""
    _first: dict[tuple[Any, int], int | None] = field(default_factory=dict)
    _told: set[Any] = field(default_factory=set)
    _overruled: set[tuple[Any, int]] = field(default_factory=set)
    _markers: dict[Any, int] = field(default_factory=dict)
    """Per partition, how many jumps in a row the broker called offsets without records: a
    source written by transactional producers has one at every commit, and after
    :data:`MARKER_STREAK` of them its jumps are taken from Faust's gap list (a probe each would
    hold every batch for a throw-away client)."""
    generation: int = 0
    """Counts rebalances (:meth:`reset`): an admission that waited for the broker across one
    writes nothing of what it learned before it."""

    def reset(self, revoked: Collection[Any] = ()) -> None:
        """After a rebalance, reading starts again at the committed offsets; messages of the
        ``revoked`` partitions are refused until they are assigned here again."""
        self.generation += 1
        self._markers.clear()
        self.expect.clear()
        self.held.clear()
        self.starts.clear()
        self._looking.clear()  # still running: their answers are the old generation's
        self._first.clear()
        self._told.clear()
        self._overruled.clear()
        self.revoked.update(revoked)

    def assigned(self, partitions: Collection[Any]) -> None:
        """The new assignment: its partitions are this worker's again."""
        self.revoked.difference_update(partitions)

    async def admit(self, consumer: Any, events: list[Any]) -> list[Any]:
        """The events to process, in offset order. A message of a revoked partition is
        refused (held: never acked): Faust clears the agents' queues on a revocation, but a
        batch ``take_events`` had gathered already is handed over after it, and processing
        it wrote another worker's partition state and cached it here, stale, for when the
        partition came back (the join kill loop with rebalances: outcomes the other worker
        had joined were given up as ``unknown_prediction`` from that stale cache)."""
        admitted: list[Any] = []
        stopped: set[Any] = set()
        generation = self.generation
        for index, event in enumerate(events):
            message = event.message
            tp = message.tp
            if tp in self.revoked:
                COUNTERS["order_revoked"] += 1
                self._hold(message, consumer)
                continue
            if tp in stopped:
                self._hold(message, consumer)
                continue
            offset = message.offset
            expect = self.expect.get(tp)
            if expect is None:
                expect = known = consumer._committed_offset.get(tp)
                if expect is None and self.start is not None:
                    expect = await self.group_start(tp)
                    if self.generation != generation:
                        return self._superseded(consumer, admitted, events[index:])
                    if expect is None:  # cannot tell where to start: hold, read again
                        stopped.add(tp)
                        self._hold(message, consumer)
                        self._seek_back(consumer, tp, offset)
                        continue
                    self.expect[tp] = expect
                    # Faust's own commit bookkeeping needs it too: with no committed offset
                    # it commits the first run of acked offsets wherever that run starts, and
                    # HeadGuard (which guards from the committed offset) cannot step in.
                    if consumer._committed_offset.get(tp) is None:
                        consumer._committed_offset[tp] = expect
                # Once per partition and assignment: where reading really started, for the
                # record (a loss across a restart is told apart by it: skipped or never read).
                if tp not in self._told:
                    self._told.add(tp)
                    log.info("%s[%d]: first message read after the assignment at offset %d "
                             "(committed offset known to the consumer: %s; processing "
                             "starts at %s)", tp.topic, tp.partition, offset, known,
                             expect)  # fmt: skip
            if expect is not None and offset > expect:
                no_records = await self._no_records(consumer, tp, expect, offset)
                if self.generation != generation:
                    return self._superseded(consumer, admitted, events[index:])
            else:
                no_records = True
            if not no_records:
                stopped.add(tp)
                self._hold(message, consumer)
                self._seek_back(consumer, tp, expect)
                continue
            admitted.append(event)
            if expect is None or offset >= expect:
                self.expect[tp] = offset + 1
                self.held.pop(tp, None)
        return admitted

    def _superseded(self, consumer: Any, admitted: list[Any], rest: list[Any]) -> list[Any]:
        """A rebalance came while the batch waited for the broker: none of it is processed
        (all held, read again from the new generation's committed offsets), and what was
        learned before it is not written over the reset bookkeeping (an ``expect`` from the
        old generation would admit a jump, or hold a partition at an offset never coming)."""
        COUNTERS["order_superseded"] += 1
        for event in admitted + rest:
            self._hold(event.message, consumer)
        return []

    def rewind(self, consumer: Any, events: Iterable[Any]) -> None:
        """A batch admitted but not processed (it failed): each of its partitions is read
        again from its first message, and nothing after that is admitted first. The offset
        guards keep the highest offset applied, so a message applied after later ones is
        taken for a replay: a crashed join agent lost labels that way (restarted, it went on
        with the messages after the failed batch, and the batch, read again, was refused)."""
        self.rewind_to(consumer, first_offsets(events))

    def rewind_to(self, consumer: Any, first: dict[Any, int]) -> list[Any]:
        """:meth:`rewind` to the given offset per partition (a TP); returns the partitions
        sought back (the others are read on from where they are)."""
        sought = []
        for tp, offset in first.items():
            expect = self.expect.get(tp)
            if tp in self.revoked or expect is None or expect <= offset:
                continue
            self.expect[tp] = offset
            COUNTERS["order_rewound"] += 1
            self._seek_back(consumer, tp, offset)
            sought.append(tp)
        return sought

    async def group_start(self, tp: Any) -> int | None:
        """Where the group starts on ``tp`` (its committed offset, or the log start when there
        is none or the commit is below it: the ``start`` lookup), or None when the broker
        cannot say now (logged). Answered once per partition and generation: the answer is
        kept in :attr:`starts` (within a generation only this worker commits the partition,
        and the consumer knows those commits), unless a rebalance came while it was asked,
        and an asker that comes while the broker is asked waits for the same answer."""
        assert self.start is not None
        known = self.starts.get(tp)
        if known is not None:
            return known
        looking = self._looking.get(tp)
        if looking is None:
            looking = self._looking[tp] = asyncio.ensure_future(self._look_up(tp))
        # Shielded: an asker cancelled (its agent stopping) does not end the other's wait.
        return await asyncio.shield(looking)

    async def _look_up(self, tp: Any) -> int | None:
        assert self.start is not None
        generation = self.generation
        try:
            start = int(
                await asyncio.wait_for(self.start(tp.topic, tp.partition), PROBE_TIMEOUT_SECONDS)
            )
        except Exception as exc:  # broker away: hold (safe), ask again next time
            log.warning("%s[%d]: could not ask the broker for the committed offset: %r",
                        tp.topic, tp.partition, exc)  # fmt: skip
            return None
        finally:
            if self.generation == generation:  # else reset() has let go of it
                self._looking.pop(tp, None)
        if self.generation == generation:
            self.starts[tp] = start
        return start

    async def _no_records(self, consumer: Any, tp: Any, lo: int, hi: int) -> bool:
        key = (tp, lo)
        gaps = consumer._gap.get(tp)
        if key not in self._first:
            if self.known_markers(gaps, tp, lo, hi):
                return True
            log.info("%s[%d]: offset %d arrived while %d was expected; asking the broker what "
                     "is in between", tp.topic, tp.partition, hi, lo)  # fmt: skip
            generation = self.generation
            try:
                # Bounded here too: the agent waits for the answer, and a probe that never
                # returns would stop the partition without a word.
                first = await asyncio.wait_for(
                    self.probe(tp.topic, tp.partition, lo), PROBE_TIMEOUT_SECONDS
                )
            except Exception as exc:  # broker away: hold (safe), ask again next time
                log.warning("%s[%d]: could not probe offset %d: %r", tp.topic, tp.partition,
                            lo, exc)  # fmt: skip
                return False
            if self.generation != generation:  # a rebalance meanwhile: admit holds the batch
                return False
            self._first[key] = first
        first = self._first[key]
        if first is None or first >= hi:
            COUNTERS["order_gap_markers"] += 1
            self._markers[tp] = self._markers.get(tp, 0) + 1
            return True
        self._markers.pop(tp, None)
        if _covered(gaps, lo, hi) and key not in self._overruled:
            # The broker said a record is there: Faust's gap list is wrong about it (a gap
            # recorded around a seek), and admitting the jump would process later frames first
            # (test_outcomes: a join read 12 before 5, and its clock gave up waiting outcomes).
            # Once per offset, not at every admit while held.
            self._overruled.add(key)
            COUNTERS["order_gap_overruled"] += 1
            log.warning("%s[%d]: offsets %d..%d are a gap to Faust but the broker has a record "
                        "at %d: holding for it", tp.topic, tp.partition, lo, hi - 1,
                        first)  # fmt: skip
        return False

    def known_markers(self, gaps: Any, tp: Any, lo: int, hi: int) -> bool:
        """Whether Faust's gap list (``gaps``, of ``tp``) alone settles that ``[lo, hi)``
        holds no records: one offset read over, or a transactional source's gaps (see
        :data:`MARKER_STREAK`)."""
        return _marker(gaps, lo, hi) or (
            self._markers.get(tp, 0) >= MARKER_STREAK and _covered(gaps, lo, hi)
        )

    def _hold(self, message: Any, consumer: Any) -> None:
        """``message`` is not processed here: its ack is ignored (it stays unacked, so no
        commit passes it) and it is read again as a new message. Nor is it in flight: a
        rebalance waits for the messages Faust counts unacked (``stream_wait_empty``) before
        it tells the worker its partitions are revoked, and this one would never be acked
        (CI: a partition held at a gap when a rebalance began; the rebalance waited for good,
        and the watchdog judges no stall during a rebalance)."""
        COUNTERS["order_held"] += 1
        _DELIVERED.discard(message)  # its ack is ignored: it stays unacked
        _HELD.add(message)
        unacked = getattr(consumer, "_unacked_messages", None)
        if unacked is not None:
            unacked.discard(message)

    def _seek_back(self, consumer: Any, tp: Any, expect: int) -> None:
        now = self.clock()
        hold = self.held.get(tp)
        if (
            hold is not None
            and hold.expect == expect
            and now - hold.last_seek < ORDER_RETRY_SECONDS
        ):
            return
        since = hold.since if hold is not None and hold.expect == expect else now
        self.held[tp] = _Hold(expect, now, consumer, since)
        COUNTERS["order_refetch"] += 1
        log.warning("%s[%d]: offset %d was skipped (a later one arrived first); later messages "
                    "held back and the partition read again from %d", tp.topic, tp.partition,
                    expect, expect)  # fmt: skip
        _spawn(_seek(consumer, tp, expect))

    def stalled(self, older_than: float) -> dict[Any, tuple[int, float]]:
        """Partitions held at a missing message for longer than ``older_than`` seconds: the
        offset waited for and how long (for the watchdog: re-reading has not brought it
        back, so only a restart from the committed offsets will)."""
        now = self.clock()
        return {
            tp: (h.expect, now - h.since)
            for tp, h in self.held.items()
            if now - h.since > older_than
        }

    def retry(self) -> None:
        """Seek again where the missing message has not come back in time: records fetched
        before a seek can move Faust's read offset past it again, and then nothing more
        arrives to notice (all of the partition is held)."""
        now = self.clock()
        for tp, hold in list(self.held.items()):
            if now - hold.last_seek >= ORDER_RETRY_SECONDS:
                self._seek_back(hold.consumer, tp, hold.expect)

    async def retry_forever(self, every: float = 0.5) -> None:
        """:meth:`retry` every ``every`` seconds for the life of the worker: an error in one
        round is logged and the next round runs (a dead retry task would leave a held
        partition waiting for good, silently)."""
        while True:
            await asyncio.sleep(every)
            try:
                self.retry()
            except Exception:
                log.exception("re-reading held partitions failed; trying again")


def first_offsets(events: Iterable[Any]) -> dict[Any, int]:
    """Per partition (its TP), the lowest offset among ``events``' messages."""
    first: dict[Any, int] = {}
    for event in events:
        m = event.message
        first[m.tp] = min(first.get(m.tp, m.offset), m.offset)
    return first


def _spawn(coro: Awaitable[None]) -> None:
    task: asyncio.Task[None] = asyncio.ensure_future(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


GUARD: HeadGuard | None = None
ORDER: SourceOrder | None = None
_TASKS: set[asyncio.Task[None]] = set()
_HELD: weakref.WeakSet[Any] = weakref.WeakSet()
_installed = False
_LOGGED: set[tuple[str, int, int | None]] = set()
GUARDED_TOPICS: set[str] = set()
"""Topics whose agents mark what they process (:func:`mark_delivered`)."""
_DELIVERED: weakref.WeakSet[Any] = weakref.WeakSet()
IGNORE_ACKS = False
"""Testing only: every ack is ignored, so nothing is ever committed (a provoked commit stall)."""


def mark_delivered(stream: Any, topic: str) -> None:
    """Add a processor to ``stream`` (of ``topic``) that marks each message it really
    processes, and guard the topic's acks (call before iterating the stream)."""

    def mark(value: Any) -> Any:
        event = stream.current_event
        if event is not None:
            _DELIVERED.add(event.message)
        return value

    stream.add_processor(mark)
    GUARDED_TOPICS.add(topic)


def mark_taken(message: Any) -> None:
    """Mark a message handed to processing without a stream (:mod:`.bulk_delivery`), as
    :func:`mark_delivered`'s processor marks a stream's."""
    _DELIVERED.add(message)


def install(probe: Probe, start: StartLookup | None = None) -> HeadGuard:
    """Patch Faust's consumer (once per process); the newest ``probe`` and ``start`` are the
    ones used."""
    global GUARD, ORDER, _installed
    if GUARD is None:
        GUARD = HeadGuard(probe)
    else:
        GUARD.probe = probe
    if ORDER is None:
        ORDER = SourceOrder(probe, start=start)
    else:
        ORDER.probe = probe
        ORDER.start = start
    if _installed:
        return GUARD
    check_version()
    from faust.transport import consumer as consumer_mod

    cls = consumer_mod.Consumer
    cls.ack = _guarded_ack(cls.ack)  # type: ignore[method-assign,assignment]
    cls._new_offset = _strict_new_offset(cls._new_offset)  # type: ignore[method-assign,assignment]
    cls._add_gap = _checked_add_gap(cls._add_gap)  # type: ignore[method-assign,assignment]
    _installed = True
    return GUARD


def _guarded_ack(original: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def ack(self: Any, message: Any) -> bool:
        app = self.app
        if IGNORE_ACKS:
            return False
        if message in _HELD:  # held back out of order (SourceOrder): read again
            return False
        if message.topic in GUARDED_TOPICS and message not in _DELIVERED:
            # Skipped by the stream, never processed: read again after the recovery's seek.
            COUNTERS["stale_ack_ignored"] += 1
            seen = (message.topic, message.partition, message.generation_id)
            if seen not in _LOGGED:
                _LOGGED.add(seen)
                log.info(
                    "ignored ack of %s[%d]@%d: skipped by its stream, not processed "
                    "(generation %s, now %s, flow %s); it is read again after the seek",
                    message.topic, message.partition, message.offset, message.generation_id,
                    app.consumer_generation_id,
                    "active" if app.flow_control.is_active() else "suspended",
                )  # fmt: skip
            return False
        return original(self, message)

    return ack


def _drop_acked_from_gaps(gaps: Any, acked: set[int]) -> int:
    """Take the offsets in ``acked`` out of Faust's gap intervals; returns how many.

    A gap is offsets without records, and an acked offset held one. Faust records a jump it
    reads over as a gap, also when the race dropped the records in between; when those are
    read again (SourceOrder holds the partition for them) and acked, Faust's commit counts
    them twice - as acked and as gap - its run of consecutive offsets stops at the first
    duplicate, and the commit creeps a few offsets per commit interval, holding back what
    was processed (CI: a failover survivor did not commit 880 processed records in two
    minutes, 1,389 acks pending).

    >>> from intervaltree import IntervalTree
    >>> gaps = IntervalTree.from_tuples([(12, 20), (30, 31)])
    >>> _drop_acked_from_gaps(gaps, set(range(10, 16)) | {18}), sorted(gaps)
    (5, [Interval(16, 18), Interval(19, 20), Interval(30, 31)])
    """
    if not gaps or not acked:
        return 0
    ordered = sorted(acked)
    dropped = 0
    for iv in sorted(gaps.overlap(ordered[0], ordered[-1] + 1)):
        lo, hi = bisect.bisect_left(ordered, iv.begin), bisect.bisect_left(ordered, iv.end)
        run_start = prev = None
        for offset in ordered[lo:hi]:  # consecutive runs of acked offsets, each chopped once
            if run_start is not None and offset != prev + 1:  # type: ignore[operator]
                gaps.chop(run_start, prev + 1)  # type: ignore[operator]
                run_start = None
            if run_start is None:
                run_start = offset
            prev = offset
        if run_start is not None:
            gaps.chop(run_start, prev + 1)  # type: ignore[operator]
        dropped += hi - lo
    return dropped


def _strict_new_offset(original: Callable[[Any, Any], int | None]) -> Callable[[Any, Any], Any]:
    def new_offset(self: Any, tp: Any) -> int | None:
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        gaps = self._gap[tp]
        if gaps:
            dropped = _drop_acked_from_gaps(gaps, self._acked_index[tp])
            if dropped:
                COUNTERS["gap_over_acked"] += dropped
                log.info(
                    "%s[%d]: %d offsets Faust had recorded as a gap were read and processed: "
                    "not counted twice", tp.topic, tp.partition, dropped,
                )  # fmt: skip
        if acked and committed is not None and GUARD is not None:
            head = min(acked)
            if head > committed and not _marker(gaps, committed, head):
                if not GUARD.allow(self, tp, committed, head):
                    return None
                # Markers: let Faust's own logic commit past them. Merged with what Faust
                # recorded over them already: overlapping intervals count their offsets as
                # acked twice, and the commit then crept one offset per interval.
                gaps.addi(committed, head)
                gaps.merge_overlaps()
        if GUARD is not None:
            GUARD.settled(tp)
        return original(self, tp)

    return new_offset
