"""A real Prometheus with deploy/prometheus/rules.yml scrapes a metrics endpoint and raises
DriftwatchDriftConfirmed once the confirmed-drift counter goes up.

This proves the harness (``tests/prometheus.py``: install, start, scrape, evaluate, query) and
the rule end to end with Prometheus' own evaluation, not promtool's. The endpoint is
prometheus_client's HTTP server with a fresh registry holding the worker's counter, as the
worker exports it (``agents/metrics.py``). No broker is needed.
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


@pytest.fixture
def exporter() -> Iterator[tuple[str, Counter]]:
    """``(host:port, driftwatch_drift_events counter)`` served over HTTP for the test."""
    registry = CollectorRegistry()
    drift_events = Counter(
        "driftwatch_drift_events",
        "Drift events emitted",
        ["kind", "severity", "confirmed"],
        registry=registry,
    )
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{port}", drift_events
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _drift_alerts(prom: PrometheusServer) -> list[dict[str, Any]]:
    return [a for a in prom.alerts() if a["labels"].get("alertname") == "DriftwatchDriftConfirmed"]


def test_confirmed_drift_counter_raises_the_alert(exporter: tuple[str, Counter]) -> None:
    ensure_prometheus()  # may install Debian's package on a fresh machine (outside the timing)
    target, drift_events = exporter
    # An unconfirmed event, and the confirmed series at 0: Prometheus sees it before it rises.
    drift_events.labels("statistical", "HIGH", "false").inc()
    confirmed = drift_events.labels("statistical", "HIGH", "true")

    with PrometheusServer([target], rule_files=[RULES]) as prom:
        assert prom.wait_for(lambda: any(t["health"] == "up" for t in prom.targets()), TIMEOUT), (
            f"target never up: {prom.targets()}\n{prom.log_text()[-3000:]}"
        )
        assert prom.wait_for(
            lambda: bool(prom.query('driftwatch_drift_events_total{confirmed="true"} == 0')),
            TIMEOUT,
        ), "the confirmed series at 0 was never scraped"
        # Rules are evaluated and nothing fires while only unconfirmed drift is counted.
        assert prom.wait_for(lambda: bool(prom.api("rules")["groups"]), TIMEOUT), (
            "rules.yml was not loaded"
        )
        assert _drift_alerts(prom) == []

        confirmed.inc()

        assert prom.wait_for(
            lambda: any(a["state"] in {"pending", "firing"} for a in _drift_alerts(prom)),
            TIMEOUT,
        ), f"no DriftwatchDriftConfirmed: {prom.alerts()}\n{prom.log_text()[-3000:]}"
        (alert,) = _drift_alerts(prom)
        assert alert["labels"]["kind"] == "statistical"
        assert alert["labels"]["drift_severity"] == "HIGH"
        assert alert["labels"]["severity"] == "warning"
        assert "Confirmed HIGH statistical drift" in alert["annotations"]["summary"]
