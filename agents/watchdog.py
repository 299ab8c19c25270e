"""The worker's watchdog: a thread that samples progress and ends a stuck worker.

It runs beside the event loop, not on it, so a blocked loop is caught too. Every few seconds
it reads, per source partition assigned to this worker, the log start and end and the group's
committed offset from the broker (its own client: a real lookup, not the worker's possibly
stale view), and the worker's read offset, and asks :class:`agents.stall.StallWatch`. A
suspected stall is confirmed with one probe of the partition (what waits past the committed
offset may be transaction markers only: not work). A confirmed stall is logged with a dump of
what the watchdog saw, turns ``/readyz`` to failing, is counted in
``driftwatch_worker_stalls_total`` (and in the data directory's stall log, so the count carries
over the restart), and ends the process with :data:`STALL_EXIT_CODE` for its supervisor to
restart it. Restarting is safe: state is offset-guarded and nothing past an unprocessed
message was committed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents import faust_compat
from agents.metrics import WorkerMetrics
from agents.stall import COMMIT, FETCH, STALL_EXIT_CODE, STALL_KINDS, Offsets, Stall, StallWatch
from runtime.process_exit import hard_exit

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 5.0
LOOKUP_SECONDS = 5.0
"""A broker lookup not answered in this time is an outage (``driftwatch_broker_reachable``)."""
PROBE_SECONDS = 10.0
EXPLAIN_SECONDS = 15.0
"""How often the watchdog says why waiting work is not (yet) judged a stall."""
STALL_LOG = "stalls.jsonl"
UNANSWERED = "unanswered"
LOSE = "lose"
QUIET_RECONNECTS = {"reconnect.backoff.ms": 1000}
"""For the watchdog's confluent-kafka clients: a consumer with a group id otherwise tries a
broker that refuses connections every 50 ms, and librdkafka prints a line for each try (20 a
second while the broker restarts). Its lookups come every few seconds: a second's wait to
reconnect costs nothing."""


class Watchdog:
    def __init__(
        self,
        app: Any,
        config: dict[str, Any],
        metrics: WorkerMetrics,
        stall_seconds: float,
        batch_seconds: float,
        data_dir: str,
        on_stall: Callable[[str], None],
        exit: Callable[[int], None] | None = None,
        sample_seconds: float = SAMPLE_SECONDS,
        recovery_seconds: float = float("inf"),
        hold_grace_seconds: float = 0.0,
    ) -> None:
        self.app = app
        self.config = config
        self.metrics = metrics
        self.watch = StallWatch(stall_seconds, batch_seconds, recovery_seconds)
        self.hold_grace_seconds = hold_grace_seconds
        """How long a commit may wait for the drift agent's next state write (the write
        interval, its 1 s check and the commit interval, twice) before the wait
        counts towards a stall."""
        self.sample_seconds = min(sample_seconds, max(0.5, stall_seconds / 4))
        self.stall_log = Path(data_dir) / STALL_LOG
        self.on_stall = on_stall
        self.exit = exit or hard_exit
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_seen: float | None = None
        self.clock: Callable[[], float] = time.monotonic
        """The clock of ``check``'s ``now`` and of the loop's answers (one clock, so a test's
        ``now`` and the loop's last answer compare)."""
        self._client: Any = None
        self._outage_since: float | None = None
        self._explained: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._count_past_stalls()

    # ------------------------------------------------------------------ lifecycle

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start watching (called on the worker's loop once it runs)."""
        self.loop = loop
        self._loop_seen = self.clock()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.sample_seconds):
            try:
                self.check()
            except Exception as exc:  # the watchdog never takes the worker down by mistake
                log.warning("watchdog: sampling failed: %r", exc)

    # ------------------------------------------------------------------ one look

    def recovering(self) -> bool:
        """A rebalance or a table recovery is running (or the first recovery has not ended)."""
        return faust_compat.introspection.recovering(self.app)

    def armed(self) -> bool:
        """Tables recovered, no rebalance running, the loop running."""
        return self.loop is not None and not self.recovering()

    def check(self, now: float | None = None) -> Stall | None:
        """Sample once; on a confirmed stall, report it and end the process."""
        now = self.clock() if now is None else now
        self._ping_loop()
        armed = self.armed()
        partitions: dict[Any, Offsets] = {}
        if armed:
            try:
                partitions = self.sample()
            except Exception as exc:  # the broker cannot be asked: an outage, not a stall
                self._unreachable(now, exc)
                armed = False  # and the clocks start again once it answers
            else:
                self._reachable(now)
        stall = self.watch.observe(
            now, armed, partitions, faust_compat.batches.busy_since(), self._loop_seen,
            recovering=self.loop is not None and self.recovering(),
            drained=faust_compat.introspection.drained(self.app, partitions) if armed else (),
            held=self.held(),
        )  # fmt: skip
        if stall is None and armed:
            stall = self._held(partitions)
            if stall is not None:
                self.report(stall, partitions)
                self.exit(STALL_EXIT_CODE)
                return stall
        if stall is None:
            self._explain(now, armed, partitions)
            return None
        if stall.kind in (FETCH, COMMIT) and not self._has_records(stall, now):
            return None
        self.report(stall, partitions)
        self.exit(STALL_EXIT_CODE)
        return stall

    def held(self) -> set[tuple[str, int]]:
        """The partitions whose commit waits for a state write that is not overdue."""
        grace = self.hold_grace_seconds
        return {tp for tp, age in faust_compat.commit_cap.unwritten_ages().items() if age < grace}

    def _held(self, partitions: dict[Any, Offsets]) -> Stall | None:
        """A partition whose processing waits at a message that never came back (the
        consumer's own guards hold the commit there and read it again, in vain) for longer
        than ``stall_seconds``: a commit stall the broker's offsets cannot show while the
        group's committed offset is unknown or the log end under-reported (found in CI: a
        survivor of a failover held a partition for two minutes, unready, and nobody ended
        it)."""
        limit = self.watch.stall_seconds
        if faust_compat.batches.busy_since() is not None:
            return None  # a running batch may be what delays the re-read (batch stalls apart)
        found: list[tuple[Any, int, float]] = []
        order, guard = faust_compat.guards.ORDER, faust_compat.guards.GUARD
        if order is not None:
            found += [(tp, at, age) for tp, (at, age) in order.stalled(limit).items()]
        if guard is not None:
            found += [(tp, committed, limit) for tp, (committed, _) in guard.stalled(limit).items()]
        if not found:
            return None
        tp, at, age = found[0]
        o = partitions.get(tp) or Offsets(end=None, read=None, committed=at)
        return Stall(COMMIT, tp, age, o)

    def _explain(self, now: float, armed: bool, partitions: dict[Any, Offsets]) -> None:
        """While work waits (a partition held by the consumer's guards, or a commit that has
        not moved for half the stall time) and no stall is judged, say why every
        ``EXPLAIN_SECONDS``: not armed (and which flag), a batch running, or still within the
        stall time. A worker stuck past every check is then at least not silent about it."""
        holds = (
            faust_compat.guards.ORDER.stalled(0.0) if faust_compat.guards.ORDER is not None else {}
        )
        half = self.watch.stall_seconds / 2
        # Known work only: records past the commit by a known log end, or read past it (an
        # end below the commit is a broker under-reporting it, as the embedded one does:
        # an idle partition there is no news).
        waiting = {
            tp: round(age, 1)
            for tp, age in self.watch.unmoved(now).items()
            if age >= half and (o := partitions.get(tp)) is not None and _work_in_sight(o)
        }
        running = faust_compat.batches.busy_batches()
        if not holds and not waiting and max(running.values(), default=0.0) < half:
            return
        if self._explained is not None and now - self._explained < EXPLAIN_SECONDS:
            return
        self._explained = now
        app = self.app
        recovery = getattr(getattr(app, "tables", None), "recovery", None)
        completed = getattr(recovery, "completed", None)
        state = {
            "armed": armed,
            "rebalancing": bool(getattr(app, "rebalancing", False)),
            "in_recovery": bool(getattr(app, "in_recovery", False)),
            "recovery_completed": None if completed is None else completed.is_set(),
            "broker_outage": self._outage_since is not None,
            "batches_running_seconds": running,
            "loop_seen_seconds_ago": _age(self._loop_seen, self.clock()),
            "held": {f"{tp.topic}[{tp.partition}]": [at, round(age, 1)]
                     for tp, (at, age) in holds.items()},
            "state_unwritten_seconds": {f"{t}[{p}]": round(age, 1) for (t, p), age
                                        in faust_compat.commit_cap.unwritten_ages().items()},
            "commit_unmoved_seconds": {f"{tp.topic}[{tp.partition}]": age
                                       for tp, age in waiting.items()},
            "last_batches": faust_compat.batches.last_batches(),
            "sampled": {f"{tp.topic}[{tp.partition}]": [o.committed, o.read, o.end]
                        for tp, o in partitions.items() if o.read is not None},
            "consumer": faust_compat.introspection.diagnostics(app),
        }  # fmt: skip
        log.warning("watchdog: work waits but no stall is judged yet (stall time %.0f s, "
                    "batch time %.0f s): %s", self.watch.stall_seconds,
                    self.watch.batch_seconds, json.dumps(state, default=str))  # fmt: skip

    def _unreachable(self, now: float, exc: Exception) -> None:
        self.metrics.broker_reachable.set(0.0)
        if self._outage_since is None:
            self._outage_since = now
            log.warning("watchdog: the broker does not answer (%r); the worker waits for it "
                        "and no stall is judged meanwhile", exc)  # fmt: skip

    def _reachable(self, now: float) -> None:
        self.metrics.broker_reachable.set(1.0)
        if self._outage_since is not None:
            log.warning("watchdog: the broker answers again after %.0f s",
                        now - self._outage_since)  # fmt: skip
            self._outage_since = None

    def _ping_loop(self) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return

        def seen() -> None:
            self._loop_seen = self.clock()

        loop.call_soon_threadsafe(seen)

    def sample(self) -> dict[Any, Offsets]:
        """Per source partition: log start/end and committed offset (from the broker) and
        the worker's read offset."""
        tps = [
            tp
            for tp in faust_compat.introspection.assignment(self.app)
            if not tp.topic.endswith("-changelog") and not tp.topic.startswith("__")
        ]
        if not tps:
            return {}
        from confluent_kafka import TopicPartition

        client = self._consumer()
        asked = [TopicPartition(t.topic, t.partition) for t in tps]
        committed = {
            (tp.topic, tp.partition): tp.offset for tp in client.committed(asked, LOOKUP_SECONDS)
        }
        read = faust_compat.introspection.app_read_offsets(self.app)
        out: dict[Any, Offsets] = {}
        for tp in tps:
            start, end = client.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=LOOKUP_SECONDS, cached=False
            )
            done = committed.get((tp.topic, tp.partition))
            out[tp] = Offsets(
                end=int(end),
                read=read.get(tp),
                committed=int(done) if done is not None and done >= 0 else None,
                start=max(0, int(start)),
            )
        return out

    def _consumer(self) -> Any:
        """A client of its own, under the worker's group id to read its commits; it never
        subscribes, joins or commits."""
        if self._client is None:
            from confluent_kafka import Consumer

            self._client = Consumer(
                {
                    **self.config,
                    "group.id": str(self.app.conf.id),
                    "enable.auto.commit": False,
                }
            )
        return self._client

    def _has_records(self, stall: Stall, now: float) -> bool:
        """Does a record (not only transaction markers) wait past the committed offset? A real
        read, so neither markers nor a broker that under-reports the log end mislead it."""
        tp: Any = stall.partition
        o = stall.offsets
        if tp is None or o is None:
            return True
        begin = o.committed if o.committed is not None else o.start
        if o.read is not None and o.read > begin:
            # The worker itself read a record there (markers never reach it): no probe. A
            # probe from an offset past an under-reported log end finds nothing (found in CI:
            # a failover survivor read 800 records past a commit that did not move, the
            # broker said the log ended below the commit, and every probe said "nothing
            # waits"; the stall was never judged). Past it, not at it: Faust sets the read
            # offset to the committed one when it seeks after a recovery, with nothing read.
            return True
        try:
            first = faust_compat.probes.first_record_offset(
                self.config, tp.topic, tp.partition, begin, timeout=PROBE_SECONDS
            )
        except Exception as exc:  # cannot tell: look again next time
            log.warning("watchdog: probe of %s[%d]@%d failed: %r", tp.topic, tp.partition,
                        begin, exc)  # fmt: skip
            self.watch.checked(tp, now)
            return False
        if first is not None and (o.end is None or o.end < begin or first < o.end):
            return True
        if o.end is not None and o.end >= begin:
            self.watch.idle(tp, o.end)  # markers only, up to a known end
        else:
            self.watch.checked(tp, now)
        return False

    # ------------------------------------------------------------------ reporting

    def report(self, stall: Stall, partitions: dict[Any, Offsets]) -> None:
        reason = stall.describe()
        self.on_stall(reason)
        self.metrics.stalls.labels(stall.kind).inc()
        self.metrics.worker_ready.set(0.0)
        dump = {
            "kind": stall.kind,
            "reason": reason,
            "time": time.time(),
            "partitions": {
                f"{tp.topic}[{tp.partition}]": {
                    "start": o.start,
                    "end": o.end,
                    "read": o.read,
                    "committed": o.committed,
                }
                for tp, o in partitions.items()
            },
            "busy_since_seconds": _age(faust_compat.batches.busy_since(), time.monotonic()),
            "loop_seen_seconds_ago": _age(self._loop_seen, self.clock()),
            "consumer": faust_compat.introspection.diagnostics(self.app),
        }
        log.error("WATCHDOG: worker stalled (%s); exiting with code %d for the supervisor to "
                  "restart it. What it saw: %s", reason, STALL_EXIT_CODE,
                  json.dumps(dump, default=str))  # fmt: skip
        try:
            self.stall_log.parent.mkdir(parents=True, exist_ok=True)
            with self.stall_log.open("a") as f:
                f.write(json.dumps({"kind": stall.kind, "reason": reason,
                                    "time": dump["time"]}) + "\n")  # fmt: skip
        except OSError as exc:
            log.warning("watchdog: could not write %s: %r", self.stall_log, exc)

    def _count_past_stalls(self) -> None:
        """Counts the stalls earlier processes of this worker recorded, so the counter is the
        worker's, not this process's; says so in the log. Every kind's series starts at 0,
        so Prometheus' increase() sees the first stall."""
        for kind in STALL_KINDS:
            self.metrics.stalls.labels(kind)
        try:
            lines = self.stall_log.read_text().splitlines()
        except OSError:
            return
        last = None
        for line in lines:
            try:
                last = json.loads(line)
                self.metrics.stalls.labels(str(last["kind"])).inc()
            except (ValueError, KeyError, TypeError):
                continue
        if last is not None:
            log.warning("watchdog: this worker was restarted after a stall (%d recorded in %s; "
                        "last: %s)", len(lines), self.stall_log, last.get("reason"))  # fmt: skip


def _work_in_sight(o: Offsets) -> bool:
    done = o.committed if o.committed is not None else o.start
    return (o.end is not None and o.end > done) or (o.read is not None and o.read + 1 > done)


def _age(t: float | None, now: float) -> float | None:
    """Seconds from ``t`` to ``now``, of the same clock."""
    return None if t is None else round(now - t, 1)


class StallHook:
    """Testing only (``DRIFTWATCH_TEST_STALL``): after ``after`` processed events, stop
    fetching (``fetch``: every source partition paused), stop committing (``commit``: every
    ack ignored), leave the next fetch unanswered (``unanswered``: a broker that never
    answers it; the fetch timeout sends it again, no stall) or, after 100 more input records,
    drop those fetched in the 2 s after on their way to the agents (``lose``: Faust's races;
    read again, no stall; ``lose:N:P``: partition P's records only, both the 100 and those
    dropped; ``lose:N:P:K``: K of them let through, not 100, so ``lose:N:P:0`` loses the head
    of a partition nothing was read of yet). Fires once per data directory, so the restarted
    worker runs normally."""

    def __init__(self, spec: str, data_dir: str) -> None:
        kind, _, after = spec.partition(":")
        after, _, partition = after.partition(":")
        partition, _, through = partition.partition(":")
        numbers = [n.isdigit() or not n for n in (after, partition, through)]
        if (
            kind not in (FETCH, COMMIT, UNANSWERED, LOSE)
            or (partition and kind != LOSE)
            or (through and not partition)
            or not all(numbers)
        ):
            raise ValueError(
                f"DRIFTWATCH_TEST_STALL: {spec!r} is not fetch:N, commit:N, unanswered:N, "
                "lose:N, lose:N:P or lose:N:P:K"
            )
        self.kind = kind
        self.after = int(after or 0)
        self.partition = int(partition) if partition else None
        self.let_through = int(through) if through else None
        self.marker = Path(data_dir) / "test-stall-fired"
        self.seen = 0

    def __call__(self, stream: Any, events: int) -> None:
        self.seen += events
        if self.seen < self.after or self.marker.exists():
            return
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(self.kind)
        what = {UNANSWERED: "an unanswered fetch", LOSE: "a lost fetch"}.get(
            self.kind, f"a {self.kind} stall"
        )
        log.warning("TEST HOOK: provoking %s after %d events", what, self.seen)
        if self.kind == LOSE:
            faust_compat.eager_delivery.LOSE_PARTITION = self.partition
            if self.let_through is not None:
                faust_compat.eager_delivery.LOSE_AFTER = self.let_through
            faust_compat.eager_delivery.LOSE_NEXT_FETCH = True
        elif self.kind == COMMIT:
            faust_compat.guards.IGNORE_ACKS = True
        elif self.kind == UNANSWERED:
            faust_compat.fetch_timeout.leave_next_fetch_unanswered(stream.app)
        else:
            consumer = stream.app.consumer
            tps = [tp for tp in consumer.assignment() if not tp.topic.endswith("-changelog")]
            consumer.pause_partitions(tps)
