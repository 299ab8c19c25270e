"""Putting the API on the worker's Faust web server (internal, loopback) and its front on the
public port: tokens, the catalog reader, the control producer, peers and readiness."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

import faust
from aiohttp import web

from agents import faust_compat
from agents.api.auth import ApiConfigError, RateLimiter, load_tokens
from agents.api.catalog import Catalog, tail
from agents.api.front_process import FrontProcess
from agents.api.server import Api, LocalState
from agents.metrics import WorkerMetrics
from runtime.kafka_connection import aiokafka_options, confluent_config
from runtime.settings import Settings
from streams.config import PerformanceConfig

__all__ = ["ApiConfigError", "control_sender", "install_api", "load_tokens"]

log = logging.getLogger(__name__)


def control_sender(settings: Settings) -> Callable[[str, dict[str, Any]], Any]:
    """Publishes to ``retrain-control`` from the API thread (confluent-kafka is thread-safe;
    the blocking flush runs in a worker thread)."""
    from confluent_kafka import Producer

    producer: list[Any] = []
    topic = settings.topic("retrain-control")

    def produce(key: str, value: dict[str, Any]) -> None:
        if not producer:
            producer.append(Producer(confluent_config(settings, **{"message.timeout.ms": 10000})))
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
    internal_port: int,
) -> tuple[Api, FrontProcess]:
    """The API on Faust's web server (which listens on 127.0.0.1:``internal_port``), and its
    front on the public port, started and stopped with that server."""
    tokens = load_tokens(settings)
    secret = secrets.token_urlsafe(32)
    catalog = Catalog()
    from agents.health import local_view

    def peers() -> list[str]:
        me = str(app.conf.canonical_url).rstrip("/")
        return [u for u in faust_compat.introspection.member_urls(app) if u.rstrip("/") != me]

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
        front_secret=secret,
        max_body_bytes=settings.api_max_body_bytes,
        tenants=settings.tenant_allowlist,
        cache_seconds=settings.api_cache_seconds,
        stale_seconds=settings.api_stale_seconds,
    )
    front = FrontProcess(settings, f"http://127.0.0.1:{internal_port}", secret, metrics)
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
        tasks.append(
            asyncio.ensure_future(
                tail(catalog, settings.bootstrap, topics, stop, aiokafka_options(settings))
            )
        )
        front.start()

    async def stop_catalog(_: web.Application) -> None:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.to_thread(front.stop)

    web_app.on_startup.append(start_catalog)
    web_app.on_cleanup.append(stop_catalog)
    log.info("API on %s:%d through its front (advertised %s; the worker's own server on "
             "127.0.0.1:%d), %s", settings.api_bind, settings.api_port, app.conf.canonical_url,
             internal_port, "auth OFF" if tokens is None else f"{len(tokens)} tokens")  # fmt: skip
    return api, front
