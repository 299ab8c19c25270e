"""The data agents' messages handed from the fetch loop to their batches in bulk, past Faust's
per-message path.

For each message, Faust's path makes a coroutine of the conductor's handler (flow control,
the producer's ebb, a decoded :class:`faust.Event`), puts it in the agent's stream buffer, and
the stream then takes it out in a loop turn of its own (sensors, the current-event context,
its processors), gathers it into a batch and acks it, message by message. Sampled with
``py-spy --gil`` on single-event messages that was about half the worker's interpreter time
(the conductor ~19 %, the stream's iteration ~17 %, the fetch ~7 %, the acks ~3 %), and the
drift agent waited for batches more than it processed them: the no-op Faust agent pays the
same path, so the worker stayed at 0.53-0.57x its rate (``bench.throughput``).

Here the fetch loop (:mod:`.eager_delivery`) appends a registered topic's messages to its
:class:`Sink`, and the agent takes them out a batch at a time (:func:`.batches.take_bulk`).
What Faust's path does for a message is done here as follows:

* **Flow control.** A message fetched while a rebalance has suspended the flow is not
  delivered (Faust's conductor waits for the flow, and the fetch loop gives that delivery up
  when the rebalance begins): the seek to the committed offsets that ends the rebalance reads
  it again. One fetched in an earlier consumer generation is dropped when its batch is taken
  (Faust's stream skips it); it is neither tracked nor acked, so the commit stays before it,
  and the guards read it again as a missing head or an offset jumped over (:mod:`.guards`).
* **The buffer.** A sink is bounded as a stream buffer is (:mod:`.read_ahead`: messages,
  and bytes by places), twice over when the agents gather ahead (where a buffer and a
  batch gathered ahead were held before). It is cleared with the stream buffers at a
  revocation (Faust's flow control manages it as one of them), pauses fetching a partition
  whose message finds it under high pressure and lets it go on once it has drained (Faust's
  ``on_buffer_full`` / ``on_buffer_drop``). A full sink holds the fetch loop, as a full
  stream buffer does (:data:`.eager_delivery.BLOCKED_ON`); its messages count as queued for
  the watchdog (:func:`.introspection.queued_by_topic`).
* **Tracking and acks.** A batch's messages are tracked as unacked when it is taken (a
  revocation waits for them, as for any batch in flight), marked as reaching processing
  (:func:`.guards.mark_taken`), their partitions' inbound times set (Faust's check for a
  stream that stopped processing reads them), and acked after their batch with the
  consumer's ack (the guards' patched one).
* **Not done:** decoding (the topics' keys and values are raw bytes), Faust's sensors per
  message (the worker installs none but the inbound time, :mod:`.quiet_monitor`), and the
  wait for the producer's buffer to ebb before each delivery (a batch delivers what it
  produced before its acks: :func:`.batches.drain_producer`).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Iterable
from typing import Any

from faust.types import TP

from agents.faust_compat import guards
from agents.faust_compat.counters import COUNTERS
from agents.faust_compat.version import check_version

PRESSURE_HIGH_RATIO = 1.25
"""Faust's ``FlowControlQueue.pressure_high_ratio``: a partition is paused once the sink holds
its capacity divided by this."""
PRESSURE_DROP_RATIO = 0.40
"""Faust's ``pressure_drop_ratio``: paused partitions go on once it holds this share or less."""


class BulkEvent:
    """What the agents read of a Faust event: its message, and the message's raw value."""

    __slots__ = ("__weakref__", "message", "value")  # the current event is a weak reference

    def __init__(self, message: Any) -> None:
        self.message = message
        self.value = message.value


class Sink:
    """One topic's fetched messages, waiting for its agent's next batch.

    ``capacity`` is in places: a message takes ``ceil(bytes / place_bytes)`` of them, at least
    one (as in the byte-bounded stream buffers of :mod:`.read_ahead`).

    >>> from types import SimpleNamespace as NS
    >>> paused = []
    >>> class App:
    ...     flow_control = NS(is_active=lambda: True, manage_queue=lambda q: None)
    ...     consumer = NS(on_buffer_full=paused.append, on_buffer_drop=paused.remove)
    >>> app = App()
    >>> sink = Sink(app, "t", capacity=10, place_bytes=100, size=4)
    >>> for offset in range(3):
    ...     sink.put(NS(topic="t", partition=0, value=b"x" * 150, offset=offset))
    >>> sink.places, sink.ready.is_set(), paused  # 2 places each: 6 < 10 / 1.25
    (6, False, [])
    >>> sink.put(NS(topic="t", partition=1, value=b"x" * 250, offset=0))  # 3 places: 9
    >>> sink.places, sink.ready.is_set(), paused  # under pressure: t[1] paused, a batch ready
    (9, True, [TP(topic='t', partition=1)])
    >>> [m.offset for m in sink.pop(2)], sink.places, paused  # 5 places > 4: still paused
    ([0, 1], 5, [TP(topic='t', partition=1)])
    >>> [m.offset for m in sink.pop(4)], sink.places, paused, sink.ready.is_set()
    ([2, 0], 0, [], False)
    """

    def __init__(self, app: Any, topic: str, capacity: int, place_bytes: int, size: int) -> None:
        self._app = weakref.ref(app)  # the app keeps its sinks (:data:`_SINKS`), not they it
        self._flow = app.flow_control
        self.topic = topic
        self.capacity = max(1, capacity)
        self.high = self.capacity / PRESSURE_HIGH_RATIO
        self.low = self.capacity * PRESSURE_DROP_RATIO
        self.place_bytes = max(1, place_bytes)
        self.size = max(1, size)
        self.messages: list[Any] = []
        self.weights: list[int] = []
        self.places = 0
        self.paused: set[Any] = set()
        """Partitions this sink paused (Faust's consumer fetches no more of them meanwhile)."""
        self.ready = asyncio.Event()
        """Set while a batch is worth taking: ``size`` messages, or the sink under pressure."""
        self.room = asyncio.Event()
        """Set while the sink is under its capacity (the fetch loop may add a message)."""
        self.room.set()
        app.flow_control.manage_queue(self)  # cleared with the stream buffers

    @property
    def app(self) -> Any:
        app = self._app()
        if app is None:  # pragma: no cover - a sink is only reached through its app
            raise RuntimeError(f"the app of {self.topic}'s sink is gone")
        return app

    def full(self) -> bool:
        return self.places >= self.capacity

    def put(self, message: Any) -> None:
        """Add a fetched message (the fetch loop waits for :attr:`room` first when full)."""
        if not self._flow.is_active():
            COUNTERS["bulk_dropped_suspended"] += 1  # read again after the rebalance's seek
            return
        n = len(message.value or b"")  # read_ahead's places: ceil(n / place_bytes), at least 1
        weight = 1 if n <= self.place_bytes else -(-n // self.place_bytes)
        self.messages.append(message)
        self.weights.append(weight)
        self.places += weight
        if self.places >= self.high:
            tp = TP(message.topic, message.partition)  # Faust's, which its consumer asserts
            if tp not in self.paused:
                self.paused.add(tp)
                self.app.consumer.on_buffer_full(tp)
            self.ready.set()
        elif len(self.messages) >= self.size:
            self.ready.set()
        if self.places >= self.capacity:
            self.room.clear()

    def pop(self, n: int) -> list[Any]:
        """The oldest ``n`` messages (or all), out of the sink."""
        out = self.messages[:n]
        del self.messages[:n]
        self.places -= sum(self.weights[:n])
        del self.weights[:n]
        self._settle()
        return out

    def _settle(self) -> None:
        """Pressure, readiness and room as the sink now holds (after messages left it)."""
        if self.paused and self.places <= self.low:
            on_drop = self.app.consumer.on_buffer_drop
            for tp in self.paused:
                on_drop(tp)
            self.paused.clear()
        if len(self.messages) < self.size and self.places < self.high:
            self.ready.clear()
        if self.places < self.capacity:
            self.room.set()

    def take(self, n: int) -> list[BulkEvent]:
        """The next batch of up to ``n`` messages, as events, tracked and marked: messages of
        an earlier consumer generation are left out (never acked: the guards read them
        again)."""
        if not self._flow.is_active():
            return []  # a rebalance began: Faust clears the sink next
        app = self.app
        consumer = app.consumer
        generation = app.consumer_generation_id
        track = consumer.unacked.add
        mark = guards.mark_taken
        batch: list[BulkEvent] = []
        parts: set[Any] = set()
        for message in self.pop(n):
            if message.generation_id != generation:
                COUNTERS["bulk_stale_generation"] += 1
                continue
            message.tracked = True
            track(message)
            mark(message)
            parts.add(message.tp)
            batch.append(BulkEvent(message))
        if parts:
            inbound = getattr(getattr(app, "monitor", None), "stream_inbound_time", None)
            if inbound is not None:
                now = time.monotonic()
                for tp in parts:
                    inbound[tp] = now
        return batch

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the messages of these partitions (rewound: they are read again)."""
        drop = set(partitions)
        keep = [k for k, m in enumerate(self.messages) if m.partition not in drop]
        if len(keep) == len(self.messages):
            return
        self.messages = [self.messages[k] for k in keep]
        self.weights = [self.weights[k] for k in keep]
        self.places = sum(self.weights)
        self._settle()

    def clear(self) -> None:
        """Faust's flow control clears its queues at a revocation and when the flow resumes:
        what was fetched is read again from the committed offsets."""
        self.messages.clear()
        self.weights.clear()
        self.places = 0
        self._settle()


_SINKS: weakref.WeakKeyDictionary[Any, dict[str, Sink]] = weakref.WeakKeyDictionary()


def _registered(app: Any) -> dict[str, Sink] | None:
    """The app's sinks, if any (None too for a stand-in app no weak reference can hold)."""
    try:
        return _SINKS.get(app)
    except TypeError:
        return None


def sinks_of(app: Any) -> dict[str, Sink]:
    """The app's sinks by topic name (the same dict as sinks are added: the fetch loop keeps
    it)."""
    sinks = _registered(app)
    if sinks is None:
        sinks = _SINKS[app] = {}
    return sinks


def register(app: Any, topic: str, capacity: int, place_bytes: int, size: int) -> Sink:
    """Deliver ``topic``'s messages to a sink from now on (before the app starts: a message
    delivered to the stream buffer instead would wait there unprocessed)."""
    check_version()  # the fetch loop's delivery and the consumer's bookkeeping are Faust's
    sink = sinks_of(app)[topic] = Sink(app, topic, capacity, place_bytes, size)
    return sink


def queued(app: Any) -> dict[str, int]:
    """Messages waiting in the app's sinks, per topic (from any thread: a length read)."""
    sinks = _registered(app) or {}
    return {topic: len(sink.messages) for topic, sink in list(sinks.items())}


def queued_partitions(app: Any) -> set[tuple[str, int]]:
    """The partitions with a message waiting in one of the app's sinks (on the worker's
    loop)."""
    return {
        (m.topic, m.partition) for sink in (_registered(app) or {}).values() for m in sink.messages
    }


def sink_for(app: Any, topic: str) -> Sink | None:
    sinks = _registered(app)
    return None if sinks is None else sinks.get(topic)


__all__ = ["BulkEvent", "Sink", "queued", "queued_partitions", "register", "sink_for", "sinks_of"]
