"""An API over real detection state, in-process, behind its front as in a worker: the client
talks to the front (:mod:`agents.api.front`), which forwards to the worker's API
(:class:`agents.api.server.Api`, refusing requests without the front's secret). The backtest's
engine fills the stores, the catalog gets retrain and model events and alerts, and tokens
cover each auth case."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from agents.alerts import model_alert, retrain_alert
from agents.api.auth import RateLimiter, TokenStore, hash_token
from agents.api.catalog import Catalog
from agents.api.front import Front
from agents.api.front_process import record_into
from agents.api.server import Api, LocalState
from agents.metrics import WorkerMetrics
from driftwatch.backtest import run_backtest
from driftwatch.simulate import DriftSpec, DriftType, SimulationConfig, generate, generate_outcomes
from schemas import ModelAction, ModelEvent, RetrainEvent, RetrainStatus
from streams.config import EngineConfig, PerformanceConfig
from streams.keyed_state import MemoryStore

START = 1_767_225_600.0
DAY = 86_400.0
ENGINE = EngineConfig(
    baseline_start_days=14, baseline_end_days=7, min_baseline_windows=5, retention_days=16,
    seasonal_period_days=0,
)  # fmt: skip
PERF = PerformanceConfig(engine=ENGINE)

TOKENS = {
    "acme-read": ("tok-acme-read", ["acme"], ["read"]),
    "acme-write": ("tok-acme-write", ["acme"], ["read", "write"]),
    "globex-write": ("tok-globex-write", ["globex"], ["read", "write"]),
    "admin": ("tok-admin", ["*"], ["read", "write"]),
}
PENDING_REQUEST = "req-acme-pending"
GLOBEX_REQUEST = "req-globex-pending"
DONE_REQUEST = "req-acme-done"


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name][0]}"}


@functools.lru_cache(maxsize=1)
def detection_state() -> tuple[MemoryStore, MemoryStore]:
    """Two tenants' fraud models, 30 days, acme's ``amount`` shifted from day 22."""
    cfg = SimulationConfig(
        seed=5, tenants=("acme", "globex"), models=("fraud",), days=30, events_per_day=300,
        numeric_features=3, categorical_features=1, start=START, label_rate=0.8,
        outcome_delay_hours=(6.0, 30.0),
        drifts=(DriftSpec(DriftType.MEAN_SHIFT, 22, 1.5, features=("amount",),
                          tenants=("acme",)),),
    )  # fmt: skip
    report = run_backtest(list(generate(cfg)), ENGINE, outcomes=list(generate_outcomes(cfg)),
                          performance=PERF)  # fmt: skip
    assert report.feature_state is not None and report.performance_state is not None
    return report.feature_state, report.performance_state


def tokens_file(directory: Path) -> Path:
    path = directory / "tokens.json"
    entries = [
        {"name": name, "sha256": hash_token(tok), "tenants": tenants, "scopes": scopes}
        for name, (tok, tenants, scopes) in TOKENS.items()
    ]
    path.write_text(json.dumps({"tokens": entries}))
    return path


def catalog() -> Catalog:
    c = Catalog()
    now = time.time()
    for rid, tenant, status in (
        (PENDING_REQUEST, "acme", RetrainStatus.AWAITING_APPROVAL),
        (GLOBEX_REQUEST, "globex", RetrainStatus.AWAITING_APPROVAL),
        (DONE_REQUEST, "acme", RetrainStatus.PROMOTED),
    ):
        event = RetrainEvent(rid, tenant, "fraud", "d-" + rid, status, "test", START + 25 * DAY,
                             now, "v1")  # fmt: skip
        c.apply("retrain", event.to_json())
        alert = retrain_alert(event)
        if alert is not None:
            c.apply("alert", alert.to_json())
    promoted = ModelEvent(ModelAction.PROMOTED, "acme", "fraud", "r1", "v1", "test", now,
                          START + 26 * DAY, DONE_REQUEST)  # fmt: skip
    c.apply("model", promoted.to_json())
    c.apply("alert", model_alert(promoted).to_json())
    c.caught_up.set()  # as a worker's once it has read the topics to their end
    return c


SECRET = "front-secret"


@dataclass
class Harness:
    api: Api
    client: TestClient[Any, Any]
    """The public side: the front's."""
    front: Front
    internal: TestServer
    """The worker's own API server, which the front forwards to."""
    controls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    ready_reason: list[str | None] = field(default_factory=lambda: [None])


@asynccontextmanager
async def api_client(
    directory: Path, *, auth_on: bool = True, rate: float = 1000.0, burst: int = 1000,
    max_body: int = 65536,
) -> AsyncIterator[Harness]:  # fmt: skip
    drift, perf = detection_state()
    controls: list[tuple[str, dict[str, Any]]] = []
    ready_reason: list[str | None] = [None]

    async def send_control(key: str, value: dict[str, Any]) -> None:
        controls.append((key, value))

    loop = asyncio.get_running_loop()
    metrics = WorkerMetrics.create(CollectorRegistry())
    tokens = TokenStore.load(tokens_file(directory)) if auth_on else None
    api = Api(
        local=LocalState(drift=lambda: drift, perf=lambda: perf),  # type: ignore[arg-type,return-value]
        catalog=catalog(),
        pcfg=PERF,
        tokens=tokens,
        limiter=RateLimiter(rate, burst),
        send_control=send_control,
        peers=lambda: [],
        ready=lambda: ready_reason[0],
        main_loop=lambda: loop,
        metrics=metrics,
        front_secret=SECRET,
        max_body_bytes=max_body,
    )
    app = web.Application(client_max_size=max_body)
    api.install(app)
    internal = TestServer(app)
    async with internal:
        front = Front(
            upstream=str(internal.make_url("")).rstrip("/"), secret=SECRET, tokens=tokens,
            limiter=RateLimiter(rate, burst), record=record_into(metrics), max_body_bytes=max_body,
        )  # fmt: skip
        async with TestClient(TestServer(front.app())) as client:
            yield Harness(api, client, front, internal, controls, ready_reason)


def later_config(**changes: Any) -> PerformanceConfig:
    return replace(PERF, **changes)
