"""Commits held below the first message whose state is not written yet.

An agent that writes its state every few seconds rather than after every batch
(``DRIFTWATCH_STATE_FLUSH_SECONDS``: Kafka Streams' commit interval, for the same reason - a
dense stream rewrote every open window of every feature after each batch, and a model of
1,000 features wrote ~40 KB of state per prediction) still acks each batch when it is done, so
that Faust's rebalances wait for it (``stream_wait_empty``) as before. What it must not do is
let the group's committed offset pass a message whose effect is only in memory: a crash would
then restart from the changelog's older state *and* past the messages that made the newer
one, and lose them.

So the agent *holds* each partition at the first offset it processed since its last state
write (:func:`hold`), and :func:`advance` s the hold past what a write delivered. Faust's
commit (``Consumer._new_offset``) then sees only the acked offsets below a hold: the commit
stops at the first unwritten message, and the acks above it wait, still recorded, for the
write. A hold moves only past what the agent applied since it last lost its decoded state: a
batch that fails loses what the batches before it held in memory, and their acks stay
waiting until those messages are read, applied and written again. After a crash, or a
batch that failed, reading starts at the hold again and the offset guards make the messages
whose state was written no-ops (:func:`rewind_points` tells the batch loop where from).

Written for faust-streaming 0.15.3 (:func:`.version.check_version`); wraps ``_new_offset``
outside :mod:`.guards`' own wrapper (installed after it), so the head guard and the gap
bookkeeping see the same acked offsets Faust's commit does.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from agents.faust_compat.counters import COUNTERS
from agents.faust_compat.version import check_version

log = logging.getLogger(__name__)

HOLDS: dict[tuple[str, int], int] = {}
"""(topic, partition) -> the first offset whose effect is not written yet (after a write:
the offset after the last message applied)."""
clock = time.monotonic
"""The clock of the holds' ages (a test's to set)."""
_HELD_SINCE: dict[tuple[str, int], float] = {}
"""(topic, partition) -> since when (``time.monotonic``) its hold has stood before a message
applied and not written yet; absent once a write took the hold past all that was applied."""
_BEFORE_STOP: weakref.WeakKeyDictionary[Any, list[tuple[Callable[[], Awaitable[None]], float]]]
_BEFORE_STOP = weakref.WeakKeyDictionary()
_installed = False


def before_stop(app: Any, write: Callable[[], Awaitable[None]], timeout: float) -> None:
    """At a clean stop, run ``write`` (at most ``timeout`` seconds) while the agents, tables
    and producer still run: before Faust's last commit, so that it need not stop at the holds.
    A write that fails or takes too long is logged; its messages are read again at the next
    start, as after a crash."""
    _BEFORE_STOP.setdefault(app, []).append((write, timeout))


def hold(topic: str, partition: int, offset: int) -> None:
    """No commit of ``topic[partition]`` past ``offset`` until :func:`advance` moves the hold
    (or :func:`release` drops it): call for a batch's first message of each partition before
    the batch is acked (a hold already there, lower, stays).

    >>> hold("p", 0, 40); hold("p", 0, 45); HOLDS[("p", 0)]
    40
    >>> release("p"); HOLDS
    {}
    """
    key = (topic, partition)
    if HOLDS.get(key, offset) >= offset:
        HOLDS[key] = offset
    # The age of the oldest unwritten message: a batch read again after a failure (held at
    # the same offset) does not make it young again.
    _HELD_SINCE.setdefault(key, clock())


def advance(topic: str, written: dict[int, int]) -> None:
    """The state of ``topic[partition]`` up to (not including) ``written[partition]`` is
    written: its hold moves up to there. A partition left out keeps its hold (after a
    failure, what was applied past it is gone, and its acks must wait until it is applied
    and written again).

    >>> hold("p", 0, 40); hold("p", 1, 7); advance("p", {0: 90}); HOLDS
    {('p', 0): 90, ('p', 1): 7}
    >>> release("p")
    """
    for partition, offset in written.items():
        key = (topic, partition)
        if key not in HOLDS:
            continue
        if offset > HOLDS[key]:
            HOLDS[key] = offset
        if offset >= HOLDS[key]:
            _HELD_SINCE.pop(key, None)  # all that was applied is written


def release(topic: str, partitions: Collection[int] | None = None) -> None:
    """Drop the holds of ``topic`` (its ``partitions``, or all): partitions given up once
    their state was written."""
    for key in [k for k in HOLDS if k[0] == topic]:
        if partitions is None or key[1] in partitions:
            del HOLDS[key]
            _HELD_SINCE.pop(key, None)


def clear() -> None:
    """Forget every hold (tests that run one app after another in a process)."""
    HOLDS.clear()
    _HELD_SINCE.clear()


def holds(topic: str) -> dict[int, int]:
    """Per partition of ``topic``, the offset its commit is held at."""
    return {p: o for (t, p), o in HOLDS.items() if t == topic}


def unwritten_ages() -> dict[tuple[str, int], float]:
    """Per (topic, partition), how many seconds its commit has been held before a message
    whose state is not written yet: the watchdog's measure of a commit that waits for the
    next state write rather than one that is stuck.

    >>> hold("p", 0, 40); ages = unwritten_ages(); 0.0 <= ages[("p", 0)] < 60.0
    True
    >>> advance("p", {0: 41}); unwritten_ages()
    {}
    >>> release("p")
    """
    now = clock()
    return {key: now - since for key, since in _HELD_SINCE.items()}


def rewind_points(topic: str, events: Collection[Any]) -> dict[Any, int]:
    """Where reading ``topic`` starts again after a failed batch, per partition (a Faust
    TP): the batch's first message, and every hold (a failure drops all state not written,
    also of partitions the batch did not read).

    >>> from types import SimpleNamespace as NS
    >>> from faust.types import TP
    >>> hold("p", 1, 7)
    >>> batch = [NS(message=NS(tp=TP("p", 0), offset=o)) for o in (12, 11)]
    >>> sorted(rewind_points("p", batch).items())
    [(TP(topic='p', partition=0), 11), (TP(topic='p', partition=1), 7)]
    >>> release("p")
    """
    from faust.types import TP

    from agents.faust_compat.guards import first_offsets

    first = first_offsets(events)
    for partition, held in holds(topic).items():
        tp = TP(topic, partition)
        first[tp] = min(first.get(tp, held), held)
    return first


def capped(acked: list[int], limit: int | None) -> list[int]:
    """The acked offsets at or past ``limit``, taken out of ``acked`` (in place): what a
    commit must not count yet.

    >>> acked = [7, 3, 4, 5, 9]
    >>> capped(acked, 5), acked
    ([7, 5, 9], [3, 4])
    >>> capped(acked, None), acked
    ([], [3, 4])
    """
    if limit is None or not acked:
        return []
    above = [o for o in acked if o >= limit]
    if above:
        acked[:] = [o for o in acked if o < limit]
    return above


def _capped_new_offset(original: Callable[[Any, Any], int | None]) -> Callable[[Any, Any], Any]:
    def new_offset(self: Any, tp: Any) -> int | None:
        limit = HOLDS.get((tp.topic, tp.partition))
        if limit is None:
            return original(self, tp)
        acked = self._acked[tp]
        above = capped(acked, limit)
        try:
            offset = original(self, tp)
        finally:
            acked.extend(above)  # still acked: counted once the hold is released
        if above:
            COUNTERS["commit_held"] += 1
        if offset is not None and offset > limit:  # a gap Faust counted past it: not ours
            log.warning("%s[%d]: commit %d past the state hold %d: held there", tp.topic,
                        tp.partition, offset, limit)  # fmt: skip
            return limit
        return offset

    return new_offset


def _writing_first(original: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Any]:
    async def stop_consumer(self: Any) -> None:
        for write, timeout in _BEFORE_STOP.get(self, ()):
            try:
                await asyncio.wait_for(write(), timeout)
            except Exception as exc:  # TimeoutError too: the stop goes on
                log.warning("writing the state held in memory at the stop failed (%r); its "
                            "messages are read again at the next start", exc)  # fmt: skip
        await original(self)

    return stop_consumer


def install() -> None:
    """Wrap Faust's commit offsets, and its consumer's stop for :func:`before_stop` (once
    per process; after :func:`.guards.install`)."""
    global _installed
    if _installed:
        return
    check_version()
    from faust.app import base as app_mod
    from faust.transport import consumer as consumer_mod

    cls = consumer_mod.Consumer
    cls._new_offset = _capped_new_offset(cls._new_offset)  # type: ignore[method-assign,assignment]
    app_mod.App._stop_consumer = _writing_first(app_mod.App._stop_consumer)  # type: ignore[method-assign,assignment]
    _installed = True
