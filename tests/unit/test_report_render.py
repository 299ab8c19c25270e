"""The HTML drift report: size, determinism, escaping, empty data, offline-only resources."""

from __future__ import annotations

import re
from dataclasses import replace
from html.parser import HTMLParser

import pytest

from driftwatch.report.model import (
    FeatureReport,
    IncidentSpan,
    ModelMarker,
    PerformancePoint,
    ReportData,
)
from driftwatch.report.model import TestPoint as Point
from driftwatch.report.render import render_report
from tests.report_fixtures import synthetic_report

EVIL = "<script>alert(1)</script>"
MAX_BYTES = 2 * 1024 * 1024


class _Collector(HTMLParser):
    """Tags, attributes and text of a page, to check structure without a browser."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        (self.script_text if self._in_script else self.text).append(data)


def _parse(html: str) -> _Collector:
    c = _Collector()
    c.feed(html)
    c.close()
    return c


@pytest.fixture(scope="module")
def big() -> ReportData:
    return synthetic_report(days=90, features=50, drifting=10, seed=0)


@pytest.fixture(scope="module")
def big_html(big: ReportData) -> str:
    return render_report(big)


def test_size_under_2mb_for_90_days_50_features(big: ReportData, big_html: str) -> None:
    assert len(big.features) == 50
    assert all(len(f.points) == 90 for f in big.features)
    assert sum(f.distribution is not None for f in big.features) == 10
    assert len(big.performance) == 180
    size = len(big_html.encode("utf-8"))
    print(f"report size for 90 days x 50 features: {size:,} bytes")
    assert size < MAX_BYTES
    assert size < 700_000, "well below the limit is the aim; something grew"


def test_deterministic(big: ReportData, big_html: str) -> None:
    again = render_report(synthetic_report(days=90, features=50, drifting=10, seed=0))
    assert again == big_html
    assert render_report(big) == big_html


def test_every_feature_name_appears(big: ReportData, big_html: str) -> None:
    page = _parse(big_html)
    named = {a.get("data-feature") for _, a in page.tags if "data-feature" in a}
    assert named == {f.name for f in big.features}
    # and one chart per feature
    charts = [a for t, a in page.tags if t == "svg" and "chart" in (a.get("class") or "")]
    feature_charts = [a for a in charts if re.search(r"\b(fc|sl)\b", a.get("class") or "")]
    assert len(feature_charts) == 50


def test_drifting_features_come_first_most_severe_first(big: ReportData, big_html: str) -> None:
    page = _parse(big_html)
    order = [str(a["data-feature"]) for _, a in page.tags if a.get("data-feature")]
    drifting = {i.feature for i in big.incidents if i.feature}
    assert set(order[: len(drifting)]) == drifting
    rank = {"LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4}
    worst = {f: max(rank[i.severity] for i in big.incidents if i.feature == f) for f in drifting}
    seen = [worst[f] for f in order[: len(drifting)]]
    assert seen == sorted(seen, reverse=True)
    quiet = order[len(drifting) :]
    assert quiet == sorted(quiet)


def test_tables_are_real_tables(big: ReportData, big_html: str) -> None:
    page = _parse(big_html)
    classes = {a.get("class") for t, a in page.tags if t == "table"}
    assert {"settings", "incidents", "performance", "markers"} <= classes
    rows = [a for t, a in page.tags if t == "tr" and a.get("class") == "incident"]
    assert len(rows) == len(big.incidents)
    for inc in big.incidents:
        assert inc.drift_id[:8] in big_html
    # one row per window and version, plus the header
    perf = big_html.split('<table class="performance">', 1)[1].split("</table>", 1)[0]
    assert perf.count("<tr>") == len(big.performance) + 1


def test_incidents_open_first_then_severity(big: ReportData, big_html: str) -> None:
    table = big_html.split('<table class="incidents">', 1)[1].split("</table>", 1)[0]
    ids = re.findall(r'<code title="([0-9a-f]+)">', table)
    by_id = {i.drift_id: i for i in big.incidents}
    rank = {"LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4}
    keys = [(not by_id[i].open, -rank[by_id[i].severity]) for i in ids]
    assert keys == sorted(keys)
    assert "performance" in table


def test_untrusted_strings_are_escaped() -> None:
    base = synthetic_report(days=20, features=4, drifting=2, seed=1)
    evil_features = [replace(f, name=f"{EVIL}{i}") for i, f in enumerate(base.features)]
    names = {f.name: e.name for f, e in zip(base.features, evil_features, strict=True)}
    data = replace(
        base,
        tenant=EVIL,
        model=f'"><img src=x onerror=alert(1)>{EVIL}',
        source=EVIL,
        versions=[EVIL, "v2"],
        active_version=EVIL,
        settings={EVIL: EVIL},
        features=evil_features,
        incidents=[
            replace(i, feature=names.get(i.feature or "", i.feature), test=EVIL, severity=EVIL)
            for i in base.incidents
        ],
        performance=[replace(p, model_version=EVIL) for p in base.performance],
        markers=[
            ModelMarker(
                at=base.first_window or 0.0, action=EVIL, version=EVIL, previous=EVIL, reason=EVIL
            )
        ],
    )
    html = render_report(data)
    assert "<script" not in html.lower()
    assert "<img" not in html.lower()
    assert "onerror=alert" not in html.replace("&quot;&gt;&lt;img src=x onerror=alert", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    page = _parse(html)
    assert not any(t in {"script", "img", "iframe", "object"} for t, _ in page.tags)
    text = "".join(page.text)
    assert f"{EVIL}0" in text  # shown as text
    assert not any(k.startswith("on") for _, a in page.tags for k in a)


def test_empty_report_renders() -> None:
    data = ReportData(
        tenant="acme", model="fraud", generated_at=1_735_689_600.0, window_seconds=86400.0,
        source="live worker host-1",
    )  # fmt: skip
    html = render_report(data)
    assert html.startswith("<!DOCTYPE html>")
    assert html.rstrip().endswith("</html>")
    assert "No feature tests" in html
    assert "No performance data" in html
    assert "No incidents" in html
    assert "<title>Drift report \u2014 acme/fraud</title>" in html


def test_none_metrics_and_gaps() -> None:
    t0 = 1_735_689_600.0
    pts = [
        Point(t0 + d * 3600, 0.02 if d != 5 else 0.3, None, 0.05, d == 5, "ks", 100)
        for d in range(48)
        if d not in (10, 11)
    ]
    perf = [
        PerformancePoint(t0 + d * 3600, "v1", 100, 0, None, None, None, None) for d in range(48)
    ] + [PerformancePoint(t0, "v2", 0, 0, 0.9, 0.8, None, None, None, 0.7)]
    data = ReportData(
        tenant="t", model="m", generated_at=t0 + 48 * 3600, window_seconds=3600.0,
        source="backtest", first_window=t0, last_window=t0 + 47 * 3600,
        features=[FeatureReport("x", "numeric", pts), FeatureReport("empty", "numeric", [])],
        incidents=[IncidentSpan("ab" * 16, "x", "ks", t0 + 5 * 3600, None, "HIGH", False, 1, True)],
        performance=perf,
    )  # fmt: skip
    html = render_report(data)
    assert "2025-01-01 05:00" in html  # hourly windows show hours
    assert "No tested windows yet" in html
    assert "\u2014" in html  # None metrics shown as a dash
    assert not re.search(r"\bnan\b|\binf\b", html, re.IGNORECASE)


def test_no_external_resources(big_html: str) -> None:
    refs = re.findall(r'\b(?:src|href|xlink:href|action)\s*=\s*"([^"]*)"', big_html)
    assert all(r.startswith("#") for r in refs), refs
    assert "http://" not in big_html
    assert "https://" not in big_html
    assert "@import" not in big_html
    assert "url(" not in big_html
    assert "<script" not in big_html.lower()


def test_open_incidents_are_ranked_by_impact() -> None:
    t0 = 1_735_689_600.0

    def span(i: str, feature: str | None, severity: str, impact: float | None) -> IncidentSpan:
        known = impact is not None
        return IncidentSpan(i * 32, feature, "ks", t0, None, severity, False, 1, True, impact,
                            0.5 if known else None, "association" if known else None)  # fmt: skip

    data = ReportData(
        tenant="t", model="m", generated_at=t0 + 48 * 3600, window_seconds=3600.0,
        source="backtest", first_window=t0, last_window=t0 + 47 * 3600, features=[],
        incidents=[
            span("a", "minor", "CRITICAL", 0.01), span("b", None, "CRITICAL", None),
            span("c", "major", "LOW", 0.30), span("d", "mid", "HIGH", 0.10),
            span("e", "tie", "MEDIUM", 0.10),
        ],
    )  # fmt: skip
    html = render_report(data)
    table = html.split('<table class="incidents">', 1)[1].split("</table>", 1)[0]
    ids = [i[0] for i in re.findall(r'<code title="([0-9a-f]+)">', table)]
    assert ids == ["c", "d", "e", "a", "b"]  # impact; ties by severity; no impact last
    assert "Impact</th>" in table and "0.300" in table and "importance 0.500 (association)" in table
