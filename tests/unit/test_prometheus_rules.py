"""deploy/prometheus and deploy/alertmanager, checked by the real tools.

``promtool check rules`` and ``promtool check config`` validate the syntax, ``promtool test
rules deploy/prometheus/rules_test.yml`` runs the rules' unit tests (series that must make each
alert fire and series that must not), ``amtool check-config`` validates Alertmanager's file.
The tools come from Debian's ``prometheus`` and ``prometheus-alertmanager`` packages, installed
on first use (``tests/prometheus.py``). The rest is read here: every alert of docs/metrics.md's
table exists, selects only documented metrics and labels, carries a severity and says what to
do, and has a firing and a quiet case in the unit tests.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.prometheus import (
    TARGET_LABELS,
    documented_metrics,
    ensure_amtool,
    ensure_prometheus,
    exposed_series,
    metric_names,
    selector_labels,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
RULES_TEST = PROMETHEUS_DIR / "rules_test.yml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTMANAGER_CONFIG = REPO_ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
METRICS_DOC = REPO_ROOT / "docs" / "metrics.md"

SEVERITIES = {"critical", "warning", "info"}


def _run(command: list[str], cwd: Path | None = None) -> str:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    output = f"{result.stdout}\n{result.stderr}".strip()
    assert result.returncode == 0, f"{' '.join(command)} exited {result.returncode}:\n{output}"
    return output


@pytest.fixture(scope="module")
def promtool() -> str:
    return ensure_prometheus()[0]


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _documented_alerts() -> list[str]:
    text = METRICS_DOC.read_text()
    section = text[text.index("## Alerting rules") :]
    return re.findall(r"^\|\s*`(Driftwatch\w+)`\s*\|", section, flags=re.M)


# --- the tools -------------------------------------------------------------------------------


def test_promtool_check_rules(promtool: str) -> None:
    output = _run([promtool, "check", "rules", str(RULES)])
    assert f"SUCCESS: {len(_documented_alerts())} rules found" in output, output


def test_promtool_check_config(promtool: str) -> None:
    # rule_files are relative to the config file, as in the container: no copy needed.
    output = _run([promtool, "check", "config", str(PROMETHEUS_CONFIG)])
    assert "1 rule files found" in output, output


def test_promtool_test_rules(promtool: str) -> None:
    _run([promtool, "test", "rules", RULES_TEST.name], cwd=PROMETHEUS_DIR)


def test_amtool_check_config() -> None:
    amtool = ensure_amtool()
    output = _run([amtool, "check-config", str(ALERTMANAGER_CONFIG)])
    assert "SUCCESS" in output, output


# --- what the rules say ----------------------------------------------------------------------


def test_every_documented_alert_has_a_rule(rules: list[dict[str, Any]]) -> None:
    documented = _documented_alerts()
    assert len(documented) == 10
    assert sorted(r["alert"] for r in rules) == sorted(documented)


def test_rules_select_only_documented_metrics_and_labels(rules: list[dict[str, Any]]) -> None:
    series = exposed_series(documented_metrics())
    for rule in rules:
        expr = rule["expr"]
        unknown = metric_names(expr) - set(series) - {"up"}
        assert not unknown, f"{rule['alert']}: {sorted(unknown)} not in docs/metrics.md"
        for metric, labels in selector_labels(expr):
            allowed = series.get(metric, frozenset()) | TARGET_LABELS
            assert labels <= allowed, f"{rule['alert']}: {metric} has no {labels - allowed}"


def test_rules_have_severity_and_say_what_to_do(rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        name = rule["alert"]
        severity = rule["labels"]["severity"]
        # a fixed severity, or a template that yields one of them
        assert severity in SEVERITIES or set(re.findall(r"}}(\w+){{", severity)) <= SEVERITIES
        assert "for" in rule, f"{name}: say `for:` explicitly"
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip()
        # a runbook link into the repository, to a heading that exists
        path, _, anchor = annotations["runbook_url"].partition("#")
        doc = REPO_ROOT / path
        assert doc.is_file(), f"{name}: {path} does not exist"
        if anchor:
            headings = re.findall(r"^#+\s+(.+)$", doc.read_text(), flags=re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h.lower()).strip().replace(" ", "-") for h in headings}
            assert anchor in slugs, f"{name}: no heading #{anchor} in {path}"


def test_stream_alerts_name_the_tenant_and_model(rules: list[dict[str, Any]]) -> None:
    """Where the expression keeps tenant and model, the summary names them."""
    for rule in rules:
        if re.search(r"by \(tenant, model\)", rule["expr"]):
            summary = rule["annotations"]["summary"]
            assert "$labels.tenant" in summary and "$labels.model" in summary, rule["alert"]


def test_unit_tests_cover_every_alert_firing_and_quiet(rules: list[dict[str, Any]]) -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())
    assert tests["rule_files"] == [RULES.name]
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in tests["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {r["alert"] for r in rules}
    assert names <= fires, f"no firing case for {sorted(names - fires)}"
    assert names <= quiet, f"no quiet case for {sorted(names - quiet)}"
