"""The worker bounds glibc's malloc arenas at start (runtime.malloc_arenas)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from runtime.malloc_arenas import limit_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_arenas_are_bounded_where_glibc_allows_it() -> None:
    # In a child: the bound holds for the rest of the process.
    code = "from runtime.malloc_arenas import limit_arenas; print(limit_arenas(2))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr


def test_zero_leaves_the_allocator_alone() -> None:
    assert limit_arenas(0) is False and limit_arenas(-1) is False
