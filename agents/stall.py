"""Is this worker stuck? The watchdog's decision, as a pure function of what it sampled.

A Faust worker can look alive (process up, "Worker ready" logged, event loop turning) and make
no progress at all: after a changelog restore or a rebalance, a source partition is never
resumed (nothing is fetched), or its read messages are dropped from the agent's queue so its
un-acked head never moves and commits freeze (faust-streaming #217/#223/#236/#253, robinhood
#625). Nobody restarts such a worker: the monitor stops monitoring and says nothing. The
watchdog (:mod:`agents.watchdog`) samples, per source partition, the log end and the group's
committed offset from the broker and the worker's own read offset, and asks
:class:`StallWatch` whether work has been waiting too long.

Only progress counts, never activity: a partition with records past its committed offset whose
commit has not moved for ``stall_seconds`` while they waited is stalled (a verdict the
watchdog confirms by reading the record that waits), unless a batch is still running (a slow
batch, tolerated up to ``batch_seconds``). Nothing is judged while tables are recovering or a
rebalance runs: the clocks start again when the worker is armed.

>>> watch = StallWatch(stall_seconds=60, batch_seconds=300)
>>> tp = ("predictions", 0)
>>> watch.observe(0.0, True, {tp: Offsets(end=100, read=None, committed=50)}) is None
True
>>> watch.observe(30.0, True, {tp: Offsets(end=100, read=None, committed=50)}) is None
True
>>> stall = watch.observe(61.0, True, {tp: Offsets(end=100, read=None, committed=50)})
>>> stall.kind, stall.partition, stall.seconds
('fetch', ('predictions', 0), 61.0)
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

STALL_EXIT_CODE = 75
"""EX_TEMPFAIL: the worker stopped on a stall; restart it."""
FETCH = "fetch"
"""Records wait past the committed offset and none of them is read: never fetched."""
COMMIT = "commit"
"""Records past the committed offset are read but it does not move: never processed."""
BATCH = "batch"
"""One batch has been running for longer than anything legitimate takes."""
LOOP = "loop"
"""The event loop has not run a callback for ``stall_seconds``."""
RECOVERY = "recovery"
"""A rebalance or a table recovery has not ended in ``recovery_seconds``: Faust can hang in
one (a rebalance after recovery that never resumes the partitions)."""

STALL_KINDS = (FETCH, COMMIT, BATCH, LOOP, RECOVERY)


@dataclass(frozen=True)
class Offsets:
    """One source partition as sampled. ``end``: the log end offset (next offset to be
    written; None or below ``committed``: not known); ``read``: the offset of the last message
    the worker read (None: none yet); ``committed``: the group's committed offset, the next to
    process (None: never committed); ``start``: the log start offset (records before it are
    gone)."""

    end: int | None
    read: int | None
    committed: int | None
    start: int = 0


@dataclass(frozen=True)
class Stall:
    kind: str
    partition: Hashable | None
    seconds: float
    """How long the offset that should have moved has not."""
    offsets: Offsets | None = None

    def describe(self) -> str:
        if self.kind == LOOP:
            return f"event loop unresponsive for {self.seconds:.0f} s"
        if self.kind == BATCH:
            return f"a batch has been running for {self.seconds:.0f} s"
        if self.kind == RECOVERY:
            return f"a rebalance or table recovery has not ended in {self.seconds:.0f} s"
        o = self.offsets
        where = f"{self.partition}"
        if o is None:  # pragma: no cover - partition stalls always carry offsets
            return f"{self.kind} stall on {where}"
        what = "nothing fetched" if self.kind == FETCH else "read but never committed"
        known = o.end is not None and o.end >= (o.committed or 0)
        end = o.end if known else f"not known (broker says {o.end})"
        return (
            f"{self.kind} stall on {where}: committed {o.committed}, read {o.read}, end "
            f"{end}; {what} for {self.seconds:.0f} s"
        )


@dataclass
class _Seen:
    committed: int | None
    read: int | None
    committed_since: float
    read_since: float
    waiting: bool = False
    known: bool = False
    """Work seen for sure: a known log end past the committed offset, or a message read
    past it (``waiting`` also holds when the end is not known)."""
    orphaned_since: float | None = None
    """Since when messages read past the commit have had nothing left to process them."""


@dataclass
class StallWatch:
    """Remembers when each partition's committed and read offsets last moved."""

    stall_seconds: float
    batch_seconds: float
    recovery_seconds: float = float("inf")
    _seen: dict[Any, _Seen] = field(default_factory=dict)
    _idle_until: dict[Any, int] = field(default_factory=dict)
    _armed_since: float | None = None
    _recovering_since: float | None = None

    def idle(self, partition: Any, end: int) -> None:
        """What lies between the committed offset and ``end`` holds no records (transaction
        markers only, as a probe found): no work there until the log grows past ``end``."""
        self._idle_until[partition] = end

    def observe(
        self,
        now: float,
        armed: bool,
        partitions: Mapping[Any, Offsets],
        busy_since: float | None = None,
        loop_seen: float | None = None,
        recovering: bool = False,
        drained: Collection[Any] = (),
        held: Collection[Any] = (),
    ) -> Stall | None:
        """The first stall found at ``now``, or None.

        ``armed``: tables recovered and no rebalance running (otherwise the clocks restart).
        ``busy_since``: when the oldest batch still running started. ``loop_seen``: when the
        event loop last ran a callback the watchdog scheduled. ``recovering``: not armed
        because a rebalance or a recovery runs (not, say, because the broker is away).
        ``drained``: partitions whose agent has nothing queued and no batch running, and which
        no guard holds: a message read there past the committed offset is in no one's hands
        (dropped between fetch and stream, Faust's race), and it stays so, even where the
        commit still creeps on the few messages that do arrive. ``held``: partitions whose
        commit waits at a message applied but not written yet
        (``DRIFTWATCH_STATE_FLUSH_SECONDS``), for less time than a state write may take to
        come: not stuck, however long the commit has not moved. Once the write is overdue,
        the commit's own clock judges them as any other.
        """
        if recovering:
            if self._recovering_since is None:
                self._recovering_since = now
            if now - self._recovering_since >= self.recovery_seconds:
                return Stall(RECOVERY, None, now - self._recovering_since)
        else:
            self._recovering_since = None
        if not armed:
            self._seen.clear()
            self._armed_since = None
            return None
        if self._armed_since is None:
            self._armed_since = now
        if loop_seen is not None:
            quiet = now - max(loop_seen, self._armed_since)
            if quiet >= self.stall_seconds:
                return Stall(LOOP, None, quiet)
        for gone in set(self._seen) - set(partitions):
            del self._seen[gone]
        first: Stall | None = None
        for tp, o in partitions.items():
            seen = self._seen.get(tp)
            if seen is None:
                seen = self._seen[tp] = _Seen(o.committed, o.read, now, now)
            if o.committed != seen.committed:
                seen.committed, seen.committed_since = o.committed, now
            if o.read != seen.read:
                seen.read, seen.read_since = o.read, now
            waiting = self._waiting(tp, o)
            known = self._known_work(tp, o)
            if (waiting and not seen.waiting) or (known and not seen.known):
                # The clock runs from when work began to wait, not from the commit's last
                # move: a partition idle for an hour whose first new record is sampled before
                # it is processed has not been stuck for an hour (this judged every worker
                # that got its first records more than the stall time after it started).
                # Known work counts apart: where the broker under-reports the log end, an
                # idle partition reads as waiting (end unknown) all along. With the commit
                # still, neither flag turns back, so a real stall waits one stall time more
                # at most.
                seen.committed_since = now
            seen.waiting, seen.known = waiting, known
            if first is None and seen.waiting and tp not in held:
                stuck = now - seen.committed_since
                if stuck >= self.stall_seconds:
                    done = o.committed if o.committed is not None else o.start
                    read_past = o.read is not None and o.read + 1 > done
                    first = Stall(COMMIT if read_past else FETCH, tp, stuck, o)
            orphaned = (
                tp in drained
                and tp not in held
                and busy_since is None
                and o.read is not None
                and o.committed is not None
                and o.read >= o.committed
            )
            if not orphaned:
                seen.orphaned_since = None
            elif seen.orphaned_since is None:
                seen.orphaned_since = now
            elif first is None and now - seen.orphaned_since >= self.stall_seconds:
                first = Stall(COMMIT, tp, now - seen.orphaned_since, o)
        if busy_since is not None:
            running = now - busy_since
            if running >= self.batch_seconds:
                return Stall(BATCH, None, running)
            if first is not None:  # a slow batch holds commits back: not (yet) a stall
                return None
        return first

    def unmoved(self, now: float) -> dict[Any, float]:
        """Per partition with work waiting at the last look, how long its committed offset
        has not moved (for the watchdog's account of what it is waiting out)."""
        return {tp: now - seen.committed_since for tp, seen in self._seen.items() if seen.waiting}

    def checked(self, partition: Any, now: float) -> None:
        """A probe found nothing waiting where the log end is not known: look again after
        another ``stall_seconds``."""
        seen = self._seen.get(partition)
        if seen is not None:
            seen.committed_since = now

    def _known_work(self, tp: Any, o: Offsets) -> bool:
        done = _done(o)
        if o.read is not None and o.read + 1 > done:
            return True
        return o.end is not None and o.end > max(done, self._idle_until.get(tp, -1))

    def _waiting(self, tp: Any, o: Offsets) -> bool:
        """Records may wait past the committed offset (or past the log start, if never
        committed). An end below the committed offset is not the log end (a broker that
        under-reports it, as the embedded one does): unknown, so a probe decides."""
        done = _done(o)
        if o.end is None or o.end < done:
            return True
        return o.end > max(done, self._idle_until.get(tp, -1))


def _done(o: Offsets) -> int:
    """The next offset to process: the committed one, never before the log start."""
    return max(o.start, o.committed if o.committed is not None else o.start)
