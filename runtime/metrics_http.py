"""The Prometheus ``/metrics`` endpoint of a worker, with a clear refusal when it cannot listen.

A port already taken (a second worker on the host, a stale one) or an address the host does
not have raised ``OSError`` from deep inside ``prometheus_client``, with its traceback:
:class:`ListenError` names the setting to change, and ``driftwatch.cli`` turns it into one
line and exit status 2 (the retrain worker's before it connects to Kafka; the worker's once
its app, which owns the registry, is built).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

__all__ = ["ListenError", "metrics_served", "serve_metrics"]


class ListenError(ValueError):
    """An endpoint could not listen on its address and port (the message says which setting)."""


def serve_metrics(port: int, bind: str, registry: CollectorRegistry, setting: str) -> int:
    """Serve ``registry`` on ``bind``:``port`` in a daemon thread; the port it listens on
    (``port`` 0: one the system picks, as the tests ask). ``setting``: the variable that set
    the port, for the refusal.

    >>> from prometheus_client import CollectorRegistry
    >>> try:
    ...     serve_metrics(0, "203.0.113.9", CollectorRegistry(), "DRIFTWATCH_METRICS_PORT")
    ... except ListenError as exc:
    ...     print(exc)  # an address this host does not have  # doctest: +ELLIPSIS
    cannot serve metrics on 203.0.113.9:0 (DRIFTWATCH_METRICS_PORT, ...): [Errno 99] Cannot ...
    """
    server, _ = _listen(port, bind, registry, setting)
    return int(server.server_address[1])


@contextmanager
def metrics_served(
    port: int, bind: str, registry: CollectorRegistry, setting: str
) -> Iterator[int]:
    """:func:`serve_metrics` until the block ends, however it ends: for a worker that can stop
    without its process ending (the retrain worker run in-process), whose socket and thread
    would otherwise stay, and hold the port against its next run."""
    server, thread = _listen(port, bind, registry, setting)
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _listen(
    port: int, bind: str, registry: CollectorRegistry, setting: str
) -> tuple[WSGIServer, threading.Thread]:
    try:
        return start_http_server(port, addr=bind, registry=registry)
    except OSError as exc:
        why = f"[Errno {exc.errno}] {exc.strerror}" if exc.strerror else str(exc)
        raise ListenError(
            f"cannot serve metrics on {bind}:{port} ({setting}, DRIFTWATCH_METRICS_BIND): {why}"
        ) from None
