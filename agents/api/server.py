"""The HTTP API, served by each worker on Faust's web server (in its own thread and event
loop, so a slow request never delays a batch), on an internal loopback port: the public port
is the API front's (:mod:`agents.api.front`, a child process that authenticates, rate-limits
and answers from its cache without waiting for this process's interpreter lock), which
forwards what it cannot answer here with a per-start secret.

State is partitioned over workers. A request about one model is answered from this worker's
own RocksDB partitions when it owns the model's partition, and otherwise forwarded to the
other workers of the group (their URLs come from the group's assignment); ``GET /v1/models``
gathers every worker's models. The small topics (model versions, retrain requests, alerts)
are read whole by every worker (:mod:`agents.api.catalog`) and answered locally.

Writes go to ``retrain-control`` (the retrain worker acts on them through the same safeguards
as on drift), recorded with who asked.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, ClientTimeout, WSCloseCode, WSMsgType, web

from agents.api.auth import Principal, RateLimiter, TokenStore
from agents.api.catalog import MAX_ALERTS, Catalog, UnknownCursor
from agents.api.common import (
    FORWARDED,
    FRESH_FOR,
    FRONT_SECRET,
    ApiError,
    authorize,
    concealed,
    current_principal,
    http_error_response,
    internal_error,
)
from agents.api.common import error_response as _error
from agents.api.spec import MAX_CURSOR, ROUTES, Route, openapi_document
from driftwatch.report.collect import collect
from driftwatch.report.model import ModelMarker
from driftwatch.report.render import render_report
from schemas import InvalidEvent, format_timestamp, parse_timestamp
from schemas.events import decode_json_object
from schemas.names import NAME_PATTERN, NAME_RULE, name_problem
from streams import views
from streams.config import PerformanceConfig
from streams.perf_state import perf_stream_key
from streams.state import stream_key

log = logging.getLogger(__name__)

__all__ = ["FORWARDED", "Api", "ApiError", "LocalState", "RocksView"]

PRINCIPAL = web.RequestKey("principal", Principal)
PEER_TIMEOUT = ClientTimeout(total=5.0)
REVOKED = b"token revoked: reconnect with a valid token"
"""The reason of an alert stream's close (1008) when its token no longer lets it read."""


class RocksView:
    """:class:`streams.views.KeyValues` over a table's RocksDB partitions (read-only)."""

    def __init__(self, dbs: Iterable[Any]) -> None:
        self.dbs = list(dbs)

    def get(self, key: str) -> bytes | None:
        raw = key.encode()
        for db in self.dbs:
            value = db.get(raw)
            if value is not None:
                return bytes(value)
        return None

    def scan(self, prefix: str) -> Iterator[tuple[str, bytes]]:
        raw = prefix.encode()
        for db in self.dbs:
            for key, value in db.items(from_key=raw):
                if not bytes(key).startswith(raw):
                    break
                yield bytes(key).decode(), bytes(value)


@dataclass
class LocalState:
    """Where this worker's own state is read from (tables of its active partitions)."""

    drift: Callable[[], RocksView]
    perf: Callable[[], RocksView]


@dataclass
class Api:
    local: LocalState
    catalog: Catalog
    pcfg: PerformanceConfig
    tokens: TokenStore | None
    """None: authentication is off (DRIFTWATCH_API_AUTH=off)."""
    limiter: RateLimiter
    send_control: Callable[[str, dict[str, Any]], Awaitable[None]]
    """Publishes a retrain-control message (key, value); raises when not delivered."""
    peers: Callable[[], list[str]]
    """Base URLs of the other workers' APIs."""
    ready: Callable[[], str | None]
    """None when ready, else why not."""
    main_loop: Callable[[], asyncio.AbstractEventLoop | None]
    metrics: Any
    front_secret: str | None = None
    """Set when the API front serves the public port: requests without it are refused, and
    the front's are not rate-limited or counted again (the front did both)."""
    max_body_bytes: int = 65536
    tenants: frozenset[str] = frozenset()
    """The worker's tenant allow-list (DRIFTWATCH_TENANTS); empty: any tenant."""
    cache_seconds: float = 1.0
    """Answers computed from state are fresh this long: at hundreds of requests a second the
    state (flushed once per batch) is read once a second, not per request."""
    stale_seconds: float = 30.0
    """After that, an answer is still served for this long while a fresh one is computed in
    the background: no request waits for a recomputation (decoding a model's history takes
    tens of milliseconds, during which the API thread would answer nothing)."""
    stream_recheck_seconds: float = 5.0
    """An alert stream checks its token again at least this often while no alert comes (and
    before every alert it sends): a token revoked in the tokens file ends the stream."""
    _session: ClientSession | None = None
    _routes: dict[str, Route] = field(default_factory=dict)
    _cache: dict[tuple[Any, ...], tuple[float, int, bytes, str]] = field(default_factory=dict)
    _refreshing: set[tuple[Any, ...]] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def _serve(
        self,
        key: tuple[Any, ...],
        compute: Callable[[], Awaitable[web.Response]],
        ttl: float | None = None,
    ) -> web.Response:
        """The cached answer for ``key`` if fresh; if stale, the same while ``compute`` runs
        in the background; else ``compute``'s (kept if cacheable)."""
        hit = self._cache.get(key)
        if hit is not None:
            expires, status, body, ctype = hit
            now = time.monotonic()
            if now >= expires + self.stale_seconds:
                del self._cache[key]
            else:
                if now >= expires and key not in self._refreshing:
                    self._refreshing.add(key)
                    task = asyncio.ensure_future(self._refresh(key, compute, ttl))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                fresh = max(0.0, expires - now)
                return web.Response(status=status, body=body, content_type=ctype,
                                    headers={FRESH_FOR: f"{fresh:.3f}"})  # fmt: skip
        return self._keep(key, await compute(), ttl)

    async def _refresh(
        self,
        key: tuple[Any, ...],
        compute: Callable[[], Awaitable[web.Response]],
        ttl: float | None,
    ) -> None:
        try:
            self._keep(key, await compute(), ttl)
        except Exception as exc:  # the next request past the stale time computes it again
            log.debug("API refresh of %s failed: %r", key, exc)
        finally:
            self._refreshing.discard(key)

    def _keep(
        self, key: tuple[Any, ...], response: web.Response, ttl: float | None = None
    ) -> web.Response:
        cacheable = response.headers.get("Cache-Control") != "no-store"
        if response.status == 200 and isinstance(response.body, bytes) and cacheable:
            if len(self._cache) > 4096:
                self._cache.clear()
            fresh = self.cache_seconds if ttl is None else ttl
            self._cache[key] = (time.monotonic() + fresh, 200, response.body, response.content_type)
            response.headers[FRESH_FOR] = f"{fresh:.3f}"
        return response

    def _key(self, request: web.Request) -> tuple[Any, ...]:
        """Per route, path and query (tenants are in the path, checked before), and whether
        it was forwarded (a forwarded request answers from local state only)."""
        return (request.path_qs, bool(request.headers.get(FORWARDED)))

    # ------------------------------------------------------------------ wiring

    def install(self, app: web.Application) -> None:
        app.middlewares.append(self._middleware)
        for route in ROUTES:
            handler = getattr(self, route.name)
            app.router.add_route(route.method, route.path, handler, name=route.name)
            self._routes[route.name] = route
        app.on_cleanup.append(self._close)

    async def _close(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        info = request.match_info.route
        name = getattr(info, "name", None) or "unmatched"
        route = self._routes.get(name)
        status = 500
        from_front = False
        try:
            if self.front_secret is not None:
                given = request.headers.get(FRONT_SECRET, "")
                if not hmac.compare_digest(given.encode(), self.front_secret.encode()):
                    raise ApiError(403, "forbidden", "this port answers the API front only")
                from_front = True
            if route is not None and route.scope is not None:
                # the front limited the rate already; authenticating again is cheap, and
                # gives the handlers the principal (tenants, name) from the same tokens
                limiter = None if from_front else self.limiter
                header = request.headers.get("Authorization", "")
                request[PRINCIPAL] = authorize(header, self.tokens, limiter, route.scope)
            response = await handler(request)
            status = response.status
            return response
        except ApiError as exc:
            status = exc.status
            return _error(exc.status, exc.code, exc.message, exc.headers, exc.error_id)
        except web.HTTPException as exc:
            status = exc.status
            return http_error_response(exc, self.max_body_bytes)
        except Exception:
            status = 500
            return internal_error(log, f"API {request.method} {request.path}")
        finally:
            if not from_front:  # the front counts its requests (agents.api.front_process)
                self.metrics.api_requests.labels(name, request.method, str(status)).inc()
                self.metrics.api_seconds.labels(name).observe(time.perf_counter() - started)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _principal(request: web.Request) -> Principal:
        return request[PRINCIPAL]

    @staticmethod
    def _name(request: web.Request, key: str) -> str:
        """A tenant, model or request id of the path: a safe name (``schemas.names``) or 400,
        the same rule as everywhere else, so nothing the worker would refuse on input can be
        asked for, nor written to ``retrain-control``."""
        value = request.match_info[key]
        problem = name_problem(value)
        if problem is not None:
            raise ApiError(400, "bad_name", f"invalid {key}: {problem}")
        return value

    def _model_of(self, request: web.Request) -> tuple[str, str]:
        """(tenant, model) of the path; 404 for another tenant's (the same as a missing one)."""
        tenant, model = self._name(request, "tenant"), self._name(request, "model")
        if not self._principal(request).sees(tenant):
            raise ApiError(404, "not_found", f"no model {tenant}/{model}")
        return tenant, model

    def _views(self) -> tuple[RocksView, RocksView]:
        try:
            return self.local.drift(), self.local.perf()
        except Exception as exc:  # tables closed mid-rebalance
            raise concealed(log, 503, "unavailable", "the state is not readable now: try again",
                            "reading the state", exc) from None  # fmt: skip

    def _is_local(self, tenant: str, model: str) -> bool:
        drift, perf = self._views()
        return (
            drift.get(stream_key(tenant, model)) is not None
            or perf.get(perf_stream_key(tenant, model)) is not None
        )

    def _session_(self) -> ClientSession:
        if self._session is None or self._session.closed:
            self._session = ClientSession(timeout=PEER_TIMEOUT)
        return self._session

    async def _ask_peers(
        self, request: web.Request, body: bytes | None = None
    ) -> list[tuple[int, str, bytes]]:
        """The same request to every other worker, answering from its own state only."""
        headers = {FORWARDED: "1"}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        if body is not None:
            headers["Content-Type"] = "application/json"

        async def one(base: str) -> tuple[int, str, bytes]:
            url = base.rstrip("/") + request.rel_url.path_qs
            try:
                async with self._session_().request(
                    request.method, url, headers=headers, data=body
                ) as resp:
                    return resp.status, resp.content_type, await resp.read()
            except (TimeoutError, OSError) as exc:
                log.warning("peer %s did not answer: %r", base, exc)
                return 503, "application/json", b""

        return list(await asyncio.gather(*(one(p) for p in self.peers())))

    async def _forwarded(self, request: web.Request, body: bytes | None = None) -> web.Response:
        """The owner's answer for a model this worker does not hold."""
        if request.headers.get(FORWARDED):
            raise ApiError(404, "not_found", "no such model here")
        answers = await self._ask_peers(request, body)
        for status, ctype, payload in answers:
            if status != 404 and status != 503:
                return web.Response(status=status, body=payload, content_type=ctype)
        if any(status == 503 for status, _, _ in answers):
            raise ApiError(503, "unavailable", "a worker that may own this model did not answer")
        raise ApiError(404, "not_found", "no such model")

    async def _body(self, request: web.Request, schema: dict[str, Any]) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "send application/json")
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            raise ApiError(413, "too_large", f"bodies are limited to {self.max_body_bytes} B")
        raw = await request.read()
        try:
            # As the retrain worker reads what is passed on (schemas.retrain): not UTF-8
            # JSON, nested too deeply (a RecursionError was a 500), or with an unpaired
            # surrogate in a string (accepted here, the control message was then refused
            # there, and a compacted key lost its last good value) is a bad body.
            data = decode_json_object(raw, max(len(raw), 1))
        except InvalidEvent as exc:
            if exc.reason == "wrong_type":
                raise ApiError(400, "bad_body", "the body must be a JSON object") from None
            raise ApiError(400, "bad_json", "the body is not JSON (UTF-8 text)") from None
        _validate(data, schema)
        return data

    def _who(self, request: web.Request, body: dict[str, Any]) -> str:
        by = self._principal(request).name
        extra = body.get("requested_by")
        return f"{by} ({extra})" if extra else by

    # ------------------------------------------------------------------ health

    async def _loop_lag(self) -> float | None:
        loop = self.main_loop()
        if loop is None or not loop.is_running():
            return None
        started = time.perf_counter()
        fut = asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop)
        try:
            await asyncio.wait_for(asyncio.wrap_future(fut), timeout=2.0)
        except TimeoutError:
            return None
        return time.perf_counter() - started

    async def healthz(self, request: web.Request) -> web.Response:
        lag = await self._loop_lag()
        if lag is None:
            return web.json_response(
                {"status": "unhealthy", "reason": "the worker's event loop does not respond",
                 "loop_lag_seconds": None}, status=503)  # fmt: skip
        return web.json_response({"status": "ok", "loop_lag_seconds": round(lag, 4)})

    async def readyz(self, request: web.Request) -> web.Response:
        reason = self.ready()
        lag = await self._loop_lag()
        if reason is None and lag is None:
            reason = "the worker's event loop does not respond"
        if reason is not None:
            return web.json_response({"status": "not_ready", "reason": reason,
                                      "loop_lag_seconds": lag}, status=503)  # fmt: skip
        return web.json_response({"status": "ready", "loop_lag_seconds": round(lag or 0, 4)})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    # ------------------------------------------------------------------ reads

    def _local_models(self, principal: Principal) -> list[dict[str, Any]]:
        drift, perf = self._views()
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for st in views.streams(drift):
            if principal.sees(st.tenant):
                ps = views.perf_stream(perf, st.tenant, st.model)
                versions = views.perf_versions(perf, st.tenant, st.model)
                seen[(st.tenant, st.model)] = views.model_summary(st, ps, versions)
        for key, _raw in perf.scan('["ps", '):
            _, tenant, model = json.loads(key)
            if (tenant, model) not in seen and principal.sees(tenant):
                ps = views.perf_stream(perf, tenant, model)
                seen[(tenant, model)] = views.model_summary(
                    None, ps, views.perf_versions(perf, tenant, model)
                )
        for (tenant, model), row in seen.items():
            row["active_version"] = self.catalog.active_version(tenant, model) or row.get(
                "latest_version"
            )
        return list(seen.values())

    async def list_models(self, request: web.Request) -> web.Response:
        principal = self._principal(request)
        key = (*self._key(request), tuple(sorted(principal.tenants)))

        async def compute() -> web.Response:
            local = await asyncio.to_thread(self._local_models, principal)
            models = {(m["tenant"], m["model"]): m for m in local}
            partial = False
            if not request.headers.get(FORWARDED):
                for status, _, payload in await self._ask_peers(request):
                    if status != 200:
                        partial = True
                        continue
                    for m in json.loads(payload).get("models", []):
                        models.setdefault((m["tenant"], m["model"]), m)
            rows = [models[k] for k in sorted(models)]
            # a partial answer (a peer did not answer) is not kept
            headers = {"Cache-Control": "no-store"} if partial else None
            return web.json_response({"models": rows, "partial": partial}, headers=headers)

        return await self._serve(key, compute)

    async def get_model(self, request: web.Request) -> web.Response:
        tenant, model = self._model_of(request)

        def summary() -> web.Response:
            drift, perf = self._views()
            row = views.model_summary(
                views.stream(drift, tenant, model),
                views.perf_stream(perf, tenant, model),
                views.perf_versions(perf, tenant, model),
            )
            row["active_version"] = (
                self.catalog.active_version(tenant, model) or row["latest_version"]
            )
            return web.json_response(row)

        return await self._serve(self._key(request), self._local_or_forward(request, summary))

    def _local_or_forward(
        self, request: web.Request, local: Callable[[], web.Response]
    ) -> Callable[[], Awaitable[web.Response]]:
        """An answer from this worker's state (computed in a thread, off the API's loop) if it
        holds the model, else from the worker that does."""
        tenant, model = self._model_of(request)

        async def compute() -> web.Response:
            if not self._is_local(tenant, model):
                return await self._forwarded(request)
            return await asyncio.to_thread(local)

        return compute

    async def get_performance(self, request: web.Request) -> web.Response:
        tenant, model = self._model_of(request)
        bounds: list[float | None] = []
        for name in ("from", "to"):
            raw = request.query.get(name)
            if raw is None or raw == "":
                bounds.append(None)
                continue
            try:
                bounds.append(parse_timestamp(float(raw) if _is_number(raw) else raw, name))
            except ValueError as exc:
                raise ApiError(400, "bad_parameter", str(exc)) from None
        if bounds[0] is not None and bounds[1] is not None and bounds[1] < bounds[0]:
            raise ApiError(400, "bad_parameter", "to is earlier than from")

        def history() -> web.Response:
            _, perf = self._views()
            rows = views.performance_history(perf, self.pcfg, tenant, model, bounds[0], bounds[1])
            return web.json_response({"tenant": tenant, "model": model, "windows": rows or []})

        return await self._serve(self._key(request), self._local_or_forward(request, history))

    async def get_drift(self, request: web.Request) -> web.Response:
        tenant, model = self._model_of(request)

        def drift_status() -> web.Response:
            drift, perf = self._views()
            status = views.drift_status(
                drift, perf, self.pcfg.engine, tenant, model,
                importances=self.catalog.importances(tenant, model),
            )  # fmt: skip
            if status is None:
                raise ApiError(404, "not_found", "no such model")
            return web.json_response(status)

        return await self._serve(self._key(request), self._local_or_forward(request, drift_status))

    async def get_report(self, request: web.Request) -> web.Response:
        tenant, model = self._model_of(request)
        compute = self._local_or_forward(request, lambda: self._report(tenant, model))
        return await self._serve(self._key(request), compute, 10.0)

    def _report(self, tenant: str, model: str) -> web.Response:
        drift, perf = self._views()
        markers = [
            ModelMarker(e.event_time, e.action.value, e.version, e.previous_version, e.reason)
            for e in list(self.catalog.model_events.get((tenant, model), []))
        ]
        markers += [
            ModelMarker(r.event_time, r.status.value, r.model_version, None, r.reason)
            for r in list(self.catalog.requests.values())
            if (r.tenant, r.model) == (tenant, model) and r.status.terminal
            and r.status.value not in ("promoted", "rolled_back")
        ]  # fmt: skip
        data = collect(
            drift, perf, self.pcfg, tenant, model, source="live worker",
            markers=markers, active_version=self.catalog.active_version(tenant, model),
            importances=self.catalog.importances(tenant, model),
        )  # fmt: skip
        if data is None:
            raise ApiError(404, "not_found", "no such model")
        return web.Response(
            body=render_report(data).encode(), content_type="text/html", charset="utf-8"
        )

    async def list_approvals(self, request: web.Request) -> web.Response:
        principal = self._principal(request)
        rows = [
            {
                "request_id": r.request_id, "tenant": r.tenant, "model": r.model,
                "drift_id": r.drift_id, "status": r.status.value, "reason": r.reason,
                "event_time": format_timestamp(r.event_time), "at": format_timestamp(r.at),
            }
            for r in self.catalog.pending_approvals()
            if principal.sees(r.tenant)
        ]  # fmt: skip
        return web.json_response({"approvals": rows})

    async def list_alerts(self, request: web.Request) -> web.Response:
        principal = self._principal(request)
        limit = _int_param(request, "limit", 100, 1, 1000)
        after = _cursor_param(request)
        entries = self._alerts_after(principal, after, limit)
        return web.json_response({"alerts": [e.raw for e in entries]})

    def _alerts_after(self, principal: Principal, after: str | None, limit: int) -> list[Any]:
        try:
            return self.catalog.alerts_after(principal.sees, after, limit)
        except UnknownCursor as exc:
            if not exc.caught_up:  # may be one this worker has not read yet
                raise ApiError(503, "not_ready", "still reading the alerts topic: try again",
                               {"Retry-After": "1"}) from None  # fmt: skip
            raise ApiError(
                404, "unknown_alert",
                f"no alert {exc.after!r} was read here: not an alert id of yours, or one "
                "newer than this worker has read (try again in a moment); an id older than "
                f"the {MAX_ALERTS:,} held resumes from the oldest held",
            ) from None  # fmt: skip

    async def alert_stream(self, request: web.Request) -> web.StreamResponse:
        """Alerts of the caller's tenants, live, for as long as the caller's token allows.

        The token is checked again (against the tokens file as re-read) before each alert
        is sent and every :attr:`stream_recheck_seconds` while none comes: a stream opened
        with a token revoked since is closed (1008, policy violation), and one whose tenants
        were narrowed stops sending the tenants it lost. Checked once at the start, a stream
        kept a revoked token's tenants until the caller hung up."""
        principal = self._principal(request)
        authorization = request.headers.get("Authorization", "")
        after = _cursor_param(request)
        # closed by us after letting go of the queue: a client (or the front) that sees the
        # close knows the stream is gone
        ws = web.WebSocketResponse(heartbeat=30.0, autoclose=False)
        if not ws.can_prepare(request).ok:
            raise ApiError(400, "websocket_expected", "connect with a WebSocket client")
        self._alerts_after(principal, after, 1)  # an unknown ?after= is refused before the upgrade
        await ws.prepare(request)
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1000)
        self.catalog.subscribers.add(queue)
        reader: asyncio.Future[Any] | None = None
        getter: asyncio.Future[Any] | None = None
        try:
            sent = 0
            for entry in self.catalog.alerts_after(principal.sees, after, 10_000):
                await ws.send_json(entry.raw)
                sent = entry.cursor
            reader = asyncio.ensure_future(ws.receive())
            while not ws.closed:
                if getter is None:
                    getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, reader}, timeout=self.stream_recheck_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )  # fmt: skip
                if reader in done:
                    msg = reader.result()
                    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                                    WSMsgType.ERROR):  # fmt: skip
                        break
                    reader = asyncio.ensure_future(ws.receive())
                current = current_principal(authorization, self.tokens)
                if current is None or not current.can("read"):
                    log.info("API alert stream of %s closed: its token was revoked",
                             principal.name)  # fmt: skip
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=REVOKED)
                    break
                principal = current  # tenants narrowed (or widened) in the file since
                if getter in done:
                    entry = getter.result()
                    getter = None
                    if entry.cursor > sent and principal.sees(entry.alert.tenant):
                        await ws.send_json(entry.raw)
                        sent = entry.cursor
        finally:
            for task in (reader, getter):
                if task is not None:
                    task.cancel()
            self.catalog.subscribers.discard(queue)
            await ws.close()
        return ws

    # ------------------------------------------------------------------ writes

    async def _control(self, key: str, value: dict[str, Any]) -> None:
        try:
            await self.send_control(key, value | {"at": format_timestamp(time.time())})
        except Exception as exc:
            raise concealed(log, 503, "unavailable", "retrain-control not reachable: try again",
                            f"publishing {key} to retrain-control", exc) from None  # fmt: skip

    async def post_retrain(self, request: web.Request) -> web.Response:
        tenant, model = self._model_of(request)
        body = await self._body(request, _schema("RetrainRequest"))
        if not self._is_local(tenant, model):
            return await self._forwarded(request, json.dumps(body).encode())
        rid = str(uuid.uuid4())
        key = f"retrain:{rid}"
        await self._control(key, {
            "action": "retrain", "tenant": tenant, "model": model, "request_id": rid,
            "reason": body["reason"], "by": self._who(request, body),
        })  # fmt: skip
        return web.json_response({"status": "accepted", "control_key": key, "request_id": rid,
            "message": "the retrain worker decides (safeguards apply); follow retrain-events"},
            status=202)  # fmt: skip

    async def post_rollback(self, request: web.Request) -> web.Response:
        tenant, model = self._model_of(request)
        body = await self._body(request, _schema("RollbackRequest"))
        if not self._is_local(tenant, model):
            return await self._forwarded(request, json.dumps(body).encode())
        rid = str(uuid.uuid4())
        key = f"rollback:{rid}"
        await self._control(key, {
            "action": "rollback", "tenant": tenant, "model": model, "request_id": rid,
            "to": body.get("to_version"), "reason": body["reason"],
            "by": self._who(request, body),
        })  # fmt: skip
        return web.json_response({"status": "accepted", "control_key": key, "request_id": rid,
            "message": "the retrain worker switches the registry: model-events says "
                       "rolled_back; one it cannot do is refused with an alert "
                       "(change rollback_refused, /v1/alerts)"},
            status=202)  # fmt: skip

    async def post_approval(self, request: web.Request) -> web.Response:
        principal = self._principal(request)
        rid = self._name(request, "request_id")
        body = await self._body(request, _schema("ApprovalDecision"))
        req = self.catalog.requests.get(rid)
        if req is None or not principal.sees(req.tenant):
            raise ApiError(404, "not_found", f"no retrain request {rid}")
        if req.status.value != "awaiting_approval":
            raise ApiError(400, "not_awaiting_approval",
                           f"request {rid} is {req.status.value}")  # fmt: skip
        key = f"approval:{rid}"
        await self._control(key, {"decision": body["decision"], "by": self._who(request, body),
                                  "note": body["reason"]})  # fmt: skip
        answer = {"status": "accepted", "control_key": key, "request_id": rid,
                  "message": f"{body['decision']} recorded"}  # fmt: skip
        return web.json_response(answer, status=202)

    async def put_auto_retrain(self, request: web.Request) -> web.Response:
        principal = self._principal(request)
        tenant = self._name(request, "tenant")
        if not principal.sees(tenant):
            raise ApiError(404, "not_found", f"no tenant {tenant}")
        if self.tenants and tenant not in self.tenants:  # a typo would switch nothing, silently
            raise ApiError(404, "not_found", f"no tenant {tenant} (not in DRIFTWATCH_TENANTS)")
        body = await self._body(request, _schema("AutoRetrainFlag"))
        key = f"flag:tenant:{tenant}"
        flag = {"auto_retrain": bool(body["enabled"]), "by": principal.name,
                "note": body.get("reason", "")}  # fmt: skip
        await self._control(key, flag)
        return web.json_response({"status": "accepted", "control_key": key, "request_id": None,
            "message": f"auto-retrain {'on' if body['enabled'] else 'off'} for {tenant}"},
            status=202)  # fmt: skip


# ---------------------------------------------------------------------- validation


def _schema(name: str) -> dict[str, Any]:
    from agents.api.spec import SCHEMAS

    return SCHEMAS[name]


def _validate(data: Any, schema: dict[str, Any]) -> None:
    """The subset of JSON Schema the request bodies use: object, required, properties with
    string/boolean types, lengths, enums, no additional properties."""
    if not isinstance(data, dict):
        raise ApiError(400, "bad_body", "the body must be a JSON object")
    missing = [k for k in schema.get("required", []) if k not in data]
    if missing:
        raise ApiError(400, "bad_body", f"missing: {', '.join(missing)}")
    props: dict[str, Any] = schema.get("properties", {})
    extra = [k for k in data if k not in props]
    if extra and schema.get("additionalProperties", True) is False:
        raise ApiError(400, "bad_body", f"unknown fields: {', '.join(sorted(extra))[:200]}")
    for key, spec in props.items():
        if key not in data:
            continue
        value = data[key]
        kind = spec.get("type")
        if kind == "string":
            if not isinstance(value, str):
                raise ApiError(400, "bad_body", f"{key} must be a string")
            if len(value) < spec.get("minLength", 0) or len(value) > spec.get("maxLength", 1 << 30):
                raise ApiError(400, "bad_body", f"{key} has a bad length")
            if "enum" in spec and value not in spec["enum"]:
                raise ApiError(400, "bad_body", f"{key} must be one of {spec['enum']}")
            if any(ord(c) < 32 and c not in "\t\n" for c in value):
                raise ApiError(400, "bad_body", f"{key} has control characters")
            if spec.get("pattern") == NAME_PATTERN and name_problem(value) is not None:
                raise ApiError(400, "bad_body", f"{key}: {NAME_RULE}")
        elif kind == "boolean" and not isinstance(value, bool):
            raise ApiError(400, "bad_body", f"{key} must be true or false")


def _is_number(raw: str) -> bool:
    try:
        float(raw)
    except ValueError:
        return False
    return True


def _cursor_param(request: web.Request) -> str | None:
    """``?after=``: an alert id, or None. A longer one is a 400 (``bad_parameter``), as the
    document says: it was looked up, never found, and answered 404 as if it might be an id
    not read yet."""
    raw = request.query.get("after") or None
    if raw is not None and len(raw) > MAX_CURSOR:
        raise ApiError(
            400, "bad_parameter", f"after must be an alert id of at most {MAX_CURSOR} characters"
        )
    return raw


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise ApiError(400, "bad_parameter", f"{name} must be in [{lo}, {hi}]")
    return value
