"""Ending a process at once, for the paths that must not wait for a graceful stop."""

from __future__ import annotations

import contextlib
import logging
import os


def hard_exit(code: int) -> None:
    """End the process now (a stuck worker may not finish a graceful stop either, and a test
    hook stands for SIGKILL). Logs are flushed first, and a running coverage measurement (CI
    measures worker subprocesses) saves its data: ``os._exit`` skips the atexit hooks."""
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    try:
        import coverage

        cov = coverage.Coverage.current()
        if cov is not None:
            cov.stop()
            cov.save()
    except Exception:
        pass
    os._exit(code)
