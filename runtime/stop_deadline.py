"""A graceful stop that cannot end is ended: a deadline for the worker's shutdown.

Faust's stop waits for the Kafka clients to close, and with the broker gone aiokafka's
consumer retries for good: a worker sent SIGTERM then ran on (24 % of a core) for as long as
anyone let it. Once the app has begun to stop, this thread gives it ``seconds``; then it logs
that and ends the process with :data:`STOP_TIMEOUT_EXIT_CODE`. Ending it is safe for the same
reason a SIGKILL is: state is offset-guarded and nothing past an unprocessed message was
committed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from runtime.process_exit import hard_exit

log = logging.getLogger(__name__)

STOP_TIMEOUT_EXIT_CODE = 70
"""EX_SOFTWARE: the graceful stop did not finish in time."""


def watch_stop(
    app: Any,
    seconds: float,
    *,
    poll: float = 1.0,
    exit: Callable[[int], None] = hard_exit,
    clock: Callable[[], float] = time.monotonic,
) -> threading.Thread | None:
    """Start a daemon thread that ends the process ``seconds`` after ``app`` began to stop
    (``app.should_stop``); None when ``seconds`` is 0 (no deadline)."""
    if seconds <= 0:
        return None

    def run() -> None:
        while not getattr(app, "should_stop", False):
            time.sleep(poll)
        began = clock()
        while clock() - began < seconds:
            time.sleep(poll)
        log.error("the worker's stop did not finish in %.0f s (is the broker reachable?); "
                  "ending it with code %d: nothing is lost, its state is offset-guarded",
                  seconds, STOP_TIMEOUT_EXIT_CODE)  # fmt: skip
        exit(STOP_TIMEOUT_EXIT_CODE)

    thread = threading.Thread(target=run, name="stop-deadline", daemon=True)
    thread.start()
    return thread
