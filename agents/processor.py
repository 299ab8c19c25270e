"""Applies batches of prediction messages to the engine and persists the result.

This is the only place that bridges Faust's per-partition state to the engine: every table
read happens with the current event set to a message of the partition that owns the state, and
every write names that partition, so the RocksDB partition and the changelog partition are
always the right ones.

The engine's work (decoding, validation, window tests at closes and looks, encoding state)
runs in a worker thread, not on the event loop, where a window close of many features would
hold up commits, other agents, timers and the consumer's fetches for tens of milliseconds.
What must happen on the loop (producing, table writes, which produce changelog records)
happens after, in the order that makes the batch at-least-once: dead letters and drift events
delivered, then the state that records them written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agents.alerts import incident_alert, rank_notices
from agents.dead_letters import DeadLetters, Rejected
from agents.envelopes import JoinFrame, batch_join
from agents.faust_compat import bulk_writes, commit_cap, direct_reads
from agents.faust_compat.current_event import (
    PartitionContext,
    set_current_event,
)
from agents.faust_compat.guards import first_offsets
from agents.metrics import WorkerMetrics
from schemas import DriftEvent, InvalidEvent
from schemas.events import POSITION_STRIDE
from streams.engine import DriftEngine
from streams.incidents import IncidentNotice
from streams.ingest import PredictionValidator
from streams.keyed_state import Write

log = logging.getLogger(__name__)

SendFn = Callable[[bytes, bytes], Awaitable[None]]
ForwardFn = Callable[[list[tuple[bytes, bytes, int]]], Awaitable[None]]
R = TypeVar("R")
"""Sends (key, value, partition) messages and returns once all are delivered."""


class TableStore:
    """The engine's view of a Faust table whose keys and values are bytes."""

    def __init__(
        self,
        table: Any,
        changelog_batch_bytes: int = 0,
        changelog_last_alone: bool = False,
        metrics: WorkerMetrics | None = None,
        name: str = "",
    ) -> None:
        self.table = table
        self._counted = (
            None
            if metrics is None
            else (metrics.state_records.labels(name), metrics.state_bytes.labels(name))
        )
        """What the writes are counted in: records and bytes (None: not counted)."""
        self._direct = direct_reads.direct_capable(table)
        self._batch_bytes = changelog_batch_bytes
        """The changelog's record batch size (0: the producer's)."""
        self._last_alone = changelog_last_alone
        """Each write's last record of a partition in a changelog batch of its own."""

    def get(self, key: str, partition: int | None = None) -> bytes | None:
        """``key``'s value in ``partition``'s store (Faust reads the partition of the current
        event, which is not always the one the key belongs to), else the current event's."""
        return direct_reads.read(self.table, key.encode(), partition, self._direct)

    def scan(self, partition: int, marker: bytes) -> list[bytes] | None:
        """The values in ``partition``'s store that contain ``marker`` (a full scan: for a
        small table, at a takeover); None while that store is not open. Safe from a
        thread."""
        return direct_reads.scan(self.table, partition, marker, self._direct)

    def scan_keys(self, partition: int, keep: Callable[[bytes], bool]) -> list[str] | None:
        """The keys in ``partition``'s store whose value ``keep`` accepts (a full scan: for a
        small table, now and then); None while that store is not open. Safe from a thread."""
        keys = direct_reads.scan_keys(self.table, partition, keep, self._direct)
        return None if keys is None else [k.decode() for k in keys]

    async def write_all(self, writes: Iterable[Write]) -> None:
        """Persist ``writes`` in order, each in its own partition (those without one: the
        current event's, and where there is none they are dropped and logged), in bulk
        (:func:`agents.faust_compat.bulk_writes.write`): returns once the changelog has
        them, raises if it did not take them."""
        groups: dict[int | None, list[tuple[bytes, bytes | None]]] = {}
        size = n = 0
        for w in writes:
            groups.setdefault(w.partition, []).append((w.key.encode(), w.value))
            n += 1
            size += 0 if w.value is None else len(w.value)
        await bulk_writes.write(self.table, groups, self._batch_bytes, self._last_alone)
        if self._counted is not None and n:
            self._counted[0].inc(n)
            self._counted[1].inc(size)


async def publish_drifts(send: SendFn, metrics: WorkerMetrics, drifts: list[DriftEvent]) -> None:
    """Send each DriftEvent (delivered before the caller writes the state that records it)."""
    for drift in drifts:
        await send(drift.stream_key.encode(), drift.to_json())
        metrics.drift_events.labels(
            drift.tenant, drift.model, drift.kind.value, drift.severity.value,
            str(drift.confirmed).lower(),
        ).inc()  # fmt: skip
        if drift.confirmed:
            metrics.confirmed_drifts.labels(
                drift.tenant, drift.model, drift.kind.value, drift.severity.value
            ).inc()
        log.info(
            "%s drift %s %s/%s %s %s=%.4f p=%.2e severity=%s confirmed=%s",
            drift.kind.value, drift.drift_id[:8], drift.tenant, drift.model,
            drift.feature or drift.model_version, drift.test, drift.statistic,
            drift.p_value or 0.0, drift.severity.value, drift.confirmed,
        )  # fmt: skip


async def publish_alerts(
    send: SendFn | None, metrics: WorkerMetrics, notices: list[IncidentNotice]
) -> None:
    """Turn incident notices into alerts and send them (delivered before the state that
    records the change is written; ids are stable, so a repeat after a crash is the same
    alert and the notifier delivers it once)."""
    for notice in rank_notices(notices):
        metrics.incident_changes.labels(notice.kind, notice.change, notice.severity).inc()
        if send is None:
            continue
        alert = incident_alert(notice)
        await send(alert.stream_key.encode(), alert.to_json())
        metrics.alerts.labels(alert.kind.value, alert.change, alert.severity.value).inc()


def observe_latency(metrics: WorkerMetrics, topic: str, events: Sequence[Any], now: float) -> None:
    """Broker timestamp to applied, per message (Faust gives message timestamps in seconds)."""
    hist = metrics.processing_latency.labels(topic)
    for event in events:
        ts = getattr(event.message, "timestamp", None)
        if ts:
            hist.observe(max(0.0, now - ts))


class LostState(RuntimeError):
    """The drift agent's state held since its last write was lost outside a batch: the batch
    that meets it is read again, with everything since the commit holds."""


async def deliver_all(futures: Sequence[Awaitable[Any]]) -> list[Any]:
    """Wait until every message sent is acknowledged: what a batch produced is delivered
    before the state that records it is written (at-least-once, never at-most-once). Returns
    what the futures gave (the records' metadata)."""
    if not futures:
        return []
    return list(await asyncio.gather(*futures))


async def in_thread(fn: Callable[..., R], *args: Any) -> R:
    """``fn(*args)`` in a worker thread. Cancelled meanwhile (a stop, a rebalance), it still
    waits for the thread to finish before the cancellation goes on: the thread changes
    decoded state, and the caller must not forget that state (or let the next batch at it)
    while the thread is still writing it."""
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await asyncio.shield(task)
        raise


WRITE_CHECK_SECONDS = 1.0
"""How often the worker asks :meth:`PredictionProcessor.write_in_background`."""


def _running(task: asyncio.Task[None] | None) -> bool:
    """Whether a timer's last task still runs; raises what it raised if it failed (the timer
    then fails, as when it awaited the work itself; the caller has let go of it first, so
    the next call starts anew)."""
    if task is None:
        return False
    if not task.done():
        return True
    task.result()
    return False


APPLY_AT_VALUES = 50_000
"""Feature values the drift agent buffers before it applies them to their windows between
state writes (:meth:`streams.engine.DriftEngine.apply_pending`): 2,500 predictions of 20
features. Applied per batch, a live worker's small batches paid the bulk update's per-run
cost each time; the buffer also goes in at every write, look and close."""
APPLY_AT_EVENTS = 500
"""And the events they must come from: the bulk update costs per (stream, window, feature)
run, so a model of 1,000 features needs runs of more than the 50 events its 50,000 values
make (in process, batches of 40: 152-161 predictions a second with runs of 50 events,
190-210 with runs of 500; docs/benchmarks.md). The buffer holds at most the larger of the
two, and never past the next write."""
CHUNK_BYTES = 2 << 20
"""Input bytes decoded and applied at a time: a batch of 1,000 envelopes of 500 predictions
(~300 MB, 500,000 predictions) is applied in parts of ~3,000, each part's output delivered
before the next, so what is decoded at once (events, join frames) stays small whatever the
batch (4.8 GB peak RSS on ``bench.throughput --batch 500`` with no parts). Parts of 8 MB held
~300 MB more over a long stream (``bench.worker_memory``, 2M events side by side: a part's
decoded objects are many small ones, and the allocator's arenas they filled stay taken once
a few long-lived objects sit among them); 1 MB parts cost ~14 % of the envelope rate."""


def chunks(events: Sequence[Any], max_bytes: int) -> list[Sequence[Any]]:
    """Consecutive runs of ``events`` of at most ``max_bytes`` of values (at least one each).

    >>> from types import SimpleNamespace as E
    >>> [len(c) for c in chunks([E(value=b"x" * n) for n in (3, 3, 5, 1, 9)], 6)]
    [2, 2, 1]
    """
    out: list[Sequence[Any]] = []
    start, size = 0, 0
    for k, event in enumerate(events):
        n = len(event.value or b"")
        if k > start and size + n > max_bytes:
            out.append(events[start:k])
            start, size = k, 0
        size += n
    if start < len(events):
        out.append(events[start:])
    return out


@dataclass
class BatchResult:
    """What a batch's CPU work produced, for the loop to deliver and write."""

    drifts: list[DriftEvent] = field(default_factory=list)
    notices: list[IncidentNotice] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    forward: list[tuple[str, JoinFrame]] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    ok: int = 0
    wrote: bool = False
    """The engine's changed state is in ``writes`` (all of it: written, the holds go)."""


_Source = tuple[Any, Any, int, bytes | None]
"""A valid prediction's message, validated entry and place among the batch's entries."""


@dataclass
class StreamActivity:
    partition: int
    event_time: float
    arrived: float


@dataclass
class PredictionProcessor:
    engine: DriftEngine
    store: TableStore
    validator: PredictionValidator
    metrics: WorkerMetrics
    send_drift: SendFn
    dead_letters: DeadLetters
    source_topic: str
    idle_timeout: float
    clock: Callable[[], float] = time.time
    on_drift: Callable[[DriftEvent], None] | None = None
    forward: ForwardFn | None = None
    """Where valid predictions go on to the outcome join (``join-input``), if anywhere."""
    join_partitions: int = 1
    send_alert: SendFn | None = None
    """Where incident changes go as alerts (``alerts``), if anywhere."""
    offload: bool = True
    """The batch's CPU work in a worker thread (False: on the loop, as ``bench.loop_lag``
    compares)."""
    state_flush_seconds: float = 0.0
    """Most seconds the engine's changes stay in memory before they are written (0: after
    every batch). Meanwhile each partition's commit is held at the first message not
    written (:mod:`agents.faust_compat.commit_cap`)."""
    apply_at_values: int = APPLY_AT_VALUES
    """Feature values buffered before they are applied to their windows between writes
    (with ``apply_at_events`` 0 as well: every batch)."""
    apply_at_events: int = APPLY_AT_EVENTS
    """Events those values must come from (:data:`APPLY_AT_EVENTS`)."""
    between_parts: Callable[[float], Awaitable[float]] | None = None
    """Awaited before each part of a batch after its first, with the seconds the batch may
    still wait (``parts_wait_seconds`` a batch, shared by its parts), returning the seconds it
    waited: the worker's downstream gate (:mod:`agents.faust_compat.backpressure`). Checked
    before each batch only, a batch of 100,000 predictions ran that far ahead of the join,
    forwarding part after part."""
    parts_wait_seconds: float = 10.0
    """Longest wait of a batch between its parts, all of them together: a stage that stopped
    adds this much to a batch of 150 parts, not 150 times it (the watchdog judges a batch
    that runs past ``DRIFTWATCH_STALL_BATCH_SECONDS`` a stall)."""
    monotonic: Callable[[], float] = time.monotonic
    _written_at: float | None = None
    _unwritten: bool = False
    """The engine holds changes its table does not have yet."""
    _news: bool = False
    """A drift event went out since the last write: the next write is now, so that the
    state the API and the gauges read agrees with the alerts people get."""
    _frontier: dict[int, int] = field(default_factory=dict)
    """Per partition, the offset after the last message applied since the engine last
    forgot its decoded state: what a write now covers."""
    _context: PartitionContext | None = None
    _activity: dict[tuple[str, str], StreamActivity] = field(default_factory=dict)
    _engine_seen: dict[str, int] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tick_task: asyncio.Task[None] | None = None
    _write_task: asyncio.Task[None] | None = None
    _lost: bool = False
    """A timer's work (a timed write, a quiet-stream tick) failed and forgot the decoded
    state, and no batch has been read again since: what the batches applied after the last
    write is in neither the tables nor memory. Until it is read again from the commit holds,
    nothing may be applied or written on top of it (:meth:`_outside_batch`)."""

    async def process_batch(self, events: Sequence[Any]) -> None:
        # The timer and the agent share the engine: one at a time, so the timer never
        # persists state whose drift events the agent has not delivered yet.
        async with self._lock:
            await self._process_batch(events)

    async def _process_batch(self, events: Sequence[Any]) -> None:
        if self._lost:
            # Raised before anything is applied: the batch machinery then reads again from
            # every commit hold (agents.faust_compat.batches), the lost messages among them.
            self._lost = False
            raise LostState(
                "a timer's write failed and the state it held was forgotten: reading again "
                "from the commit holds"
            )
        started = time.perf_counter()
        if self.state_flush_seconds > 0:  # before the batch is acked: no commit past it unwritten
            for tp, offset in first_offsets(events).items():
                commit_cap.hold(self.source_topic, tp.partition, offset)
        parts = chunks(events, CHUNK_BYTES)
        waited = 0.0
        for k, part in enumerate(parts):
            # What each part produced is delivered as it comes; the state is encoded and
            # written once, after the last part's output is delivered (writing it per part
            # would cost every dirty window's encoding and changelog record per part).
            if k and self.between_parts is not None and waited < self.parts_wait_seconds:
                waited += await self.between_parts(self.parts_wait_seconds - waited)
            try:
                result = await self._cpu(self._compute, part, self.clock(), k == len(parts) - 1)
            except BaseException:
                self._forget_all()  # half-applied: the tables are the truth
                raise
            await self._commit(result)
            for event in part:
                m = event.message
                self._frontier[m.partition] = max(self._frontier.get(m.partition, 0), m.offset + 1)
            if result.wrote:
                self._released()
            else:
                self._unwritten = True
            # Counted per part: a batch of 1,000 envelopes is 500,000 predictions, and the
            # counter is how progress shows (dashboards, the throughput benchmark).
            self.metrics.events.labels(self.source_topic, "ok").inc(result.ok)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        observe_latency(self.metrics, self.source_topic, events, self.clock())

    async def _cpu(self, fn: Callable[..., BatchResult], *args: Any) -> BatchResult:
        with self.metrics.phase("drift", "compute"):
            return await in_thread(fn, *args) if self.offload else fn(*args)

    def _compute(self, events: Sequence[Any], now: float, last: bool = True) -> BatchResult:
        """The batch's CPU work, in a worker thread (the context, with Faust's current event,
        is the thread's own copy): everything but producing and writing tables."""
        out = BatchResult()
        latest: dict[tuple[str, str], tuple[int, float]] = {}  # per stream, its last event's
        # The valid predictions of each stretch of messages from one partition, then the
        # engine takes each stretch at once (observe_many: its runs of one stream cost far
        # less per event than one call each). Its table reads without a partition go to the
        # current event's, which is then one of the stretch's messages, as one at a time.
        stretches: list[tuple[Any, list[Any], list[tuple[int, int]], list[_Source]]] = []
        rejected: list[tuple[int, Rejected]] = []  # with their places in the batch's entries
        seen = 0
        for event in events:  # validation reads no table: no current event set per message
            message = event.message
            seen += 1
            try:
                items = self.validator.validate_message(event.value, now)
            except InvalidEvent as exc:
                rejected.append((seen, Rejected.of(message, event.value, exc)))
                continue
            except Exception as exc:  # a bug must not stop the worker or lose the batch
                log.exception("internal error validating %s[%d]@%d", message.topic,
                              message.partition, message.offset)  # fmt: skip
                error = InvalidEvent("internal_error", repr(exc)[:500])
                rejected.append((seen, Rejected.of(message, event.value, error)))
                continue
            if not stretches or stretches[-1][0].message.partition != message.partition:
                stretches.append((event, [], [], []))
            _, predictions, origins, sources = stretches[-1]
            for item in items:
                seen += 1
                if item.error is not None:
                    rejected.append((seen, Rejected.of(message, item.raw, item.error, item.index)))
                    continue
                predictions.append(item.event)
                # One position per event, also inside an envelope: offset * stride + index.
                origins.append(
                    (message.partition, message.offset * POSITION_STRIDE + (item.index or 0))
                )
                sources.append((message, item, seen, event.value))
        refusals = False
        for first, predictions, origins, sources in stretches:
            set_current_event(first)
            done = self.engine.observe_many(predictions, origins)
            out.drifts.extend(drift for _, drift in done.drifts)
            refused = dict(done.refused)
            for k, (prediction, origin, (message, item, place, value)) in enumerate(
                zip(predictions, origins, sources, strict=True)
            ):
                if k in refused:
                    problem = refused[k]
                    if isinstance(problem, InvalidEvent):
                        error = problem
                    else:  # a bug: dead-lettered, never fatal to the worker or the batch
                        log.error("internal error on %s[%d]@%d", message.topic,
                                  message.partition, message.offset, exc_info=problem)  # fmt: skip
                        error = InvalidEvent("internal_error", repr(problem)[:500])
                    # A single event's letter keeps the message's own bytes (``item.raw`` is
                    # what the join keeps: without a byte-order mark); an envelope's event's,
                    # the event re-encoded.
                    raw = item.raw if item.index is not None else value
                    rejected.append((place, Rejected.of(message, raw, error, item.index)))
                    refusals = True
                    continue
                out.ok += 1
                if self.forward is not None:
                    # Every valid prediction, replays included: the join recognises a replay
                    # by its origin, and this message may never have reached it before a crash.
                    p = prediction
                    about = (p.event_id, p.tenant, p.model, p.model_version, p.timestamp, p.score)
                    out.forward.append(
                        (p.event_id, ("p", origin, message.partition, item.raw, about))
                    )
                latest[(prediction.tenant, prediction.model)] = (
                    message.partition, prediction.timestamp
                )  # fmt: skip
        if refusals:  # among the validator's: dead-lettered in the batch's order
            rejected.sort(key=lambda placed: placed[0])
        out.rejected = [r for _, r in rejected]
        for stream, (partition, event_time) in latest.items():
            if stream not in self._activity:
                self.metrics.model_seen(*stream)
            self._activity[stream] = StreamActivity(partition, event_time, now)
        if out.drifts:
            self._news = True
        if last:
            self._finish(out)
        return out

    def _finish(self, out: BatchResult, write: bool | None = None) -> None:
        """Its notices, and what the engine changed, encoded, if it is time to write it
        (``write``: None decides by :meth:`_write_due`) - still in the worker thread."""
        if write is None:
            write = self._news or bool(self.engine.notices) or self._write_due()
        if write:
            out.writes = self.engine.flush()
            out.wrote = True
        else:
            self.engine.apply_pending(self.apply_at_values, self.apply_at_events)  # in runs
        out.notices = self.engine.take_notices()

    def _write_due(self) -> bool:
        """Written after every batch without an interval; else once the interval has passed
        since the last write, or the windows changed fill half the engine's cache (what is
        not written cannot be evicted)."""
        if self.state_flush_seconds <= 0 or self._written_at is None:
            return True
        if self.monotonic() - self._written_at >= self.state_flush_seconds:
            return True
        return self.engine.unwritten() >= self.engine.config.cached_windows // 2

    def _released(self) -> None:
        """All of the engine's changes are written: the commits may pass what it applied."""
        self._written_at = self.monotonic()
        self._unwritten = self._news = False
        commit_cap.advance(self.source_topic, self._frontier)

    def _forget_all(self) -> None:
        """Drop every decoded value (a failure: the tables are the truth); what was applied
        and not written is read again from the holds."""
        self.engine.forget()
        self._frontier.clear()
        self._unwritten = self._news = False

    def write_in_background(self) -> None:
        """On a timer every :data:`WRITE_CHECK_SECONDS`: once the interval has passed, write
        what the batches held (a stream gone quiet holds its commits no longer than the
        interval and a second, whatever the quiet-stream timer's phase), in a task of its own
        (a write can outlast the timer's period), one at a time. Raises what the last one
        raised, as :meth:`tick_in_background` does: a failed write dropped what it held, and
        the commits must not pass it, so the timer fails, and the worker with it (its
        partitions are read again from the commits)."""
        last, self._write_task = self._write_task, None
        if _running(last):
            self._write_task = last
            return
        if self._unwritten and self._write_due():
            self._write_task = asyncio.get_running_loop().create_task(self.write_if_due())

    async def write_if_due(self) -> None:
        """:meth:`write_held` if the interval has passed when the lock is had (a batch that
        ran meanwhile may have written)."""
        async with self._lock:
            if self._write_due():
                await self._outside_batch(self._write_held)

    async def _outside_batch(self, work: Callable[[], Awaitable[None]]) -> None:
        """A timer's work on the engine. If it fails, the decoded state is forgotten (the
        tables are the truth) and, unlike a batch's failure, nothing reads the messages
        applied since the last write again: the next batch raises first so that the batch
        machinery does (before, the next write's frontier lacked them, and the commits could
        pass them: found by review). Meanwhile the timers leave the engine alone."""
        if self._lost:
            return
        try:
            await work()
        except BaseException:
            self._forget_all()
            self._lost = True
            raise

    async def write_held(self) -> None:
        """Write what is held in memory now (a rebalance, a clean stop), if anything."""
        async with self._lock:
            await self._outside_batch(self._write_held)

    async def _write_held(self) -> None:
        if not self._unwritten:
            return
        await self._commit(await self._cpu(self._compute_write))
        self._released()

    def _compute_write(self) -> BatchResult:
        out = BatchResult()
        self._finish(out, write=True)
        return out

    async def _commit(self, result: BatchResult) -> None:
        """On the loop: deliver what the batch produced, then write the state recording it.
        If that fails, the engine forgets its decoded state (the tables are the truth) and
        the batch is read again."""
        try:
            with self.metrics.phase("drift", "deliver"):
                await self.dead_letters.put_all(result.rejected)
                await self._publish(result.drifts, result.notices)
                if result.forward and self.forward is not None:
                    await self.forward(batch_join(result.forward, self.join_partitions))
            with self.metrics.phase("drift", "write"):
                await self._persist(result.writes)
        except BaseException:
            self._forget_all()
            raise

    async def tick(self) -> None:
        """Wall-clock timer: advance the clocks of streams that went quiet."""
        async with self._lock:
            await self._outside_batch(self._tick)

    def tick_in_background(self) -> None:
        """Start a :meth:`tick` unless the last one is still waiting or running; raise what
        the last one raised (a failed tick fails the timer, as when the timer awaited it).

        Why: a tick waits for the batch in progress (the lock), and a timer that awaited it
        had the batch's runtime, which mode logs as an overlapping timer every few seconds
        under load (and whatever the timer did after it came as late). The tick still takes
        the lock in turn with the batches, so quiet streams advance however busy the rest."""
        last, self._tick_task = self._tick_task, None
        if _running(last):
            self._tick_task = last
            return
        self._tick_task = asyncio.get_running_loop().create_task(self.tick())

    def cancel_tick(self) -> None:
        """At shutdown: a tick or a write still waiting for the lock has nothing left to do
        (the stop writes what is held)."""
        for task in (self._tick_task, self._write_task):
            if task is not None and not task.done():
                task.cancel()

    async def _tick(self) -> None:
        result = await self._cpu(self._compute_tick, self.clock())
        await self._commit(result)
        if result.wrote:
            self._released()
        else:  # what it advanced (a close, an expiry) is written with the next write
            self._unwritten = True

    def _compute_tick(self, now: float) -> BatchResult:
        out = BatchResult()
        for (tenant, model), act in list(self._activity.items()):
            self._export_watermark(tenant, model, act.event_time, now)
            idle = now - act.arrived
            if idle < self.idle_timeout:
                continue
            self._enter_partition(act.partition)
            out.drifts.extend(self.engine.advance(tenant, model, act.event_time + idle))
        if out.drifts:
            log.info("idle streams advanced; %d drift events", len(out.drifts))
            self._news = True
        # Written with the drift this tick found, else as a batch's changes are: once the
        # interval has passed (a stream gone quiet holds its commits no longer than that).
        self._finish(out)
        return out

    async def forget_partitions(self, partitions: set[int]) -> None:
        """After a rebalance, state of revoked partitions belongs to another worker: drop its
        decoded copy (waits for a batch in progress, whose state is then written)."""
        async with self._lock:
            try:
                await self._write_held()  # the new owner restores it from the changelog
            except Exception:
                # Nothing lost: the commits stay held, and after the rebalance every
                # partition is read again from its committed offset.
                log.exception("writing the state held in memory at a rebalance failed")
                self._forget_all()
            except BaseException:
                # Cancelled (a stop) while writing: its CPU work may have encoded the changes
                # and marked them written; what was held is read again from the holds, and
                # a later write must not count it written (found by review).
                self._forget_all()
                raise
            else:
                commit_cap.release(self.source_topic, partitions)
            for partition in partitions:
                self._frontier.pop(partition, None)
            self.engine.forget(partitions)
            for key in [k for k, a in self._activity.items() if a.partition in partitions]:
                del self._activity[key]

    def _enter_partition(self, partition: int) -> None:
        if self._context is None:
            self._context = PartitionContext(self.source_topic)
        self._context.enter(partition)

    async def _publish(self, drifts: list[DriftEvent], notices: list[IncidentNotice]) -> None:
        await publish_drifts(self.send_drift, self.metrics, drifts)
        await publish_alerts(self.send_alert, self.metrics, notices)
        if self.on_drift is not None:
            for drift in drifts:
                self.on_drift(drift)

    async def _persist(self, writes: list[Write]) -> None:
        # Drift events are delivered before the state that records them: a crash in between
        # re-emits the same event (same drift_id) rather than losing it.
        await self.store.write_all(writes)
        for what, n in self.engine.stats.items():
            delta = n - self._engine_seen.get(what, 0)
            if delta:
                self.metrics.engine.labels(what).inc(delta)
                self._engine_seen[what] = n

    def _export_watermark(self, tenant: str, model: str, event_time: float, now: float) -> None:
        self.metrics.watermark.labels(tenant, model).set(event_time)
        self.metrics.watermark_lag.labels(tenant, model).set(now - event_time)
