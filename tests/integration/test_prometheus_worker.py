"""A real Prometheus scraping a live worker and a live retrain worker: the shipped alerting
rules fire on an injected drift, and every metric the Grafana dashboard and the rules query is
one these processes really export."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import yaml

from bench.retrain_e2e import RetrainWorker
from driftwatch.devbroker import free_port
from runtime.settings import Settings
from runtime.topics import WORKER_TOPICS as TOPICS
from runtime.topics import ensure_topics
from tests.integration.test_operating import PIPELINE, produce_days, traffic, wait_ready
from tests.integration.worker_harness import WorkerProcess, produce_recorded, wait_drained
from tests.prometheus import PrometheusServer, metric_names

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "driftwatch.json"


def exported(port: int) -> set[str]:
    """Metric names a process exports (from its TYPE lines, so labelled metrics that have no
    sample yet count too), with the series names of histograms."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def dashboard_exprs() -> list[str]:
    out: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query") and isinstance(value, str) and "driftwatch_" in value:
                    out.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(DASHBOARD.read_text()))
    return out


def test_prometheus_scrapes_live_workers_and_the_drift_rule_fires(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    prefix = f"{unique_prefix}-"
    worker = WorkerProcess(
        bootstrap=kafka_bootstrap, prefix=prefix, data_dir=tmp_path / "state",
        log_path=tmp_path / "worker.log", extra_env={"DRIFTWATCH_CONFIRM_WINDOWS": "2"},
    )  # fmt: skip
    ensure_topics(kafka_bootstrap, {worker.topic(t): worker.partitions for t in TOPICS})
    retrain_port = free_port()
    retrain = RetrainWorker(kafka_bootstrap, prefix, tmp_path / "retrain",
                            {"DRIFTWATCH_RETRAIN_METRICS_PORT": str(retrain_port)})  # fmt: skip
    predictions, outcomes = traffic()
    worker.start()
    retrain.start()
    try:
        jobs = {
            "driftwatch-worker": [f"127.0.0.1:{worker.metrics_port}"],
            "driftwatch-retrain-worker": [f"127.0.0.1:{retrain_port}"],
        }
        # Prometheus starts while the workers do (its first look at its targets comes ~5 s in)
        with PrometheusServer(jobs, rule_files=[RULES]) as prom:
            wait_ready(worker)
            assert prom.wait_for(
                lambda: sum(t["health"] == "up" for t in prom.targets()) == 2, timeout=60
            ), prom.targets()
            produce_days(worker, predictions, outcomes, range(0, 20))
            produce_recorded(worker.bootstrap, worker.topic("predictions"), [(b"x", b"{oops")])
            wait_drained(worker, PIPELINE)

            def firing() -> bool:
                return any(
                    a["labels"]["alertname"] == "DriftwatchDriftConfirmed"
                    and a["state"] == "firing"
                    for a in prom.alerts()
                )

            assert prom.wait_for(firing, timeout=90), (prom.alerts(), worker.log_tail())

            # The worker's own view of it, through the same server. The state gauges are read
            # from the tables at most every StateCollector.max_age (5 s), so they may trail
            # the counter the rule reads by that and a scrape.
            def opened() -> bool:
                return bool(prom.query(
                    'driftwatch_open_incidents{tenant="acme",model="fraud",kind="statistical"} > 0'
                ))  # fmt: skip

            assert prom.wait_for(opened, timeout=30), (
                "the open incident is not in the state gauges",
                worker.log_tail(),
            )
            dead = prom.query('driftwatch_dead_letters_total{reason="malformed_json"}')
            assert dead and float(dead[0]["value"][1]) >= 1
            # one RocksDB block cache for all the worker's stores, told once, with its budget
            budget = prom.query('driftwatch_rocksdb_budget_limit_bytes{kind="block_cache"}')
            half = Settings().rocksdb_worker_memory_mb // 2 * 2**20
            assert budget and float(budget[0]["value"][1]) == half
            assert prom.query('driftwatch_rocksdb_memory_bytes{table="shared",kind="block_cache"}')
            assert not prom.query(
                'driftwatch_rocksdb_memory_bytes{kind="block_cache",table!="shared"}'
            )
            rss = prom.query("process_resident_memory_bytes")
            assert rss and all(float(r["value"][1]) > 50 * 2**20 for r in rss), rss
            quiet = [a for a in prom.alerts() if a["labels"]["alertname"] in
                     ("DriftwatchWorkerStalled", "DriftwatchAlertsUndelivered")]  # fmt: skip
            assert not quiet, quiet
        names = exported(worker.metrics_port) | exported(retrain_port)
    finally:
        retrain.stop()
        worker.stop()
    queried: set[str] = set()
    for expr in dashboard_exprs():
        queried |= {n for n in metric_names(expr) if n.startswith("driftwatch_")}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            queried |= {n for n in metric_names(rule["expr"]) if n.startswith("driftwatch_")}
    assert queried, "no queries found"
    missing = sorted(queried - names)
    assert not missing, f"queried but not exported: {missing}"
