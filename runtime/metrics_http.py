"""The Prometheus ``/metrics`` endpoint of a worker, with a clear refusal when it cannot listen.

A port already taken (a second worker on the host, a stale one) or an address the host does
not have raised ``OSError`` from deep inside ``prometheus_client``, with its traceback:
:class:`ListenError` names the setting to change, and ``driftwatch.cli`` turns it into one
line and exit status 2 (the retrain worker's before it connects to Kafka; the worker's once
its app, which owns the registry, is built).
"""

from __future__ import annotations

from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

__all__ = ["ListenError", "serve_metrics"]


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
    try:
        server, _ = start_http_server(port, addr=bind, registry=registry)
    except OSError as exc:
        why = f"[Errno {exc.errno}] {exc.strerror}" if exc.strerror else str(exc)
        raise ListenError(
            f"cannot serve metrics on {bind}:{port} ({setting}, DRIFTWATCH_METRICS_BIND): {why}"
        ) from None
    return int(server.server_address[1])
