"""The 90-day x 50-feature report in a real browser (headless Chromium, installed if missing).

Checks what a unit test cannot: that Chromium parses the page into the expected elements, that
it paints something (a decoded screenshot, not just a file), and that with JavaScript
disabled every table is still there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftwatch.report.model import ReportData
from driftwatch.report.render import render_report
from tests.browser import decode_png, dump_dom, ensure_chromium, screenshot
from tests.report_fixtures import synthetic_report

# the first use on a clean machine installs Chromium with apt-get, which can take minutes
pytestmark = pytest.mark.timeout(1200)

WIDTH, HEIGHT = 1280, 1800
"""Tall enough for the header, the incident table and the first row of feature charts."""


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ReportData, Path]]:
    ensure_chromium()
    data = synthetic_report(days=90, features=50, drifting=10, seed=0)
    path = tmp_path_factory.mktemp("report") / "acme-fraud.html"
    path.write_text(render_report(data), encoding="utf-8")
    yield data, path


def _count(pattern: str, dom: str) -> int:
    return len(re.findall(pattern, dom))


def test_dom_has_expected_elements(report: tuple[ReportData, Path]) -> None:
    data, path = report
    dom = dump_dom(path)
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert title is not None and "acme/fraud" in title.group(1)
    charts = _count(r'<svg class="chart (?:fc|sl)"', dom)
    assert charts == len(data.features) == 50
    for f in data.features:
        assert f'data-feature="{f.name}"' in dom
    assert _count(r'<tr class="incident">', dom) == len(data.incidents)
    perf = dom.split('<table class="performance">', 1)[1].split("</table>", 1)[0]
    assert _count(r"<tr>", perf) == len(data.performance) + 1
    assert _count(r'<svg class="chart pc"', dom) == 2
    assert _count(r'<svg class="chart dc"', dom) == sum(
        f.distribution is not None for f in data.features
    )


def test_screenshot_is_not_blank(report: tuple[ReportData, Path], tmp_path: Path) -> None:
    _, path = report
    png = tmp_path / "report.png"
    screenshot(path, png, WIDTH, HEIGHT)
    print(f"screenshot: {png}")
    width, height, channels, px = decode_png(png)
    assert (width, height) == (WIDTH, HEIGHT)
    pixels = [px[i : i + 3] for i in range(0, len(px), channels)]
    non_white = sum(1 for p in pixels if min(p) < 235)
    colours = len(set(pixels))
    # the accent (drifting points, window bars) in the chart area, below the tables
    chart_rows = pixels[1000 * width :]
    accent = sum(1 for r, g, b in chart_rows if r > 200 and 60 < g < 150 and b < 100)
    print(f"{colours} colours, {non_white / len(pixels):.1%} non-white, {accent} accent pixels")
    assert colours > 500
    assert non_white > 0.05 * len(pixels)
    assert accent > 2000, "no feature charts painted in the first 1800 px"


def test_tables_without_javascript(report: tuple[ReportData, Path]) -> None:
    data, path = report
    dom = dump_dom(path, javascript=False)
    for cls in ("settings", "incidents", "performance", "markers"):
        assert f'<table class="{cls}">' in dom
    assert _count(r'<tr class="incident">', dom) == len(data.incidents)
    assert _count(r'<svg class="chart (?:fc|sl)"', dom) == 50
