"""A time limit on aiokafka's fetch requests: a fetch the broker leaves unanswered is given
up and sent again on a new connection, well before the watchdog would call the worker stalled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from agents.faust_compat.counters import COUNTERS
from agents.faust_compat.version import check_version

log = logging.getLogger(__name__)

FETCH_TIMEOUT_SECONDS: float | None = None
"""Set by :func:`install_fetch_timeout`; None: the client's own request timeout only."""
UNANSWERED_CLIENT: Any = None
"""Testing only: the next fetch request of this aiokafka client is never sent, so never
answered (a broker that leaves a fetch unanswered, as the embedded one was seen to do)."""
_fetch_patched = False


def leave_next_fetch_unanswered(app: Any) -> None:
    """Testing only: the next fetch of ``app``'s consumer is never sent (see
    :data:`UNANSWERED_CLIENT`)."""
    global UNANSWERED_CLIENT
    UNANSWERED_CLIENT = app.consumer._thread._consumer._client


def install_fetch_timeout(seconds: float) -> None:
    """Give up a fetch the broker has not answered in ``seconds``: close its connection (which
    fails whatever else waits on it, to be retried) and raise ``RequestTimedOutError``, on
    which aiokafka's fetcher backs off and fetches again on a new connection. aiokafka does the
    same on its own request timeout, but that one is Faust's ``broker_request_timeout`` (90 s,
    and it must not be under the session timeout: it times the group's requests too), longer
    than the watchdog's stall time. Only fetches are timed so (of every aiokafka client in the
    process: the worker's consumer and the API's catalog tailer); a fetch is answered within
    its ``fetch_max_wait`` (1.5 s) when the broker is well. ``0`` turns it off."""
    global FETCH_TIMEOUT_SECONDS, _fetch_patched
    FETCH_TIMEOUT_SECONDS = seconds if seconds > 0 else None
    if _fetch_patched:
        return
    check_version()
    from aiokafka.client import AIOKafkaClient

    AIOKafkaClient.send = _timed_fetch(AIOKafkaClient.send)
    _fetch_patched = True


def _timed_fetch(
    original: Callable[..., Awaitable[Any]],
) -> Callable[..., Coroutine[Any, Any, Any]]:
    from aiokafka.client import ConnectionGroup
    from aiokafka.conn import CloseReason
    from aiokafka.errors import RequestTimedOutError
    from aiokafka.protocol.fetch import FetchRequest

    async def send(self: Any, node_id: Any, request: Any, **kw: Any) -> Any:
        global UNANSWERED_CLIENT
        limit = FETCH_TIMEOUT_SECONDS
        hang = UNANSWERED_CLIENT is self
        if not isinstance(request, FetchRequest) or (limit is None and not hang):
            return await original(self, node_id, request, **kw)
        if hang:
            UNANSWERED_CLIENT = None
            log.warning("TEST HOOK: a fetch from broker %s left unanswered", node_id)
            call: Awaitable[Any] = asyncio.get_running_loop().create_future()
        else:
            call = original(self, node_id, request, **kw)
        if limit is None:
            return await call
        try:
            async with asyncio.timeout(limit):  # not wait_for: no task, no lost cancellation
                return await call
        except TimeoutError:
            COUNTERS["fetch_unanswered"] += 1
            log.warning(
                "a fetch from broker %s was not answered in %.0f s: its connection is closed "
                "and the fetch sent again on a new one (%d so far)",
                node_id, limit, COUNTERS["fetch_unanswered"],
            )  # fmt: skip
            conn = self._conns.get((node_id, kw.get("group", ConnectionGroup.DEFAULT)))
            if conn is not None:
                conn.close(reason=CloseReason.CONNECTION_TIMEOUT)
            raise RequestTimedOutError() from None

    return send
