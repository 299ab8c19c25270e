"""Bounds the number of the C allocator's arenas (glibc) in a long-running worker.

glibc gives each thread that allocates concurrently an arena of its own, up to 8 per core.
The worker's compute runs in a pool of threads (``asyncio.to_thread``: the engine, the join,
the performance monitor, beside librdkafka's and RocksDB's own threads), each decoding
messages of hundreds of kilobytes into short-lived objects. Every arena keeps what it once
held, so the resident set grew for millions of events before it levelled off
(``bench.worker_memory``: 1,589 MiB at 1M events, 2,517 MiB at 5M). Two arenas hold it near
where it starts; the measurement is in docs/benchmarks.md.

It has to run before the threads it is meant for allocate: :func:`limit_arenas` is the first
thing ``driftwatch worker`` does. ``MALLOC_ARENA_MAX`` in the environment does the same for
any process; this spares operators from knowing it.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from typing import Any

log = logging.getLogger(__name__)

M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter (malloc.h)."""


def limit_arenas(arenas: int) -> bool:
    """At most ``arenas`` malloc arenas from now on; False where that cannot be set (0, not
    Linux, not glibc).

    >>> limit_arenas(0)
    False
    """
    if arenas <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no glibc arenas to bound
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_ARENA_MAX, arenas))
    if not done:  # pragma: no cover - glibc accepts any positive count
        log.warning("could not bound malloc arenas to %d", arenas)
    return done


_TRIM: Any = False  # False: not looked up yet; None: none here


def trim_heap() -> bool:
    """Hand the C allocator's free pages back to the system (glibc's ``malloc_trim``): the
    pages of freed chunks anywhere in every arena, not only at the top of the heap. False
    where there is no glibc.

    Why: a batch's decoded messages are many small objects; once freed, the pages they took
    stay in the process among a few long-lived neighbours, so the resident set rises to the
    largest batches' high-water mark and stays there (``bench.worker_memory``).

    >>> isinstance(trim_heap(), bool)
    True
    """
    global _TRIM
    if _TRIM is False:
        _TRIM = None
        if sys.platform.startswith("linux"):
            try:
                _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
                _TRIM.argtypes = [ctypes.c_size_t]
                _TRIM.restype = ctypes.c_int
            except (OSError, AttributeError):  # musl and others
                _TRIM = None
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
