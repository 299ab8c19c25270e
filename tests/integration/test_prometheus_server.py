"""A real Prometheus with deploy/prometheus/rules.yml scrapes a metrics endpoint and raises
DriftwatchDriftConfirmed once the confirmed-drift counter goes up.

This proves the harness (``tests/prometheus.py``: install, start, scrape, evaluate, query) and
the rule end to end with Prometheus' own evaluation, not promtool's. The endpoint is
prometheus_client's HTTP server with a fresh registry holding the worker's counters, as the
worker exports them (``agents/metrics.py``): ``driftwatch_confirmed_drifts_total`` has every
(kind, severity) child of a model at 0 from the worker's first event of that model, so
Prometheus has seen the 0 before the first confirmed drift and increase() counts it. No broker
is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from tests.prometheus import PrometheusServer, ensure_prometheus, free_port

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"
TIMEOUT = 60.0
KINDS = ("statistical", "performance")
SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")


@pytest.fixture
def exporter() -> Iterator[tuple[str, Counter, Counter]]:
    """``(host:port, driftwatch_drift_events, driftwatch_confirmed_drifts)`` served over HTTP
    for the test."""
    registry = CollectorRegistry()
    drift_events = Counter(
        "driftwatch_drift_events",
        "DriftEvents published",
        ["tenant", "model", "kind", "severity", "confirmed"],
        registry=registry,
    )
    confirmed_drifts = Counter(
        "driftwatch_confirmed_drifts",
        "Confirmed DriftEvents published",
        ["tenant", "model", "kind", "severity"],
        registry=registry,
    )
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{port}", drift_events, confirmed_drifts
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _drift_alerts(prom: PrometheusServer) -> list[dict[str, Any]]:
    return [a for a in prom.alerts() if a["labels"].get("alertname") == "DriftwatchDriftConfirmed"]


def test_confirmed_drift_counter_raises_the_alert(
    exporter: tuple[str, Counter, Counter],
) -> None:
    ensure_prometheus()  # may install Debian's package on a fresh machine (outside the timing)
    target, drift_events, confirmed_drifts = exporter
    # The worker has seen two models: every child of both exists at 0, as the worker makes them.
    for tenant, model in (("acme", "fraud"), ("globex", "churn")):
        for kind in KINDS:
            for severity in SEVERITIES:
                confirmed_drifts.labels(tenant, model, kind, severity)
    # An unconfirmed event: counted in driftwatch_drift_events_total only, never an alert.
    drift_events.labels("acme", "fraud", "statistical", "HIGH", "false").inc()

    with PrometheusServer([target], rule_files=[RULES]) as prom:
        assert prom.wait_for(lambda: any(t["health"] == "up" for t in prom.targets()), TIMEOUT), (
            f"target never up: {prom.targets()}\n{prom.log_text()[-3000:]}"
        )
        zeros = 2 * len(KINDS) * len(SEVERITIES)
        assert prom.wait_for(
            lambda: len(prom.query("driftwatch_confirmed_drifts_total == 0")) == zeros,
            TIMEOUT,
        ), "the confirmed-drift series at 0 were never scraped"
        # Rules are evaluated and nothing fires while the counters are at 0.
        assert prom.wait_for(lambda: bool(prom.api("rules")["groups"]), TIMEOUT), (
            "rules.yml was not loaded"
        )
        assert prom.wait_for(
            lambda: any(
                rule.get("lastEvaluation", "").startswith("20")
                for group in prom.api("rules")["groups"]
                for rule in group["rules"]
                if rule.get("name") == "DriftwatchDriftConfirmed"
            ),
            TIMEOUT,
        ), "DriftwatchDriftConfirmed was never evaluated"
        assert _drift_alerts(prom) == []

        confirmed_drifts.labels("acme", "fraud", "statistical", "HIGH").inc()

        assert prom.wait_for(
            lambda: any(a["state"] in {"pending", "firing"} for a in _drift_alerts(prom)),
            TIMEOUT,
        ), f"no DriftwatchDriftConfirmed: {prom.alerts()}\n{prom.log_text()[-3000:]}"
        (alert,) = _drift_alerts(prom)
        assert alert["labels"]["tenant"] == "acme"
        assert alert["labels"]["model"] == "fraud"
        assert alert["labels"]["kind"] == "statistical"
        assert alert["labels"]["drift_severity"] == "HIGH"
        assert alert["labels"]["severity"] == "warning"
        assert alert["annotations"]["summary"] == "acme/fraud: confirmed HIGH statistical drift"
        assert "GET /v1/models/acme/fraud/drift" in alert["annotations"]["description"]
