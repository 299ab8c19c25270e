"""Putting the API on the worker's Faust web server: tokens, the catalog reader, the control
producer, peers and readiness."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import faust
from aiohttp import web

from agents import faust_compat
from agents.api.auth import RateLimiter, TokenFileError, TokenStore
from agents.api.catalog import Catalog, tail
from agents.api.server import Api, LocalState
from agents.metrics import WorkerMetrics
from runtime.settings import Settings
from streams.config import PerformanceConfig

log = logging.getLogger(__name__)


class ApiConfigError(RuntimeError):
    pass


def load_tokens(settings: Settings) -> TokenStore | None:
    """The token store; None when auth is explicitly off. Refuses to run open by accident."""
    if settings.api_auth.strip().lower() == "off":
        log.warning(
            "API AUTHENTICATION IS OFF (DRIFTWATCH_API_AUTH=off): anyone who reaches port %d "
            "can read every tenant's models and act on their retraining",
            settings.api_port,
        )
        return None
    if not settings.api_tokens_file:
        raise ApiConfigError(
            "the API needs tokens: set DRIFTWATCH_API_TOKENS_FILE (see `driftwatch token`), "
            "set DRIFTWATCH_API_PORT=0 to turn the API off, or DRIFTWATCH_API_AUTH=off to run "
            "it without authentication"
        )
    try:
        return TokenStore.load(settings.api_tokens_file)
    except TokenFileError as exc:
        raise ApiConfigError(f"DRIFTWATCH_API_TOKENS_FILE: {exc}") from None


def control_sender(settings: Settings) -> Callable[[str, dict[str, Any]], Any]:
    """Publishes to ``retrain-control`` from the API thread (confluent-kafka is thread-safe;
    the blocking flush runs in a worker thread)."""
    from confluent_kafka import Producer

    producer: list[Any] = []
    topic = settings.topic("retrain-control")

    def produce(key: str, value: dict[str, Any]) -> None:
        if not producer:
            producer.append(
                Producer({"bootstrap.servers": settings.bootstrap, "message.timeout.ms": 10000})
            )
        errors: list[str] = []

        def done(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        producer[0].produce(topic, key=key.encode(), value=json.dumps(value).encode(),
                            on_delivery=done)  # fmt: skip
        if producer[0].flush(12) != 0:
            raise TimeoutError("not delivered in 12 s")
        if errors:
            raise RuntimeError(errors[0])

    async def send(key: str, value: dict[str, Any]) -> None:
        await asyncio.to_thread(produce, key, value)

    return send


def install_api(
    app: faust.App,
    settings: Settings,
    metrics: WorkerMetrics,
    window_table: Any,
    performance_table: Any,
    ready: Callable[[], str | None],
    pcfg: PerformanceConfig,
    main_loop: Callable[[], asyncio.AbstractEventLoop | None],
) -> Api:
    tokens = load_tokens(settings)
    catalog = Catalog()
    from agents.health import local_view

    def peers() -> list[str]:
        me = str(app.conf.canonical_url).rstrip("/")
        return [u for u in faust_compat.member_urls(app) if u.rstrip("/") != me]

    api = Api(
        local=LocalState(
            drift=lambda: local_view(app, window_table),
            perf=lambda: local_view(app, performance_table),
        ),
        catalog=catalog,
        pcfg=pcfg,
        tokens=tokens,
        limiter=RateLimiter(settings.api_rate_limit, settings.api_rate_burst),
        send_control=control_sender(settings),
        peers=peers,
        ready=ready,
        main_loop=main_loop,
        metrics=metrics,
        max_body_bytes=settings.api_max_body_bytes,
        cache_seconds=settings.api_cache_seconds,
    )
    web_app: web.Application = app.web.web_app  # type: ignore[attr-defined]  # aiohttp driver
    api.install(web_app)
    stop = asyncio.Event()
    topics = {
        "model": settings.topic("model-events"),
        "retrain": settings.topic("retrain-events"),
        "alert": settings.topic("alerts"),
    }
    tasks: list[asyncio.Task[None]] = []

    async def start_catalog(_: web.Application) -> None:
        tasks.append(asyncio.ensure_future(tail(catalog, settings.bootstrap, topics, stop)))

    async def stop_catalog(_: web.Application) -> None:
        stop.set()
        for task in tasks:
            task.cancel()

    web_app.on_startup.append(start_catalog)
    web_app.on_cleanup.append(stop_catalog)
    log.info("API on %s:%d (advertised %s), %s", settings.api_bind, settings.api_port,
             app.conf.canonical_url,
             "auth OFF" if tokens is None else f"{len(tokens)} tokens")  # fmt: skip
    return api
