"""Bounds the number of the C allocator's arenas (glibc) in a long-running worker.

glibc gives each thread that allocates concurrently an arena of its own, up to 8 per core.
The worker's compute runs in a pool of threads (``asyncio.to_thread``: the engine, the join,
the performance monitor, beside librdkafka's and RocksDB's own threads), each decoding
messages of hundreds of kilobytes into short-lived objects. Every arena keeps what it once
held, so the resident set grew for millions of events before it levelled off
(``bench.worker_memory``: 1,589 MiB at 1M events, 2,517 MiB at 5M). Two arenas held it near
where it starts; with one (the default since 2026-12-07) two 10M-event runs stayed within
+-10 % of their 1M reading, at a throughput whose range overlaps two arenas' (medians
0.954x in envelopes, four runs each), on 2 cores (docs/benchmarks.md; docs/runbook.md for
many cores).

It has to run before the threads it is meant for allocate: :func:`limit_arenas` is the first
thing ``driftwatch worker`` does. ``MALLOC_ARENA_MAX`` in the environment does the same for
any process; this spares operators from knowing it.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping
from typing import Any

M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter (malloc.h)."""
MIN_MMAP_THRESHOLD_KB = 64
"""Below this, most of the worker's allocations would be mappings of their own (a system
call and fresh pages each)."""
MAX_MMAP_THRESHOLD_KB = 32 * 1024
"""glibc's documented maximum on 64-bit systems (``man mallopt``, DEFAULT_MMAP_THRESHOLD_MAX)."""
MIN_TRIM_SECONDS = 1.0
"""A trim walks every free chunk holding each arena's lock: not more often than this."""
M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter (malloc.h): allocations at least this large are mapped on
their own and unmapped when freed."""


def _glibc(name: str, argtypes: list[Any]) -> Any:
    """glibc's function ``name`` returning int, typed; None where there is none (not Linux,
    musl and others)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


def _mallopt(param: int, value: int) -> bool:
    mallopt = _glibc("mallopt", [ctypes.c_int, ctypes.c_int])
    return mallopt is not None and bool(mallopt(param, value))


def operator_set(variable: str, tunable: str, environ: Mapping[str, str] | None = None) -> bool:
    """Has the operator set this allocator parameter for the process already, as glibc reads
    it at start: its own variable (``MALLOC_ARENA_MAX``) or ``GLIBC_TUNABLES``? Theirs wins.

    >>> operator_set("MALLOC_ARENA_MAX", "glibc.malloc.arena_max",
    ...              {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4:glibc.malloc.tcache_count=0"})
    True
    >>> operator_set("MALLOC_ARENA_MAX", "glibc.malloc.arena_max", {})
    False
    """
    env = os.environ if environ is None else environ
    tunables = env.get("GLIBC_TUNABLES", "")
    return variable in env or any(
        part.split("=", 1)[0].strip() == tunable for part in tunables.split(":")
    )


def fix_mmap_threshold(size: int) -> bool:
    """Allocations of ``size`` bytes or more get their own mapping, returned to the system
    when freed; False where that cannot be set (0, not glibc).

    Why: glibc starts at 128 KiB but raises the threshold to the size of every mapped block
    that is freed (up to 32 MiB), so after the first few the worker's large transient
    buffers (envelopes of hundreds of KB, fetch responses, a part's encoded state) come from
    the heap, and the heap keeps the high-water mark of them all, fragmented among
    long-lived objects. Setting it fixes it (and turns that adjustment off).

    >>> fix_mmap_threshold(0)
    False
    """
    return size > 0 and _mallopt(M_MMAP_THRESHOLD, size)


def limit_arenas(arenas: int) -> bool:
    """At most ``arenas`` malloc arenas from now on; False where that cannot be set (0, not
    Linux, not glibc).

    >>> limit_arenas(0)
    False
    """
    return arenas > 0 and _mallopt(M_ARENA_MAX, arenas)


_TRIM: Any = _glibc("malloc_trim", [ctypes.c_size_t])


def can_trim() -> bool:
    """Is there a ``malloc_trim`` to call here (glibc)?"""
    return _TRIM is not None


def trim_heap() -> bool:
    """Hand the C allocator's free pages back to the system (glibc's ``malloc_trim``): the
    pages of freed chunks anywhere in every arena, not only at the top of the heap. False
    where there is no glibc.

    Why: a batch's decoded messages are many small objects; once freed, the pages they took
    stay in the process among a few long-lived neighbours, so the resident set rises to the
    largest batches' high-water mark and stays there (``bench.worker_memory``).

    >>> trim_heap() == can_trim()
    True
    """
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
