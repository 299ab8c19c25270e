"""Alerts whose delivery round failed on a retryable error, and when each is tried again.

A webhook that is down for a minute used to lose every alert raised meanwhile: a round of
attempts (:class:`~agents.webhook.WebhookNotifier`) lasts about a minute, and its failure was
final. A failed round whose error a later one may not meet (connection refused, timeout,
429, 5xx) is now tried again, a round after 1, 2, 4, 8 and then every 15 minutes (by default), until
delivered or ``hours`` after the first failure. The pending alert (the alert itself, its first
failure and its rounds) is kept in its delivery record in the ``alert-deliveries`` table, in
the alert's partition, so it survives a restart and moves with the partition to the worker
that owns it next; this class is the in-memory view of the partitions this worker owns.

Pure: no I/O, the clock passed in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from schemas.alerts import Alert

CHECK_SECONDS: Final = 10.0
"""How often a worker looks for pending alerts whose round is due."""
MAX_PER_CHECK: Final = 64
"""Rounds started at one check at most (the oldest first): an endpoint back after a long
outage gets its backlog in steps, not thousands of POSTs at once."""
LONGEST_WAIT: Final = 900.0
"""Seconds between rounds at most."""
PENDING: Final = b'"pending"'
"""What a delivery record's bytes hold when its alert is pending (scanned for at takeover)."""


def next_delay(rounds: int, first: float = 60.0) -> float:
    """Seconds before round ``rounds + 1``, after ``rounds`` failed ones: ``first``,
    doubling, at most :data:`LONGEST_WAIT`.

    >>> [next_delay(n) for n in (1, 2, 3, 4, 5, 9, 200)]
    [60.0, 120.0, 240.0, 480.0, 900.0, 900.0, 900.0]
    """
    return min(LONGEST_WAIT, first * 2.0 ** min(max(rounds, 1) - 1, 32))


@dataclass
class Pending:
    """An alert waiting for its next round."""

    alert: Alert
    partition: int
    since: float
    """When its first round failed."""
    rounds: int
    due: float

    def record(self, status: str, attempts: int, at: float) -> bytes:
        """Its delivery record: the round's outcome, and what a takeover needs to go on."""
        return json.dumps({
            "s": status, "n": attempts, "at": at,
            "pending": {"alert": self.alert.to_dict(), "since": self.since,
                        "rounds": self.rounds, "due": self.due},
        }).encode()  # fmt: skip

    @classmethod
    def from_record(cls, raw: bytes, partition: int) -> Pending | None:
        """The pending alert a delivery record holds; None if it holds none (delivered, or
        failed for good) or cannot be read."""
        try:
            data: Any = json.loads(raw)
            p = data["pending"]
            return cls(Alert.from_dict(p["alert"]), partition, float(p["since"]),
                       int(p["rounds"]), float(p["due"]))  # fmt: skip
        except (ValueError, TypeError, KeyError):
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

    @property
    def enabled(self) -> bool:
        return self.horizon > 0

    def failed(self, alert: Alert, partition: int, now: float) -> Pending | None:
        """A round of ``alert`` failed on a retryable error at ``now``: its next round, or
        None (and no longer pending) once ``hours`` have passed since its first failure."""
        known = self.pending.pop(alert.alert_id, None)
        since = now if known is None else known.since
        if not self.enabled or now - since >= self.horizon:
            return None
        rounds = 1 if known is None else known.rounds + 1
        p = Pending(alert, partition, since, rounds, now + next_delay(rounds, self.first))
        self.pending[alert.alert_id] = p
        return p

    def done(self, alert_id: str) -> None:
        """Delivered, or failed for good: no longer pending."""
        self.pending.pop(alert_id, None)

    def due(self, now: float, limit: int = MAX_PER_CHECK) -> list[Pending]:
        """The pending alerts whose next round is due, oldest first, at most ``limit``."""
        ready = sorted((p for p in self.pending.values() if p.due <= now), key=lambda p: p.since)
        return ready[:limit]

    def load(self, partition: int, records: Iterable[bytes], generation: int = 0) -> None:
        """The pending alerts of a partition this worker now owns, from its delivery records
        (a takeover, a restart), read under ``generation``: nothing if it was revoked since."""
        if self.generation(partition) != generation:
            return
        self.loaded.add(partition)
        for raw in records:
            p = Pending.from_record(raw, partition)
            if p is not None:
                self.pending.setdefault(p.alert.alert_id, p)

    def keep_only(self, owned: set[int]) -> None:
        """Forget the partitions this worker no longer owns (their new owner goes on)."""
        self.forget(({p.partition for p in self.pending.values()} | self.loaded) - owned)

    def forget(self, partitions: set[int]) -> None:
        """Forget these partitions' pending alerts (read again if they come back)."""
        self.loaded -= partitions
        for p in partitions:
            self._generation[p] = self.generation(p) + 1
        for alert_id in [k for k, p in self.pending.items() if p.partition in partitions]:
            del self.pending[alert_id]
