"""deploy/grafana: the provisioned dashboard queries only what the workers export.

Every panel's queries select metrics from docs/metrics.md (histograms as ``_bucket``, ``_sum``,
``_count``) with labels those metrics have, use the provisioned Prometheus datasource and only
the dashboard's own template variables; the PromQL parses (``promtool check rules`` on the
expressions as recording rules, with the variables substituted). Grafana itself is not run.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.prometheus import (
    TARGET_LABELS,
    documented_metrics,
    ensure_prometheus,
    exposed_series,
    metric_names,
    selector_labels,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
GRAFANA = REPO_ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "driftwatch.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"

VARIABLES = {"tenant", "model"}
# Grafana's built-in variables that may appear in a query, and what to put there to parse it.
BUILTIN_VARIABLES = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
# What the dashboard must show (title fragments, one panel at least each).
REQUIRED_PANELS = [
    "open incidents",
    "drift events",
    "incident changes",
    "accuracy",
    "pr-auc",
    "label rate",
    "event-time lag",
    "consumer lag per partition",
    "processing latency",
    "events processed",
    "dead letters by reason",
    "retrain events",
    "promotions and rollbacks",
    "alerts published",
    "alert deliveries",
    "api requests",
    "api latency",
    "rebalance",
    "commit",
    "worker ready",
    "by agent and phase",
]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def datasource_uid() -> str:
    datasources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    (prometheus,) = [d for d in datasources if d["type"] == "prometheus"]
    uid = prometheus["uid"]
    assert isinstance(uid, str) and uid
    return uid


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every Prometheus annotation."""
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target.get('refId')}", target.get("expr", "")
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("datasource", {}).get("type") == "prometheus":
            yield f"annotation {annotation['name']!r}", annotation.get("expr", "")


def _variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query")
    return str(query.get("query", "") if isinstance(query, dict) else query)


def _substitute(expr: str) -> str:
    """The query as Prometheus would get it: variables replaced by plausible values."""

    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return BUILTIN_VARIABLES.get(name, ".*")

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", replace, expr)


def test_dashboard_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "driftwatch"
    assert dashboard["title"]
    assert dashboard.get("id") is None, "provisioned dashboards carry no database id"


def test_template_variables(dashboard: dict[str, Any], datasource_uid: str) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) >= VARIABLES
    for name in VARIABLES:
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"]["uid"] == datasource_uid
        query = _variable_query(variable)
        m = re.fullmatch(
            r"label_values\((driftwatch_stream_watermark_seconds)\b.*,\s*(\w+)\)", query
        )
        assert m, f"${name}: {query!r}"
        assert m.group(2) == name
        assert variable.get("includeAll") and variable.get("multi")
    # model is narrowed by the chosen tenants
    assert "$tenant" in _variable_query(variables["model"])


def test_every_panel_has_queries_on_the_provisioned_datasource(
    dashboard: dict[str, Any], datasource_uid: str
) -> None:
    panels = [p for p in _panels(dashboard["panels"]) if p["type"] != "row"]
    assert len(panels) >= len(REQUIRED_PANELS)
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"]["uid"] == datasource_uid, title
        assert panel.get("targets"), f"{title}: no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), f"{title}: duplicate refId"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource_uid, title
            assert target.get("expr", "").strip(), f"{title} {target['refId']}: empty expr"
    for annotation in dashboard["annotations"]["list"]:
        if annotation["datasource"].get("type") == "prometheus":
            assert annotation["datasource"]["uid"] == datasource_uid, annotation["name"]
            assert annotation.get("expr", "").strip(), annotation["name"]


def test_queries_use_only_documented_metrics_and_labels(dashboard: dict[str, Any]) -> None:
    series = exposed_series(documented_metrics())
    queries = list(_queries(dashboard))
    assert queries
    used: set[str] = set()
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: selects no metric: {expr!r}"
        unknown = names - set(series)
        assert not unknown, f"{where}: {sorted(unknown)} not in docs/metrics.md: {expr!r}"
        used |= names
        for metric, labels in selector_labels(expr):
            allowed = series[metric] | TARGET_LABELS
            assert labels <= allowed, f"{where}: {metric} has no label {labels - allowed}"
        # aggregation labels exist on the metrics the query selects
        available = set().union(*(series[n] for n in names)) | TARGET_LABELS  # all documented
        for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            labels = {label.strip() for label in clause.split(",") if label.strip()}
            assert labels <= available, f"{where}: no label {labels - available} in {expr!r}"
    # histograms are shown as quantiles: histogram_quantile over their buckets
    for where, expr in queries:
        if "histogram_quantile" in expr:
            assert re.search(r"_bucket\[", expr) and re.search(r"\ble\b", expr), where


def test_legends_name_labels_the_query_has(dashboard: dict[str, Any]) -> None:
    series = exposed_series(documented_metrics())
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"]
            names = metric_names(expr)
            available = set().union(*(series.get(n, frozenset()) for n in names)) | TARGET_LABELS
            legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert legend_labels <= available, f"{panel['title']}: legend {legend_labels}"


def test_queries_use_only_defined_variables(dashboard: dict[str, Any]) -> None:
    defined = {v["name"] for v in dashboard["templating"]["list"]} | set(BUILTIN_VARIABLES)
    for where, expr in _queries(dashboard):
        used = {a or b for a, b in re.findall(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", expr)}
        assert used <= defined, f"{where}: undefined variables {used - defined}"
    # the per-stream panels follow the tenant and model selectors
    filtered = [e for _, e in _queries(dashboard) if "$tenant" in e]
    assert filtered and all("$model" in e for e in filtered)


def test_dashboard_shows_what_operators_need(dashboard: dict[str, Any]) -> None:
    titles = [p["title"].lower() for p in _panels(dashboard["panels"]) if p["type"] != "row"]
    missing = [want for want in REQUIRED_PANELS if not any(want in t for t in titles)]
    assert not missing, f"no panel for {missing}"


def test_panels_fit_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_queries_parse(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Each query as a recording rule: ``promtool check rules`` parses its PromQL."""
    promtool = ensure_prometheus()[0]
    rules = [
        {"record": f"dashboard:query_{i}", "expr": _substitute(expr)}
        for i, (_, expr) in enumerate(_queries(dashboard))
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
