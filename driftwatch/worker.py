"""``driftwatch worker``: create the topics, expose /metrics, run the Faust worker."""

from __future__ import annotations

import logging
import sys

import faust
from prometheus_client import start_http_server

from agents import client_logs
from agents.api.install import ApiConfigError
from agents.app import create_app
from runtime.settings import Settings
from runtime.topics import WORKER_TOPICS, ensure_topics

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> int:
    ensure_topics(
        settings.bootstrap,
        {settings.topic(name): settings.partitions for name in WORKER_TOPICS},
        replication=settings.replication,
    )
    try:
        worker = create_app(settings)
    except (ApiConfigError, ValueError, OSError) as exc:
        log.error("driftwatch worker: %s", exc)
        print(f"driftwatch worker: {exc}", file=sys.stderr)
        return 2
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr="0.0.0.0", registry=worker.registry)
        log.info("metrics on :%d/metrics", settings.metrics_port)
    client_logs.install()  # aiokafka's retry errors while the broker is away: one per kind
    faust.Worker(worker.app, loglevel=settings.log_level.lower()).execute_from_commandline()
    return 0
