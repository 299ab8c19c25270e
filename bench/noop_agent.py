"""A do-nothing Faust agent: the floor under any Faust worker's throughput.

Run as ``python -m bench.noop_agent``; configured from the environment like the real worker
(``driftwatch.worker``), with the same consumer settings as ``agents.app.create_app`` but no
table, no validation and no engine. The agent takes batches with ``stream.take_events`` and
only counts them; the count is exposed as the Prometheus counter ``bench_noop_events_total``
on ``BENCH_METRICS_PORT`` so ``bench.throughput`` can time it the same way as the driftwatch
worker (by polling its counter).

Environment:

* ``KAFKA_BOOTSTRAP_SERVERS`` (default ``127.0.0.1:9092``)
* ``BENCH_TOPIC``: topic to consume (required; create it beforehand)
* ``BENCH_APP_ID``: Faust app id / consumer group (default ``bench-noop``)
* ``BENCH_DATA_DIR``: Faust data dir (default ``var/bench-noop``)
* ``BENCH_PARTITIONS``: partitions of the topic (default 2)
* ``BENCH_METRICS_PORT``: Prometheus port (default 9109)
* ``BENCH_BATCH_SIZE`` / ``BENCH_BATCH_WITHIN``: ``take_events`` arguments (1000 / 0.5)
* ``BENCH_SESSION_TIMEOUT`` / ``BENCH_HEARTBEAT_INTERVAL``: seconds (6 / 1)
* ``BENCH_PER_MESSAGE``: predictions each message carries (1; envelopes: their size), so the
  counter counts predictions like the worker's without decoding anything
* ``BENCH_EAGER_DELIVERY``: set (non-empty) to deliver messages as the driftwatch worker does
  (``agents.faust_compat.eager_delivery``); unset, the agent is plain Faust (the yardstick)
"""

from __future__ import annotations

import os
from typing import Any

import faust
from prometheus_client import CollectorRegistry, Counter, start_http_server

from agents.app import broker_urls


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "")
    return value if value else default


def create_noop_app(registry: CollectorRegistry) -> faust.App:
    topic_name = os.environ["BENCH_TOPIC"]
    partitions = int(_env("BENCH_PARTITIONS", "2"))
    batch_size = int(_env("BENCH_BATCH_SIZE", "1000"))
    within = float(_env("BENCH_BATCH_WITHIN", "0.5"))
    per_message = int(_env("BENCH_PER_MESSAGE", "1"))
    app = faust.App(
        _env("BENCH_APP_ID", "bench-noop"),
        broker=broker_urls(_env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")),
        datadir=_env("BENCH_DATA_DIR", "var/bench-noop"),
        topic_partitions=partitions,
        topic_replication_factor=1,
        topic_allow_declare=True,
        web_enabled=False,
        autodiscover=False,
        broker_session_timeout=float(_env("BENCH_SESSION_TIMEOUT", "6")),
        broker_heartbeat_interval=float(_env("BENCH_HEARTBEAT_INTERVAL", "1")),
        broker_commit_interval=2.0,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        stream_wait_empty=False,
        logging_config=None,
    )
    topic = app.topic(
        topic_name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
    )
    if os.environ.get("BENCH_EAGER_DELIVERY"):  # the worker's delivery, for bench.eager_delivery
        from agents.faust_compat import eager_delivery

        eager_delivery.install()
    events = Counter("bench_noop_events", "Events seen by the no-op agent", registry=registry)

    @app.agent(topic, name="noop")
    async def noop(stream: Any) -> None:
        async for batch in stream.take_events(batch_size, within=within):
            events.inc(len(batch) * per_message)

    _ = noop
    return app


def main() -> int:
    registry = CollectorRegistry()
    app = create_noop_app(registry)
    start_http_server(int(_env("BENCH_METRICS_PORT", "9109")), addr="127.0.0.1", registry=registry)
    faust.Worker(app, loglevel=_env("BENCH_LOG_LEVEL", "warning")).execute_from_commandline()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
