"""What every worker's API knows about every model, whoever owns its partition: the active
version and the model history (``model-events``), retrain requests (``retrain-events``) and the
recent alerts (``alerts``).

These topics are small, so each worker's API reads them whole, from the beginning, with its
own group-less consumer, and keeps them in memory: they answer from any worker without
forwarding, and the alert stream can resume from any recent alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas import InvalidEvent, ModelEvent, RetrainEvent, RetrainStatus
from schemas.alerts import ALERT_SCHEMA, Alert

log = logging.getLogger(__name__)

MAX_ALERTS = 10_000
MAX_EVICTED = 50_000
"""Ids of alerts pushed out of the :data:`MAX_ALERTS` held, remembered (for ``?after=``)."""
MAX_MODEL_EVENTS = 200
"""Per model."""


@dataclass
class AlertEntry:
    cursor: int
    """Position in this worker's sequence of alerts (for ``?after=``)."""
    alert: Alert
    raw: dict[str, Any]


@dataclass
class Catalog:
    """In-memory views of the small topics; fed by :meth:`apply`, read by the API."""

    model_events: dict[tuple[str, str], list[ModelEvent]] = field(default_factory=dict)
    requests: dict[str, RetrainEvent] = field(default_factory=dict)
    """Latest event of each retrain request."""
    alerts: deque[AlertEntry] = field(default_factory=lambda: deque(maxlen=MAX_ALERTS))
    alert_ids: dict[str, int] = field(default_factory=dict)
    """alert_id -> cursor, for the alerts in :attr:`alerts` (first seen wins)."""
    subscribers: set[asyncio.Queue[AlertEntry]] = field(default_factory=set)
    caught_up: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once every partition of the topics was read to its end offset at start."""
    _cursor: int = 0
    _evicted: OrderedDict[str, str] = field(default_factory=OrderedDict)
    """The newest :data:`MAX_EVICTED` ids pushed out of :attr:`alerts` (with their tenant),
    oldest first: read here already, so published again they are not alerts to add."""

    def active_version(self, tenant: str, model: str) -> str | None:
        events = self.model_events.get((tenant, model))
        return events[-1].version if events else None

    def importances(self, tenant: str, model: str) -> dict[str, float] | None:
        """The active version's feature importances as training recorded them (from its
        ``model-events`` announcement); None when unknown. Read by the API and, from the
        worker's thread, by the engine (a dict replaced whole, never changed in place)."""
        events = self.model_events.get((tenant, model))
        return (events[-1].feature_importances or None) if events else None

    def apply(self, kind: str, value: bytes | None) -> None:
        if not value:
            return
        try:
            if kind == "model":
                event = ModelEvent.from_dict(json.loads(value))
                events = self.model_events.setdefault((event.tenant, event.model), [])
                events.append(event)
                del events[:-MAX_MODEL_EVENTS]
            elif kind == "retrain":
                r = RetrainEvent.from_dict(json.loads(value))
                prev = self.requests.get(r.request_id)
                if prev is None or not prev.status.terminal or r.status.terminal:
                    self.requests[r.request_id] = r
            elif kind == "alert":
                data = json.loads(value)
                if not isinstance(data, dict) or data.get("schema") != ALERT_SCHEMA:
                    return  # delivery records share the topic
                alert = Alert.from_dict(data)
                if alert.alert_id in self.alert_ids or alert.alert_id in self._evicted:
                    # The same change published twice (a repeat after a crash, a rollback
                    # read again), also once pushed out: a new cursor sent it again to the
                    # live streams, and made ``?after=`` it skip what was held in between.
                    return
                self._cursor += 1
                entry = AlertEntry(self._cursor, alert, data)
                if len(self.alerts) == self.alerts.maxlen:
                    gone = self.alerts[0].alert
                    self.alert_ids.pop(gone.alert_id, None)
                    self._evicted[gone.alert_id] = gone.tenant
                    if len(self._evicted) > MAX_EVICTED:
                        self._evicted.popitem(last=False)
                self.alerts.append(entry)
                self.alert_ids[alert.alert_id] = self._cursor
                for queue in list(self.subscribers):
                    if queue.full():
                        self.subscribers.discard(queue)  # a reader that stopped reading
                    else:
                        queue.put_nowait(entry)
        except (ValueError, InvalidEvent, TypeError, KeyError) as exc:
            log.debug("catalog skipped a %s record: %r", kind, exc)

    def pending_approvals(self) -> list[RetrainEvent]:
        return sorted(
            (r for r in self.requests.values() if r.status is RetrainStatus.AWAITING_APPROVAL),
            key=lambda r: r.at,
        )

    def alerts_after(
        self, visible: Callable[[str], bool], after: str | None, limit: int
    ) -> list[AlertEntry]:
        """The newest ``limit`` alerts, or with ``after`` (an alert id) the first ``limit``
        newer than it; for an ``after`` pushed out of the :data:`MAX_ALERTS` held, the
        oldest held (all newer than it: the gap before them is gone from here). An ``after``
        never read here, or another tenant's, is :class:`UnknownCursor`: answered with every
        alert held, as this did, a typo got thousands of old alerts; and an id newer than
        this worker has read yet (another worker's, a restart's) is not one to skip past."""
        if after is None:
            start = 0
        elif after in self.alert_ids:
            start = self.alert_ids[after]
            first = self.alerts[0].cursor  # cursors are consecutive from the oldest held
            if not visible(self.alerts[start - first].alert.tenant):
                raise UnknownCursor(after, self.caught_up.is_set())
        elif after in self._evicted and visible(self._evicted[after]):
            start = 0
        else:
            raise UnknownCursor(after, self.caught_up.is_set())
        out = [e for e in self.alerts if e.cursor > start and visible(e.alert.tenant)]
        return out[-limit:] if after is None else out[:limit]


class UnknownCursor(LookupError):
    """``?after=`` names no alert read here (or one of a tenant the caller does not see);
    ``caught_up``: whether the alerts topic was read to its end when asked (before that,
    the id may just not have been read yet)."""

    def __init__(self, after: str, caught_up: bool) -> None:
        super().__init__(after)
        self.after, self.caught_up = after, caught_up


async def tail(
    catalog: Catalog,
    bootstrap: str,
    topics: dict[str, str],
    stop: asyncio.Event,
    client_options: dict[str, Any] | None = None,
) -> None:
    """Read ``topics`` (kind -> topic name) from the beginning, then follow them, into the
    catalog, until ``stop``. Reconnects on errors; never raises."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    kinds = {name: kind for kind, name in topics.items()}
    read: dict[Any, int] = {}
    """Next offset per partition read: a reconnect goes on from there (read again from the
    start, the alerts pushed out of those held would come back in, pushing out the newest)."""
    while not stop.is_set():
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **(client_options or {}),
        )
        try:
            await consumer.start()
            tps = []
            await consumer.topics()  # fetches the cluster's metadata
            for name in topics.values():
                parts = consumer.partitions_for_topic(name) or set()
                tps += [TopicPartition(name, p) for p in sorted(parts)]
            consumer.assign(tps)
            fresh = [tp for tp in tps if tp not in read]
            if fresh:  # (with none, aiokafka would reset every partition)
                await consumer.seek_to_beginning(*fresh)
            for tp in tps:
                if tp in read:
                    consumer.seek(tp, read[tp])
            ends = await consumer.end_offsets(tps)
            pending = {tp for tp, end in ends.items() if end > read.get(tp, 0)}
            if pending:  # (a reconnect after an outage: behind again until read to the end)
                catalog.caught_up.clear()
            while not stop.is_set():
                if not pending:
                    catalog.caught_up.set()
                batches = await consumer.getmany(timeout_ms=500, max_records=2000)
                for tp, records in batches.items():
                    for record in records:
                        catalog.apply(kinds[tp.topic], record.value)
                    if records:
                        read[tp] = records[-1].offset + 1
                pending = {tp for tp in pending if read.get(tp, 0) < ends[tp]}
                for tp in [tp for tp in pending if tp not in batches]:
                    # Its end may lie past its last record (emptied by retention, control
                    # records): read to the end by position. (Not waited for while the
                    # client still resets it.)
                    with contextlib.suppress(TimeoutError):
                        if await asyncio.wait_for(consumer.position(tp), 0.5) >= ends[tp]:
                            pending.discard(tp)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("catalog reader: %r; reconnecting in 2 s", exc)
            await asyncio.sleep(2.0)
        finally:
            await consumer.stop()
