"""The Kafka client's repeated complaints while the broker is away: one line of each kind per
half minute.

While the broker process is down (restarting, crashed; connections refused rather than
hanging), aiokafka logs the same errors on every retry, every 100 ms: ``Unable connect to
node with id N``, ``Unable to update metadata from [N]``, ``Failed fetch messages from N``,
``Group Coordinator Request failed`` ... About a hundred ERROR lines a second per worker
(measured in ``tests/integration/test_broker_restart.py``), which buries the watchdog's line
about the outage and fills the log store during a long one. :class:`RepeatFilter` lets the
first line of each kind (logger and message template, whatever the arguments) through, drops
the repeats for ``window`` seconds, and the first line after that says how many it dropped.
Lines below WARNING are not touched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

AIOKAFKA_LOGGERS = (
    "aiokafka",  # the client: "Unable connect to node", "Unable to update metadata"
    "aiokafka.conn",
    "aiokafka.cluster",
    "aiokafka.consumer.consumer",
    "aiokafka.consumer.fetcher",  # "Failed fetch messages from N"
    "aiokafka.consumer.group_coordinator",  # coordinator and heartbeat failures
    "aiokafka.producer.producer",
    "aiokafka.producer.sender",  # "Got error produce response"
)
WINDOW_SECONDS = 30.0
_MAX_KINDS = 1024


class RepeatFilter(logging.Filter):
    """Passes the first WARNING-or-worse record of each (logger, template) per ``window``."""

    def __init__(
        self,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        min_level: int = logging.WARNING,
    ) -> None:
        super().__init__()
        self.window = window
        self.clock = clock
        self.min_level = min_level
        self._kinds: dict[tuple[str, str], list[float]] = {}  # -> [window start, dropped]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level:
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        with self._lock:
            kind = self._kinds.get(key)
            if kind is not None and now - kind[0] < self.window:
                kind[1] += 1
                return False
            if kind is None and len(self._kinds) >= _MAX_KINDS:
                self._forget(now)
            self._kinds[key] = [now, 0.0]
        if kind is not None and kind[1]:
            record.msg = (
                f"{record.msg} [and {int(kind[1])} more like this in the "
                f"{now - kind[0]:.0f} s before, not logged]"
            )
        return True

    def _forget(self, now: float) -> None:
        """Drops the kinds whose window is over (and all, if none is)."""
        over = [k for k, (start, _) in self._kinds.items() if now - start >= self.window]
        for k in over or list(self._kinds):
            del self._kinds[k]


FAUST_CONSUMER_LOGGER = "faust.transport.drivers.aiokafka"
SINCE_START = (
    "has not sent fetch request for %r since start",
    "has not received fetch response for %r since start",
    "Highwater not yet available for %r (started",
    "Stream has not started processing %r (started",
    "Has not committed %r at all since worker start",
)
"""Faust's complaints about a partition measured from the worker's start, not from when the
partition was assigned (``AIOKafkaConsumerThread.verify_event_path``)."""


class FreshAssignmentFilter(logging.Filter):
    """Faust's "since start" complaints about a partition assigned less than ``grace``
    seconds ago, made INFO and said to be that.

    Faust judges a partition by the worker's start (its ``stream_processing_timeout``, 300 s,
    after it): any partition a later rebalance assigns is "not fetched since start" until its
    first fetch, and Faust logged that as an ERROR after rebalances, for a partition moments
    old. Judged from the assignment instead, the same complaint after ``grace`` seconds is an
    ERROR as before (and the watchdog judges real stalls: :mod:`agents.watchdog`).

    >>> f = FreshAssignmentFilter(300.0, clock=lambda: 1000.0)
    >>> f.assigned([("predictions", 1)])
    >>> msg = "[^--Consumer]: Aiokafka has not sent fetch request for %r since start (started %s)"
    >>> record = logging.LogRecord("x", logging.ERROR, "", 0, msg, (("predictions", 1), "1h"), None)
    >>> f.filter(record), record.levelname, record.getMessage().endswith("ago, at a rebalance]")
    (True, 'INFO', True)
    """

    def __init__(self, grace: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.grace = grace
        self.clock = clock
        self._at: dict[tuple[str, int], float] = {}

    def assigned(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Partitions (topic, partition) assigned now (a rebalance)."""
        now = self.clock()
        for topic, partition in partitions:
            self._at[(topic, partition)] = now

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not isinstance(record.args, tuple):
            return True
        if not record.args or not any(s in str(record.msg) for s in SINCE_START):
            return True
        tp = record.args[0]  # Faust's TP: a (topic, partition) named tuple
        at = self._at.get(tuple(tp)) if isinstance(tp, tuple) and len(tp) == 2 else None
        age = None if at is None else self.clock() - at
        if age is not None and age < self.grace:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = f"{record.msg} [assigned {age:.0f} s ago, at a rebalance]"
        return True


FRESH_ASSIGNMENTS: FreshAssignmentFilter | None = None
"""The worker's filter (:func:`install_fresh_assignments`), told of assignments by the app."""


def install_fresh_assignments(grace: float) -> FreshAssignmentFilter:
    """The :class:`FreshAssignmentFilter` on Faust's consumer logger (one per process)."""
    global FRESH_ASSIGNMENTS
    if FRESH_ASSIGNMENTS is None:
        FRESH_ASSIGNMENTS = FreshAssignmentFilter(grace)
        logging.getLogger(FAUST_CONSUMER_LOGGER).addFilter(FRESH_ASSIGNMENTS)
    return FRESH_ASSIGNMENTS


def install(loggers: Iterable[str] = AIOKAFKA_LOGGERS, window: float = WINDOW_SECONDS) -> None:
    """One shared :class:`RepeatFilter` on each of ``loggers`` (a logger's filters see only
    its own records, not its children's, hence the list). Idempotent."""
    repeat = RepeatFilter(window)
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in logger.filters):
            logger.addFilter(repeat)
