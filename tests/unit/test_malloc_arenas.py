"""The worker bounds glibc's malloc arenas at start (runtime.malloc_arenas)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from runtime.malloc_arenas import fix_mmap_threshold, limit_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_arenas_are_bounded_where_glibc_allows_it() -> None:
    # In a child: the bound holds for the rest of the process.
    code = "from runtime.malloc_arenas import limit_arenas; print(limit_arenas(2))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr


def test_zero_leaves_the_allocator_alone() -> None:
    assert limit_arenas(0) is False and limit_arenas(-1) is False


HEAP_GROWTH = """
import ctypes, sys
from runtime.malloc_arenas import fix_mmap_threshold
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                              "usmblks", "fsmblks", "uordblks", "fordblks",
                                              "keepcost")]
libc = ctypes.CDLL("libc.so.6")
if not hasattr(libc, "mallinfo2"):  # glibc before 2.33
    print("skip")
    raise SystemExit(0)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold(128 * 1024)
big = bytearray(4 << 20)  # mapped on its own; freeing it raises glibc's adjusting threshold
del big
before = libc.mallinfo2().arena
kept, in_flight = [], []
for i in range(60):  # a few 300 KB buffers in flight at a time, small long-lived objects
    in_flight.append(bytearray(300_000 + 4096 * i))  # each a little larger than the last
    kept.append(bytearray(2_000))
    if len(in_flight) > 3:
        in_flight.pop(0)
in_flight.clear()
print(libc.mallinfo2().arena - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_a_fixed_mmap_threshold_keeps_large_transient_buffers_off_the_heap() -> None:
    """Why the worker fixes the threshold: with glibc's adjusting one, large buffers freed
    after a larger mapped block land in the heap, and the heap grows by them."""
    grown = {}
    for mode in ("adjusting", "fixed"):
        out = subprocess.run(
            [sys.executable, "-c", HEAP_GROWTH, mode], capture_output=True, text=True, check=True
        )
        if out.stdout.strip() == "skip":
            pytest.skip("glibc before 2.33: no mallinfo2")
        grown[mode] = int(out.stdout)
    assert grown["adjusting"] > 2_000_000, grown  # the mechanism is real on this libc
    assert grown["fixed"] < 500_000, grown


def test_zero_leaves_the_threshold_alone() -> None:
    assert fix_mmap_threshold(0) is False
