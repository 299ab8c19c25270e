"""The operating surface on real workers: alerts that reach a webhook once each (signed, also
across a SIGKILL), the live alert stream, and two workers that answer the same for any model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from agents.webhook import verify
from driftwatch.devbroker import free_port
from driftwatch.simulate import DriftSpec, DriftType, SimulationConfig, generate, generate_outcomes
from runtime.topics import WORKER_TOPICS as TOPICS
from runtime.topics import ensure_topics
from schemas import OutcomeEvent, PredictionEvent
from tests.api_fixtures import TOKENS, auth, tokens_file
from tests.integration.kafka_helpers import consume_all
from tests.integration.worker_harness import (
    WorkerProcess,
    produce_recorded,
    stop_all,
    wait_drained,
)

START = 1_767_225_600.0
DAY = 86_400.0
SECRET = b"webhook-test-secret"
PIPELINE = ["predictions", "outcomes", "join-input", "performance-input", "alerts"]
TRAFFIC = SimulationConfig(
    seed=31, tenants=("acme", "globex", "initech"), models=("fraud",), days=22,
    events_per_day=200, numeric_features=3, categorical_features=1, start=START,
    label_rate=0.8, outcome_delay_hours=(6.0, 30.0),
    drifts=(DriftSpec(DriftType.MEAN_SHIFT, 17, 1.5, ("amount",), ("acme",)),),
)  # fmt: skip


@dataclass
class Receiver:
    """A webhook endpoint: records every POST (time, headers, body)."""

    port: int = field(default_factory=free_port)
    posts: list[tuple[float, dict[str, str], bytes]] = field(default_factory=list)
    down: bool = False
    """Answer 503 (and record the POST in ``refused``) while set: the endpoint is down."""
    refused: list[bytes] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Receiver:
        ready = threading.Event()

        async def handle(request: web.Request) -> web.Response:
            if self.down:
                self.refused.append(await request.read())
                return web.json_response({"ok": False}, status=503)
            self.posts.append((time.time(), dict(request.headers), await request.read()))
            return web.json_response({"ok": True})

        async def serve() -> None:
            app = web.Application()
            app.router.add_post("/hook/{rest:.*}", handle)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            ready.set()
            await asyncio.to_thread(self._stop.wait)
            await runner.cleanup()

        self._thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook/secret-path?token=abc"

    def alerts(self) -> list[dict[str, Any]]:
        return [json.loads(body)["alert"] for _, _, body in self.posts]


def traffic() -> tuple[list[PredictionEvent], list[OutcomeEvent]]:
    return list(generate(TRAFFIC)), list(generate_outcomes(TRAFFIC))


def produce_days(
    w: WorkerProcess, predictions: list[Any], outcomes: list[Any], days: range
) -> None:
    for day in days:
        lo, hi = START + day * DAY, START + (day + 1) * DAY
        todays = [
            (p.stream_key.encode(), p.to_json()) for p in predictions if lo <= p.timestamp < hi
        ]
        known = [(o.event_id.encode(), o.to_json()) for o in outcomes if lo <= o.timestamp < hi]
        if todays:
            produce_recorded(w.bootstrap, w.topic("predictions"), todays)
        if known:
            produce_recorded(w.bootstrap, w.topic("outcomes"), known)


def start_and_feed(
    w: WorkerProcess, predictions: list[Any], outcomes: list[Any], days: range
) -> None:
    """The worker's topics made, the worker started and ready, ``days`` of traffic produced
    and every stage drained."""
    ensure_topics(w.bootstrap, {w.topic(t): w.partitions for t in TOPICS})
    w.start()
    wait_ready(w)
    produce_days(w, predictions, outcomes, days)
    wait_drained(w, PIPELINE)


def get(port: int, path: str, who: str = "admin") -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=auth(who))
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            body = resp.read()
            ctype = resp.headers.get_content_type()
            return resp.status, json.loads(body) if ctype == "application/json" else body
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_ready(w: WorkerProcess, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        w.assert_alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{w.api_port}/readyz", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"worker not ready in {timeout}s:\n{w.log_tail()}")


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    return tokens_file(tmp_path)


def make_worker(
    bootstrap: str, prefix: str, tmp_path: Path, name: str, env: dict[str, str]
) -> WorkerProcess:
    w = WorkerProcess(
        bootstrap=bootstrap,
        prefix=prefix,
        data_dir=tmp_path / f"{name}-state",
        log_path=tmp_path / f"{name}.log",
        extra_env={"DRIFTWATCH_CONFIRM_WINDOWS": "2", **env},
    )
    w.extra_env["DRIFTWATCH_API_AUTH"] = "on"
    return w


@pytest.fixture
def workers(kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, tokens: Path) -> Iterator[
    tuple[WorkerProcess, WorkerProcess]
]:  # fmt: skip
    env = {"DRIFTWATCH_API_TOKENS_FILE": str(tokens)}
    a = make_worker(kafka_bootstrap, f"{unique_prefix}-", tmp_path, "a", env)
    b = make_worker(kafka_bootstrap, f"{unique_prefix}-", tmp_path, "b", env)
    ensure_topics(kafka_bootstrap, {a.topic(t): a.partitions for t in TOPICS})
    yield a, b
    stop_all(a, b)


def test_alerts_reach_the_webhook_once_each_signed_also_across_a_sigkill(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, tokens: Path
) -> None:
    secret_file = tmp_path / "hook-secret"
    secret_file.write_bytes(SECRET)
    predictions, outcomes = traffic()
    with Receiver() as hook:
        w = make_worker(kafka_bootstrap, f"{unique_prefix}-", tmp_path, "w", {
            "DRIFTWATCH_API_TOKENS_FILE": str(tokens),
            "DRIFTWATCH_ALERT_WEBHOOK_URL": hook.url,
            "DRIFTWATCH_ALERT_WEBHOOK_SECRET_FILE": str(secret_file),
            "DRIFTWATCH_JOIN_RETENTION_DAYS": "5",
        })  # fmt: skip
        try:
            start_and_feed(w, predictions, outcomes, range(0, 19))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(
                a["change"] == "confirmed" for a in hook.alerts()
            ):
                time.sleep(0.5)
            # SIGKILL once the alerts so far are delivered and recorded: after the restart
            # (its replay of what was not committed) none is delivered again. (A kill between
            # a POST and its record sends that alert again, with the same Idempotency-Key.)
            w.stop(signal.SIGKILL)
            w.start()
            wait_ready(w)
            produce_days(w, predictions, outcomes, range(19, 23))
            # The alerts topic drained: every POST is done (its offset is committed after it).
            wait_drained(w, PIPELINE)
        finally:
            w.stop()
        posts = list(hook.posts)

    alerts = [json.loads(body)["alert"] for _, _, body in posts]
    ids = [a["alert_id"] for a in alerts]
    assert len(ids) == len(set(ids)), "an alert was delivered twice"
    amount = [a for a in alerts if (a["incident"] or {}).get("feature") == "amount"]
    assert {a["change"] for a in amount} >= {"opened", "confirmed"}
    assert all(a["tenant"] == "acme" for a in amount)
    assert not [a for a in alerts if a["kind"] == "incident" and a["tenant"] != "acme"
                and a["incident"]["kind"] == "statistical"]  # fmt: skip
    for _, headers, body in posts:
        assert verify(SECRET, headers["X-Driftwatch-Signature"], body)
        assert headers["Idempotency-Key"] == json.loads(body)["alert"]["alert_id"]
        assert json.loads(body)["text"].startswith("[")  # Slack-compatible text
    # Every alert published is on the topic, with its delivery recorded there too.
    # (each alert and its delivery record, all there: the worker has stopped)
    records = [json.loads(r.value or b"{}") for r in consume_all(
        w.bootstrap, w.topic("alerts"), min_messages=2 * len(set(ids)), idle=1.0)]  # fmt: skip
    on_topic = {r["alert_id"] for r in records if r.get("schema") == "driftwatch.alert/v1"}
    delivered = {r["alert_id"] for r in records if r.get("schema") ==
                 "driftwatch.alert-delivery/v1" and r["status"] == "delivered"}  # fmt: skip
    assert set(ids) <= on_topic and set(ids) <= delivered
    assert all("secret-path" not in json.dumps(r) and "token=abc" not in json.dumps(r)
               for r in records)  # fmt: skip


def test_alerts_raised_while_the_webhook_is_down_arrive_once_it_is_back_also_across_a_sigkill(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, tokens: Path
) -> None:
    """A delivery round that fails on a retryable error (503 here) is tried again later,
    from its record in the table: a worker killed meanwhile goes on after its restart, and
    each alert arrives once the endpoint is back (it used to be lost after ~a minute)."""
    predictions, outcomes = traffic()
    with Receiver(down=True) as hook:
        w = make_worker(kafka_bootstrap, f"{unique_prefix}-", tmp_path, "w", {
            "DRIFTWATCH_API_TOKENS_FILE": str(tokens),
            "DRIFTWATCH_ALERT_WEBHOOK_URL": hook.url,
            "DRIFTWATCH_ALERT_WEBHOOK_MAX_ATTEMPTS": "1",
            "DRIFTWATCH_ALERT_REDELIVERY_FIRST_SECONDS": "5",
        })  # fmt: skip
        try:
            start_and_feed(w, predictions, outcomes, range(0, 19))  # every alert's first round
            # ran (and failed), but those held behind an earlier one of their incident
            refused = {json.loads(body)["alert"]["alert_id"] for body in hook.refused}
            assert refused and not hook.posts
            w.stop(signal.SIGKILL)
            hook.down = False
            w.start()
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not refused <= set(
                a["alert_id"] for a in hook.alerts()
            ):
                w.assert_alive()
                time.sleep(0.5)
        finally:
            w.stop()
        ids = [a["alert_id"] for a in hook.alerts()]
    assert refused <= set(ids), f"{len(refused - set(ids))} alert(s) never arrived"
    assert len(ids) == len(set(ids)), "an alert was delivered twice"
    records = [json.loads(r.value or b"{}") for r in consume_all(
        w.bootstrap, w.topic("alerts"), min_messages=3 * len(refused), idle=1.0)]  # fmt: skip
    rounds = [(r["alert_id"], r["status"], "retry_at" in r) for r in records
              if r.get("schema") == "driftwatch.alert-delivery/v1"]  # fmt: skip
    for alert_id in refused:
        mine = [(status, retry) for a, status, retry in rounds if a == alert_id]
        assert mine[0] == ("failed", True) and mine[-1] == ("delivered", False), mine


def test_two_workers_answer_the_same_for_every_model(
    workers: tuple[WorkerProcess, WorkerProcess],
) -> None:
    a, b = workers
    predictions, outcomes = traffic()
    a.start()
    b.start()
    wait_ready(a)
    wait_ready(b)
    produce_days(a, predictions, outcomes, range(0, 23))
    wait_drained(a, PIPELINE)
    time.sleep(2)
    models = ["acme/fraud", "globex/fraud", "initech/fraud"]
    answers: dict[Any, Any] = {}
    for w in (a, b):
        status, listing = get(w.api_port, "/v1/models")
        assert status == 200 and not listing["partial"]
        assert [f"{m['tenant']}/{m['model']}" for m in listing["models"]] == models
        answers[w.api_port] = listing
        for m in models:
            for what in ("", "/performance", "/drift"):
                status, body = get(w.api_port, f"/v1/models/{m}{what}")
                assert status == 200, (w.api_port, m, what, body)
                answers[(w.api_port, m, what)] = body
    # the same answer from either worker, for every model (each owns only some of them)
    for m in models:
        for what in ("", "/performance", "/drift"):
            assert answers[(a.api_port, m, what)] == answers[(b.api_port, m, what)], (m, what)
    owners: dict[int, set[str]] = {w.api_port: set() for w in (a, b)}
    for w in (a, b):
        for m in models:
            req = urllib.request.Request(
                f"http://127.0.0.1:{w.api_port}/v1/models/{m}",
                headers={**auth("admin"), "X-Driftwatch-Forwarded": "1"},
            )
            try:
                with urllib.request.urlopen(req, timeout=10):
                    owners[w.api_port].add(m)
            except urllib.error.HTTPError:
                pass
    assert owners[a.api_port] and owners[b.api_port], f"not spread over both workers: {owners}"
    assert owners[a.api_port] | owners[b.api_port] == set(models)
    # tenant isolation through forwarding too
    assert get(a.api_port, "/v1/models/globex/fraud", "acme-read")[0] == 404
    assert [m["tenant"] for m in get(b.api_port, "/v1/models", "acme-read")[1]["models"]] == [
        "acme"
    ]
    # a write on one worker for a model the other owns: accepted, on retrain-control once
    remote = next(iter(owners[a.api_port]))
    req = urllib.request.Request(
        f"http://127.0.0.1:{b.api_port}/v1/models/{remote}/retrain", method="POST",
        data=json.dumps({"reason": "two-worker test"}).encode(),
        headers={**auth("admin"), "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=20) as resp:
        assert resp.status == 202
        rid = json.loads(resp.read())["request_id"]
    # (202 comes once the record is on the topic: a second one would be there by now too)
    control = [r for r in consume_all(a.bootstrap, a.topic("retrain-control"), min_messages=1,
                                      idle=1.0) if r.key == f"retrain:{rid}".encode()]  # fmt: skip
    assert len(control) == 1 and json.loads(control[0].value or b"")["by"] == "admin"


def test_alert_stream_pushes_live_alerts(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, tokens: Path
) -> None:
    predictions, outcomes = traffic()
    w = make_worker(kafka_bootstrap, f"{unique_prefix}-", tmp_path, "w",
                    {"DRIFTWATCH_API_TOKENS_FILE": str(tokens)})  # fmt: skip
    ensure_topics(kafka_bootstrap, {w.topic(t): w.partitions for t in TOPICS})
    w.start()
    try:
        wait_ready(w)

        async def listen() -> list[dict[str, Any]]:
            got: list[dict[str, Any]] = []
            async with (
                ClientSession() as session,
                session.ws_connect(
                    f"http://127.0.0.1:{w.api_port}/v1/alerts/stream",
                    headers={"Authorization": f"Bearer {TOKENS['acme-read'][0]}"},
                ) as ws,
            ):
                await asyncio.to_thread(produce_days, w, predictions, outcomes, range(0, 20))
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    with contextlib.suppress(TimeoutError):
                        got.append(await ws.receive_json(timeout=5))
                    if any(a.get("change") == "confirmed" for a in got):
                        break
            return got

        got = asyncio.run(listen())
    finally:
        w.stop()
    assert any(a["change"] == "opened" and a["tenant"] == "acme" for a in got)
    assert all(a["tenant"] == "acme" for a in got)  # an acme token sees acme only
