"""Is any outcome on its way to the join? Asked of the broker, so that a join partition need
not wait out its stall grace (:class:`streams.join.JoinConfig`) when none is.

The grace exists for a restart with a backlog: the drift agent can route predictions weeks of
event time ahead of the outcome router, and until the outcomes come, a join partition cannot
tell them late from stopped. The broker can: when the worker group has committed every
partition of ``outcomes`` to its end, every outcome there was routed into ``join-input``
(the router commits a batch only once its forwards are acknowledged), so each join partition
has all of them before the end offset it had just after. A partition read past that offset,
with no outcome since, has none coming: its records may expire by the predictions' clock at
once. A label-less stream did otherwise keep a grace's worth of predictions (600 s of what
the worker reads) and then expire them all, and the worker's memory rose by that much
(``bench.worker_memory``: 1.00-1.22 of the 1M reading over 10M predictions).

On Tansu 0.6 a partition's end offset can be reported short (the last batch's base offset
+ 1; ``tests/integration/test_head_probe.py``): there an ``outcomes`` partition can read as
all read while the rest of its last batch is not, and a join partition's mark can be early
by up to a batch, so the check may end a grace a batch early. Apache Kafka reports the end
exactly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.joining import JoinProcessor

log = logging.getLogger(__name__)


def partition_drained(committed: int | None, low: int, high: int) -> bool:
    """Has the group read all of a partition? ``committed`` None or negative: never committed,
    read all only if nothing is there (between ``low`` and ``high``).

    >>> partition_drained(7, 0, 7), partition_drained(6, 0, 7)
    (True, False)
    >>> partition_drained(None, 3, 3), partition_drained(-1001, 0, 2)
    (True, False)
    """
    if committed is None or committed < 0:
        return high <= low
    return committed >= high


def still_drained(
    held: dict[int, int] | None, found: dict[int, int] | None
) -> dict[int, int] | None:
    """The marks to hold after a check that ``found`` these (None: outcomes on their way):
    the first of a run of checks that found none on their way. A join partition far behind
    its input (the join is a worker's slowest stage) reaches an end offset taken minutes
    before; one taken at every check it never reached, and the grace ran its whole length
    (``bench.worker_memory``: the join's files grew to 452 MiB as without the check).

    >>> still_drained(None, {0: 5}), still_drained({0: 5}, {0: 9}), still_drained({0: 5}, None)
    ({0: 5}, {0: 5}, None)
    """
    if found is None:
        return None
    return found if held is None else held


async def refresh_marks(joins: JoinProcessor, check: Callable[[], dict[int, int] | None]) -> None:
    """Run one check (:func:`drain_marks`, in a thread) and hold its marks for the join. A
    check that fails (the broker away, a topic not there yet) tells nothing: the marks are
    dropped, and the grace applies as it would without the check."""
    try:
        found = await asyncio.to_thread(check)
    except Exception as exc:
        log.info("could not tell whether outcomes are on their way: %r", exc)
        found = None
    joins.outcome_marks = still_drained(joins.outcome_marks, found)


def drain_marks(
    config: dict[str, Any],
    group_id: str,
    outcomes_topic: str,
    join_topic: str,
    timeout: float = 10.0,
) -> dict[int, int] | None:
    """Per partition of ``join_topic``, its end offset just after the group ``group_id`` was
    found to have read every partition of ``outcomes_topic`` to its end; None while it has
    not. Blocking (a throw-away confluent-kafka client that never joins the group), for a
    thread."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**config, "group.id": group_id, "enable.auto.commit": False})
    try:
        outcomes = _partitions(consumer, outcomes_topic, timeout)
        committed = consumer.committed([TopicPartition(outcomes_topic, p) for p in outcomes],
                                       timeout)  # fmt: skip
        for tp in committed:
            if tp.error is not None:
                raise RuntimeError(str(tp.error))
            low, high = consumer.get_watermark_offsets(
                TopicPartition(outcomes_topic, tp.partition), timeout=timeout, cached=False
            )
            if not partition_drained(tp.offset, low, high):
                return None
        marks = {}
        for p in _partitions(consumer, join_topic, timeout):
            _, high = consumer.get_watermark_offsets(
                TopicPartition(join_topic, p), timeout=timeout, cached=False
            )
            marks[p] = int(high)
        return marks
    finally:
        consumer.close()


def _partitions(consumer: Any, topic: str, timeout: float) -> list[int]:
    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise RuntimeError(f"no partitions for {topic}: {None if meta is None else meta.error}")
    return sorted(meta.partitions)


__all__ = ["drain_marks", "partition_drained", "refresh_marks", "still_drained"]
