"""Read access to Faust's internals for the API, the health checks and the watchdog: tables'
RocksDB handles, assignments, offsets, queues, the fetcher. Best effort and safe from any
thread: nothing here creates or changes Faust's state."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from agents.faust_compat import bulk_delivery, guards


def bind_to_this_loop(table: Any) -> None:
    """Create a table's store and changelog topic now, on the main thread.

    Faust makes both lazily, and the store takes the table's event loop from whichever thread
    first asks (``Service.loop`` -> ``get_event_loop()``). If that is a metrics scrape or an
    API request (other threads), the table's background tasks are created on a loop that never
    runs, and a graceful stop waits for them forever (SIGTERM hung; found by a test).
    """
    _ = table.data, table.changelog_topic


def table_dbs(table: Any) -> dict[int, Any]:
    """The RocksDB handles (rocksdict ``Rdict``) of a table's partitions open in this worker,
    by partition: a snapshot, safe to iterate while Faust opens and closes partitions. Safe
    from any thread: never creates the store (see :func:`bind_to_this_loop`)."""
    return dict(getattr(getattr(table, "_data", None), "_dbs", None) or {})


def active_partitions(app: Any, table: Any) -> set[int]:
    """Partitions of ``table`` this worker is the active owner of (not standby copies)."""
    changelog = getattr(table, "_changelog_topic", None)
    if changelog is None:  # not made yet (see bind_to_this_loop): nothing is assigned either
        return set()
    topic = changelog.get_topic_name()
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}


def member_urls(app: Any) -> list[str]:
    """Web URLs of every member of the group (this worker's included), from the assignment."""
    try:
        return sorted(str(url) for url in app.assignor.tables_metadata())
    except Exception:
        return []


def read_offsets(consumer: Any) -> dict[Any, int]:
    """Per topic-partition, the offset of the last message this consumer read."""
    return {tp: o for tp, o in dict(getattr(consumer, "_read_offset", {})).items() if o is not None}


def app_read_offsets(app: Any) -> dict[Any, int]:
    """:func:`read_offsets` of ``app``'s consumer; empty while it is not made yet."""
    consumer = getattr(app, "_consumer", None)
    return {} if consumer is None else read_offsets(consumer)


def committed_offsets(consumer: Any) -> dict[Any, int]:
    """Per topic-partition, the group's committed offset as this consumer knows it."""
    return {
        tp: o for tp, o in dict(getattr(consumer, "_committed_offset", {})).items() if o is not None
    }


def diagnostics(app: Any) -> dict[str, Any]:
    """What the consumer looks like, for the watchdog's dump (best effort: every field is
    read defensively, from another thread, while the worker may be in any state)."""
    consumer = getattr(app, "_consumer", None)
    out: dict[str, Any] = {"generation": getattr(app, "consumer_generation_id", None),
                           "rebalancing": bool(getattr(app, "rebalancing", False))}  # fmt: skip
    try:
        out["flow_control_active"] = bool(app.flow_control.is_active())
    except Exception:
        out["flow_control_active"] = None
    if consumer is None:
        return out

    def tps(attr: str) -> list[str]:
        try:
            return sorted(f"{tp.topic}[{tp.partition}]" for tp in set(getattr(consumer, attr)))
        except Exception:
            return []

    out["assigned"] = sorted(f"{tp.topic}[{tp.partition}]" for tp in assignment(app))
    out["paused"] = tps("_paused_partitions")
    out["buffered"] = tps("_buffered_partitions")
    try:
        out["acked_pending"] = {
            f"{tp.topic}[{tp.partition}]": len(v) for tp, v in dict(consumer._acked).items() if v
        }
    except Exception:
        out["acked_pending"] = None
    out["stream_buffers"] = queued_by_topic(app)
    out["fetcher"] = fetcher_state(consumer)
    return out


def fetcher_state(consumer: Any) -> dict[str, Any]:
    """The Kafka client's own view under Faust's (aiokafka's subscription and fetcher): per
    source partition, whether the client holds it paused, its fetch position (None: waiting
    for an offset reset), whether fetched records wait for Faust to take them, and the high
    watermark the last fetch answer gave and its age; and which brokers have a fetch in flight
    (most of the time one is, between answers: only an answer's age tells a fetch left
    unanswered). A
    fetch stall's dump then tells a partition Faust never resumed from one the client cannot
    fetch. Best effort, from any thread."""
    try:
        client = consumer._thread._consumer
        state = client._subscription.subscription.assignment
        fetcher = client._fetcher
        pending = set(fetcher._records)
        now = time.time()
        partitions: dict[str, Any] = {}
        for tp in sorted(state.tps):
            if tp.topic.endswith("-changelog"):
                continue
            tps = state.state_value(tp)
            partitions[f"{tp.topic}[{tp.partition}]"] = {
                "paused": bool(tps.paused),
                "position": tps.position if tps.has_valid_position else None,
                "records_waiting": tp in pending,
                # as the last fetch answer said, and how long ago (None: never answered)
                "highwater": tps.highwater,
                "answered_seconds_ago": (
                    None if tps.timestamp is None else round(now - tps.timestamp / 1000, 1)
                ),
            }
        return {"partitions": partitions, "fetches_in_flight": sorted(fetcher._in_flight)}
    except Exception as exc:
        return {"unavailable": repr(exc)[:200]}


def fetch_positions(consumer: Any) -> tuple[dict[Any, int], set[Any]] | None:
    """The Kafka client's fetch position per assigned partition (the next offset it will
    hand over; partitions waiting for an offset reset left out) and the partitions with
    fetched records (or a fetch error) not handed over yet; None when the client is not
    there (best effort, from any thread)."""
    try:
        client = consumer._thread._consumer
        state = client._subscription.subscription.assignment
        waiting = set(client._fetcher._records)
        positions: dict[Any, int] = {}
        for tp in list(state.tps):
            tps = state.state_value(tp)
            if tps.has_valid_position:
                positions[tp] = int(tps.position)
        return positions, waiting
    except Exception:
        return None


def recovering(app: Any) -> bool:
    """A rebalance or a table recovery is running (or the first recovery has not ended)."""
    if getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False):
        return True
    recovery = getattr(getattr(app, "tables", None), "recovery", None)
    completed = getattr(recovery, "completed", None)
    return completed is None or not completed.is_set()


def paused_partitions(consumer: Any) -> set[Any]:
    """The partitions Faust's consumer holds paused (a recovery, or a test's stall hook):
    whatever the client hands over of them is dropped until Faust resumes them, with a seek
    (best effort, from any thread)."""
    try:
        return set(consumer._paused_partitions)
    except Exception:
        return set()


def queued_by_topic(app: Any) -> dict[str, int]:
    """Messages waiting in the agents' stream queues and bulk sinks, per source topic (best
    effort, from any thread: a channel's queue is read only where it exists, never created)."""
    out: dict[str, int] = {}
    try:
        channels = list(app.topics._topics)
    except Exception:
        return out
    for channel in channels:
        queue = getattr(channel, "_queue", None)
        if queue is None:
            continue
        try:  # messages, not the places a byte-bounded buffer counts
            size = int(queue.messages() if hasattr(queue, "messages") else queue.qsize())
        except Exception:
            continue
        for name in getattr(channel, "topics", None) or ():
            out[name] = out.get(name, 0) + size
    for name, size in bulk_delivery.queued(app).items():  # in bulk: in the sinks instead
        out[name] = out.get(name, 0) + size
    return out


def drained(app: Any, partitions: Iterable[Any]) -> set[Any]:
    """Of ``partitions``, those of agents guarded (:func:`.batches.process_batches`) with
    nothing queued for their topic and not held by a guard: nothing in the worker will process a
    message read there past the commit (the watchdog's orphaned-messages check)."""
    queued = queued_by_topic(app)
    order, guard = guards.ORDER, guards.GUARD
    held = set(order.held) if order is not None else set()
    gaps = set(guard.gaps) if guard is not None else set()
    return {
        tp
        for tp in partitions
        if tp.topic in guards.GUARDED_TOPICS
        and queued.get(tp.topic, -1) == 0
        and tp not in held
        and tp not in gaps
    }


def assignment(app: Any) -> set[Any]:
    """The consumer's assigned partitions (empty while it has none or is not made yet)."""
    consumer = getattr(app, "_consumer", None)
    if consumer is None:
        return set()
    try:
        return set(consumer.assignment())
    except Exception:
        return set()
