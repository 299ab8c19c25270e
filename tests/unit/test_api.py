"""The API's rules, on every endpoint: auth, scopes, tenant isolation (404, never 403, for
another tenant's objects), validation, limits; and what each endpoint answers, over real
detection state (tests/api_fixtures.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, WSServerHandshakeError, web

from agents.api.spec import ROUTES, openapi_document
from schemas import ModelAction, ModelEvent
from schemas.alerts import Alert, AlertKind, alert_id
from schemas.events import Severity
from tests.api_fixtures import (
    DONE_REQUEST,
    GLOBEX_REQUEST,
    PENDING_REQUEST,
    START,
    Harness,
    api_client,
    auth,
)

DAY = 86_400.0
BODIES: dict[str, dict[str, Any]] = {
    "post_retrain": {"reason": "a test"},
    "post_rollback": {"reason": "a test"},
    "post_approval": {"decision": "approve", "reason": "looks right"},
    "put_auto_retrain": {"enabled": True},
}


def run(directory: Path, test: Callable[[Harness], Awaitable[None]], **kwargs: Any) -> None:
    async def main() -> None:
        async with api_client(directory, **kwargs) as h:
            await test(h)

    asyncio.run(main())


def path_for(route_path: str, tenant: str = "acme", request_id: str = PENDING_REQUEST) -> str:
    return (
        route_path.replace("{tenant}", tenant)
        .replace("{model}", "fraud")
        .replace("{request_id}", request_id)
    )


async def call(h: Harness, method: str, path: str, who: str | None, body: Any = None) -> Any:
    headers = {} if who is None else auth(who)
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs["json"] = body
    return await h.client.request(method, path, **kwargs)


AUTHED = [r for r in ROUTES if r.scope is not None and r.name != "alert_stream"]


def test_openapi_document_matches_what_is_served(tmp_path: Path) -> None:
    async def test(h: Harness) -> None:
        resp = await call(h, "GET", "/v1/openapi.json", None)
        assert resp.status == 200
        doc = await resp.json()
        assert doc == json.loads(json.dumps(openapi_document()))
        documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
        # the same routes on the public side (the front) and on the worker's own server
        for app in (h.client.app, h.internal.app):
            served = {
                (r.method, r.resource.canonical)
                for r in app.router.routes()
                if r.method != "HEAD" and r.resource is not None
            }
            assert served == documented
        for path, ops in doc["paths"].items():
            params = set(re.findall(r"{(\w+)}", path))
            for op in ops.values():
                assert {p["name"] for p in op["parameters"] if p["in"] == "path"} == params
                assert any(code.startswith("2") or code == "101" for code in op["responses"])

    run(tmp_path, test)


@pytest.mark.parametrize("route", AUTHED, ids=lambda r: r.name)
def test_no_token_or_a_bad_one_is_401(tmp_path: Path, route: Any) -> None:
    async def test(h: Harness) -> None:
        path = path_for(route.path)
        body = BODIES.get(route.name)
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
            resp = await h.client.request(route.method, path, headers=headers, json=body)
            assert resp.status == 401, (route.name, headers)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await resp.json())["error"]["code"] == "unauthorized"
        assert h.controls == []

    run(tmp_path, test)


@pytest.mark.parametrize("route", [r for r in AUTHED if r.scope == "write"], ids=lambda r: r.name)
def test_a_read_token_on_a_mutating_endpoint_is_403(tmp_path: Path, route: Any) -> None:
    async def test(h: Harness) -> None:
        resp = await call(h, route.method, path_for(route.path), "acme-read", BODIES[route.name])
        assert resp.status == 403
        assert h.controls == []

    run(tmp_path, test)


@pytest.mark.parametrize("route", [r for r in AUTHED if "{" in r.path], ids=lambda r: r.name)
def test_another_tenants_objects_are_404_not_403(tmp_path: Path, route: Any) -> None:
    async def test(h: Harness) -> None:
        # globex's model (and globex's pending request) seen with an acme token
        path = path_for(route.path, tenant="globex", request_id=GLOBEX_REQUEST)
        resp = await call(h, route.method, path, "acme-write", BODIES.get(route.name))
        assert resp.status == 404, route.name
        missing = path_for(route.path, tenant="initech", request_id="no-such-request")
        resp2 = await call(h, route.method, missing, "acme-write", BODIES.get(route.name))
        # the same answer as for something that does not exist at all
        assert resp2.status == 404
        assert (await resp.json())["error"]["code"] == (await resp2.json())["error"]["code"]
        assert h.controls == []

    run(tmp_path, test)


def test_lists_show_only_the_callers_tenants(tmp_path: Path) -> None:
    async def test(h: Harness) -> None:
        for who, tenants in (("acme-read", {"acme"}), ("globex-write", {"globex"}),
                             ("admin", {"acme", "globex"})):  # fmt: skip
            models = (await (await call(h, "GET", "/v1/models", who)).json())["models"]
            assert {m["tenant"] for m in models} == tenants, who
            approvals = (await (await call(h, "GET", "/v1/approvals", who)).json())["approvals"]
            assert {a["tenant"] for a in approvals} == tenants & {"acme", "globex"}
            alerts = (await (await call(h, "GET", "/v1/alerts", who)).json())["alerts"]
            assert alerts and {a["tenant"] for a in alerts} <= tenants

    run(tmp_path, test)


def test_auth_off_lets_everyone_see_everything(tmp_path: Path) -> None:
    async def test(h: Harness) -> None:
        models = (await (await call(h, "GET", "/v1/models", None)).json())["models"]
        assert {m["tenant"] for m in models} == {"acme", "globex"}

    run(tmp_path, test, auth_on=False)


def test_rate_limit_per_token(tmp_path: Path) -> None:
    async def test(h: Harness) -> None:
        statuses = [(await call(h, "GET", "/v1/models", "acme-read")).status for _ in range(5)]
        assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]
        limited = await call(h, "GET", "/v1/models", "acme-read")
        assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
        # another token has its own bucket
        assert (await call(h, "GET", "/v1/models", "admin")).status == 200

    run(tmp_path, test, rate=0.2, burst=3)


@pytest.mark.parametrize("name", sorted(BODIES))
def test_bodies_are_validated(tmp_path: Path, name: str) -> None:
    route = next(r for r in ROUTES if r.name == name)

    async def test(h: Harness) -> None:
        path = path_for(route.path)
        send = h.client.request
        cases: list[tuple[dict[str, Any], int]] = [
            ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400),
            ({"data": b"reason=x", "headers": {"Content-Type": "text/plain"}}, 415),
            ({"json": [1, 2]}, 400),
            ({"json": {}}, 400),
            ({"json": {**BODIES[name], "surprise": 1}}, 400),
            ({"json": {k: 5 for k in BODIES[name]}}, 400),
            ({"json": {**BODIES[name], "reason": "x" * 5000}}, 400),
        ]
        for kwargs, status in cases:
            headers = {**auth("admin"), **kwargs.pop("headers", {})}
            resp = await send(route.method, path, headers=headers, **kwargs)
            assert resp.status == status, (kwargs, await resp.text())
            assert (await resp.json())["error"]["message"]
        # Found by review: nested too deeply was a 500; an unpaired surrogate in a string was
        # accepted, then refused by the retrain worker's parser (the control message lost);
        # bytes that are not UTF-8 (UTF-16 here) are not JSON text.
        for raw in (
            b"[" * 40_000,
            json.dumps({**BODIES[name], "note": "x \ud800"}).encode(),  # escaped: ASCII
            b'{"note": "\xff"}',
            json.dumps(BODIES[name]).encode("utf-16"),
        ):
            headers = {**auth("admin"), "Content-Type": "application/json"}
            resp = await send(route.method, path, headers=headers, data=raw)
            assert resp.status == 400, (raw[:40], await resp.text())
            assert (await resp.json())["error"]["code"] == "bad_json", raw[:40]
        assert h.controls == []

    run(tmp_path, test)


def test_body_size_is_limited(tmp_path: Path) -> None:
    async def test(h: Harness) -> None:
        body = json.dumps({"reason": "x" * 5000}).encode()
        resp = await h.client.post(
            "/v1/models/acme/fraud/retrain", data=body,
            headers={**auth("admin"), "Content-Type": "application/json"},
        )  # fmt: skip
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "too_large"

    run(tmp_path, test, max_body=1024)


def test_models_performance_and_drift_answer_from_the_state(tmp_path: Path) -> None:
    async def test(h: Harness) -> None:
        models = (await (await call(h, "GET", "/v1/models", "admin")).json())["models"]
        acme = next(m for m in models if m["tenant"] == "acme")
        assert acme["active_version"] == "r1"  # from model-events
        assert acme["versions"] == ["v1"] and acme["features"] == 4
        assert sum(acme["open_incidents"].values()) >= 1  # amount drifts
        one = await (await call(h, "GET", "/v1/models/acme/fraud", "acme-read")).json()
        assert one["open_incidents"] == acme["open_incidents"]

        perf = await (await call(h, "GET", "/v1/models/acme/fraud/performance", "acme-read")).json()
        rows = perf["windows"]
        assert rows and all(r["model_version"] == "v1" for r in rows)
        assert all(0 <= r["accuracy"] <= 1 and r["pr_auc_error_bound"] >= 0 for r in rows
                   if r["accuracy"] is not None)  # fmt: skip
        frm = "2026-01-25T00:00:00Z"
        later = await call(h, "GET", f"/v1/models/acme/fraud/performance?from={frm}&to="
                                     f"{START + 28 * DAY}", "acme-read")  # fmt: skip
        window = [r["window_start"] for r in (await later.json())["windows"]]
        assert window and min(window) >= "2026-01-24" and max(window) < "2026-01-29"
        bad = await call(h, "GET", "/v1/models/acme/fraud/performance?from=yesterday", "admin")
        assert bad.status == 400
        backwards = await call(h, "GET", f"/v1/models/acme/fraud/performance?from={frm}&to="
                                         "2026-01-01T00:00:00Z", "admin")  # fmt: skip
        assert backwards.status == 400
        assert (await backwards.json())["error"]["message"] == "to is earlier than from"

        drift = await (await call(h, "GET", "/v1/models/acme/fraud/drift", "acme-read")).json()
        assert [i["feature"] for i in drift["open_incidents"] if i["kind"] == "statistical"] == [
            "amount"
        ]
        amount = next(f for f in drift["features"] if f["feature"] == "amount")
        assert amount["drifting"] and amount["latest"] is not None
        ks = next(t for t in amount["latest"]["tests"] if t["test"] == "ks")
        assert ks["drifting"] and ks["p_value"] < 0.01 and ks["effect_size"] >= ks["threshold"]
        quiet = next(f for f in drift["features"] if f["feature"] != "amount"
                     and f["kind"] == "numeric")  # fmt: skip
        assert not quiet["drifting"] and quiet["latest"]["tests"]

    run(tmp_path, test)


def test_drift_answer_ranks_open_incidents_by_impact(tmp_path: Path) -> None:
    """Open incidents carry effect_size, importance (and its source) and impact, and come in
    the rank order: impact first, incidents without one (performance) after; the registry's
    importances of the active version (from model-events) win over the association."""
    fields = {"effect_size", "importance", "importance_source", "impact"}
    incident_schema = openapi_document()["components"]["schemas"]["Incident"]["properties"]
    assert fields <= set(incident_schema)

    def order(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        sev = {"LOW": 0, "MEDIUM": 1, "HIGH": 2, "CRITICAL": 3}
        return [
            (r["impact"] is None, -(r["impact"] or 0.0), -sev[r["severity"]], r["feature"] or "")
            for r in rows
        ]

    async def test(h: Harness) -> None:
        drift = await (await call(h, "GET", "/v1/models/acme/fraud/drift", "acme-read")).json()
        rows = drift["open_incidents"]
        assert rows and all(fields <= set(r) for r in rows)
        assert order(rows) == sorted(order(rows))
        statistical = [r for r in rows if r["kind"] == "statistical"]
        assert statistical and all(r["importance_source"] == "association" for r in statistical)
        for r in statistical:
            assert r["impact"] == pytest.approx(r["importance"] * r["effect_size"])
        assert all(r["importance_source"] is None and r["impact"] is None
                   for r in rows if r["kind"] != "statistical")  # fmt: skip

    run(tmp_path, test)

    async def with_registry(h: Harness) -> None:
        # A promoted version whose training recorded importances: they rank the incidents.
        promoted = ModelEvent(ModelAction.PROMOTED, "acme", "fraud", "r2", "r1", "test",
                              START, START + 27 * DAY, None, {}, {"amount": 0.6})  # fmt: skip
        h.api.catalog.apply("model", promoted.to_json())
        resp = await call(h, "GET", "/v1/models/acme/fraud/drift", "acme-read")
        rows = (await resp.json())["open_incidents"]
        amount = next(r for r in rows if r["feature"] == "amount")
        assert amount["importance_source"] == "registry" and amount["importance"] == 0.6
        assert amount["impact"] == pytest.approx(0.6 * amount["effect_size"])
        assert order(rows) == sorted(order(rows))

    run(tmp_path, with_registry)


def test_report_is_the_html_page(tmp_path: Path) -> None:
    async def test(h: Harness) -> None:
        resp = await call(h, "GET", "/v1/models/acme/fraud/report", "acme-read")
        assert resp.status == 200 and resp.content_type == "text/html"
        html = await resp.text()
        assert "acme" in html and "amount" in html and "<table" in html and "<svg" in html

    run(tmp_path, test)


def test_writes_reach_retrain_control_with_who_asked(tmp_path: Path) -> None:
    async def test(h: Harness) -> None:
        resp = await call(h, "POST", "/v1/models/acme/fraud/retrain", "acme-write",
                          {"reason": "new data", "requested_by": "ana"})  # fmt: skip
        assert resp.status == 202
        rid = (await resp.json())["request_id"]
        key, value = h.controls[-1]
        assert key == f"retrain:{rid}"
        assert value["action"] == "retrain" and value["tenant"] == "acme"
        assert value["reason"] == "new data" and value["by"] == "acme-write (ana)"

        resp = await call(h, "POST", "/v1/models/acme/fraud/rollback", "acme-write",
                          {"reason": "bad", "to_version": "v1"})  # fmt: skip
        assert resp.status == 202 and h.controls[-1][1]["to"] == "v1"

        resp = await call(h, "POST", f"/v1/approvals/{PENDING_REQUEST}", "acme-write",
                          {"decision": "reject", "reason": "not now"})  # fmt: skip
        assert resp.status == 202
        assert h.controls[-1] == (
            f"approval:{PENDING_REQUEST}",
            {"decision": "reject", "by": "acme-write", "note": "not now",
             "at": h.controls[-1][1]["at"]},
        )  # fmt: skip
        done = await call(h, "POST", f"/v1/approvals/{DONE_REQUEST}", "acme-write",
                          {"decision": "approve", "reason": "x"})  # fmt: skip
        assert done.status == 400  # not waiting for anyone

        resp = await call(h, "PUT", "/v1/tenants/acme/auto-retrain", "acme-write",
                          {"enabled": False})  # fmt: skip
        assert resp.status == 202
        assert h.controls[-1][0] == "flag:tenant:acme"
        assert h.controls[-1][1]["auto_retrain"] is False
        # With an allow-list, a tenant outside it (a typo) is refused, not flagged silently;
        # without one, any tenant may come later, and its flag can be set before it does.
        h.api.tenants = frozenset({"acme", "globex"})
        sent = len(h.controls)
        typo = await call(h, "PUT", "/v1/tenants/acmee/auto-retrain", "admin", {"enabled": False})
        body = await typo.json()
        assert typo.status == 404 and "DRIFTWATCH_TENANTS" in body["error"]["message"]
        assert len(h.controls) == sent
        listed = await call(h, "PUT", "/v1/tenants/globex/auto-retrain", "admin", {"enabled": True})
        assert listed.status == 202 and h.controls[-1][0] == "flag:tenant:globex"

    run(tmp_path, test)


def test_health_and_readiness(tmp_path: Path) -> None:
    async def test(h: Harness) -> None:
        assert (await call(h, "GET", "/healthz", None)).status == 200
        ok = await call(h, "GET", "/readyz", None)
        assert ok.status == 200 and (await ok.json())["status"] == "ready"
        h.ready_reason[0] = "recovering tables from their changelogs"
        not_ready = await call(h, "GET", "/readyz", None)
        assert not_ready.status == 503
        assert "recovering" in (await not_ready.json())["reason"]

    run(tmp_path, test)


def test_unknown_paths_and_methods_answer_json(tmp_path: Path) -> None:
    async def test(h: Harness) -> None:
        resp = await call(h, "GET", "/v1/nothing", "admin")
        assert resp.status == 404 and (await resp.json())["error"]
        resp = await call(h, "DELETE", "/v1/models", "admin")
        assert resp.status == 405 and (await resp.json())["error"]

    run(tmp_path, test)


def test_an_alert_cursor_never_read_is_refused_and_one_pushed_out_resumes_from_the_oldest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An id never read here (a typo, another tenant's, one newer than this worker has read)
    got every alert held, oldest first: now a 404 (503 while the alerts topic is still being
    read: try again). An id pushed out of those held resumes from the oldest held, all newer
    than it (what was between is gone from here)."""
    from agents.api import catalog as catalog_module

    async def test(h: Harness) -> None:
        resp = await call(h, "GET", "/v1/alerts?after=gone", "acme-read")
        body = await resp.json()
        assert resp.status == 404 and body["error"]["code"] == "unknown_alert", body
        assert "'gone'" in body["error"]["message"]
        with pytest.raises(WSServerHandshakeError) as refused:  # relayed by the front
            await h.client.ws_connect("/v1/alerts/stream?after=gone", headers=auth("acme-read"))
        assert refused.value.status == 404
        # Another tenant's id is not one to resume after (nor to learn exists).
        globex = Alert(alert_id("g", "opened"), AlertKind.INCIDENT, "opened", "globex", "fraud",
                       Severity.HIGH, "t", "x", START, START)  # fmt: skip
        h.api.catalog.apply("alert", globex.to_json())
        assert (
            await call(h, "GET", f"/v1/alerts?after={globex.alert_id}", "acme-read")
        ).status == 404
        assert (await call(h, "GET", f"/v1/alerts?after={globex.alert_id}", "admin")).status == 200
        # Pushed out of the alerts held: the oldest held follow it.
        held = [a["alert_id"] for a in (await (await call(h, "GET", "/v1/alerts?limit=1000",
                                                          "admin")).json())["alerts"]]  # fmt: skip
        monkeypatch.setattr(catalog_module, "MAX_EVICTED", 1)
        h.api.catalog.alerts = deque(h.api.catalog.alerts, maxlen=len(held))
        newer = Alert(alert_id("n", "opened"), AlertKind.INCIDENT, "opened", "acme", "fraud",
                      Severity.HIGH, "t", "x", START, START)  # fmt: skip
        h.api.catalog.apply("alert", newer.to_json())  # pushes held[0] out
        resumed = await (await call(h, "GET", f"/v1/alerts?after={held[0]}&limit=1000",
                                    "admin")).json()  # fmt: skip
        assert [a["alert_id"] for a in resumed["alerts"]] == [*held[1:], newer.alert_id]
        h.api.catalog.caught_up.clear()
        resp = await call(h, "GET", "/v1/alerts?after=gone", "acme-read")
        assert resp.status == 503 and resp.headers["Retry-After"] == "1"

    run(tmp_path, test)


def test_an_after_longer_than_the_documented_64_characters_is_a_400(tmp_path: Path) -> None:
    """The document says ``after`` is at most 64 characters: a longer one was looked up,
    never found, and answered 404 (as an id maybe not read yet); it is a bad parameter."""

    async def test(h: Harness) -> None:
        for n, status, code in ((65, 400, "bad_parameter"), (64, 404, "unknown_alert")):
            after = "a" * n
            resp = await call(h, "GET", f"/v1/alerts?after={after}", "acme-read")
            body = await resp.json()
            assert (resp.status, body["error"]["code"]) == (status, code), (n, body)
            with pytest.raises(WSServerHandshakeError) as refused:  # the stream's the same
                await h.client.ws_connect(f"/v1/alerts/stream?after={after}",
                                          headers=auth("acme-read"))  # fmt: skip
            assert refused.value.status == status

    run(tmp_path, test)


def test_alerts_list_and_live_stream_resume(tmp_path: Path) -> None:
    async def test(h: Harness) -> None:
        alerts = (await (await call(h, "GET", "/v1/alerts", "acme-read")).json())["alerts"]
        assert len(alerts) >= 2
        first = alerts[0]["alert_id"]
        after = await (await call(h, "GET", f"/v1/alerts?after={first}", "acme-read")).json()
        assert [a["alert_id"] for a in after["alerts"]] == [a["alert_id"] for a in alerts[1:]]
        assert (await call(h, "GET", "/v1/alerts?limit=0", "acme-read")).status == 400

        ws = await h.client.ws_connect(
            f"/v1/alerts/stream?after={first}", headers=auth("acme-read")
        )
        backlog = [await ws.receive_json(timeout=5) for _ in alerts[1:]]
        assert [a["alert_id"] for a in backlog] == [a["alert_id"] for a in alerts[1:]]
        for tenant in ("globex", "acme"):  # the globex one must not reach an acme reader
            live = Alert(
                alert_id(f"live-{tenant}", "opened"), AlertKind.INCIDENT, "opened", tenant,
                "fraud", Severity.HIGH, "t", "x", START, START,
            )  # fmt: skip
            h.api.catalog.apply("alert", live.to_json())
        msg = await ws.receive_json(timeout=5)
        assert msg["tenant"] == "acme" and msg["alert_id"] == alert_id("live-acme", "opened")
        await ws.close()
        assert (await ws.receive()).type in (WSMsgType.CLOSED, WSMsgType.CLOSE)
        assert h.api.catalog.subscribers == set()  # cleaned up

        denied = await h.client.get("/v1/alerts/stream")
        assert denied.status == 401

    run(tmp_path, test)


def edit_tokens(directory: Path, tenants: dict[str, list[str] | None]) -> None:
    """The harness's tokens file with some tokens' tenants changed (None: the token revoked)."""
    path = directory / "tokens.json"
    data = json.loads(path.read_text())
    data["tokens"] = [
        {**e, "tenants": tenants.get(e["name"], e["tenants"])}
        for e in data["tokens"]
        if tenants.get(e["name"], e["tenants"]) is not None
    ]
    path.write_text(json.dumps(data))


def test_an_open_alert_stream_follows_its_token_in_the_tokens_file(tmp_path: Path) -> None:
    """A stream checked its token once, when it opened: one revoked or narrowed in the file
    meanwhile kept its tenants until the caller hung up. Now a narrowed token's stream stops
    sending the tenants it lost, and a revoked one's is closed (1008, with its reason, through
    the front) at its next alert, or at its next recheck when none comes."""

    def live(tenant: str, n: int) -> Alert:
        return Alert(alert_id(f"live-{tenant}-{n}", "opened"), AlertKind.INCIDENT, "opened",
                     tenant, "fraud", Severity.HIGH, "t", "x", START, START)  # fmt: skip

    async def opened(h: Harness, who: str) -> Any:
        held = (await (await call(h, "GET", "/v1/alerts?limit=1000", who)).json())["alerts"]
        ws = await h.client.ws_connect("/v1/alerts/stream", headers=auth(who))
        for _ in held:  # the backlog first
            await ws.receive_json(timeout=5)
        return ws

    async def closed_as_revoked(ws: Any) -> None:
        msg = await ws.receive(timeout=5)
        assert msg.type == WSMsgType.CLOSE, msg
        assert msg.data == 1008 and "revoked" in msg.extra, msg

    async def test(h: Harness) -> None:
        assert h.api.tokens is not None  # (the front's too, in this harness)
        h.api.tokens.check_every = 0.0
        h.api.stream_recheck_seconds = 60.0  # only alerts make it look again
        admin, reader = await opened(h, "admin"), await opened(h, "acme-read")
        edit_tokens(tmp_path, {"admin": ["acme"]})
        for alert in (live("globex", 1), live("acme", 1)):
            h.api.catalog.apply("alert", alert.to_json())
        got = await admin.receive_json(timeout=5)
        assert got["alert_id"] == live("acme", 1).alert_id, "a tenant the token lost was sent"
        assert (await reader.receive_json(timeout=5))["alert_id"] == live("acme", 1).alert_id

        edit_tokens(tmp_path, {"acme-read": None})  # revoked: closed at its next alert
        h.api.catalog.apply("alert", live("acme", 2).to_json())
        await closed_as_revoked(reader)
        assert (await admin.receive_json(timeout=5))["alert_id"] == live("acme", 2).alert_id

        h.api.stream_recheck_seconds = 0.2  # revoked with no alert to come: the recheck
        quiet = await opened(h, "globex-write")
        edit_tokens(tmp_path, {"globex-write": None})
        await closed_as_revoked(quiet)
        await admin.close()
        for _ in range(50):
            if not h.api.catalog.subscribers:
                break
            await asyncio.sleep(0.05)
        assert h.api.catalog.subscribers == set()  # every stream let go of its queue

    run(tmp_path, test)


def test_failures_answer_an_error_id_and_log_their_detail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 503 said the exception's text (a broker's host and address, a state directory),
    which is the operator's to read: the caller gets a generic message and an error id, and
    the log has the detail under that id. A 500 says its id too."""
    from agents.api.server import LocalState

    secrets = ("kafka-7.corp.internal", "10.20.30.40", "/var/lib/driftwatch", "Errno")

    async def refused(key: str, value: dict[str, Any]) -> None:
        raise RuntimeError("KafkaError{code=_TRANSPORT,str=\"kafka-7.corp.internal:9092/7: "
                           "Connect to ipv4#10.20.30.40:9092 failed\"}")  # fmt: skip

    def unreadable() -> Any:
        raise OSError(13, "Permission denied", "/var/lib/driftwatch/state/rocksdb")

    def broken() -> Any:
        raise OSError(28, "No space left on device", "/var/lib/driftwatch/x")

    async def answered(resp: Any, status: int, code: str) -> None:
        body = await resp.json()
        assert (resp.status, body["error"]["code"]) == (status, code), body
        message = body["error"]["message"]
        assert not [s for s in secrets if s in message], message
        error_id = body["error"].get("id", "")
        assert re.fullmatch(r"[0-9a-f]{8}", error_id) and f"error id {error_id}" in message
        logged = [r for r in caplog.records if error_id in r.getMessage()]
        assert logged, f"error id {error_id} not in the log"
        detail = logged[0].getMessage() + (logged[0].exc_text or "")
        assert any(s in detail for s in secrets), detail

    async def test(h: Harness) -> None:
        h.api.send_control = refused
        retrain = path_for("/v1/models/{tenant}/{model}/retrain")
        await answered(await call(h, "POST", retrain, "acme-write", BODIES["post_retrain"]),
                       503, "unavailable")  # fmt: skip
        h.api.local = LocalState(drift=unreadable, perf=unreadable)
        await answered(await call(h, "GET", "/v1/models/acme/fraud/drift", "acme-read"),
                       503, "unavailable")  # fmt: skip
        h.api.catalog.pending_approvals = broken  # type: ignore[method-assign]
        await answered(await call(h, "GET", "/v1/approvals", "acme-read"), 500, "internal_error")

    with caplog.at_level(logging.WARNING):
        run(tmp_path, test)


def test_stale_answers_are_served_while_a_fresh_one_is_computed() -> None:
    """No request waits for a recomputation once an answer exists: past its fresh time the
    old one is served and one refresh runs in the background; past the stale time a request
    computes again."""
    from agents.api.server import Api

    api = Api.__new__(Api)
    api.cache_seconds, api.stale_seconds = 1.0, 30.0
    api._cache, api._refreshing, api._tasks = {}, set(), set()
    calls: list[int] = []

    async def compute() -> web.Response:
        calls.append(len(calls))
        await asyncio.sleep(0.01)
        return web.json_response({"n": len(calls)})

    def age(seconds: float) -> None:
        expires, status, raw, ctype = api._cache[("k",)]
        api._cache[("k",)] = (expires - seconds, status, raw, ctype)

    async def body() -> list[int]:
        out: list[Any] = []
        for _ in range(3):  # one computation, then the cached answer
            out.append((await api._serve(("k",), compute)).body)
        age(1.5)  # past fresh, within stale
        out.append((await api._serve(("k",), compute)).body)  # stale, refresh started
        out.append((await api._serve(("k",), compute)).body)  # still stale: no 2nd refresh
        await asyncio.gather(*api._tasks)
        out.append((await api._serve(("k",), compute)).body)  # the refreshed answer
        age(60)  # past stale: computed in the request
        out.append((await api._serve(("k",), compute)).body)
        return [json.loads(b)["n"] for b in out]

    assert asyncio.run(body()) == [1, 1, 1, 1, 1, 2, 3]
    assert calls == [0, 1, 2]


# Each unsafe name as it appears in a URL path, and why it is unsafe (schemas/names.py).
UNSAFE_PATH_NAMES = {
    "%00": "NUL",
    "..%2F..%2Fetc": "a path",
    "acme%0A": "a newline",
    "a..b": "'..'",
    ".hidden": "a leading dot",
    "-rf": "a leading dash",
    "a%3Ab": "':', the key separator",
    "%C3%A1cme": "a non-ASCII letter",
    "a%20b": "a space",
    "x" * 129: "over 128 characters",
}


def test_unsafe_names_in_paths_are_400_on_every_route(tmp_path: Path) -> None:
    """Every path parameter (tenant, model, request id) follows the one name rule: 400
    ``bad_name`` before anything is looked up or written to retrain-control. A ``..``
    segment never reaches a handler: the router normalises it away (404)."""

    async def test(h: Harness) -> None:
        for route in [r for r in ROUTES if "{" in r.path]:
            params = re.findall(r"\{(\w+)\}", route.path)
            for param in params:
                for bad, why in UNSAFE_PATH_NAMES.items():
                    path = path_for(route.path.replace(f"{{{param}}}", bad))
                    resp = await h.client.request(
                        route.method, path, headers=auth("admin"), json=BODIES.get(route.name)
                    )
                    body = await resp.json()
                    assert (resp.status, body["error"]["code"]) == (400, "bad_name"), (
                        route.name, param, why, body,
                    )  # fmt: skip
                path = path_for(route.path.replace(f"{{{param}}}", ".."))
                resp = await h.client.request(route.method, path, headers=auth("admin"))
                assert resp.status == 404, (route.name, param)
        rollback = await h.client.post(
            path_for("/v1/models/{tenant}/{model}/rollback"), headers=auth("admin"),
            json={"reason": "x", "to_version": "../v1"},
        )  # fmt: skip
        assert (
            rollback.status == 400 and "to_version" in (await rollback.json())["error"]["message"]
        )
        assert h.controls == []  # nothing was asked of the retrain worker

    run(tmp_path, test)


def test_a_cursor_pushed_out_of_the_catalog_keeps_its_tenant() -> None:
    """Another tenant's id is unknown to a caller whether it is held or was pushed out
    (else the answer would tell it exists)."""
    from agents.api.catalog import Catalog, UnknownCursor

    catalog = Catalog()
    catalog.alerts = deque(maxlen=2)

    def made(name: str, tenant: str) -> Alert:
        a = Alert(alert_id(name, "opened"), AlertKind.INCIDENT, "opened", tenant, "fraud",
                  Severity.HIGH, "t", "x", START, START)  # fmt: skip
        catalog.apply("alert", a.to_json())
        return a

    g, a1, a2 = made("g", "globex"), made("a1", "acme"), made("a2", "acme")  # g pushed out
    catalog.caught_up.set()

    def acme(tenant: str) -> bool:
        return tenant == "acme"

    with pytest.raises(UnknownCursor):
        catalog.alerts_after(acme, g.alert_id, 10)
    every = [e.alert.alert_id for e in catalog.alerts_after(lambda t: True, g.alert_id, 10)]
    assert every == [a1.alert_id, a2.alert_id]  # the oldest held: all newer than it


def test_an_alert_published_again_once_pushed_out_is_not_a_new_alert() -> None:
    """Ids are stable: the same change published again (a repeat after a crash, a rollback
    read again) is the same alert. Once pushed out of those held it got a new cursor: the
    live streams were sent it a second time, and a reader resuming ``?after=`` it (read at
    its first place) skipped every alert held between its two places."""
    from agents.api.catalog import Catalog

    catalog = Catalog()
    catalog.alerts = deque(maxlen=2)
    made = [
        Alert(alert_id(name, "opened"), AlertKind.INCIDENT, "opened", "acme", "fraud",
              Severity.HIGH, "t", "x", START, START)
        for name in ("x", "a1", "a2")
    ]  # fmt: skip
    x, a1, a2 = made
    for a in made:
        catalog.apply("alert", a.to_json())  # x pushed out
    catalog.caught_up.set()

    def everyone(tenant: str) -> bool:
        return True

    def after(alert_id: str | None) -> list[str]:
        return [e.alert.alert_id for e in catalog.alerts_after(everyone, alert_id, 10)]

    live: asyncio.Queue[Any] = asyncio.Queue(maxsize=10)  # a stream connected meanwhile
    catalog.subscribers.add(live)
    catalog.apply("alert", x.to_json())  # published again
    assert live.empty()  # not sent again
    assert after(x.alert_id) == [a1.alert_id, a2.alert_id]  # nothing between skipped
    assert after(None) == [a1.alert_id, a2.alert_id]  # nor held again, as the newest


def test_odd_request_lines_and_headers_are_refused_not_failed(tmp_path: Path) -> None:
    """Found by review: an Authorization header whose bytes are not text, and an absolute-form
    request target (``GET http://host/v1/...``), were 500s (a token hashed strictly, an
    upstream URL made of the whole target)."""

    async def raw(h: Harness, request: bytes) -> bytes:
        server = h.client.server
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4000), 10)
        writer.close()
        return answer.split(b"\r\n", 1)[0]

    async def test(h: Harness) -> None:
        token = auth("acme-read")["Authorization"].encode()
        cases = {
            b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n": b"401",
            b"GET http://elsewhere/v1/models/acme/fraud HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: " + token + b"\r\n": b"400",
        }
        for request, status in cases.items():
            line = await raw(h, request + b"Connection: close\r\n\r\n")
            assert line.split(b" ")[1] == status, (request[:40], line)

    run(tmp_path, test)
