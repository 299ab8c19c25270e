"""Alerts not delivered yet, and when each gets its next round: the notifier's outbox.

A webhook that is down for a minute used to lose every alert raised meanwhile: a round of
attempts (:class:`~agents.webhook.WebhookNotifier`) lasts about a minute, and its failure was
final. A failed round whose error a later one may not meet (connection refused, timeout,
429, 5xx) is now tried again, a round after 1, 2, 4, 8 and then every 15 minutes (by
default), and never before the endpoint's ``Retry-After`` asked (an hour at most:
:data:`LONGEST_ASKED_WAIT`), until delivered or ``hours`` after it was first held back.
With ``hours`` 0 (no redelivery) only an endpoint's ``Retry-After`` is honoured so, for an
hour at most: a round cut short because the endpoint asked for a longer wait than a round
takes was the notifier's choice, not the endpoint's failure.

Every alert the notifier takes is held here, once its record is written, from before its
first round until a round settles it (:meth:`Redelivery.queue`), and so are the alerts of its
*chain* - its incident, retrain request or model's version changes (:func:`chain_of`) - that
came after it: a chain's alerts are sent one at a time in the order they were published on
``alerts`` (:attr:`Pending.seq`, their offset), and one waiting for its next round holds the
later ones behind it (:meth:`Redelivery.due` gives the first of each chain only), so a
receiver never sees an incident's ``resolved`` before its ``opened``.

The pending alert (the alert itself, when it was first held back, its rounds and its place)
is kept in its delivery record in the ``alert-deliveries`` table, in the alert's partition,
so it survives a restart and moves with the partition to the worker that owns it next; this
class is the in-memory view of the partitions this worker owns.

Pure: no I/O, the clock passed in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final

from schemas.alerts import Alert, AlertKind

CHECK_SECONDS: Final = 10.0
"""How often a worker looks for pending alerts whose round is due."""
MAX_PER_CHECK: Final = 64
"""Rounds started at one check at most (the oldest first): an endpoint back after a long
outage gets its backlog in steps, not thousands of POSTs at once."""
LONGEST_WAIT: Final = 900.0
"""Seconds between rounds at most."""
LONGEST_ASKED_WAIT: Final = 3600.0
"""Most seconds an endpoint's ``Retry-After`` holds an alert back (one asking for more is
tried again after an hour): enough for any rate limit or short maintenance, and an
endpoint asking for days is broken (its alerts would be given up unseen)."""
PENDING: Final = b'"pending"'
"""What a delivery record's bytes hold when its alert is pending (scanned for at takeover)."""
QUEUED: Final = "queued"
"""The ``s`` of a delivery record written before the alert's first round (no outcome yet)."""


def next_delay(rounds: int, first: float = 60.0) -> float:
    """Seconds before round ``rounds + 1``, after ``rounds`` failed ones: ``first``,
    doubling, at most :data:`LONGEST_WAIT`.

    >>> [next_delay(n) for n in (1, 2, 3, 4, 5, 9, 200)]
    [60.0, 120.0, 240.0, 480.0, 900.0, 900.0, 900.0]
    """
    return min(LONGEST_WAIT, first * 2.0 ** min(max(rounds, 1) - 1, 32))


def chain_of(alert: Alert) -> str | None:
    """What ``alert``'s order is kept within: its incident (``drift_id``), its retrain
    request, or its model's version changes; None for an alert that stands alone. One chain's
    alerts share a message key (``tenant:model``), so a partition of ``alerts``.

    >>> from schemas.alerts import AlertKind, Severity
    >>> a = Alert("a1", AlertKind.INCIDENT, "opened", "acme", "fraud", Severity.HIGH, "t",
    ...           "x", 0.0, 0.0, incident={"drift_id": "d1"})
    >>> chain_of(a), chain_of(Alert("a2", AlertKind.INCIDENT, "opened", "acme", "fraud",
    ...                             Severity.HIGH, "t", "x", 0.0, 0.0))
    ('["incident", "acme", "fraud", "d1"]', None)
    """
    if alert.kind is AlertKind.MODEL:
        return json.dumps(["model", alert.tenant, alert.model])
    if alert.kind is AlertKind.INCIDENT:
        details, name = alert.incident, "drift_id"
    else:
        details, name = alert.retrain, "request_id"
    value = details.get(name) if isinstance(details, dict) else None
    if not isinstance(value, str) or not value:
        return None
    return json.dumps([alert.kind.value, alert.tenant, alert.model, value])


@dataclass
class Pending:
    """An alert not delivered yet: before its first round, or waiting for its next one."""

    alert: Alert
    partition: int
    since: float
    """When it was first held back: queued (``rounds`` 0), then when its first round failed
    (the hours of redelivery count from there, not from its queueing: an alert queued behind
    others, or behind the cap of rounds, for long was given up at its first failure)."""
    rounds: int
    """Rounds failed so far (0: queued, none run yet)."""
    due: float
    """When its next round may start (the first of its chain only: :meth:`Redelivery.due`)."""
    seq: int = -1
    """Its place in its chain: its offset on ``alerts`` (-1: a record from before chains
    were kept in order, which goes first)."""
    asked: bool = False
    """Its last round ended because of a wait the endpoint asked for (``Retry-After``,
    longer than a round may wait), which ``due`` includes: honoured even with redelivery
    off."""

    @cached_property
    def chain(self) -> tuple[int, str] | None:
        """Its partition and :func:`chain_of` its alert; None: it stands alone."""
        chain = chain_of(self.alert)
        return None if chain is None else (self.partition, chain)

    def order(self) -> tuple[int, float, float, str]:
        """Its place in its chain: published first, first (records from before: by time)."""
        return (self.seq, self.alert.created_at, self.since, self.alert.alert_id)

    def record(self, status: str, attempts: int, at: float) -> bytes:
        """Its delivery record: the round's outcome, and what a takeover needs to go on."""
        held: dict[str, Any] = {
            "alert": self.alert.to_dict(),
            "since": self.since,
            "rounds": self.rounds,
            "due": self.due,
            "seq": self.seq,
        }
        if self.asked:
            held["asked"] = True
        return json.dumps({"s": status, "n": attempts, "at": at, "pending": held}).encode()

    @classmethod
    def from_record(cls, raw: bytes, partition: int) -> Pending | None:
        """The pending alert a delivery record holds; None if it holds none (delivered, or
        failed for good) or cannot be read."""
        try:
            data: Any = json.loads(raw)
            p = data["pending"]
            return cls(Alert.from_dict(p["alert"]), partition, float(p["since"]),
                       int(p["rounds"]), float(p["due"]), int(p.get("seq", -1)),
                       p.get("asked") is True)  # fmt: skip
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


class Redelivery:
    """The pending alerts of the partitions this worker owns, by alert id.

    >>> from schemas.alerts import AlertKind, Severity
    >>> alert = Alert("a1", AlertKind.INCIDENT, "opened", "acme", "fraud", Severity.HIGH,
    ...               "t", "x", 0.0, 0.0)
    >>> r = Redelivery(hours=1.0)
    >>> p = r.failed(alert, partition=0, now=100.0)
    >>> p.due, r.due(159.0), [q.alert.alert_id for q in r.due(160.0)]
    (160.0, [], ['a1'])
    >>> r.failed(alert, 0, now=160.0).due  # the second round failed: 2 minutes
    280.0
    >>> r.failed(alert, 0, now=3_700.0) is None, len(r)  # an hour after the first: given up
    (True, 0)
    >>> r.failed(alert, 0, now=4_000.0, retry_after=600.0).due  # not before the wait asked
    4600.0
    """

    def __init__(self, hours: float, first_seconds: float = 60.0) -> None:
        if not hours >= 0:
            raise ValueError(f"DRIFTWATCH_ALERT_REDELIVERY_HOURS must be >= 0, not {hours}")
        if not first_seconds > 0:
            raise ValueError(
                f"DRIFTWATCH_ALERT_REDELIVERY_FIRST_SECONDS must be > 0, not {first_seconds}"
            )
        self.horizon = hours * 3600.0
        self.first = first_seconds
        self.pending: dict[str, Pending] = {}
        """By alert id; read only (changed here, with :attr:`_chains`)."""
        self._chains: dict[tuple[int, str], dict[str, Pending]] = {}
        """The pending alerts of each chain: :meth:`first_of` looks at its chain's alone (it
        walked every pending alert, at every step of a chain: a backlog of 20,000 took
        minutes of the event loop to drain)."""
        self.loaded: set[int] = set()
        """Partitions whose pending alerts were read from the table since this worker got
        them."""
        self._generation: dict[int, int] = {}

    def generation(self, partition: int) -> int:
        """Changes each time the partition is forgotten (revoked): work begun under one
        generation (a round, a scan) that ends under another is the new owner's to do."""
        return self._generation.get(partition, 0)

    def __len__(self) -> int:
        return len(self.pending)

    def _put(self, p: Pending) -> None:
        self._pop(p.alert.alert_id)
        self.pending[p.alert.alert_id] = p
        if p.chain is not None:
            self._chains.setdefault(p.chain, {})[p.alert.alert_id] = p

    def _pop(self, alert_id: str) -> Pending | None:
        p = self.pending.pop(alert_id, None)
        if p is not None and p.chain is not None:
            held = self._chains[p.chain]
            del held[alert_id]
            if not held:
                del self._chains[p.chain]
        return p

    @property
    def enabled(self) -> bool:
        return self.horizon > 0

    @staticmethod
    def queued(alert: Alert, partition: int, now: float, seq: int) -> Pending:
        """``alert`` (its offset on ``alerts``: ``seq``) as held before its first round: due
        at once, once it is the first of its chain. Not held yet: its record is written
        first, then :meth:`queue` holds it (held first, a failed write left it here only, and
        the message read again was taken for a duplicate: the alert was lost)."""
        return Pending(alert, partition, now, 0, now, seq)

    def queue(self, p: Pending) -> Pending:
        """Hold ``p`` (:meth:`queued`, its record written) until a round settles it. One
        already held is left as it is."""
        known = self.pending.get(p.alert.alert_id)
        if known is not None:
            return known
        self._put(p)
        return p

    def failed(
        self,
        alert: Alert,
        partition: int,
        now: float,
        retry_after: float | None = None,
        asked: bool = False,
    ) -> Pending | None:
        """A round of ``alert`` failed on a retryable error at ``now``, its endpoint asking to
        wait ``retry_after`` seconds (or not): its next round, or None (and no longer pending)
        once ``hours`` have passed since its first round failed (not since it was queued).
        Never before the wait asked
        (up to :data:`LONGEST_ASKED_WAIT`); with redelivery off, a next round only if the
        round ended because of that wait (``asked``: longer than a round may wait), within
        that long (a ``Retry-After: 0`` earned an hour of rounds)."""
        known = self._pop(alert.alert_id)
        since = now if known is None or known.rounds == 0 else known.since
        off_horizon = LONGEST_ASKED_WAIT if asked else 0.0
        if now - since >= (self.horizon if self.enabled else off_horizon):
            return None
        rounds = 1 if known is None else known.rounds + 1
        wait = next_delay(rounds, self.first)
        if retry_after is not None:
            wait = max(wait, min(retry_after, LONGEST_ASKED_WAIT))
        seq = -1 if known is None else known.seq
        p = Pending(alert, partition, since, rounds, now + wait, seq, asked)
        self._put(p)
        return p

    def done(self, alert_id: str) -> None:
        """Delivered, or failed for good: no longer pending (the next of its chain is
        first now)."""
        self._pop(alert_id)

    def first_of(self, p: Pending) -> Pending | None:
        """The first pending alert of ``p``'s chain (``p`` itself if it stands alone and is
        pending); None if none is."""
        chain = p.chain
        if chain is None:
            return self.pending.get(p.alert.alert_id)
        return min(self._chains.get(chain, {}).values(), key=Pending.order, default=None)

    def due(self, now: float, limit: int = MAX_PER_CHECK) -> list[Pending]:
        """The pending alerts whose next round is due, each the first of its chain (the
        others wait behind it), oldest first, at most ``limit``."""
        first: dict[tuple[int, str], Pending] = {}
        alone: list[Pending] = []
        for p in self.pending.values():
            chain = p.chain
            if chain is None:
                alone.append(p)
            elif chain not in first or p.order() < first[chain].order():
                first[chain] = p
        heads = [p for p in (*alone, *first.values()) if p.due <= now]
        return sorted(heads, key=lambda p: p.since)[:limit]

    def load(self, partition: int, records: Iterable[bytes], generation: int = 0) -> None:
        """The pending alerts of a partition this worker now owns, from its delivery records
        (a takeover, a restart), read under ``generation``: nothing if it was revoked since."""
        if self.generation(partition) != generation:
            return
        self.loaded.add(partition)
        for raw in records:
            p = Pending.from_record(raw, partition)
            if p is not None and p.alert.alert_id not in self.pending:
                self._put(p)

    def keep_only(self, owned: set[int]) -> None:
        """Forget the partitions this worker no longer owns (their new owner goes on)."""
        self.forget(({p.partition for p in self.pending.values()} | self.loaded) - owned)

    def forget(self, partitions: set[int]) -> None:
        """Forget these partitions' pending alerts (read again if they come back)."""
        self.loaded -= partitions
        for p in partitions:
            self._generation[p] = self.generation(p) + 1
        for alert_id in [k for k, p in self.pending.items() if p.partition in partitions]:
            self._pop(alert_id)
