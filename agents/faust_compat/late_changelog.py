"""Changelog records of an active table partition that reach Faust's recovery after its
restore has ended are dropped, not applied to the local store.

Faust's recovery keeps consuming: records that arrive for an active partition after the
restore ended (the restore stops at the partition's end as the broker reported it) are
buffered, and the buffer is applied to RocksDB when the recovery stops or partitions are
revoked. By then the agents own that partition and have written newer values of the same
keys, locally and to the changelog; the late records, older, overwrote them locally, along
with the persisted offset.

It happened on the embedded broker: it reports a partition's end as its last record
batch's first offset + 1, so the restore after a crash stopped short of the tail of a write
the crash had cut (see :mod:`.bulk_writes`), and that tail came in once the worker was
running. At the next clean stop, a feature window went back in the local store to its value
of three writes earlier (``test_worker``'s SIGKILL test, about one run in ten: half a day
of one feature's values gone from the state a later restart on the same disk reads).
Dropping is right for any broker: after the restore, a record of an active partition is
either this worker's own write come back (already in the store) or older than what the
agents have written since.

Counted as ``late_changelog_dropped`` in :data:`.counters.COUNTERS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from agents.faust_compat.counters import COUNTERS
from agents.faust_compat.version import check_version

log = logging.getLogger(__name__)
_installed = False


def install() -> None:
    """Patch Faust's tables (once per process)."""
    global _installed
    if _installed:
        return
    check_version()
    from faust.tables.base import Collection

    Collection.apply_changelog_batch = _guarded(Collection.apply_changelog_batch)  # type: ignore[method-assign,assignment]
    _installed = True


Apply = Callable[[Any, Iterable[Any]], None]


def _guarded(original: Apply) -> Apply:
    def apply_changelog_batch(self: Any, batch: Iterable[Any]) -> None:
        recovery = self.app.tables.recovery
        events = list(batch)
        kept = late_dropped(events, recovery.active_tps, recovery.in_recovery)
        if len(kept) != len(events):
            dropped = len(events) - len(kept)
            COUNTERS["late_changelog_dropped"] += dropped
            log.warning(
                "table %s: %d changelog records of active partitions came after the restore "
                "ended; dropped (the agents have written since)", self.name, dropped,
            )  # fmt: skip
        original(self, kept)

    return apply_changelog_batch


def late_dropped(events: list[Any], active: Iterable[Any], in_recovery: bool) -> list[Any]:
    """``events`` without those of ``active`` partitions when no restore is running.

    >>> from types import SimpleNamespace as NS
    >>> def event(partition): return NS(message=NS(tp=("t", partition)))
    >>> events = [event(0), event(1)]
    >>> [e.message.tp[1] for e in late_dropped(events, {("t", 0)}, in_recovery=False)]
    [1]
    >>> len(late_dropped(events, {("t", 0)}, in_recovery=True))
    2
    """
    if in_recovery:
        return events
    active = set(active)
    return [e for e in events if e.message.tp not in active]
