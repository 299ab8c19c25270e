"""The outcome side of the worker: route outcomes to the join, join, emit the prediction log.

``outcomes`` (keyed by ``event_id`` with whatever partitioner its producers use) and the
valid predictions (forwarded by the feature-drift agent) meet in ``join-input``, partitioned
by our own hash of ``event_id``. The joiner's state for partition *p* lives in partition *p*
of the ``join-state`` table. Every joined pair goes to ``labeled-predictions`` (the training
data for retraining) and, with every new prediction, to ``performance-input`` at the
partition that owns the prediction's stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.dead_letters import DeadLetters, Rejected
from agents.envelopes import (
    MAX_FRAMES,
    About,
    JoinFrame,
    PerfEntry,
    batch_join,
    decode_join,
    encode_perf,
)
from agents.faust_compat.current_event import PartitionContext, set_current_event
from agents.metrics import WorkerMetrics
from agents.processor import (
    CHUNK_BYTES,
    ForwardFn,
    TableStore,
    chunks,
    in_thread,
    observe_latency,
)
from schemas import InvalidEvent, OutcomeEvent, PredictionEvent
from schemas.events import POSITION_STRIDE
from streams.ingest import OutcomeValidator
from streams.join import (
    ExpiredOutcome,
    ForwardedPrediction,
    JoinConfig,
    JoinResult,
    OutcomeJoiner,
    binary_label,
)
from streams.keyed_state import Write

log = logging.getLogger(__name__)


@dataclass
class OutcomeRouter:
    """Validates ``outcomes`` and forwards the valid ones to their join partition."""

    validator: OutcomeValidator
    metrics: WorkerMetrics
    dead_letters: DeadLetters
    forward: ForwardFn
    source_topic: str
    partitions: int
    clock: Callable[[], float] = time.time

    async def process_batch(self, events: Sequence[Any]) -> None:
        now = self.clock()
        out: list[tuple[str, JoinFrame]] = []
        rejected: list[Rejected] = []
        with self.metrics.phase("outcomes", "compute"):
            for event in events:
                m = event.message
                try:
                    outcome = self.validator.validate(event.value, now)
                except InvalidEvent as exc:
                    rejected.append(Rejected.of(m, event.value, exc))
                    continue
                except Exception as exc:  # a bug must not stop the worker or lose the batch
                    log.exception("internal error validating %s[%d]@%d", m.topic, m.partition,
                                  m.offset)  # fmt: skip
                    error = InvalidEvent("internal_error", repr(exc)[:500])
                    rejected.append(Rejected.of(m, event.value, error))
                    continue
                frame: JoinFrame = ("o", (m.partition, m.offset), None, event.value, None)
                out.append((outcome.event_id, frame))
            messages = batch_join(out, self.partitions)
        with self.metrics.phase("outcomes", "deliver"):
            await self.dead_letters.put_all(rejected)
            self.metrics.events.labels(self.source_topic, "ok").inc(len(out))
            await self.forward(messages)
        observe_latency(self.metrics, self.source_topic, events, self.clock())


@dataclass
class _JoinResult:
    """What a part of a join batch produced, for the loop to deliver and write."""

    rejected: list[Rejected] = field(default_factory=list)
    labeled: list[tuple[bytes, bytes, float]] = field(default_factory=list)
    perf: dict[int, dict[int, list[PerfEntry]]] = field(default_factory=dict)
    """home partition -> join partition -> entries"""
    writes: list[tuple[int, list[Write]]] = field(default_factory=list)
    expired: int = 0
    """Records expired (``driftwatch_join_expired_records_total``), counted as ``joins``."""
    joins: Counter[str] = field(default_factory=Counter)
    """``driftwatch_joins_total`` by outcome, counted once the part is delivered and written
    (a part that fails is read again and would count twice)."""


@dataclass
class JoinProcessor:
    """Applies batches of ``join-input`` to per-partition :class:`OutcomeJoiner` s."""

    config: JoinConfig
    store: TableStore
    metrics: WorkerMetrics
    dead_letters: DeadLetters
    send_labeled: Callable[[list[tuple[bytes, bytes, float]]], Awaitable[None]]
    """(key, value, outcome time): the log's message time is the outcome's event time, so the
    retrain consumer can seek it by time."""
    send_performance: ForwardFn
    source_topic: str
    """``join-input``: the table partitions follow its partitions."""
    predictions_topic: str
    outcomes_topic: str
    partitions: int
    clock: Callable[[], float] = time.time
    offload: bool = True
    """Each part's CPU work in a worker thread (False: on the loop)."""
    outcome_marks: dict[int, int] | None = None
    """Per join partition, its end offset when no outcome was found on its way
    (:func:`agents.outcome_drain.drain_marks`, set by a timer; None: not known to be so).
    A partition read past it ends its stall grace (:meth:`OutcomeJoiner.expire`)."""
    _joiners: dict[int, OutcomeJoiner] = field(default_factory=dict)
    _context: PartitionContext | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _last_read: dict[int, int] = field(default_factory=dict)

    def joiner(self, partition: int) -> OutcomeJoiner:
        j = self._joiners.get(partition)
        if j is None:
            j = self._joiners[partition] = OutcomeJoiner(self.config, self.store, partition)
            self._share_cache()
        return j

    def _share_cache(self) -> None:
        """The worker's cache budget (``config.cache_mb``), shared by the partitions it
        holds: a worker that takes over more partitions keeps no more decoded records."""
        for j in self._joiners.values():
            j.set_cache_mb(self.config.cache_mb / len(self._joiners))

    async def process_batch(self, events: Sequence[Any]) -> None:
        async with self._lock:
            await self._process_batch(events)

    async def forget(self, partitions: Collection[int]) -> None:
        """After a rebalance: drop the decoded records of given-up partitions."""
        async with self._lock:
            for partition in partitions:
                joiner = self._joiners.pop(partition, None)
                if joiner is not None:
                    joiner.forget()
            if self._joiners:
                self._share_cache()

    async def _process_batch(self, events: Sequence[Any]) -> None:
        # A batch of 1,000 join-input messages is up to a million frames after a backlog:
        # joined part by part (each part's output delivered and its state written before the
        # next), with the CPU work in a worker thread, so the event loop (heartbeats,
        # commits, the other agents) never waits for more than one part's writes.
        for part in chunks(events, CHUNK_BYTES):
            now = self.clock()
            try:
                result = await self._cpu(self._compute, part, now)
            except BaseException:
                self._forget_all()  # half-applied: the tables are the truth
                raise
            await self._commit(result)

    async def _cpu(self, fn: Callable[..., _JoinResult], *args: Any) -> _JoinResult:
        with self.metrics.phase("join", "compute"):
            return await in_thread(fn, *args) if self.offload else fn(*args)

    def _compute(self, events: Sequence[Any], now: float) -> _JoinResult:
        """A part's CPU work (in a worker thread): decode, join, expire, encode the state."""
        out = _JoinResult()
        touched: set[int] = set()
        for event in events:
            m = event.message
            set_current_event(event)
            touched.add(m.partition)
            last = self._last_read.get(m.partition)
            if last is not None and m.offset != last + 1:
                # Our own topic, contiguous offsets: a jump is a skip, a step back a re-read.
                log.info("%s[%d]: read offset %d after %d", m.topic, m.partition, m.offset, last)
            self._last_read[m.partition] = m.offset
            joiner = self.joiner(m.partition)
            try:
                frames = decode_join(event.value)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                error = InvalidEvent("bad_envelope", repr(exc)[:500])
                out.rejected.append(Rejected(m.topic, m.partition, m.offset, m.key, event.value,
                                             error))  # fmt: skip
                continue
            for index, (kind, origin, home, raw, about) in enumerate(frames):
                topic = self.predictions_topic if kind == "p" else self.outcomes_topic
                # A prediction's origin is offset * stride + its index in an envelope.
                offset, at = divmod(origin[1], POSITION_STRIDE) if kind == "p" else (
                    origin[1], None)  # fmt: skip
                try:
                    result, prediction = self._apply(joiner, kind, origin, home, raw, about)
                except InvalidEvent as exc:
                    out.rejected.append(
                        Rejected(topic, origin[0], offset, None, raw, exc, at, later=True)
                    )
                    continue
                except Exception as exc:  # a bug must not stop the worker or lose the batch
                    log.exception("internal error joining %s[%d]@%d", topic, origin[0], offset)
                    error = InvalidEvent("internal_error", repr(exc)[:500])
                    out.rejected.append(
                        Rejected(topic, origin[0], offset, None, raw, error, at, later=True)
                    )
                    continue
                if result.dropped is not None:
                    out.rejected.append(self._given_up(result.dropped))
                position = m.offset * MAX_FRAMES + index
                self._collect(result, kind, prediction, m.partition, position, out)
        marks = self.outcome_marks  # one reading: the timer replaces it from the loop
        for partition in sorted(touched):
            # Faust reads a table from the current event's partition only: enter the one
            # being expired (the part's last message may be another partition's).
            self._enter(partition)
            drained = (
                marks is not None
                and partition in marks
                and self._last_read[partition] + 1 >= marks[partition]
            )
            joiner = self.joiner(partition)
            before = joiner.stats.expired_records
            for gone in joiner.expire(time.monotonic(), bounded=True, drained=drained):
                out.rejected.append(self._given_up(gone))
            out.expired += joiner.stats.expired_records - before
            out.writes.append((partition, joiner.flush()))
        return out

    async def _commit(self, out: _JoinResult) -> None:
        """On the loop: deliver what the part produced, then write the state recording it.
        If that fails, the joiners forget their decoded records (encoded already, they would
        not be written again): the tables are the truth, and the batch is read again."""
        try:
            with self.metrics.phase("join", "deliver"):
                await self.dead_letters.put_all(out.rejected)
                await self.send_labeled(out.labeled)
                await self.send_performance(
                    [
                        (str(jp).encode(), encode_perf(jp, entries), home)
                        for home, by_jp in sorted(out.perf.items())
                        for jp, entries in sorted(by_jp.items())
                    ]
                )
            # One write for every partition the part touched: their changelog batches are
            # delivered together, not one partition's round trip after another's.
            with self.metrics.phase("join", "write"):
                await self.store.write_all(
                    w if w.partition is not None else Write(w.key, w.value, partition)
                    for partition, writes in out.writes
                    for w in writes
                )
        except BaseException:
            self._forget_all()
            raise
        for outcome, n in out.joins.items():
            self.metrics.joins.labels(outcome).inc(n)
        self.metrics.join_expired.inc(out.expired)

    def _forget_all(self) -> None:
        for joiner in self._joiners.values():
            joiner.forget()

    def _apply(
        self,
        joiner: OutcomeJoiner,
        kind: str,
        origin: tuple[int, int],
        home: int | None,
        raw: bytes,
        about: About | None,
    ) -> tuple[JoinResult, PredictionEvent | ForwardedPrediction | None]:
        """Parsed once here (a prediction forwarded with its :data:`About` not at all);
        the prediction goes on to the performance entry."""
        if kind == "p":
            # Validated by this worker's drift agent before it was forwarded here.
            prediction = (
                PredictionEvent.from_trusted_json(raw)
                if about is None
                else ForwardedPrediction(*about, raw)
            )
            return joiner.on_prediction(prediction, origin, home), prediction
        # Its size was checked at the edge (DRIFTWATCH_MAX_MESSAGE_BYTES), not again here
        # against a default that a larger setting would pass: an outcome counted "ok" there
        # was then dead-lettered as oversized (found by review).
        return joiner.on_outcome(OutcomeEvent.from_json(raw, len(raw)), origin), None

    def _collect(
        self,
        result: JoinResult,
        kind: str,
        prediction: PredictionEvent | ForwardedPrediction | None,
        partition: int,
        offset: int,
        out: _JoinResult,
    ) -> None:
        labeled, perf = out.labeled, out.perf
        if not result.new:
            out.joins["replayed"] += 1
            return
        if prediction is not None:
            p = prediction
            home = result.home if result.home is not None else 0
            perf.setdefault(home, {}).setdefault(partition, []).append(
                PerfEntry(2 * offset, p.tenant, p.model, p.model_version, p.timestamp, p.score)
            )
        pair = result.joined
        if pair is None:
            out.joins["pending" if kind == "o" else "waiting"] += 1
            return
        out.joins["joined"] += 1
        p = pair.prediction
        labeled.append((f"{p.tenant}:{p.model}".encode(), pair.to_json(), pair.outcome_timestamp))
        home = result.home if result.home is not None else 0
        perf.setdefault(home, {}).setdefault(partition, []).append(
            PerfEntry(
                2 * offset + 1,
                p.tenant,
                p.model,
                p.model_version,
                p.timestamp,
                p.score,
                binary_label(pair.label),
                pair.outcome_timestamp,
            )
        )

    def _given_up(self, gone: ExpiredOutcome) -> Rejected:
        """The dead letter of an outcome the join held and let go (its original bytes are not
        kept in the join state: the letter carries the outcome re-encoded, and its origin)."""
        part, offset = gone.origin or (-1, -1)
        eid, reason = gone.outcome.event_id, gone.reason
        detail = {
            "unknown_prediction": f"no prediction {eid} within the join retention",
            "expired": f"prediction {eid} was made more than the retention before it",
        }.get(reason, f"prediction {eid} is for another tenant/model")
        error = InvalidEvent(reason, detail)
        key, value = gone.outcome.event_id.encode(), gone.outcome.to_json()
        return Rejected(self.outcomes_topic, part, offset, key, value, error, later=True)

    def _enter(self, partition: int) -> None:
        if self._context is None:
            self._context = PartitionContext(self.source_topic)
        self._context.enter(partition)
