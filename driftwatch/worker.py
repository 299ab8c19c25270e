"""``driftwatch worker``: create the topics, expose /metrics, run the Faust worker."""

from __future__ import annotations

import logging
import sys

import faust
from prometheus_client import ProcessCollector

from agents import client_logs
from agents.api.auth import load_tokens
from agents.api.install import ApiConfigError
from agents.app import create_app
from agents.metrics import CountersCollector
from agents.notify import webhook_notifier
from agents.redelivery import Redelivery
from runtime.gc_tuning import GcPauses, freeze_startup, tune_gc
from runtime.kafka_connection import check_connection, confluent_config, security
from runtime.malloc_arenas import fix_mmap_threshold, limit_arenas, operator_set
from runtime.metrics_http import serve_metrics
from runtime.settings import Settings
from runtime.stop_deadline import watch_stop
from runtime.topics import WORKER_TOPICS, prepare_topics, topic_specs

log = logging.getLogger(__name__)


def check_local_config(settings: Settings) -> None:
    """The settings that name files or need no broker (the API's tokens, the webhook and its
    signing secret, alert redelivery), as the worker will read them; raises what it would."""
    if settings.api_port > 0:
        load_tokens(settings, announce=False)
    webhook_notifier(settings)
    Redelivery(settings.alert_redelivery_hours, settings.alert_redelivery_first_seconds)


def run_worker(settings: Settings) -> int:
    # Before any thread allocates (librdkafka's, Faust's, the compute pool's).
    # An operator's own MALLOC_ARENA_MAX or GLIBC_TUNABLES (read by glibc at start) win.
    arena_max_set = operator_set("MALLOC_ARENA_MAX", "glibc.malloc.arena_max")
    if not arena_max_set and limit_arenas(settings.malloc_arenas):
        log.info("malloc arenas: at most %d", settings.malloc_arenas)
    threshold = settings.malloc_mmap_threshold_kb * 1024
    threshold_set = operator_set("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold")
    if not threshold_set and fix_mmap_threshold(threshold):
        log.info("malloc: blocks of %d KiB or more mapped on their own",
                 settings.malloc_mmap_threshold_kb)  # fmt: skip
    try:  # what needs no broker first: a wrong path is one line, before topics are made
        check_local_config(settings)
    except (ApiConfigError, ValueError, OSError) as exc:
        print(f"driftwatch worker: {exc}", file=sys.stderr)
        return 2
    # Refused credentials, an untrusted certificate, missing or mis-partitioned topics:
    # one clear line and a non-zero exit (driftwatch.cli), before Faust starts retrying.
    kafka = confluent_config(settings)
    log.info("Kafka at %s: %s", settings.bootstrap, security(settings).describe())
    check_connection(kafka, timeout=settings.kafka_connect_timeout)
    prepare_topics(settings, topic_specs(settings, WORKER_TOPICS, tables=True), kafka)
    try:
        worker = create_app(settings)
    except (ApiConfigError, ValueError, OSError) as exc:
        log.error("driftwatch worker: %s", exc)
        print(f"driftwatch worker: {exc}", file=sys.stderr)
        return 2
    if tune_gc(settings.gc_threshold):
        frozen = freeze_startup()
        log.info("garbage collector: young collections every %d allocations; %d start-up "
                 "objects frozen", settings.gc_threshold, frozen)  # fmt: skip
    pauses = GcPauses().install()
    worker.registry.register(
        CountersCollector(
            "driftwatch_gc_seconds",
            "Time in the garbage collector's collections, by generation (2: full collections, "
            "which walk every object: DRIFTWATCH_GC_THRESHOLD sets how often they come)",
            pauses.seconds,
            label="generation",
        )
    )
    ProcessCollector(registry=worker.registry)  # process_resident_memory_bytes, CPU, files
    if settings.metrics_port:
        serve_metrics(settings.metrics_port, settings.metrics_bind, worker.registry,
                      "DRIFTWATCH_METRICS_PORT")  # fmt: skip
        log.info("metrics on %s:%d/metrics", settings.metrics_bind, settings.metrics_port)
    client_logs.install()  # aiokafka's retry errors while the broker is away: one per kind
    # Faust's "not fetched since start" about a partition a rebalance assigned moments ago
    client_logs.install_fresh_assignments(worker.app.conf.stream_processing_timeout)
    watch_stop(worker.app, settings.stop_timeout_seconds)
    faust.Worker(worker.app, loglevel=settings.log_level.lower()).execute_from_commandline()
    return 0
