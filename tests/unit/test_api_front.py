"""The API front's decisions, against a scripted worker: what it answers itself (401, 403,
429, cached answers), what it forwards and how (method, raw path and query, body, token, the
secret), whose answers it may reuse (never another caller's), what it never caches, and
/healthz when the worker hangs. Then the worker's side of it (secret required, no second
rate limit) and the supervising of the front process."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, WSServerHandshakeError, web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from agents.api.auth import Principal, RateLimiter, TokenStore
from agents.api.common import FRESH_FOR, FRONT_SECRET
from agents.api.front import Front, Tally, cache_key
from agents.api.front_process import FrontProcess, apply_report
from agents.metrics import WorkerMetrics
from runtime.settings import Settings
from tests.api_fixtures import SECRET, api_client, auth, tokens_file

Script = Callable[[web.Request], Awaitable[web.StreamResponse]]
CALLS = web.AppKey("calls", int)


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Rig:
    client: TestClient[Any, Any]
    front: Front
    seen: list[Seen]
    now: list[float] = field(default_factory=lambda: [1000.0])

    def asked(self, path: str) -> int:
        return sum(1 for s in self.seen if s.raw_path == path)


async def echo(request: web.Request) -> web.Response:
    """The default worker: 200, naming the token it was asked with, fresh for a second."""
    return web.json_response(
        {"auth": request.headers.get("Authorization"), "n": request.app[CALLS]},
        headers={FRESH_FOR: "1.000"},
    )


@asynccontextmanager
async def rig(
    tmp_path: Path, script: Script = echo, *, rate: float = 1000.0, burst: int = 1000,
    health_timeout: float = 3.0, upstream: str | None = None,
) -> AsyncIterator[Rig]:  # fmt: skip
    seen: list[Seen] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        request.app[CALLS] += 1
        seen.append(Seen(request.method, request.raw_path, dict(request.headers),
                         await request.read()))  # fmt: skip
        return await script(request)

    worker = web.Application()
    worker[CALLS] = 0
    worker.router.add_route("*", "/{tail:.*}", handler)
    now = [1000.0]
    async with TestServer(worker) as server:
        front = Front(
            upstream=upstream or str(server.make_url("")).rstrip("/"), secret=SECRET,
            tokens=TokenStore.load(tokens_file(tmp_path)), limiter=RateLimiter(rate, burst),
            record=Tally().record, health_timeout=health_timeout, clock=lambda: now[0],
        )  # fmt: skip
        async with TestClient(TestServer(front.app())) as client:
            yield Rig(client, front, seen, now)


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_a_forwarded_request_keeps_method_path_query_body_and_token(tmp_path: Path) -> None:
    async def script(request: web.Request) -> web.Response:
        return web.json_response({"status": "accepted"}, status=202)

    async def main() -> None:
        async with rig(tmp_path, script) as r:
            path = "/v1/models/acme/fr%C3%A4ud/retrain?note=a%26b%20c&x=1"
            resp = await r.client.post(path, data=b'{"reason": "r"}', headers={
                **auth("acme-write"), "Content-Type": "application/json",
                "X-Driftwatch-Forwarded": "1", "Cookie": "session=x", "X-Other": "y",
            })  # fmt: skip
            assert resp.status == 202 and await resp.json() == {"status": "accepted"}
            [s] = r.seen
            assert (s.method, s.raw_path, s.body) == ("POST", path, b'{"reason": "r"}')
            assert s.headers["Authorization"] == auth("acme-write")["Authorization"]
            assert s.headers["Content-Type"] == "application/json"
            assert s.headers["X-Driftwatch-Forwarded"] == "1"
            assert s.headers[FRONT_SECRET] == SECRET
            assert "Cookie" not in s.headers and "X-Other" not in s.headers

    run(main())


def test_the_alert_stream_is_relayed_both_ways_and_a_refusal_is_said(tmp_path: Path) -> None:
    """The WebSocket through the front: the worker's text and binary frames reach the caller,
    the caller's reach the worker, the worker asked with the secret; a cursor the worker
    refuses is its own answer (checked over HTTP first: a refused handshake has no body); a
    handshake the worker refuses, and a worker that is gone, are a 503 that says which."""

    async def script(request: web.Request) -> web.StreamResponse:
        if request.path == "/v1/alerts":  # the front's check of a cursor
            if request.query.get("after") == "gone":
                return web.json_response({"error": "unknown_alert"}, status=404)
            return web.json_response({"alerts": []})
        if request.query.get("after") == "refuse":
            return web.json_response({"error": "no"}, status=403)  # no handshake
        ws = web.WebSocketResponse()
        if not ws.can_prepare(request).ok:
            return web.json_response({"error": "not a websocket"}, status=400)
        await ws.prepare(request)
        await ws.send_str('{"alert_id": "a1"}')
        await ws.send_bytes(b"\x00raw")
        echoed = 0
        async for msg in ws:  # echoes two of what the caller sends, then ends the stream
            await ws.send_str(f"echo {msg.data!r}")
            echoed += 1
            if echoed == 2:
                break
        await ws.close()
        return ws

    async def main() -> None:
        async with rig(tmp_path, script) as r:
            ws = await r.client.ws_connect("/v1/alerts/stream", headers=auth("acme-read"))
            assert (await ws.receive_str(timeout=10)) == '{"alert_id": "a1"}'
            assert (await ws.receive_bytes(timeout=10)) == b"\x00raw"
            await ws.send_str("hello")
            assert (await ws.receive_str(timeout=10)) == "echo 'hello'"
            await ws.send_bytes(b"\x01")
            assert (await ws.receive_str(timeout=10)) == "echo b'\\x01'"
            closing = await ws.receive(timeout=10)
            assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
            await ws.close()
            [stream] = [s for s in r.seen if s.raw_path == "/v1/alerts/stream"]
            assert stream.headers[FRONT_SECRET] == SECRET
            plain = await r.client.get("/v1/alerts/stream", headers=auth("acme-read"))
            assert plain.status == 400  # not a WebSocket: the worker says so
            gone = await r.client.get("/v1/alerts/stream?after=gone", headers={
                **auth("acme-read"), "Connection": "Upgrade", "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            })  # fmt: skip
            assert gone.status == 404 and (await gone.json())["error"] == "unknown_alert"
            with pytest.raises(WSServerHandshakeError) as refused:
                await r.client.ws_connect("/v1/alerts/stream?after=refuse",
                                          headers=auth("acme-read"))  # fmt: skip
            assert refused.value.status == 503
        async with rig(tmp_path, script, upstream="http://127.0.0.1:9") as r:  # nobody there
            with pytest.raises(WSServerHandshakeError) as gone_worker:
                await r.client.ws_connect("/v1/alerts/stream", headers=auth("acme-read"))
            assert gone_worker.value.status == 503

    run(main())


def test_the_front_refuses_without_asking_the_worker(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, rate=0.01, burst=2) as r:
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
                resp = await r.client.get("/v1/models", headers=headers)
                assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
            resp = await r.client.put("/v1/tenants/acme/auto-retrain", json={"enabled": True},
                                      headers=auth("acme-read"))  # fmt: skip
            assert resp.status == 403
            statuses = [(await r.client.get("/v1/models", headers=auth("admin"))).status
                        for _ in range(4)]  # fmt: skip
            assert statuses[:1] == [200] and statuses[-1] == 429
            assert (await r.client.get("/v1/nothing", headers=auth("admin"))).status == 404
            assert (await r.client.delete("/v1/models", headers=auth("admin"))).status == 405
            doc = await r.client.get("/v1/openapi.json")  # served by the front itself
            assert doc.status == 200 and (await doc.json())["openapi"].startswith("3.")
            assert [s.raw_path for s in r.seen] == ["/v1/models"]  # one 200, nothing else

    run(main())


def test_a_cached_answer_is_only_served_to_the_caller_it_was_for(tmp_path: Path) -> None:
    async def script(request: web.Request) -> web.Response:
        # the worker's rule: acme's token does not see globex
        if request.headers["Authorization"] == auth("acme-read")["Authorization"]:
            return web.json_response({"error": {"code": "not_found", "message": "x"}}, status=404)
        return await echo(request)

    async def main() -> None:
        async with rig(tmp_path, script) as r:
            path = "/v1/models/globex/fraud"
            first = await (await r.client.get(path, headers=auth("admin"))).json()
            assert (await (await r.client.get(path, headers=auth("admin"))).json()) == first
            assert r.asked(path) == 1  # the second was the cached answer
            resp = await r.client.get(path, headers=auth("acme-read"))
            assert resp.status == 404 and r.asked(path) == 2  # asked, not served admin's
            assert (await r.client.get(path, headers=auth("acme-read"))).status == 404
            assert r.asked(path) == 3  # a 404 is never cached
            mine = await (await r.client.get(path, headers=auth("globex-write"))).json()
            assert mine["auth"] == auth("globex-write")["Authorization"] and r.asked(path) == 4
            # peer-forwarded requests (answered from the worker's own state) are apart too
            await r.client.get(path, headers={**auth("admin"), "X-Driftwatch-Forwarded": "1"})
            assert r.asked(path) == 5

    run(main())


def test_the_cache_key_changes_with_the_callers_tenants_and_scopes() -> None:
    def key(principal: Principal | None) -> Any:
        return cache_key(_FakeRequest("/v1/models?x=1", {}), principal)  # type: ignore[arg-type]

    acme = Principal("ops", frozenset({"acme"}), frozenset({"read"}))
    widened = Principal("ops", frozenset({"acme", "globex"}), frozenset({"read"}))
    writer = Principal("ops", frozenset({"acme"}), frozenset({"read", "write"}))
    other = Principal("ops2", frozenset({"acme"}), frozenset({"read"}))
    keys = [key(p) for p in (acme, widened, writer, other, None)]
    assert len(set(keys)) == 5
    assert key(acme) == key(Principal("ops", frozenset({"acme"}), frozenset({"read"})))


@dataclass
class _FakeRequest:
    raw_path: str
    headers: dict[str, str]


def test_what_is_never_cached(tmp_path: Path) -> None:
    async def script(request: web.Request) -> web.Response:
        if request.path == "/v1/models":  # a partial list
            return web.json_response({"models": [], "partial": True},
                                     headers={"Cache-Control": "no-store"})  # fmt: skip
        if request.path == "/v1/alerts":
            return web.json_response({"error": {"code": "unavailable", "message": "x"}},
                                     status=503)  # fmt: skip
        return await echo(request)  # a write answered 200 is not cached either

    async def main() -> None:
        async with rig(tmp_path, script) as r:
            for _ in range(2):
                await r.client.get("/v1/models", headers=auth("admin"))
                await r.client.get("/v1/alerts", headers=auth("admin"))
                await r.client.put("/v1/tenants/acme/auto-retrain", json={"enabled": True},
                                   headers=auth("admin"))  # fmt: skip
                await r.client.post("/v1/approvals/r1", headers=auth("admin"))  # no body
                await r.client.get("/healthz")
                await r.client.get("/readyz")
            for path in ("/v1/models", "/v1/alerts", "/v1/tenants/acme/auto-retrain",
                         "/v1/approvals/r1", "/healthz", "/readyz"):  # fmt: skip
                assert r.asked(path) == 2, path
            await r.client.get("/v1/approvals", headers=auth("admin"))
            await r.client.get("/v1/approvals", headers=auth("admin"))
            assert r.asked("/v1/approvals") == 1  # and a plain 200 is

    run(main())


def test_stale_answers_are_served_while_one_refresh_asks_the_worker(tmp_path: Path) -> None:
    gate = asyncio.Event()

    async def script(request: web.Request) -> web.Response:
        if request.app[CALLS] > 1:
            await gate.wait()  # the refresh is slow
        return await echo(request)

    async def main() -> None:
        async with rig(tmp_path, script) as r:

            async def n() -> int:
                resp = await r.client.get("/v1/approvals", headers=auth("admin"))
                assert FRESH_FOR not in resp.headers  # between worker and front only
                return int((await resp.json())["n"])

            assert [await n(), await n()] == [1, 1]
            r.now[0] += 1.5  # past fresh (the worker said 1 s), within stale (30 s)
            assert [await n(), await n(), await n()] == [1, 1, 1]  # at once, no waiting
            await asyncio.sleep(0.05)
            assert len(r.seen) == 2  # one refresh, however many asked
            gate.set()
            await asyncio.gather(*r.front._tasks)
            assert await n() == 2
            r.now[0] += 60  # past stale: the request waits for the worker
            assert await n() == 3

    run(main())


def test_the_workers_freshness_is_kept(tmp_path: Path) -> None:
    async def script(request: web.Request) -> web.Response:
        fresh = "10" if "report" in request.path else "0.000"  # 0: it was stale already
        return web.Response(body=b"<html>", content_type="text/html", headers={FRESH_FOR: fresh})

    async def main() -> None:
        async with rig(tmp_path, script) as r:
            report = "/v1/models/acme/fraud/report"
            for _ in range(2):
                resp = await r.client.get(report, headers=auth("admin"))
                assert resp.content_type == "text/html" and await resp.read() == b"<html>"
            r.now[0] += 5
            await r.client.get(report, headers=auth("admin"))
            assert r.asked(report) == 1  # fresh for 10 s, as the worker said
            drift = "/v1/models/acme/fraud/drift"
            await r.client.get(drift, headers=auth("admin"))
            await r.client.get(drift, headers=auth("admin"))  # stale: served, and refreshed
            await asyncio.gather(*r.front._tasks)
            assert r.asked(drift) == 2

    run(main())


def test_concurrent_misses_ask_the_worker_once(tmp_path: Path) -> None:
    async def script(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return await echo(request)

    async def main() -> None:
        async with rig(tmp_path, script) as r:
            answers = await asyncio.gather(*(
                r.client.get("/v1/models/acme/fraud", headers=auth("admin")) for _ in range(10)
            ))  # fmt: skip
            assert [a.status for a in answers] == [200] * 10
            assert r.asked("/v1/models/acme/fraud") == 1

    run(main())


def test_health_fails_fast_when_the_worker_hangs_or_is_gone(tmp_path: Path) -> None:
    async def script(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return await echo(request)

    async def main() -> None:
        async with rig(tmp_path, script, health_timeout=0.3) as r:
            for path, status in (("/healthz", "unhealthy"), ("/readyz", "not_ready")):
                t0 = time.perf_counter()
                resp = await r.client.get(path)
                assert resp.status == 503 and (await resp.json())["status"] == status
                assert time.perf_counter() - t0 < 2.0
        async with rig(tmp_path, upstream="http://127.0.0.1:9") as r:  # nobody listens
            assert (await r.client.get("/healthz")).status == 503
            resp = await r.client.get("/v1/models", headers=auth("admin"))
            assert resp.status == 503 and (await resp.json())["error"]["code"] == "unavailable"

    run(main())


def test_the_fronts_failures_answer_an_error_id_and_log_their_detail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The front's own 500 and its 503 for a worker that is gone say an error id, which the
    log has with the detail (the caller gets neither the exception nor the address)."""

    def broken(who: str) -> float:
        raise OSError(28, "No space left on device", "/var/lib/driftwatch/front")

    async def error_of(resp: Any, status: int) -> str:
        body = await resp.json()
        assert resp.status == status, body
        error_id = body["error"].get("id", "")
        assert f"error id {error_id}" in body["error"]["message"], body
        assert "/var/lib" not in body["error"]["message"] and "127.0.0.1" not in str(body)
        return str(error_id)

    async def main() -> None:
        async with rig(tmp_path, upstream="http://127.0.0.1:9") as r:  # nobody listens
            gone = await error_of(await r.client.get("/v1/models", headers=auth("admin")), 503)
            r.front.limiter.acquire = broken  # type: ignore[method-assign]
            failed = await error_of(await r.client.get("/v1/models", headers=auth("admin")), 500)
        logged = {e: [r for r in caplog.records if e in r.getMessage()] for e in (gone, failed)}
        assert "127.0.0.1:9" in logged[gone][0].getMessage()
        assert "/var/lib/driftwatch/front" in (logged[failed][0].exc_text or "")

    with caplog.at_level(logging.WARNING):
        run(main())


def test_the_workers_api_answers_the_front_only_and_limits_no_rate_again(tmp_path: Path) -> None:
    async def main() -> None:
        async with api_client(tmp_path, rate=0.01, burst=2) as h:
            internal = h.internal.make_url
            async with h.client.session.get(internal("/v1/models"), headers=auth("admin")) as r:
                assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden"
            async with h.client.session.get(internal("/healthz")) as r:
                assert r.status == 403
            with_secret = {**auth("admin"), FRONT_SECRET: SECRET}
            for _ in range(5):  # far past the burst: the front limits, not the worker
                async with h.client.session.get(internal("/v1/models"), headers=with_secret) as r:
                    assert r.status == 200
            assert (await h.client.get("/v1/models", headers=auth("admin"))).status == 200
            assert (await h.client.get("/v1/models", headers=auth("admin"))).status == 200
            assert (await h.client.get("/v1/models", headers=auth("admin"))).status == 429

    run(main())


def test_the_fronts_counts_reach_the_workers_metrics() -> None:
    tally = Tally()
    assert tally.take() is None
    for status in (200, 200, 401):
        tally.record("list_models", "GET", status, 0.002)
    report = json.loads(json.dumps(tally.take()))  # as it crosses the pipe
    assert tally.take() is None
    metrics = WorkerMetrics.create(CollectorRegistry())
    apply_report(metrics, report)
    assert metrics.api_requests.labels("list_models", "GET", "200")._value.get() == 2
    assert metrics.api_requests.labels("list_models", "GET", "401")._value.get() == 1
    assert metrics.api_seconds.labels("list_models")._sum.get() == 0.006


def test_a_front_that_exits_is_started_again_and_a_stopped_one_is_not(tmp_path: Path) -> None:
    report = {"requests": [["get_model", "GET", 200, 2]], "seconds": {"get_model": [0.01]}}
    crashing = (
        "import json, sys; config = json.loads(sys.stdin.read()); "
        f"assert config['secret'] == 's' and config['settings']['api_port'] == 1234; "
        f"print({json.dumps(json.dumps(report))}, flush=True); print('not a report'); "
        "sys.exit(3)"
    )
    metrics = WorkerMetrics.create(CollectorRegistry())
    process = FrontProcess(
        Settings(api_port=1234), "http://127.0.0.1:1", "s", metrics,
        argv=[sys.executable, "-c", crashing], restart_pause=(0.05, 0.1),
    )  # fmt: skip
    process.start()
    deadline = time.monotonic() + 30
    while process.starts < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.stop()
    assert process.starts >= 3
    assert metrics.api_requests.labels("get_model", "GET", "200")._value.get() >= 4

    sleeping = FrontProcess(Settings(), "http://127.0.0.1:1", "s", metrics,
                            argv=[sys.executable, "-c", "import time; time.sleep(60)"])  # fmt: skip
    sleeping.start()
    while sleeping.pid is None and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = sleeping.pid
    assert pid is not None
    t0 = time.monotonic()
    sleeping.stop()
    assert sleeping.pid is None and sleeping.starts == 1 and time.monotonic() - t0 < 5


def test_the_cache_is_bounded_in_entries_and_bytes(tmp_path: Path) -> None:
    async def script(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 100, content_type="text/plain")

    async def main() -> None:
        async with rig(tmp_path, script) as r:
            r.front.max_entries, r.front.max_bytes = 5, 350
            for i in range(20):
                await r.client.get(f"/v1/models/acme/m{i}", headers=auth("admin"))
                held = r.front._cache.values()
                assert len(held) <= 5 and r.front._bytes <= 350
                assert r.front._bytes == sum(len(a.body) for _, a in held)
            await r.client.get("/v1/models/acme/m19", headers=auth("admin"))
            assert r.asked("/v1/models/acme/m19") == 1  # the newest is kept

    run(main())
