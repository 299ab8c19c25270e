"""The API front: the public API port, served from a process of its own.

Why a process: the worker's batches and event loop hold the interpreter lock for tens of
milliseconds at a time, so an API thread in the worker waits for it (p99 175 ms at 200
requests/s while ingesting, docs/benchmarks.md). The front does what needs no worker state
without that lock: authentication and scopes (the same tokens file), the rate limit, the
OpenAPI document and cached answers — fresh for ``cache_seconds`` (or as long as the worker
says its answer is fresh), then served stale up to ``stale_seconds`` while one background
request asks the worker again. Everything else goes to the worker's internal server on
127.0.0.1 with the caller's method, path, query, body and token, plus the per-start secret
that server requires.

A cached answer is only ever served to the same caller: the key holds the token's name,
tenants and scopes (a token edited in the file to other tenants gets a key of its own), so
tenant isolation is what the worker decided for that caller. Non-200s, ``no-store`` answers
(a partial model list) and writes are never cached. ``/healthz`` and ``/readyz`` report the
worker, asked uncached, and fail (503) when it does not answer within ``health_timeout``.

Run by the worker (:mod:`agents.api.front_process`) as ``python -m agents.api.front``, with
its settings, the internal URL and the secret as JSON on stdin. It exits when the worker
dies (``PR_SET_PDEATHSIG``, and its parent pid checked every second).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import (
    ClientError,
    ClientSession,
    ClientTimeout,
    TCPConnector,
    WSCloseCode,
    WSMsgType,
    WSServerHandshakeError,
    web,
)
from multidict import CIMultiDict
from yarl import URL

from agents.api.auth import Principal, RateLimiter, TokenStore, load_tokens
from agents.api.common import (
    FORWARDED,
    FRESH_FOR,
    FRONT_SECRET,
    ApiError,
    authorize,
    concealed,
    error_response,
    http_error_response,
    internal_error,
)
from agents.api.spec import ROUTES, Route, openapi_document
from runtime.settings import Settings

log = logging.getLogger("agents.api.front")  # also when run as __main__

Key = tuple[str, bool, tuple[str, tuple[str, ...], tuple[str, ...]] | None]
"""(raw path and query, forwarded by a peer, who asked: name, tenants, scopes)."""
Record = Callable[[str, str, int, float], None]
"""Counts one answered request: route name, method, status, seconds."""

PRINCIPAL = web.RequestKey("front_principal", Principal)
PASSED_HEADERS = ("Authorization", "Content-Type", FORWARDED)
"""Request headers the worker reads; nothing else of the caller's reaches it."""
_OWN = ("Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length", "Content-Encoding")
DROPPED_HEADERS = frozenset(h.lower() for h in (*_OWN, "Date", "Server", FRESH_FOR))
"""Answer headers the front's own server sets (or that stay between worker and front)."""


@dataclass(frozen=True)
class Upstream:
    """What the front sends the worker for one request."""

    method: str
    path_qs: str
    """Raw (still percent-encoded) path and query, exactly as the caller sent them."""
    headers: dict[str, str]
    body: bytes | None


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]
    fresh_for: float | None = None
    """Seconds the worker says its answer stays fresh (None: it did not say)."""

    @property
    def cacheable(self) -> bool:
        no_store = any(
            k.lower() == "cache-control" and "no-store" in v.lower() for k, v in self.headers
        )
        return self.status == 200 and not no_store

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, headers=CIMultiDict(self.headers))


def upstream_request(request: web.Request, body: bytes | None) -> Upstream:
    """The request to forward: same method, raw path and query, body, token and forwarded
    flag; the secret is added when it is sent."""
    headers = {h: request.headers[h] for h in PASSED_HEADERS if h in request.headers}
    return Upstream(request.method, request.raw_path, headers, body or None)


def cache_key(request: web.Request, principal: Principal | None) -> Key:
    """Per path and query, peer-forwarded or not, and caller (None for the routes that need
    no token: their answer is the same for everyone)."""
    who = (
        None
        if principal is None
        else (principal.name, tuple(sorted(principal.tenants)), tuple(sorted(principal.scopes)))
    )
    return (request.raw_path, bool(request.headers.get(FORWARDED)), who)


@dataclass
class Front:
    upstream: str
    """Base URL of the worker's internal server (``http://127.0.0.1:<port>``)."""
    secret: str
    tokens: TokenStore | None
    """None: authentication is off (DRIFTWATCH_API_AUTH=off)."""
    limiter: RateLimiter
    record: Record
    cache_seconds: float = 1.0
    stale_seconds: float = 30.0
    health_timeout: float = 3.0
    request_timeout: float = 30.0
    """A forwarded request gets this long (the worker may ask its peers, or render a report)."""
    max_body_bytes: int = 65536
    max_entries: int = 4096
    max_bytes: int = 64 << 20
    clock: Callable[[], float] = time.monotonic
    _routes: dict[str, Route] = field(default_factory=dict)
    _cache: dict[Key, tuple[float, Answer]] = field(default_factory=dict)
    _bytes: int = 0
    """Bodies held in ``_cache``."""
    _refreshing: set[Key] = field(default_factory=set)
    _inflight: dict[Key, asyncio.Task[Answer]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _session: ClientSession | None = None

    # ------------------------------------------------------------------ wiring

    def app(self) -> web.Application:
        """The public application: exactly the documented routes (spec.ROUTES), like the
        worker's, so unknown paths and methods are refused here the same way."""
        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[self._middleware])
        special: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
            "openapi": self._openapi,
            "healthz": self._health,
            "readyz": self._health,
            "alert_stream": self._alert_stream,
        }
        for route in ROUTES:
            handler = special.get(route.name, self._proxy)
            app.router.add_route(route.method, route.path, handler, name=route.name)
            self._routes[route.name] = route
        app.on_cleanup.append(self._close)
        return app

    def _session_(self) -> ClientSession:
        if self._session is None or self._session.closed:
            # a bounded pool: a stalled worker gets at most this many requests at once
            self._session = ClientSession(connector=TCPConnector(limit=64))
        return self._session

    async def _close(self, _: web.Application) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        name = getattr(request.match_info.route, "name", None) or "unmatched"
        route = self._routes.get(name)
        status = 500
        try:
            if not request.raw_path.startswith("/"):
                # An absolute-form target (``GET http://host/v1/...``): its raw path is the
                # whole URL, which made the upstream address unparseable (a 500).
                raise ApiError(400, "bad_request", "the request target must be a path")
            if route is not None and route.scope is not None:
                header = request.headers.get("Authorization", "")
                request[PRINCIPAL] = authorize(header, self.tokens, self.limiter, route.scope)
            response = await handler(request)
            status = response.status
            return response
        except ApiError as exc:
            status = exc.status
            return error_response(exc.status, exc.code, exc.message, exc.headers, exc.error_id)
        except web.HTTPException as exc:
            status = exc.status
            return http_error_response(exc, self.max_body_bytes)
        except Exception:
            status = 500
            return internal_error(log, f"API front: {request.method} {request.path}")
        finally:
            self.record(name, request.method, status, time.perf_counter() - started)

    # ------------------------------------------------------------------ answers

    async def _openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    async def _proxy(self, request: web.Request) -> web.Response:
        body = await request.read()
        up = upstream_request(request, body)
        if request.method != "GET" or body:
            return (await self._forward(up, self.request_timeout)).response()
        key = cache_key(request, request.get(PRINCIPAL))
        return (await self._cached(key, up)).response()

    async def _health(self, request: web.Request) -> web.Response:
        """The worker's own answer, never cached; 503 (not a hang) when it does not come."""
        try:
            answer = await self._forward(upstream_request(request, None), self.health_timeout)
            return answer.response()
        except ApiError:
            status = "unhealthy" if request.path == "/healthz" else "not_ready"
            reason = f"the worker's API did not answer within {self.health_timeout:g} s"
            return web.json_response(
                {"status": status, "reason": reason, "loop_lag_seconds": None}, status=503
            )

    async def _cached(self, key: Key, up: Upstream) -> Answer:
        """The cached answer if fresh; if stale, the same while one background request asks
        the worker; else the worker's (one request for all who ask the same meanwhile)."""
        hit = self._cache.get(key)
        if hit is not None:
            expires, answer = hit
            now = self.clock()
            if now < expires + self.stale_seconds:
                if now >= expires and key not in self._refreshing:
                    self._refreshing.add(key)
                    self._spawn(self._refresh(key, up))
                return answer
            del self._cache[key]
            self._bytes -= len(answer.body)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(key, up))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._done_fetch(key, t))
        # shielded: a caller that hangs up does not cancel the answer the others wait for
        return await asyncio.shield(task)

    def _done_fetch(self, key: Key, task: asyncio.Task[Answer]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: the callers that waited got it

    async def _fetch(self, key: Key, up: Upstream) -> Answer:
        answer = await self._forward(up, self.request_timeout)
        self._keep(key, answer)
        return answer

    async def _refresh(self, key: Key, up: Upstream) -> None:
        try:
            await self._fetch(key, up)
        except ApiError as exc:  # the stale answer stays until its time is up
            log.debug("API front: refresh of %s failed: %s", key[0], exc.message)
        finally:
            self._refreshing.discard(key)

    def _keep(self, key: Key, answer: Answer) -> None:
        if not answer.cacheable:
            return
        now = self.clock()
        old = self._cache.pop(key, None)
        self._bytes -= len(old[1].body) if old is not None else 0
        if len(self._cache) >= self.max_entries or self._bytes + len(answer.body) > self.max_bytes:
            # entries are per caller: bounded in number and size, past-stale ones go first
            for k in [k for k, (exp, _) in self._cache.items() if now >= exp + self.stale_seconds]:
                self._bytes -= len(self._cache.pop(k)[1].body)
            if (
                len(self._cache) >= self.max_entries
                or self._bytes + len(answer.body) > self.max_bytes
            ):
                self._cache.clear()
                self._bytes = 0
        fresh = self.cache_seconds if answer.fresh_for is None else answer.fresh_for
        self._cache[key] = (now + fresh, answer)
        self._bytes += len(answer.body)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward(self, up: Upstream, seconds: float) -> Answer:
        """The worker's answer to ``up``; ApiError 503 when it does not come in time."""
        url = URL(self.upstream + up.path_qs, encoded=True)
        headers = {**up.headers, FRONT_SECRET: self.secret}
        try:
            async with self._session_().request(
                up.method, url, headers=headers, data=up.body, allow_redirects=False,
                timeout=ClientTimeout(total=seconds),
            ) as resp:  # fmt: skip
                body = await resp.read()
                kept = tuple(
                    (k, v) for k, v in resp.headers.items() if k.lower() not in DROPPED_HEADERS
                )
                fresh = resp.headers.get(FRESH_FOR)
                return Answer(resp.status, body, kept, _seconds(fresh))
        except (ClientError, TimeoutError, OSError) as exc:
            raise concealed(log, 503, "unavailable", "the worker did not answer",
                            f"the worker did not answer {up.method} {up.path_qs.split('?')[0]}",
                            exc, logging.WARNING) from None  # fmt: skip

    async def _alert_stream(self, request: web.Request) -> web.StreamResponse:
        """The WebSocket, relayed both ways to the worker's (the front holds no alerts)."""
        ws = web.WebSocketResponse(heartbeat=30.0, autoclose=False)
        if not ws.can_prepare(request).ok:  # the worker explains (400)
            return (await self._forward(upstream_request(request, None), 10.0)).response()
        asked = upstream_request(request, None)
        if request.query.get("after"):
            # A cursor the worker never read: its refusal (404, or 503 while it reads the
            # alerts topic) as it words it, which a refused handshake does not carry.
            query = urlencode({"after": request.query["after"], "limit": 1})
            check = Upstream("GET", f"/v1/alerts?{query}", asked.headers, None)
            answer = await self._forward(check, 10.0)
            if answer.status != 200:
                return answer.response()
        url = URL(self.upstream + request.raw_path, encoded=True)
        headers = {**asked.headers, FRONT_SECRET: self.secret}
        try:
            upstream = await self._session_().ws_connect(url, headers=headers, heartbeat=30.0)
        except WSServerHandshakeError as exc:
            raise ApiError(
                503, "unavailable", f"the worker refused the stream ({exc.status})"
            ) from None
        except (ClientError, TimeoutError, OSError) as exc:
            raise concealed(log, 503, "unavailable", "the worker did not answer",
                            "the worker did not take the alert stream", exc,
                            logging.WARNING) from None  # fmt: skip
        await ws.prepare(request)

        closed_with: list[tuple[int, bytes]] = []

        async def down() -> None:  # worker -> caller
            while True:
                msg = await upstream.receive()
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
                elif msg.type == WSMsgType.CLOSE:  # the worker's code and reason, passed on
                    closed_with.append((int(msg.data), str(msg.extra or "").encode()[:123]))
                    return
                elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    return

        async def up() -> None:  # caller -> worker (the stream takes no input; relayed anyway)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await upstream.send_str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await upstream.send_bytes(msg.data)

        tasks = {asyncio.ensure_future(down()), asyncio.ensure_future(up())}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Closed, not cancelled (a cancelled read makes the close abnormal): the worker's
            # side first, so it has let go of the stream when the caller sees it close.
            await upstream.close()
            code, reason = closed_with[0] if closed_with else (WSCloseCode.OK, b"")
            # (a token revoked mid-stream is the worker's 1008 with its reason)
            await ws.close(code=code if _sendable(code) else WSCloseCode.OK, message=reason)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return ws


def _sendable(code: int) -> bool:
    """A close code one may send (1005, 1006 and 1015 only ever describe a close)."""
    return code in (1000, 1001, 1008, 1011) or 3000 <= code <= 4999


def _seconds(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value >= 0 else None


# ---------------------------------------------------------------------- the process


@dataclass
class Tally:
    """Requests counted in the front, reported to the worker once a second (its /metrics
    keeps the API's counters, as before the front)."""

    requests: dict[tuple[str, str, int], int] = field(default_factory=dict)
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.seconds.setdefault(route, []).append(round(seconds, 6))

    def take(self) -> dict[str, Any] | None:
        """The counts since the last call (None if nothing happened), and start again."""
        if not self.requests:
            return None
        report = {
            "requests": [[r, m, s, n] for (r, m, s), n in self.requests.items()],
            "seconds": self.seconds,
        }
        self.requests, self.seconds = {}, {}
        return report


PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM when the worker dies (Linux); exit now if it already did."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        log.warning("API front: the worker (pid %d) is gone; exiting", parent)
        raise SystemExit(0)


async def serve(settings: Settings, upstream: str, secret: str, parent: int, report_fd: int) -> int:
    tally = Tally()
    front = Front(
        upstream=upstream,
        secret=secret,
        tokens=load_tokens(settings, announce=False),
        limiter=RateLimiter(settings.api_rate_limit, settings.api_rate_burst),
        record=tally.record,
        cache_seconds=settings.api_cache_seconds,
        stale_seconds=settings.api_stale_seconds,
        health_timeout=settings.api_health_timeout,
        max_body_bytes=settings.api_max_body_bytes,
    )
    runner = web.AppRunner(front.app(), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, settings.api_bind, settings.api_port)
    for attempt in range(40):  # a front of the worker before this one may still be exiting
        try:
            await site.start()
            break
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or attempt == 39:
                log.error("API front: cannot listen on %s:%d: %s", settings.api_bind,
                          settings.api_port, exc)  # fmt: skip
                await runner.cleanup()
                return 3
            await asyncio.sleep(0.25)
    log.info("API front (pid %d) on %s:%d, forwarding to %s", os.getpid(), settings.api_bind,
             settings.api_port, upstream)  # fmt: skip

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    transport, _ = await loop.connect_write_pipe(
        asyncio.Protocol, os.fdopen(report_fd, "wb", buffering=0)
    )

    async def report() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            if os.getppid() != parent:
                log.warning("API front: the worker (pid %d) is gone; exiting", parent)
                stop.set()
            counts = tally.take()
            # a worker that does not read (stalled) loses counts rather than blocking the front
            if counts is not None and transport.get_write_buffer_size() < (1 << 20):
                transport.write(json.dumps(counts).encode() + b"\n")

    reporter = asyncio.ensure_future(report())
    await stop.wait()
    log.info("API front (pid %d) stopping", os.getpid())
    await reporter
    await runner.cleanup()
    transport.close()
    return 0


def main() -> int:
    config = json.loads(sys.stdin.buffer.read())
    settings = Settings().updated(config["settings"])
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    )
    die_with_parent(config["parent"])
    # Counts go to the worker on what was stdout; anything printed goes to stderr (the log).
    report_fd = os.dup(1)
    os.dup2(2, 1)
    return asyncio.run(serve(settings, config["upstream"], config["secret"], config["parent"],
                             report_fd))  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
