"""Alerts out: retraining news onto the ``alerts`` topic, and every alert to people.

:class:`RetrainAlertRouter` turns ``retrain-events`` and ``model-events`` into alerts.
:class:`AlertNotifier` reads ``alerts`` and delivers each alert id once to its webhook: the
table ``alert-deliveries`` (changelogged, partitioned like ``alerts``) remembers what was
delivered, so a redelivered message, a restart or another worker taking the partition over
never sends an alert twice. A crash between a successful POST and recording it repeats that
POST with the same ``Idempotency-Key`` (at-least-once; receivers dedupe on it). The outcome of
each delivery round goes back onto ``alerts`` as an ``AlertDelivery`` record, so what could not
be delivered is visible there, not only in ``driftwatch_alert_deliveries_total``. A round that
failed on a retryable error (the endpoint down, 5xx, 429) is tried again later
(:mod:`agents.redelivery`; its record then says ``retry_at``), not before the endpoint's
``Retry-After``, until delivered or ``DRIFTWATCH_ALERT_REDELIVERY_HOURS`` after its first
failure.

Order: the alerts of one incident (retrain request, model) are sent one at a time, in the
order they were published; one waiting for a later round holds the later ones of its
incident behind it, in order (:func:`agents.redelivery.chain_of`).

Endpoints independent: the agent writes each new alert's record (pending, ``queued``) before
its first round, starts the rounds as tasks and waits for them ``wait_seconds`` at most. The
offset of its batch may then be committed while a slow endpoint's round still runs: safe,
since the table holds the alert until a round settles it (a crash sends it again from there,
after the restart or at the partition's next owner), and a slow endpoint no longer holds the
batch other tenants' alerts are in (it did for up to a round, 70 s).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agents.alerts import model_alert, retrain_alert
from agents.faust_compat.current_event import set_current_event
from agents.metrics import WorkerMetrics
from agents.processor import SendFn, TableStore
from agents.redelivery import PENDING, QUEUED, Pending, Redelivery
from agents.webhook import CHANNEL, WebhookConfig, WebhookNotifier
from runtime.settings import Settings
from schemas import InvalidEvent, ModelEvent, RetrainEvent
from schemas.alerts import ALERT_SCHEMA, Alert, AlertDelivery, DeliveryStatus
from streams.keyed_state import Write

log = logging.getLogger(__name__)


DELIVERY_RESULTS = ("delivered", "retried", "deferred", "failed", "duplicate")
"""``driftwatch_alert_deliveries_total{result}``: an attempt delivered, an attempt retried
within its round, a round failed and tried again later, an alert given up, an alert seen
again (already delivered or pending)."""


PRUNE_EVERY_SECONDS = 6 * 3600.0
"""How often a partition's delivery records are pruned (:meth:`AlertNotifier.prune`)."""
STOP_GRACE_SECONDS = 5.0
"""How long a stopping worker lets the delivery rounds under way end (an attempt's timeout)."""
PRUNE_CHUNK = 1000
"""Deletes per write: the first pruning after an upgrade may find a year of records."""
MAX_ROUNDS_IN_FLIGHT = 64
"""Delivery rounds (tasks, one per chain) under way at once at most: the agent no longer
waits for its rounds, so a slow endpoint and a stream of new incidents made one task per
chain without limit (tens of thousands). An alert over it is held (memory and table) and
its round started as soon as one ends, the oldest held first: a new alert never goes before
an older one held due (the freed slot went to the next batch's new alerts, and older ones
waited for good under a steady flow of new incidents)."""


def delivery_key(alert_id: str) -> str:
    return json.dumps(["d", alert_id])


@dataclass
class RetrainAlertRouter:
    """``retrain-events`` / ``model-events`` -> ``alerts``."""

    send_alert: SendFn
    metrics: WorkerMetrics
    kind: str
    """``retrain`` or ``model``: which topic this router reads."""

    async def process_batch(self, events: Sequence[Any]) -> None:
        for event in events:
            alert: Alert | None = None
            try:
                data = json.loads(event.value or b"")
                if self.kind == "retrain":
                    alert = retrain_alert(RetrainEvent.from_dict(data))
                else:
                    alert = model_alert(ModelEvent.from_dict(data))
            except (ValueError, InvalidEvent, TypeError, KeyError) as exc:
                # Written by the retrain worker; a bad record is logged, not dead-lettered.
                log.warning("%s record not understood: %r", self.kind, exc)
                continue
            if alert is None:
                continue
            await self.send_alert(alert.stream_key.encode(), alert.to_json())
            self.metrics.alerts.labels(alert.kind.value, alert.change, alert.severity.value).inc()


@dataclass
class AlertNotifier:
    """``alerts`` -> webhook, each alert id once."""

    webhook: WebhookNotifier | None
    store: TableStore
    metrics: WorkerMetrics
    send_alert: SendFn
    """To publish ``AlertDelivery`` records back onto ``alerts``."""
    source_topic: str
    clock: Callable[[], float] = time.time
    redelivery: Redelivery = field(default_factory=lambda: Redelivery(0.0))
    retention_seconds: float = 0.0
    """How long a delivery record is kept (:meth:`prune`); 0: for ever."""
    wait_seconds: float = 1.0
    """How long the agent (and the timer) waits for the rounds it started before it goes on
    (they go on in the background): a healthy endpoint answers within it, so its batch's
    offset is committed after its POSTs as before, and a slow one holds the other endpoints'
    alerts this long at most, not a round."""
    _in_flight: set[str] = field(default_factory=set)
    """Ids of the alerts in a round now."""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    """The rounds under way (:meth:`_rounds`), one task per chain."""
    max_rounds: int = MAX_ROUNDS_IN_FLIGHT
    """:data:`MAX_ROUNDS_IN_FLIGHT`."""
    _held: list[tuple[tuple[float, float, str], int, Pending]] = field(default_factory=list)
    """The first alerts of chains whose round :attr:`max_rounds` held back, a heap, oldest
    first (:func:`_age`): a round that ends starts the oldest still due (:meth:`_start`);
    stale entries (settled, started, revoked) are dropped as they come up."""
    _held_ids: dict[str, Pending] = field(default_factory=dict)
    _held_seq: itertools.count[int] = field(default_factory=itertools.count)
    _stopping: bool = False
    """:meth:`stop` began: a round that ends starts no other."""
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _load_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One reader of a partition's pending alerts at a time (the agent and the timer)."""
    _pruned: dict[int, float] = field(default_factory=dict)
    """Per partition of ``alerts``: when its records were last pruned (this clock)."""
    _expired_found: dict[int, tuple[int, list[str]]] = field(default_factory=dict)
    """Per partition taken over at this check, due to be pruned: the keys of the expired
    records its one scan found, and its generation then (:meth:`prune` goes on from them)."""

    def __post_init__(self) -> None:
        # Every outcome's series from the start, at 0, with or without a webhook (pending
        # alerts are given up without one): the first loss is then an increase a rule sees
        # (a series born at 1 shows none).
        for result in DELIVERY_RESULTS:
            self.metrics.alert_deliveries.labels(CHANNEL, result)
        self._count_undelivered()

    async def process_batch(self, events: Sequence[Any]) -> None:
        """Each new alert of ``events`` held (its record written, before the batch's offset
        can be committed) and its round started if it is the first of its chain; the rounds
        waited for ``wait_seconds`` at most. A partition's pending alerts are read first (a
        restart, a takeover): a new alert must know of an earlier one of its incident."""
        todo: list[tuple[int, int, Alert]] = []
        in_batch: set[str] = set()
        for event in events:
            set_current_event(event)
            alert = _alert(event.value)
            if alert is None:
                continue
            # (The table decides, not memory: an alert is held there only once its record is
            # written.)
            if alert.alert_id in in_batch or self.store.get(delivery_key(alert.alert_id)):
                self.metrics.alert_deliveries.labels(CHANNEL, "duplicate").inc()
                continue
            in_batch.add(alert.alert_id)
            if self.webhook is None or self.webhook.url_for(alert.tenant) is None:
                continue  # no channel for this tenant: nothing to deliver, nothing to record
            todo.append((event.message.partition, event.message.offset, alert))
        if not todo:
            return
        generations = {p: self.redelivery.generation(p) for p, _, _ in todo}
        await self._load(generations)
        now = self.clock()
        async with self._lock:  # (a revoke meanwhile: the new owner reads the messages again)
            new = [
                self.redelivery.queued(alert, partition, now, offset)
                for partition, offset, alert in todo
                if self.redelivery.generation(partition) == generations[partition]
            ]
            try:  # written, then held: held first, a failed write left it in memory only
                await self.store.write_all(
                    Write(delivery_key(h.alert.alert_id), h.record(QUEUED, 0, now), h.partition)
                    for h in new
                )
            except BaseException:
                # The batch is read again; the write may have taken some records (no longer
                # new then, duplicates to the batch read again): those are held now, looked up
                # one by one (a rescan of their partitions, outside this lock while this
                # worker's rounds went on, put a round settled meanwhile back from its stale
                # record: sent again, out of order).
                # Only while the partition is still this generation's: revoked meanwhile, the
                # new owner reads the records (stale copies kept here were sent again if the
                # partition came back before the timer). A lookup that fails leaves the
                # partition to be read whole again.
                for h in new:
                    if self.redelivery.generation(h.partition) != generations[h.partition]:
                        continue
                    try:
                        stored = self.store.get(delivery_key(h.alert.alert_id), h.partition)
                    except Exception:
                        self.redelivery.loaded.discard(h.partition)
                        continue
                    if stored is not None:
                        self.redelivery.queue(h)
                self._count_undelivered()
                raise
            held = [
                self.redelivery.queue(h)
                for h in new
                if self.redelivery.generation(h.partition) == generations[h.partition]
            ]
            self._count_undelivered()
        now = self.clock()
        heads = {}  # the first of each chain of the batch (not every pending alert's: due())
        for h in {h.chain or h.alert.alert_id: h for h in held}.values():  # once a chain
            first = self.redelivery.first_of(h)
            if first is not None:
                heads[first.alert.alert_id] = first
        firsts = [
            p
            for p in heads.values()
            if p.due <= now
            and p.partition in self.redelivery.loaded  # (else an earlier one may be unread)
            and self._may_start(p)
        ]
        await self._wait(self._start(firsts))  # (after the older ones held, if any)

    async def check(self, owned: Callable[[], set[int]], recovering: Callable[[], bool]) -> None:
        """The redelivery timer's work: the rounds due (:meth:`redeliver`), then
        :meth:`prune`, of the partitions ``owned()`` gives; neither while ``recovering()``
        (a rebalance, a table recovery): both read a partition's records, and a store being
        restored holds only a part of them. Both asked again before the prune: the rounds may
        have taken minutes, and a rebalance with its recovery may have begun meanwhile (a
        prune then marks a store pruned for hours from a part of it, and deletes while its
        restore writes)."""
        if recovering():
            return
        await self.redeliver(owned())
        if recovering():
            return  # pruned at a check after the recovery
        await self.prune(owned())

    async def redeliver(self, owned: set[int]) -> None:
        """Try again the pending alerts whose round is due, each the first of its chain, of
        the ``owned`` partitions of ``alerts`` (those taken over read from the table first).
        On a timer. Without a webhook, or with redelivery off (a restart after an outage that
        changed them), the pending alerts are given up, said and counted, not left pending
        for good - but for those never tried yet, and those whose endpoint asked to wait
        (``Retry-After``), which redelivery off still honours. The rounds are waited for
        ``wait_seconds`` at most."""
        pending = self.redelivery
        pending.keep_only(owned)
        self._expired_found.clear()  # (a prune after the last check's rounds never came)
        await self._load(owned, prune_at=self.clock())
        self._count_undelivered()
        now = self.clock()
        due = [p for p in pending.due(now) if p.alert.alert_id not in self._in_flight]
        ends = [p for p in due if not self._may_start(p)]
        if ends:  # (the next of their chains: at the next check)
            generations = {p.partition: pending.generation(p.partition) for p in ends}
            why = "no webhook configured" if self.webhook is None else "redelivery is off"
            outcomes = [(p.partition, p.alert, p, _given_up(p.alert, now, why)) for p in ends]
            await self._record(outcomes, generations)
        ended = {p.alert.alert_id for p in ends}
        await self._wait(self._start(p for p in due if p.alert.alert_id not in ended))

    async def stop(self, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """The worker stops: the rounds under way get ``grace_seconds`` to end (a round
        cut off after its POST is sent again, a repeat the receiver drops), then are
        cancelled: their alerts are held in the table, the partition's next owner sends them."""
        self._stopping = True
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=grace_seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def prune(self, owned: set[int]) -> int:
        """Delete the delivery records older than ``retention_seconds`` (by their last round)
        of the ``owned`` partitions not pruned for :data:`PRUNE_EVERY_SECONDS`; how many. On
        the redelivery timer, after :meth:`redeliver`: a partition it took over was read
        once there, for both (its keys found then are deleted, not scanned for again). A
        record only stops a message of ``alerts`` read again (a crash before the commit, a
        takeover) from being sent again: the messages that old are long committed. Pending
        alerts are never deleted (they end within ``DRIFTWATCH_ALERT_REDELIVERY_HOURS``)."""
        found, self._expired_found = self._expired_found, {}
        if self.retention_seconds <= 0:
            return 0
        removed = 0
        now = self.clock()
        cutoff = now - self.retention_seconds
        for partition in sorted(owned):
            if not self._prune_due(partition, now):
                continue
            generation = self.redelivery.generation(partition)
            keys: list[str] | None
            if partition in found and found[partition][0] == generation:
                keys = found[partition][1]  # (expired then: still, and never written since)
            else:
                keys = await asyncio.to_thread(
                    self.store.scan_keys, partition, lambda raw: _expired(raw, cutoff)
                )
            if keys is None:
                continue  # its store is not open yet: at the next check
            done = 0
            for start in range(0, len(keys), PRUNE_CHUNK):  # the rounds' writes in between
                async with self._lock:  # one writer at a time, on a partition still owned
                    if self.redelivery.generation(partition) != generation:
                        break
                    chunk = keys[start : start + PRUNE_CHUNK]
                    await self.store.write_all(Write(k, None, partition) for k in chunk)
                done += len(chunk)
            else:
                self._pruned[partition] = now  # (a failed or cut short one: at the next check)
            removed += done
            if done:
                log.info("alert-deliveries: %d records of partition %d older than %.0f days "
                         "deleted", done, partition, self.retention_seconds / 86400)  # fmt: skip
        return removed

    def _prune_due(self, partition: int, now: float) -> bool:
        """Is ``partition`` to be pruned at this check (a retention, and not pruned here for
        :data:`PRUNE_EVERY_SECONDS`)?"""
        return (
            self.retention_seconds > 0
            and now - self._pruned.get(partition, -math.inf) >= PRUNE_EVERY_SECONDS
        )

    def _read_taken_over(
        self, partition: int, cutoff: float | None
    ) -> tuple[list[bytes], list[str]] | None:
        """A partition taken over, read in one scan: its pending records (for
        :meth:`Redelivery.load`) and, with a ``cutoff``, the keys of its records to prune
        (:func:`_expired`); None while its store is not open. One scan, not two: the prune's
        full scan of a partition not pruned here came right after the takeover's. Safe from
        a thread."""
        records: list[bytes] = []

        def expired(raw: bytes) -> bool:
            if PENDING in raw:  # what TableStore.scan(partition, PENDING) gave
                records.append(raw)
                return False
            return cutoff is not None and _expired(raw, cutoff)

        keys = self.store.scan_keys(partition, expired)
        return None if keys is None else (records, keys)

    def forget(self, partitions: set[int]) -> None:
        """Partitions of ``alerts`` revoked: their pending alerts are the new owner's."""
        self.redelivery.forget(partitions)
        self._count_undelivered()

    async def _load(self, partitions: Iterable[int], prune_at: float | None = None) -> None:
        """Read the pending alerts of those of ``partitions`` not read since this worker got
        them (a takeover, a restart), one reader at a time: the agent and the timer both
        need them. ``prune_at`` (the timer's clock): the same scan finds the keys its prune
        deletes, for a partition due to be pruned. A store not open yet: at a later call."""
        async with self._load_lock:
            for partition in sorted(set(partitions) - self.redelivery.loaded):
                generation = self.redelivery.generation(partition)
                cutoff = None
                if prune_at is not None and self._prune_due(partition, prune_at):
                    cutoff = prune_at - self.retention_seconds
                found = await asyncio.to_thread(self._read_taken_over, partition, cutoff)
                if found is None:
                    continue  # its store is not open yet: at the next check
                records, expired = found
                self.redelivery.load(partition, records, generation)
                if cutoff is not None:
                    self._expired_found[partition] = (generation, expired)

    def _may_start(self, p: Pending) -> bool:
        """May ``p``'s round start (when due, and the first of its chain)? Not while one
        runs; not without a webhook; with redelivery off, only a first round or one its
        endpoint asked for (the others are given up: :meth:`redeliver`)."""
        if self.webhook is None or p.alert.alert_id in self._in_flight:
            return False
        return self.redelivery.enabled or p.rounds == 0 or p.asked

    def _start(self, firsts: Iterable[Pending] = ()) -> list[asyncio.Task[None]]:
        """A task per chain, from its first alert (:meth:`_rounds`), the partition's
        generation read now, oldest first (:func:`_age`): ``firsts`` and the alerts held
        before by :attr:`max_rounds` (:attr:`_held`) still due, merged - a new alert does not
        go before an older one held. One no longer pending as it was found (settled, or its
        partition revoked since) is left alone; those over :attr:`max_rounds` are held (a
        round that ends starts the oldest of them)."""
        fresh = sorted(firsts, key=_age)
        tasks: list[asyncio.Task[None]] = []
        i = 0
        while not self._stopping and len(self._tasks) < self.max_rounds:
            held = self._oldest_held()
            if i < len(fresh) and (held is None or _age(fresh[i]) <= _age(held)):
                p = fresh[i]
                i += 1
            elif held is not None:
                self._pop_held()
                p = held
            else:
                break
            if (
                p.alert.alert_id in self._in_flight
                or self.redelivery.pending.get(p.alert.alert_id) is not p
            ):
                continue
            self._in_flight.add(p.alert.alert_id)
            generation = self.redelivery.generation(p.partition)
            task = asyncio.create_task(self._rounds(p, generation))
            self._tasks.add(task)
            task.add_done_callback(self._ended)
            tasks.append(task)
        for p in fresh[i:]:  # over the cap
            if self._held_ids.get(p.alert.alert_id) is not p:
                self._held_ids[p.alert.alert_id] = p
                heapq.heappush(self._held, (_age(p), next(self._held_seq), p))
        self._count_undelivered()
        return tasks

    def _oldest_held(self) -> Pending | None:
        """The oldest alert held by :attr:`max_rounds` that may start now (due, still the
        first of its chain, pending as it was held, not in a round); the stale ones before
        it dropped (one whose round is due again later is found by the timer)."""
        now = self.clock()
        while self._held:
            p = self._held[0][2]
            alert_id = p.alert.alert_id
            if (
                self.redelivery.pending.get(alert_id) is p
                and p.due <= now
                and p.partition in self.redelivery.loaded
                and self.redelivery.first_of(p) is p
                and self._may_start(p)
            ):
                return p
            self._pop_held()
        return None

    def _pop_held(self) -> None:
        """Take the oldest off the held heap (and its id, if it is still that alert's)."""
        p = heapq.heappop(self._held)[2]
        if self._held_ids.get(p.alert.alert_id) is p:
            del self._held_ids[p.alert.alert_id]

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A round task ended: its slot goes to the oldest alert held by the cap, if any."""
        self._tasks.discard(task)
        if self._held and not self._stopping:
            self._start()

    async def _wait(self, tasks: list[asyncio.Task[None]]) -> None:
        """Wait for ``tasks`` ``wait_seconds`` at most (they go on after)."""
        if tasks:
            await asyncio.wait(tasks, timeout=self.wait_seconds)

    async def _rounds(self, first: Pending, generation: int) -> None:
        """``first``'s round, then those of the alerts of its chain that waited behind it,
        one at a time, in order, while each is settled (delivered, or failed for good): it
        stops at one that waits for a later round (the timer's), and once the partition is
        revoked (``generation`` moved on). Each outcome recorded before the next is sent."""
        assert self.webhook is not None
        p: Pending | None = first
        while p is not None:
            try:
                result = await self.webhook.deliver(p.alert)
                await self._record([(p.partition, p.alert, p, result)], {p.partition: generation})
            except Exception:  # the table holds it pending: the next check, or a restart
                log.exception("delivery round of alert %s not recorded", p.alert.alert_id[:8])
                return
            finally:
                self._in_flight.discard(p.alert.alert_id)
                self._count_undelivered()
            p = self._next_of(p, generation)

    def _next_of(self, done: Pending, generation: int) -> Pending | None:
        """The alert of ``done``'s chain to send now that ``done``'s round is recorded (marked
        in a round), or None: ``done`` itself waits for a later round, nothing waits behind
        it, the next is not due, or the partition was revoked."""
        if done.chain is None or self.redelivery.generation(done.partition) != generation:
            return None
        after = self.redelivery.first_of(done)
        if (
            after is None
            or after.alert.alert_id == done.alert.alert_id
            or after.due > self.clock()
            or not self._may_start(after)
        ):
            return None
        self._in_flight.add(after.alert.alert_id)
        self._count_undelivered()
        return after

    async def _record(
        self,
        outcomes: Sequence[tuple[int, Alert, Pending | None, AlertDelivery]],
        generations: dict[int, int],
    ) -> None:
        """The rounds' outcomes into memory and the table (one writer at a time: the agent
        and the timer both come here), then each reported on ``alerts``. A partition revoked
        since its round began (its generation moved on) is its new owner's: the outcome is
        reported, and neither kept nor written here. Settled and filtered with no await in
        between, written before any report: a report that fails leaves the table right."""
        async with self._lock:
            current = self.redelivery.generation
            settled = [
                self._settle(p, alert, prior, result, current(p) == generations[p])
                for p, alert, prior, result in outcomes
            ]
            self._count_undelivered()
            await self.store.write_all(w for w, _, _, _ in settled if w is not None)
        for _, alert, result, rounds in settled:
            try:
                await self._report(alert, result, rounds)
            except Exception:  # on the topic later or not: the table holds the outcome
                log.exception("delivery record of alert %s not published", alert.alert_id[:8])

    def _count_undelivered(self) -> None:
        """The pending alerts, and those in a round not pending (one a round per task at
        most): not a union of every pending id (at every step of a chain)."""
        pending = self.redelivery.pending
        settled = sum(1 for a in self._in_flight if a not in pending)
        self.metrics.alerts_undelivered.labels(CHANNEL).set(len(pending) + settled)

    def _settle(
        self,
        partition: int,
        alert: Alert,
        prior: Pending | None,
        result: AlertDelivery,
        owned: bool,
    ) -> tuple[Write | None, Alert, AlertDelivery, int]:
        """A round's outcome: pending again (a retryable failure, within the hours), or done.
        Its table record (None: not this worker's to write), and what to report."""
        retry = result.status is DeliveryStatus.FAILED and result.retryable
        if not owned:
            if retry:  # the new owner goes on from the record it has
                due = prior.due if prior is not None else result.at + self.redelivery.first
                result = replace(result, retry_at=max(due, result.at))
            return None, alert, result, 0 if prior is None else prior.rounds + 1
        pending = (
            self.redelivery.failed(
                alert, partition, self.clock(), result.retry_after, result.wait_asked
            )
            if retry
            else None
        )
        if not retry:
            self.redelivery.done(alert.alert_id)
        if pending is not None:
            result = replace(result, retry_at=pending.due)
            value = pending.record(result.status.value, result.attempts, result.at)
        else:
            record = {"s": result.status.value, "n": result.attempts, "at": result.at}
            value = json.dumps(record).encode()
        write = Write(delivery_key(alert.alert_id), value, partition)
        return write, alert, result, 0 if pending is None else pending.rounds

    async def _report(self, alert: Alert, result: AlertDelivery, rounds: int) -> None:
        if result.status is DeliveryStatus.DELIVERED:
            self.metrics.alert_delivery_seconds.labels(CHANNEL).observe(
                max(0.0, result.at - alert.created_at)
            )
        elif result.retry_at is not None:
            self.metrics.alert_deliveries.labels(CHANNEL, "deferred").inc()
            log.warning("alert %s (%s) not delivered in round %d (%d attempts: %s); tried "
                        "again in %.0f s", alert.alert_id[:8], alert.title, rounds,
                        result.attempts, result.error, result.retry_at - result.at)  # fmt: skip
        else:
            self.metrics.alert_deliveries.labels(CHANNEL, "failed").inc()
            log.error("alert %s (%s) not delivered, for good, after %d attempts: %s",
                      alert.alert_id[:8], alert.title, result.attempts, result.error)  # fmt: skip
        await self.send_alert(alert.stream_key.encode(), result.to_json())


def _age(p: Pending) -> tuple[float, float, str]:
    """Oldest first: when it was held back (queued, or its first round failed)."""
    return (p.since, p.alert.created_at, p.alert.alert_id)


def _expired(raw: bytes, cutoff: float) -> bool:
    """Is this delivery record's last round before ``cutoff``, and its alert not pending?"""
    try:
        record: Any = json.loads(raw)
        return "pending" not in record and float(record["at"]) < cutoff
    except (ValueError, TypeError, KeyError):
        return False  # not a record this code wrote: left alone


def _given_up(alert: Alert, now: float, why: str) -> AlertDelivery:
    """A pending alert given up without a round (nothing to send it to any more)."""
    return AlertDelivery(alert.alert_id, alert.tenant, alert.model, CHANNEL, "",
                         DeliveryStatus.FAILED, 0, now, why)  # fmt: skip


def _alert(raw: bytes | None) -> Alert | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("schema") != ALERT_SCHEMA:
        return None  # delivery records (and anything else) share the topic
    try:
        return Alert.from_dict(data)
    except InvalidEvent as exc:
        log.warning("alert not understood: %s", exc)
        return None


def webhook_notifier(
    settings: Settings, metrics: WorkerMetrics | None = None
) -> WebhookNotifier | None:
    """The webhook channel from the settings; None when no URL is configured at all."""
    tenant_urls: dict[str, str] = {}
    items = filter(None, (x.strip() for x in settings.alert_webhook_tenant_urls.split(",")))
    for n, item in enumerate(items, start=1):
        tenant, sep, url = item.partition("=")
        if not sep or not tenant.strip():  # (a secret: the entry itself is not repeated)
            raise ValueError(f"DRIFTWATCH_ALERT_WEBHOOK_TENANT_URLS: entry {n} is not tenant=url")
        tenant_urls[tenant.strip()] = url.strip()
    if not settings.alert_webhook_url and not any(u and u != "off" for u in tenant_urls.values()):
        return None
    secret = None
    if settings.alert_webhook_secret_file:
        path = settings.alert_webhook_secret_file
        try:
            secret = Path(path).read_bytes().strip()
        except OSError as exc:
            raise ValueError(
                f"DRIFTWATCH_ALERT_WEBHOOK_SECRET_FILE: {path}: {exc.strerror or exc}"
            ) from None

    def on_attempt(attempt: int, outcome: str) -> None:
        if metrics is not None and outcome in ("delivered", "retried"):
            metrics.alert_deliveries.labels(CHANNEL, outcome).inc()

    return WebhookNotifier(
        WebhookConfig(
            url=settings.alert_webhook_url or None,
            tenant_urls=tenant_urls,
            secret=secret,
            max_attempts=settings.alert_webhook_max_attempts,
        ),
        on_attempt=on_attempt,
    )
