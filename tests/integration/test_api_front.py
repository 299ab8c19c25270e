"""The API front on a real worker: the public port is a child process of the worker that
authenticates, caches per caller and forwards to the worker's own server (loopback, secret
required); it keeps answering from its cache while the worker is frozen, fails /healthz then
instead of hanging, is restarted when it dies, and dies with the worker."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from driftwatch.devbroker import free_port
from driftwatch.simulate import SimulationConfig, generate
from runtime.topics import WORKER_TOPICS as TOPICS
from runtime.topics import ensure_topics
from tests.api_fixtures import auth, tokens_file
from tests.integration.worker_harness import WorkerProcess, produce_recorded

START = 1_767_225_600.0
TRAFFIC = SimulationConfig(
    seed=41, tenants=("acme", "globex"), models=("fraud",), days=2, events_per_day=200,
    numeric_features=3, categorical_features=1, start=START,
)  # fmt: skip


def get(port: int, path: str, headers: dict[str, str], timeout: float = 20) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_for(what: str, check: Any, w: WorkerProcess | None, timeout: float = 90.0) -> Any:
    """Until ``check()`` is truthy, the worker (if given) staying alive."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if w is not None:
            w.assert_alive()
        try:
            found = check()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(0.3)
    log = w.log_tail() if w is not None else ""
    raise AssertionError(f"{what}: not in {timeout:.0f} s; log:\n{log}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by the worker) is not alive either
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def only_front(w: WorkerProcess) -> int:
    kids = w.children()
    assert len(kids) == 1, f"the worker's children: {kids}"
    return kids[0]


def test_the_public_port_is_the_api_front(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    internal = free_port()
    w = WorkerProcess(
        bootstrap=kafka_bootstrap, prefix=f"{unique_prefix}-", data_dir=tmp_path / "state",
        log_path=tmp_path / "worker.log",
        extra_env={
            "DRIFTWATCH_API_AUTH": "on", "DRIFTWATCH_API_TOKENS_FILE": str(tokens_file(tmp_path)),
            "DRIFTWATCH_API_INTERNAL_PORT": str(internal),
            # answers stay fresh the whole test: what is cached is what could leak
            "DRIFTWATCH_API_CACHE_SECONDS": "120", "DRIFTWATCH_API_HEALTH_TIMEOUT_SECONDS": "2",
        },
    )  # fmt: skip
    ensure_topics(kafka_bootstrap, {w.topic(t): w.partitions for t in TOPICS})
    w.start()
    try:
        port = w.api_port
        wait_for("ready", lambda: get(port, "/readyz", {})[0] == 200, w)
        front = only_front(w)
        traffic: list[tuple[bytes | None, bytes]] = [
            (p.stream_key.encode(), p.to_json()) for p in generate(TRAFFIC)
        ]
        produce_recorded(w.bootstrap, w.topic("predictions"), traffic)

        def both_models() -> bool:
            return all(
                get(port, f"/v1/models/{t}/fraud", auth("admin"))[0] == 200
                for t in ("acme", "globex")
            )

        wait_for("both models", both_models, w)

        # answered through the public port; the token is checked there
        status, listing = get(port, "/v1/models", auth("admin"))
        assert status == 200 and {m["tenant"] for m in listing["models"]} == {"acme", "globex"}
        assert get(port, "/v1/models", {"Authorization": "Bearer not-a-token"})[0] == 401
        assert get(port, "/v1/models", {})[0] == 401
        assert get(port, "/v1/models/acme/fraud/retrain", auth("acme-read"))[0] == 405

        # admin's answers are cached (fresh for 120 s); another tenant's token never gets them
        assert get(port, "/v1/models/globex/fraud", auth("admin"))[0] == 200
        assert get(port, "/v1/models/globex/fraud", auth("acme-read"))[0] == 404
        acme_list = get(port, "/v1/models", auth("acme-read"))[1]["models"]
        assert [m["tenant"] for m in acme_list] == ["acme"]
        assert get(port, "/v1/models/globex/fraud", auth("globex-write"))[0] == 200

        # the worker's own server answers the front only
        for headers in ({}, {"X-Driftwatch-Front-Secret": "guess"}):
            status, body = get(internal, "/v1/models", {**auth("admin"), **headers})
            assert status == 403 and body["error"]["code"] == "forbidden"
        assert get(internal, "/healthz", {})[0] == 403

        # the front's requests are counted in the worker's metrics, by route and status
        def counted() -> bool:
            metrics = w.metrics()
            name = 'driftwatch_api_requests_total{method="GET",route="%s",status="%d"}'
            return (
                metrics.get(name % ("get_model", 404), 0) >= 1
                and metrics.get(name % ("list_models", 401), 0) >= 2
            )

        wait_for("front counts in /metrics", counted, w, timeout=15)

        # a frozen worker: cached answers still come (from the front), /healthz fails fast
        assert w.proc is not None
        w.proc.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            status, body = get(port, "/v1/models/globex/fraud", auth("admin"), timeout=5)
            assert status == 200 and body["tenant"] == "globex"
            assert time.monotonic() - t0 < 1.0
            t0 = time.monotonic()
            status, body = get(port, "/healthz", {}, timeout=15)
            assert status == 503 and body["status"] == "unhealthy", body
            assert time.monotonic() - t0 < 5.0
        finally:
            w.proc.send_signal(signal.SIGCONT)
        assert get(port, "/healthz", {})[0] == 200

        # a front that dies is started again by the worker
        os.kill(front, signal.SIGKILL)
        wait_for("front restarted", lambda: [p for p in w.children() if p != front], w, 30)
        wait_for("public port again", lambda: get(port, "/readyz", {})[0] == 200, w, 30)
        assert "exited (signal SIGKILL)" in w.log_path.read_text(errors="replace")
        assert not alive(front)
        front = only_front(w)

        # stopped with the worker
        assert w.stop(signal.SIGTERM) is not None
        wait_for("front stopped", lambda: not alive(front), None, 10)

        # and dies with it: a worker killed outright takes its front along
        w.start()
        wait_for("ready again", lambda: get(port, "/readyz", {})[0] == 200, w)
        front = only_front(w)
        w.stop(signal.SIGKILL)
        wait_for("front gone with the worker", lambda: not alive(front), None, 10)
    finally:
        w.stop()
