"""The cyclic garbage collector's pace in long-running, allocation-heavy processes.

CPython collects its youngest generation every 700 net allocations of container objects,
and every tenth of those collections the middle one; a full collection (every tracked object
in the process) follows once a quarter as many objects as the oldest generation holds have
survived into it. The engine keeps thousands of decoded windows (each hundreds of small
objects) and makes and drops many more per batch, so full collections came often and each
walked the whole cache: ``bench.profile_engine --events 8000 --features 1000`` spent 21.7 s
of 63.3 s in 73 full collections; with the youngest generation's threshold at 10,000, 2.1 s
in 6 (and 44.8 s in all). A model of 20 features gains less in a backtest (~0.5 s of 10 s);
the worker, which holds far more objects, 1.28-1.43x with envelopes.

Nothing here turns the collector off: reference cycles are still found, only less often.
:func:`freeze_startup` moves what exists after start-up (modules, the Faust app, settings)
into the permanent generation, which no collection walks again. :class:`GcPauses` counts the
collector's time by generation, for ``driftwatch_gc_seconds_total``.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator, Mapping
from typing import Any

DEFAULT_THRESHOLD = 100_000
"""Net container allocations between a worker's young collections (CPython's default: 700).
Most of what a batch allocates lives longer than 10,000 allocations and shorter than 100,000
(an envelope's decoded events, a join part's records, per-feature columns): at 10,000 young
collections walk each of them, at ~0.5 µs an object. A worker on envelopes of 500
(``bench.throughput --live --events 300000 --batch 500``) spent 2.2-2.7 s of its run in
collections at 10,000 (until the thirty-sixth round) and 0.2-0.4 s at 100,000
(``driftwatch_gc_seconds_total``); its RSS over 10M events (``bench.worker_memory``) read
1.000-1.099 of the 1M reading at 100,000, as it did at 10,000 (1.000-1.100). A wide model's
peak RSS reads higher (its cyclic garbage waits longer): 828-1,293 MiB against 636-1,115 at
1,000 features, in noisy runs."""
BACKTEST_THRESHOLD = 100_000
"""The same for a backtest, which runs one input to its end. On a 60-day, 1,000-feature
backtest the collector took 3.1 s of 30.9 s at 10,000 (301 young collections) and 0.66 s of
27.3 s at 100,000 (11)."""
MAX_GC_THRESHOLD = 2**31 - 1
"""The largest threshold ``gc.set_threshold`` takes (a C int)."""


@contextlib.contextmanager
def paced_gc(threshold: int) -> Iterator[None]:
    """:func:`tune_gc` for a block, then the thresholds as they were (a command run inside
    another process, such as a test's, leaves it as it found it).

    >>> before = gc.get_threshold()
    >>> with paced_gc(20_000):
    ...     gc.get_threshold()[0]
    20000
    >>> gc.get_threshold() == before
    True
    """
    before = gc.get_threshold()
    tune_gc(threshold)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def tune_gc(threshold: int) -> bool:
    """Young collections every ``threshold`` net allocations (the older generations' factors
    stay CPython's); False, changing nothing, for 0 or less.

    >>> before = gc.get_threshold()
    >>> tune_gc(0), gc.get_threshold() == before
    (False, True)
    >>> tune_gc(5_000), gc.get_threshold()[0]
    (True, 5000)
    >>> gc.set_threshold(*before)
    """
    if threshold <= 0:
        return False
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(threshold, middle, oldest)
    return True


def freeze_startup() -> int:
    """Move every object alive now into the permanent generation (after start-up: imported
    modules, the app, its settings); returns how many objects are frozen. A frozen object is
    still freed when its last reference goes, but a reference cycle through it is never
    collected: once per process, for objects that live as long as it, that is the trade."""
    gc.collect()  # what start-up left as garbage goes first, not into the frozen set
    gc.freeze()
    return gc.get_freeze_count()


class GcPauses:
    """Seconds spent in collections and their count, by generation (``"0"``, ``"1"``,
    ``"2"``), from the collector's own callbacks.

    >>> pauses = GcPauses().install()
    >>> _ = gc.collect()
    >>> pauses.collections()["2"] >= 1 and pauses.seconds()["2"] >= 0.0
    True
    >>> pauses.uninstall()
    """

    def __init__(self) -> None:
        # No lock: a collection can start inside any allocation, the reader's own included
        # (a lock held there would deadlock its thread); the keys are fixed, and the
        # interpreter lock makes each update and each copy whole.
        self._seconds = {"0": 0.0, "1": 0.0, "2": 0.0}
        self._count = {"0": 0, "1": 0, "2": 0}
        self._started = 0.0

    def install(self) -> GcPauses:
        gc.callbacks.append(self._on_gc)
        return self

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: Mapping[str, Any]) -> None:
        # Collections run with the interpreter lock held, one at a time: start and stop pair.
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = str(info.get("generation", 2))
        if generation in self._seconds:
            self._seconds[generation] += time.perf_counter() - self._started
            self._count[generation] += 1

    def seconds(self) -> dict[str, float]:
        return dict(self._seconds)

    def collections(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._count.items()}
