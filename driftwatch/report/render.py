"""The drift report as one self-contained HTML page.

The page must open from a file, an e-mail attachment or an air-gapped incident laptop, so it
has no external resources and no JavaScript: every chart is inline SVG drawn here, tooltips are
SVG ``<title>`` elements, and all figures are also in real ``<table>`` elements. Everything that
comes from the data (tenant, model, feature names, versions, reasons, settings) is untrusted
and goes through ``html.escape``. The output is a pure function of ``ReportData``: the same
input gives the same bytes (no ids from counters across calls, no clock other than
``generated_at``), so reports can be diffed and cached.

Size matters (90 days x 50 features must stay far below 2 MB): coordinates are rounded to one
decimal, lines are ``<polyline>``\\ s, styling is CSS classes, and with many features the quiet
ones are drawn as sparklines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from driftwatch.report.model import (
    Distribution,
    FeatureReport,
    IncidentSpan,
    ModelMarker,
    PerformancePoint,
    ReportData,
    TestPoint,
)
from streams.importance import rank_key
from streams.segments import segment_label

__all__ = ["render_report"]

SEVERITY_RANK = {"LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4}
COMPACT_FROM_FEATURES = 30
"""From this many features on, the ones without drift are drawn as sparklines."""
MAX_CATEGORIES = 24
"""A categorical distribution shows at most this many bars; the rest are pooled."""
VERSION_COLOURS = 6
"""CSS classes ``v0``..``v5``; model versions beyond that reuse them."""

TEST_LABELS = {
    "ks": "KS distance",
    "chi2": "total variation",
    "missing_rate": "missing-rate change",
}
MARKER_GLYPHS = {
    "promoted": "\u25b2",  # up triangle
    "rolled_back": "\u25bc",  # down triangle
    "challenger_rejected": "\u2715",  # cross
}

CSS = """
:root{--fg:#1f2937;--mu:#6b7280;--ln:#e5e7eb;--bg:#f6f7f9;--card:#fff;--ac:#e8590c;
--acl:#fff1e6;--red:#c92a2a;--redl:#fde8e8;--st:#475569}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.wrap{max-width:1240px;margin:0 auto;padding:24px 20px 48px}
h1{font-size:24px;margin:0 0 2px}h2{font-size:18px;margin:32px 0 10px}
h3{font-size:14px;margin:0;word-break:break-all}
.sub{color:var(--mu);margin:0 0 16px}
.meta{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:8px 20px;
margin:0 0 16px}
.meta div{background:var(--card);border:1px solid var(--ln);border-radius:6px;padding:8px 12px}
.meta dt{color:var(--mu);font-size:12px}.meta dd{margin:0;font-weight:600;word-break:break-word}
.kpis{display:flex;flex-wrap:wrap;gap:10px;margin:0 0 8px}
.kpi{background:var(--card);border:1px solid var(--ln);border-radius:6px;padding:8px 14px}
.kpi b{font-size:20px;display:block}.kpi span{color:var(--mu);font-size:12px}
.kpi.alert b{color:var(--red)}.kpi.warn b{color:var(--ac)}
details{margin:8px 0}summary{cursor:pointer;color:var(--mu)}
table{border-collapse:collapse;width:100%;background:var(--card);font-size:13px}
th,td{border-bottom:1px solid var(--ln);padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f1f3f5;font-weight:600;position:sticky;top:0}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.tw{border:1px solid var(--ln);border-radius:6px;overflow:auto}
.tw.tall{max-height:460px}
.sev{display:inline-block;padding:0 6px;border-radius:4px;font-size:11px;font-weight:700;
background:#eef0f3;color:var(--st)}
.sev.s3,.sev.s4{background:var(--redl);color:var(--red)}.sev.s2{background:var(--acl);color:#b9470a}
.open{color:var(--ac);font-weight:600}.mu{color:var(--mu)}.note{color:var(--mu);font-style:italic}
code{font-size:12px;background:#f1f3f5;padding:0 3px;border-radius:3px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:14px}
.card{background:var(--card);border:1px solid var(--ln);border-radius:8px;padding:10px 12px}
.card.drift{border-top:3px solid var(--ac)}.card.sev3,.card.sev4{border-top-color:var(--red)}
.ch{display:flex;justify-content:space-between;gap:8px;align-items:baseline}
.cs{color:var(--mu);font-size:12px;margin:2px 0 4px}
.cap{color:var(--mu);font-size:12px;margin:8px 0 0}
svg{display:block;width:100%;height:auto}
.spark{display:grid;grid-template-columns:repeat(auto-fill,minmax(370px,1fr));gap:6px 14px}
.gap{margin-top:14px}
.sp{display:grid;grid-template-columns:1fr 120px 44px;gap:8px;align-items:center;
background:var(--card);border:1px solid var(--ln);border-radius:6px;padding:4px 8px;font-size:12px}
.sp .nm{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.legend{display:flex;flex-wrap:wrap;gap:4px 16px;color:var(--mu);font-size:12px;margin:0 0 10px}
.legend i{display:inline-block;width:18px;height:10px;margin-right:5px;vertical-align:middle}
.lg-st{border-top:2px solid var(--st);height:0!important}
.lg-th{border-top:2px dashed #9ca3af;height:0!important}
.lg-pt{background:var(--ac);border-radius:50%;width:8px!important;height:8px!important}
.lg-sp{background:var(--acl);border:1px solid #f7c6a3}
.lg-mk{border-left:2px dashed #6d28d9;width:2px!important;height:12px!important}
.lg-bl{background:#cbd2da}.lg-wn{background:var(--ac)}
.lg-re{border-top:2px solid var(--fg);height:0!important}
.lg-es{border-top:2px dashed var(--fg);height:0!important}
.lg-bd{background:#dbe3f0}
.ax{font-size:9px;fill:#6b7280}.ax line,line.ax{stroke:#e5e7eb;stroke-width:1}
.axl{font-size:9px;fill:#6b7280}
.bx{fill:none;stroke:#d1d5db;stroke-width:1}
.st{fill:none;stroke:var(--st);stroke-width:1.4;stroke-linejoin:round}
.th{fill:none;stroke:#9ca3af;stroke-width:1;stroke-dasharray:4 3}
.pd{fill:var(--ac);stroke:#fff;stroke-width:.6}
.ssp{fill:var(--ac);opacity:.13}.ssp.hi{fill:var(--red);opacity:.12}
.mk{stroke:#6d28d9;stroke-width:1;stroke-dasharray:3 2}.mkt{font-size:8.5px;fill:#6d28d9}
.bb{fill:#cbd2da}.bw{fill:var(--ac);opacity:.85}
.v0{stroke:#2563eb;fill:#2563eb}.v1{stroke:#0d9488;fill:#0d9488}.v2{stroke:#7c3aed;fill:#7c3aed}
.v3{stroke:#a16207;fill:#a16207}.v4{stroke:#db2777;fill:#db2777}.v5{stroke:#4b5563;fill:#4b5563}
.pl{fill:none!important;stroke-width:1.6;stroke-linejoin:round}.pe{stroke-dasharray:5 3}
.bd{stroke:none!important;opacity:.15}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;
vertical-align:middle}
.c0{background:#2563eb}.c1{background:#0d9488}.c2{background:#7c3aed}.c3{background:#a16207}
.c4{background:#db2777}.c5{background:#4b5563}
footer{margin-top:36px;color:var(--mu);font-size:12px}
@media print{.tw.tall{max-height:none}body{background:#fff}}
"""


# --- small formatting helpers ----------------------------------------------------------------


def _e(value: object) -> str:
    """Escape anything for HTML text or a quoted attribute (data is untrusted)."""
    return escape(str(value), quote=True)


def _c(v: float) -> str:
    """An SVG coordinate: one decimal, no trailing ``.0`` (size), never ``-0``."""
    s = f"{v:.1f}"
    if s.endswith(".0"):
        s = s[:-2]
    return "0" if s == "-0" else s


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _date(ts: float, hours: bool) -> str:
    """UTC date, with hours when windows are shorter than a day."""
    return _dt(ts).strftime("%Y-%m-%d %H:%M" if hours else "%Y-%m-%d")


def _num(v: float | None, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if _finite(v) else "\u2014"


def _int(v: int) -> str:
    return f"{v:,}"


def _p(v: float | None) -> str:
    if not _finite(v):
        return "\u2014"
    assert v is not None
    return f"{v:.2g}" if v >= 0.001 else f"{v:.1e}"


def _duration(seconds: float) -> str:
    if seconds <= 0 or not math.isfinite(seconds):
        return "?"
    for unit, size in (("day", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if unit == 'day' and n != 1 else ''}"
    return f"{seconds:g} s"


def _sev_rank(severity: str) -> int:
    return SEVERITY_RANK.get(severity.upper(), 0)


def _sev_badge(severity: str) -> str:
    return f'<span class="sev s{_sev_rank(severity)}">{_e(severity)}</span>'


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _text_width(text: str, size: float) -> float:
    """Rough width of SVG text in the system font (to avoid overlapping labels)."""
    return len(text) * size * 0.56 + 2


# --- scales and axes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scale:
    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, v: float) -> float:
        span = self.d1 - self.d0
        if span == 0:
            return (self.r0 + self.r1) / 2
        return self.r0 + (v - self.d0) / span * (self.r1 - self.r0)


@dataclass(frozen=True)
class _Box:
    """A chart's plot area inside its viewBox."""

    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float

    @property
    def x0(self) -> float:
        return self.left

    @property
    def x1(self) -> float:
        return self.width - self.right

    @property
    def y0(self) -> float:
        return self.height - self.bottom

    @property
    def y1(self) -> float:
        return self.top


_NICE_SECONDS = (
    60, 5 * 60, 15 * 60, 30 * 60, 3600, 2 * 3600, 3 * 3600, 6 * 3600, 12 * 3600,
    86400, 2 * 86400, 7 * 86400, 14 * 86400,
)  # fmt: skip
_NICE_MONTHS = (1, 2, 3, 6, 12, 24, 60)


def _time_ticks(t0: float, t1: float, max_ticks: int) -> tuple[list[float], bool]:
    """Round UTC instants (hours, days, month starts) in [t0, t1]; and whether they need hours."""
    span = t1 - t0
    if span <= 0:
        return [t0], False
    for step in _NICE_SECONDS:
        if span / step <= max_ticks:
            first = math.ceil(t0 / step) * step
            ticks = [float(t) for t in range(int(first), int(t1) + 1, step)]
            if step == 7 * 86400 or step == 14 * 86400:
                # align weekly ticks to Mondays (epoch day 0 was a Thursday)
                first = math.ceil((t0 - 4 * 86400) / step) * step + 4 * 86400
                ticks = [float(t) for t in range(int(first), int(t1) + 1, step)]
            return ticks, step < 86400
    start = _dt(t0)
    for months in _NICE_MONTHS:
        if span / (months * 30.44 * 86400) <= max_ticks:
            break
    ticks = []
    m = start.year * 12 + start.month - 1
    m = math.ceil(m / months) * months
    while True:
        d = datetime(m // 12, m % 12 + 1, 1, tzinfo=UTC)
        if d.timestamp() > t1:
            break
        if d.timestamp() >= t0:
            ticks.append(d.timestamp())
        m += months
    return ticks, False


def _nice_ceiling(v: float) -> float:
    for c in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0):
        if v <= c + 1e-12:
            return c
    mag = 10.0 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * mag:
            return m * mag
    return v


def _axis_labels(box: _Box, labels: Sequence[tuple[float, str]], size: float = 9) -> str:
    """Labels under the plot at x positions, kept inside the viewBox; a label that would
    overlap the previous one is dropped (so axes stay readable at any density)."""
    out: list[str] = []
    last_end = -1e9
    for px, text in labels:
        w = _text_width(text, size)
        left, anchor = px - w / 2, ""
        if left < 0:
            left, anchor = px, ' text-anchor="start"'
        elif left + w > box.width:
            left, anchor = px - w, ' text-anchor="end"'
        if left < last_end + 4:
            continue
        last_end = left + w
        out.append(
            f'<text class="axl" x="{_c(px)}" y="{_c(box.y0 + 11)}"{anchor}>{_e(text)}</text>'
        )
    return "".join(out)


def _time_axis(box: _Box, x: _Scale, max_ticks: int) -> str:
    """Vertical grid lines and date labels at round UTC instants."""
    ticks, hours = _time_ticks(x.d0, x.d1, max_ticks)
    out: list[str] = []
    for t in ticks:
        px = _c(x(t))
        out.append(f'<line class="ax" x1="{px}" x2="{px}" y1="{_c(box.y1)}" y2="{_c(box.y0)}"/>')
    fmt = "%m-%d %H:%M" if hours else "%Y-%m-%d"
    out.append(_axis_labels(box, [(x(t), _dt(t).strftime(fmt)) for t in ticks]))
    return "".join(out)


def _tick(v: float) -> str:
    """Axis number: two decimals, three where two would round (0.075)."""
    s = f"{v:.2f}"
    return s if abs(float(s) - v) < 1e-9 else f"{v:.3f}"


def _nice_range(lo: float, hi: float, max_ticks: int = 6) -> tuple[float, float, list[float]]:
    """Extend [lo, hi] to multiples of a round step; the ticks at that step."""
    for step in (0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0):
        a = math.floor(lo / step + 1e-9) * step
        b = math.ceil(hi / step - 1e-9) * step
        if b <= a:
            b = a + step
        if (b - a) / step <= max_ticks:
            n = round((b - a) / step)
            return a, b, [a + k * step for k in range(n + 1)]
    return lo, hi, [lo, hi]


def _value_axis(box: _Box, y: _Scale, ticks: Sequence[float]) -> str:
    out: list[str] = []
    for v in ticks:
        py = y(v)
        out.append(
            f'<line class="ax" x1="{_c(box.x0)}" x2="{_c(box.x1)}" y1="{_c(py)}" y2="{_c(py)}"/>'
            f'<text class="axl" x="{_c(box.x0 - 3)}" y="{_c(py + 3)}" text-anchor="end">'
            f"{_tick(v)}</text>"
        )
    return "".join(out)


def _polyline(pts: Iterable[tuple[float, float]], cls: str, title: str = "") -> str:
    s = " ".join(f"{_c(px)},{_c(py)}" for px, py in pts)
    if not s:
        return ""
    if title:
        return f'<polyline class="{cls}" points="{s}"><title>{_e(title)}</title></polyline>'
    return f'<polyline class="{cls}" points="{s}"/>'


def _segments(
    items: Sequence[tuple[float, float | None]], gap: float
) -> list[list[tuple[float, float]]]:
    """Split a series at missing values and at time gaps larger than ``gap``."""
    segs: list[list[tuple[float, float]]] = []
    cur: list[tuple[float, float]] = []
    last_t: float | None = None
    for t, v in items:
        if v is None or not math.isfinite(v) or (last_t is not None and t - last_t > gap):
            if cur:
                segs.append(cur)
            cur = []
        if v is not None and math.isfinite(v):
            cur.append((t, v))
        last_t = t
    if cur:
        segs.append(cur)
    return segs


# --- report-wide context -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Ctx:
    data: ReportData
    t0: float
    t1: float
    window: float
    hours: bool
    spans: dict[str, list[IncidentSpan]]
    version_class: dict[str, int]

    def when(self, ts: float) -> str:
        return _date(ts, self.hours)

    def version_index(self, version: str) -> int:
        return self.version_class.get(version, 0) % VERSION_COLOURS


def _context(data: ReportData) -> _Ctx:
    window = (
        data.window_seconds if _finite(data.window_seconds) and data.window_seconds > 0 else 86400.0
    )
    starts: list[float] = [p.window_start for f in data.features for p in f.points]
    starts += [p.window_start for p in data.performance]
    if data.first_window is not None:
        starts.append(data.first_window)
    if data.last_window is not None:
        starts.append(data.last_window)
    starts = [s for s in starts if math.isfinite(s)]
    if starts:
        t0, t1 = min(starts), max(starts) + window
    else:
        t0 = data.generated_at - window
        t1 = data.generated_at
    spans: dict[str, list[IncidentSpan]] = {}
    for inc in data.incidents:
        if inc.feature is not None:
            spans.setdefault(inc.feature, []).append(inc)
    versions: dict[str, int] = {}
    for v in [*data.versions, *(p.model_version for p in data.performance)]:
        versions.setdefault(v, len(versions))
    return _Ctx(data, t0, t1, window, window < 86400, spans, versions)


# --- charts ------------------------------------------------------------------------------------


def _marker_label(m: ModelMarker) -> str:
    return MARKER_GLYPHS.get(m.action, "\u25cf") + _short(m.version, 10)


def _marker_title(m: ModelMarker) -> str:
    prev = f" (from {m.previous})" if m.previous else ""
    return _e(f"{_date(m.at, True)} UTC {m.action} {m.version}{prev}: {m.reason}")


def _markers_svg(box: _Box, x: _Scale, ctx: _Ctx, size: float = 8.5) -> str:
    """Model events as vertical lines, labels above the plot in up to two rows (a label
    that fits in neither is left out; the line keeps its tooltip and the table has it all)."""
    out: list[str] = []
    rows_end: list[float] = [-1e9, -1e9]
    for m in sorted(ctx.data.markers, key=lambda m: (m.at, m.action, m.version)):
        if not (_finite(m.at) and ctx.t0 <= m.at <= ctx.t1):
            continue
        px = x(m.at)
        label = _marker_label(m)
        w = _text_width(label, size)
        lx = min(max(px - w / 2, 0.0), box.width - w)
        title = f"<title>{_marker_title(m)}</title>"
        out.append(
            f'<g><line class="mk" x1="{_c(px)}" x2="{_c(px)}" y1="{_c(box.y1 - 2)}" '
            f'y2="{_c(box.y0)}"/>{title}</g>'
        )
        for row, end in enumerate(rows_end):
            if lx > end + 3:
                rows_end[row] = lx + w
                ly = box.y1 - 4 - row * (size + 1)
                out.append(f'<text class="mkt" x="{_c(lx)}" y="{_c(ly)}">{_e(label)}{title}</text>')
                break
    return "".join(out)


def _stat_domain(points: Sequence[TestPoint]) -> float:
    vals = [p.statistic for p in points if _finite(p.statistic)]
    vals += [p.threshold for p in points if _finite(p.threshold)]
    return _nice_ceiling(max([*vals, 0.01]) * 1.08)


def _test_label(points: Sequence[TestPoint]) -> str:
    tests = {p.test for p in points}
    if len(tests) == 1:
        (test,) = tests
        return TEST_LABELS.get(test, test)
    return "statistic"


def _threshold_line(points: Sequence[TestPoint], x: _Scale, y: _Scale, ctx: _Ctx) -> str:
    pts = [(p.window_start, p.threshold) for p in points if _finite(p.threshold)]
    if not pts:
        return ""
    if all(v == pts[0][1] for _, v in pts):
        return _polyline([(x(ctx.t0), y(pts[0][1])), (x(ctx.t1), y(pts[0][1]))], "th")
    steps: list[tuple[float, float]] = []
    for t, v in pts:
        steps += [(x(t), y(v)), (x(t + ctx.window), y(v))]
    return _polyline(steps, "th")


def _feature_chart(f: FeatureReport, ctx: _Ctx) -> str:
    """Statistic over time against its threshold, drifting windows and incidents marked."""
    box = _Box(360, 150, 30, 8, 22 if ctx.data.markers else 8, 16)
    x = _Scale(ctx.t0, ctx.t1, box.x0, box.x1)
    ymax = _stat_domain(f.points)
    y = _Scale(0, ymax, box.y0, box.y1)
    half = ctx.window / 2
    parts = [
        f'<svg class="chart fc" viewBox="0 0 {box.width} {box.height}" role="img" '
        f'aria-label="{_e(f.name)}: {_e(_test_label(f.points))} per window">'
    ]
    for inc in ctx.spans.get(f.name, []):
        if not _finite(inc.start):
            continue
        end = inc.end if inc.end is not None and _finite(inc.end) else ctx.t1
        x0, x1 = x(max(inc.start, ctx.t0)), x(min(end, ctx.t1))
        hi = " hi" if _sev_rank(inc.severity) >= 3 else ""
        until = "open" if inc.end is None else _date(end, ctx.hours)
        parts.append(
            f'<rect class="ssp{hi}" x="{_c(x0)}" y="{_c(box.y1)}" width="{_c(max(x1 - x0, 1))}" '
            f'height="{_c(box.y0 - box.y1)}"><title>{_e(inc.severity)} incident '
            f"{_e(inc.drift_id[:8])}: {_date(inc.start, ctx.hours)} \u2013 {until}, "
            f"{inc.persistence} windows</title></rect>"
        )
    parts.append(_value_axis(box, y, [0, ymax / 2, ymax]))
    parts.append(_time_axis(box, x, 4))
    parts.append(_threshold_line(f.points, x, y, ctx))
    for seg in _segments([(p.window_start, p.statistic) for p in f.points], ctx.window * 1.5):
        parts.append(_polyline([(x(t + half), y(min(v, ymax))) for t, v in seg], "st"))
    label = _test_label(f.points)
    for p in f.points:
        if p.drifting and _finite(p.statistic):
            tip = (
                f"{_date(p.window_start, ctx.hours)}: {label} {p.statistic:.3f} "
                f"(floor {_num(p.threshold)}), p={_p(p.p_value)}, n={_int(p.count)}"
            )
            parts.append(
                f'<circle class="pd" cx="{_c(x(p.window_start + half))}" '
                f'cy="{_c(y(min(p.statistic, ymax)))}" r="2.4"><title>{_e(tip)}</title></circle>'
            )
    parts.append(_markers_svg(box, x, ctx))
    parts.append(
        f'<rect class="bx" x="{_c(box.x0)}" y="{_c(box.y1)}" width="{_c(box.x1 - box.x0)}" '
        f'height="{_c(box.y0 - box.y1)}"/></svg>'
    )
    return "".join(parts)


def _sparkline(f: FeatureReport, ctx: _Ctx) -> str:
    w, h = 120.0, 22.0
    x = _Scale(ctx.t0, ctx.t1, 1, w - 1)
    ymax = _stat_domain(f.points)
    y = _Scale(0, ymax, h - 2, 2)
    half = ctx.window / 2
    parts = [
        f'<svg class="chart sl" viewBox="0 0 {_c(w)} {_c(h)}" role="img" '
        f'aria-label="{_e(f.name)} statistic">'
    ]
    parts.append(_threshold_line(f.points, x, y, ctx))
    for seg in _segments([(p.window_start, p.statistic) for p in f.points], ctx.window * 1.5):
        parts.append(_polyline([(x(t + half), y(min(v, ymax))) for t, v in seg], "st"))
    parts.append("</svg>")
    return "".join(parts)


def _pooled(dist: Distribution) -> tuple[list[str], list[float], list[float]]:
    """Categories beyond ``MAX_CATEGORIES`` pooled into one bar, biggest ones kept."""
    n = min(len(dist.labels), len(dist.baseline), len(dist.window))
    labels, base, win = dist.labels[:n], dist.baseline[:n], dist.window[:n]
    if dist.kind != "categorical" or n <= MAX_CATEGORIES:
        return list(labels), list(base), list(win)
    order = sorted(range(n), key=lambda i: (-max(base[i], win[i]), i))
    keep = sorted(order[: MAX_CATEGORIES - 1])
    rest = order[MAX_CATEGORIES - 1 :]
    return (
        [labels[i] for i in keep] + [f"({len(rest)} others)"],
        [base[i] for i in keep] + [sum(base[i] for i in rest)],
        [win[i] for i in keep] + [sum(win[i] for i in rest)],
    )


def _distribution_chart(dist: Distribution, ctx: _Ctx) -> str:
    """Baseline vs window shares: paired bars per bin or category."""
    labels, base, win = _pooled(dist)
    n = len(labels)
    if n == 0:
        return '<p class="note">No distribution data.</p>'
    categorical = dist.kind == "categorical"
    rotate = categorical and n > 6
    bottom = 16.0
    if rotate:
        bottom = min(60.0, 8 + 5.2 * max(len(_short(lb, 14)) for lb in labels))
    box = _Box(360, 110 + bottom, 30, 8, 8, bottom)
    vals = [v for v in (*base, *win) if _finite(v)]
    ymax = _nice_ceiling(max([*vals, 0.01]) * 1.05)
    y = _Scale(0, ymax, box.y0, box.y1)
    band = (box.x1 - box.x0) / n
    bw = max(band * (0.4 if categorical else 0.45), 0.5)
    parts = [
        f'<svg class="chart dc" viewBox="0 0 {box.width} {_c(box.height)}" role="img" '
        f'aria-label="baseline vs window distribution">'
    ]
    parts.append(_value_axis(box, y, [0, ymax / 2, ymax]))
    for i in range(n):
        bx = box.x0 + i * band + (band - 2 * bw) / 2
        b = base[i] if _finite(base[i]) else 0.0
        w = win[i] if _finite(win[i]) else 0.0
        tip = f"<title>{_e(labels[i])}: baseline {b:.1%}, window {w:.1%}</title>"
        for cls, v, off in (("bb", b, 0.0), ("bw", w, bw)):
            top = y(min(v, ymax))
            parts.append(
                f'<rect class="{cls}" x="{_c(bx + off)}" y="{_c(top)}" width="{_c(bw)}" '
                f'height="{_c(max(box.y0 - top, 0))}">{tip}</rect>'
            )
    if rotate:
        for i, lb in enumerate(labels):
            cx = box.x0 + (i + 0.5) * band
            parts.append(
                f'<text class="axl" text-anchor="end" transform="translate({_c(cx + 3)},'
                f'{_c(box.y0 + 8)}) rotate(-40)">{_e(_short(lb, 14))}</text>'
            )
    else:
        shown = n if categorical else min(n, 3)
        idx = sorted({round(k * (n - 1) / max(shown - 1, 1)) for k in range(shown)})
        limit = 16 if shown <= 3 else 10
        parts.append(
            _axis_labels(box, [(box.x0 + (i + 0.5) * band, _short(labels[i], limit)) for i in idx])
        )
    parts.append(
        f'<rect class="bx" x="{_c(box.x0)}" y="{_c(box.y1)}" width="{_c(box.x1 - box.x0)}" '
        f'height="{_c(box.y0 - box.y1)}"/></svg>'
    )
    return "".join(parts)


def _perf_chart(
    ctx: _Ctx,
    title: str,
    realised: Callable[[PerformancePoint], float | None],
    estimated: Callable[[PerformancePoint], float | None],
    bound: Callable[[PerformancePoint], float | None] | None,
) -> str:
    """One metric over time per version: realised solid, estimated dashed, error band."""
    box = _Box(1000, 210, 38, 12, 24 if ctx.data.markers else 10, 18)
    x = _Scale(ctx.t0, ctx.t1, box.x0, box.x1)
    by_version: dict[str, list[PerformancePoint]] = {}
    for p in sorted(ctx.data.performance, key=lambda p: p.window_start):
        by_version.setdefault(p.model_version, []).append(p)
    vals: list[float] = []
    for pts in by_version.values():
        for p in pts:
            for v in (realised(p), estimated(p)):
                if v is not None and math.isfinite(v):
                    vals.append(v)
            r, b = realised(p), bound(p) if bound else None
            if r is not None and b is not None and math.isfinite(r) and math.isfinite(b):
                vals += [r - b, r + b]
    if not vals:
        return f'<p class="note">No {_e(title)} values yet.</p>'
    lo, hi, ticks = _nice_range(max(0.0, min(vals) - 0.01), min(1.0, max(vals) + 0.01))
    y = _Scale(lo, hi, box.y0, box.y1)
    half = ctx.window / 2
    gap = ctx.window * 1.5
    parts = [
        f'<svg class="chart pc" viewBox="0 0 {box.width} {box.height}" role="img" '
        f'aria-label="{_e(title)} per window and model version">'
    ]
    for inc in ctx.data.incidents:
        if inc.feature is None and _finite(inc.start):
            end = inc.end if inc.end is not None and _finite(inc.end) else ctx.t1
            x0, x1 = x(max(inc.start, ctx.t0)), x(min(end, ctx.t1))
            hi_cls = " hi" if _sev_rank(inc.severity) >= 3 else ""
            parts.append(
                f'<rect class="ssp{hi_cls}" x="{_c(x0)}" y="{_c(box.y1)}" '
                f'width="{_c(max(x1 - x0, 1))}" height="{_c(box.y0 - box.y1)}"><title>'
                f"{_e(inc.severity)} {_e(inc.test)} incident {_e(inc.drift_id[:8])}</title></rect>"
            )
    parts.append(_value_axis(box, y, ticks))
    parts.append(_time_axis(box, x, 10))
    for version, pts in by_version.items():
        vc = f"v{ctx.version_index(version)}"
        if bound is not None:
            items = [(p.window_start, realised(p) if _finite(bound(p)) else None) for p in pts]
            bmap = {p.window_start: bound(p) or 0.0 for p in pts}
            for seg in _segments(items, gap):
                upper = [(x(t + half), y(min(v + bmap[t], hi))) for t, v in seg]
                lower = [(x(t + half), y(max(v - bmap[t], lo))) for t, v in reversed(seg)]
                pts_s = " ".join(f"{_c(a)},{_c(b)}" for a, b in upper + lower)
                parts.append(f'<polygon class="{vc} bd" points="{pts_s}"/>')
        for fn, cls in ((realised, "pl"), (estimated, "pl pe")):
            for seg in _segments([(p.window_start, fn(p)) for p in pts], gap):
                if len(seg) == 1:
                    t, v = seg[0]
                    parts.append(
                        f'<circle class="{vc}" cx="{_c(x(t + half))}" cy="{_c(y(v))}" r="1.8"/>'
                    )
                    continue
                kind = "estimated" if "pe" in cls else "realised"
                parts.append(
                    _polyline(
                        [(x(t + half), y(v)) for t, v in seg], f"{vc} {cls}", f"{version} {kind}"
                    )
                )
    parts.append(_markers_svg(box, x, ctx, 9.5))
    parts.append(
        f'<rect class="bx" x="{_c(box.x0)}" y="{_c(box.y1)}" width="{_c(box.x1 - box.x0)}" '
        f'height="{_c(box.y0 - box.y1)}"/></svg>'
    )
    return "".join(parts)


# --- sections ----------------------------------------------------------------------------------


def _header(ctx: _Ctx) -> str:
    d = ctx.data
    if d.first_window is not None and d.last_window is not None:
        n = round((d.last_window - d.first_window) / ctx.window) + 1
        windows = (
            f"{ctx.when(d.first_window)} \u2013 {ctx.when(d.last_window + ctx.window)} "
            f"({n} \u00d7 {_duration(ctx.window)})"
        )
    else:
        windows = f"none yet ({_duration(ctx.window)} windows)"
    # the versions the data names, else the ones its performance history shows
    versions = ", ".join(_e(v) for v in (d.versions or ctx.version_class)) or "\u2014"
    items = [
        ("Source", _e(d.source)),
        ("Generated", f"{_date(d.generated_at, True)} UTC"),
        ("Windows", windows),
        ("Model versions", versions),
        ("Active version", _e(d.active_version) if d.active_version else "\u2014"),
    ]
    meta = "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in items)
    open_inc = [i for i in d.incidents if i.open]
    severe_open = [i for i in open_inc if _sev_rank(i.severity) >= 3]
    drifting = {i.feature for i in d.incidents if i.feature is not None}
    drifting |= {f.name for f in d.features if any(p.drifting for p in f.points)}
    perf_open = [i for i in open_inc if i.feature is None]
    kpis = [
        ("alert" if severe_open else "warn" if open_inc else "", str(len(open_inc)),
         f"open incidents ({len(severe_open)} HIGH/CRITICAL)"),
        ("warn" if drifting else "", f"{len(drifting)} / {len(d.features)}",
         "features with drift"),
        ("alert" if perf_open else "", str(len(perf_open)), "open performance incidents"),
        ("", str(len(d.incidents)), "incidents in the period"),
    ]  # fmt: skip
    kpi_html = "".join(
        f'<div class="kpi {cls}"><b>{v}</b><span>{label}</span></div>' for cls, v, label in kpis
    )
    if d.settings:
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in d.settings.items())
        settings = (
            '<details open><summary>Detection settings</summary><div class="tw">'
            f'<table class="settings">{rows}</table></div></details>'
        )
    else:
        settings = '<p class="note">No detection settings recorded.</p>'
    return (
        f"<header><h1>{_e(d.tenant)} / {_e(d.model)}</h1>"
        f'<p class="sub">Drift report \u00b7 all times UTC</p>'
        f'<dl class="meta">{meta}</dl><div class="kpis">{kpi_html}</div>{settings}</header>'
    )


def _incident_order(inc: IncidentSpan) -> tuple[object, ...]:
    """Open first, ranked by impact (:func:`streams.importance.rank_key`: impact, then
    severity, then feature; those without an impact after); then closed ones, most severe,
    then newest."""
    start = inc.start if _finite(inc.start) else 0.0
    if inc.open:
        return (0, *rank_key(inc.impact, inc.severity, inc.feature), -start, inc.drift_id)
    return (1, 1, 0.0, -_sev_rank(inc.severity), "", -start, inc.drift_id)


def _impact_cell(i: IncidentSpan) -> str:
    if i.impact is None or not _finite(i.impact):
        return '<span class="mu">\u2013</span>'
    title = (
        f"importance {i.importance:.3f} ({i.importance_source})" if i.importance is not None else ""
    )
    return f'<span title="{_e(title)}">{i.impact:.3f}</span>'


def _incidents(ctx: _Ctx, anchors: dict[str, str]) -> str:
    incs = sorted(ctx.data.incidents, key=_incident_order)
    head = '<section id="incidents"><h2>Incidents</h2>'
    if not incs:
        return head + '<p class="note">No incidents in this period.</p></section>'
    rows: list[str] = []
    for i in incs:
        if i.feature is None:
            subject = '<span class="mu">performance</span>'
        elif i.feature in anchors:
            subject = f'<a href="#{anchors[i.feature]}">{_e(i.feature)}</a>'
        else:
            subject = _e(i.feature)
        if i.segment:
            subject += " " + _e(segment_label(i.segment))
        end = (
            '<span class="open">open</span>'
            if i.end is None or not _finite(i.end)
            else ctx.when(i.end)
        )
        status = '<span class="open">open</span>' if i.open else "closed"
        rows.append(
            f'<tr class="incident"><td><code title="{_e(i.drift_id)}">{_e(i.drift_id[:8])}</code>'
            f"</td><td>{subject}</td><td>{_e(i.test)}</td><td>{_sev_badge(i.severity)}</td>"
            f"<td>{status}</td><td>{'yes' if i.confirmed else 'no'}</td>"
            f'<td class="n">{i.persistence}</td><td>{ctx.when(i.start)}</td><td>{end}</td>'
            f'<td class="n">{_impact_cell(i)}</td></tr>'
        )
    return (
        f'{head}<div class="tw"><table class="incidents"><thead><tr><th>ID</th>'
        "<th>Feature</th><th>Test</th><th>Severity</th><th>Status</th><th>Confirmed</th>"
        '<th class="n">Windows</th><th>Start</th><th>End</th>'
        '<th class="n" title="importance x effect size; open incidents are ranked by it">'
        "Impact</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def _feature_order(
    features: Sequence[FeatureReport], ctx: _Ctx
) -> tuple[list[FeatureReport], list[FeatureReport]]:
    """Drifting features (most severe incident first, open before closed), then the rest."""
    drifting: list[tuple[tuple[int, int, float, str], FeatureReport]] = []
    quiet: list[FeatureReport] = []
    for f in features:
        spans = ctx.spans.get(f.name, [])
        if spans or any(p.drifting for p in f.points):
            worst = max((_sev_rank(s.severity) for s in spans), default=0)
            is_open = any(s.open for s in spans)
            peak = max((p.statistic for p in f.points if _finite(p.statistic)), default=0.0)
            drifting.append(((-worst, 0 if is_open else 1, -peak, f.name), f))
        else:
            quiet.append(f)
    drifting.sort(key=lambda kf: kf[0])
    quiet.sort(key=lambda f: f.name)
    return [f for _, f in drifting], quiet


def _feature_card(f: FeatureReport, ctx: _Ctx, anchor: str) -> str:
    spans = ctx.spans.get(f.name, [])
    worst = max(spans, key=lambda s: (_sev_rank(s.severity), s.open), default=None)
    n_drift = sum(1 for p in f.points if p.drifting)
    cls = "card"
    badge = ""
    if worst is not None or n_drift:
        cls += " drift"
    if worst is not None:
        cls += f" sev{_sev_rank(worst.severity)}"
        state = " \u00b7 open" if any(s.open for s in spans) else ""
        badge = f'<span>{_sev_badge(worst.severity)}<span class="mu">{state}</span></span>'
    finite = [p for p in f.points if _finite(p.statistic)]
    if finite:
        peak = max(finite, key=lambda p: p.statistic)
        stats = (
            f"{_e(f.kind)} \u00b7 {_e(_test_label(f.points))} \u00b7 drifting in {n_drift} of "
            f"{len(f.points)} windows \u00b7 peak {peak.statistic:.3f} on "
            f"{ctx.when(peak.window_start)}"
        )
        chart = _feature_chart(f, ctx)
    else:
        stats = f"{_e(f.kind)}"
        chart = '<p class="note">No tested windows yet.</p>'
    dist = ""
    if f.distribution is not None:
        dd = f.distribution
        dist = (
            f'<p class="cap">Window {ctx.when(dd.window_start)} vs baseline '
            f"{ctx.when(dd.baseline_start)} \u2013 {ctx.when(dd.baseline_end)} "
            f"({'per bin' if dd.kind == 'numeric' else 'per category'})</p>"
            + _distribution_chart(dd, ctx)
        )
    return (
        f'<article class="{cls}" id="{anchor}" data-feature="{_e(f.name)}">'
        f'<div class="ch"><h3>{_e(f.name)}</h3>{badge}</div><p class="cs">{stats}</p>'
        f"{chart}{dist}</article>"
    )


def _features(ctx: _Ctx, anchors: dict[str, str]) -> str:
    d = ctx.data
    head = '<section id="features"><h2>Features</h2>'
    if not d.features:
        return head + '<p class="note">No feature tests in this report.</p></section>'
    drifting, quiet = _feature_order(d.features, ctx)
    compact = len(d.features) >= COMPACT_FROM_FEATURES
    full = drifting if compact else drifting + quiet
    legend = (
        '<div class="legend"><span><i class="lg-st"></i>statistic per window</span>'
        '<span><i class="lg-th"></i>threshold (effect floor)</span>'
        '<span><i class="lg-pt"></i>drifting window</span>'
        '<span><i class="lg-sp"></i>incident</span>'
        + ('<span><i class="lg-mk"></i>model event</span>' if d.markers else "")
        + '<span><i class="lg-bl"></i>baseline share</span>'
        '<span><i class="lg-wn"></i>window share</span></div>'
    )
    parts = [head, legend]
    if full:
        parts.append('<div class="grid">')
        parts += [_feature_card(f, ctx, anchors[f.name]) for f in full]
        parts.append("</div>")
    if compact and quiet:
        parts.append(
            f"<h2>Features without drift ({len(quiet)})</h2>"
            '<p class="sub">Statistic per window, on each feature\'s own scale; the number is '
            'its peak.</p><div class="spark">'
        )
        for f in quiet:
            peak = max((p.statistic for p in f.points if _finite(p.statistic)), default=None)
            parts.append(
                f'<div class="sp" id="{anchors[f.name]}" data-feature="{_e(f.name)}">'
                f'<span class="nm" title="{_e(f.name)}">{_e(f.name)}</span>'
                f'{_sparkline(f, ctx)}<span class="mu n">{_num(peak)}</span></div>'
            )
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def _performance(ctx: _Ctx) -> str:
    d = ctx.data
    head = '<section id="performance"><h2>Performance</h2>'
    if not d.performance:
        return head + '<p class="note">No performance data (no labelled outcomes).</p></section>'
    legend_versions = "".join(
        f'<span><span class="sw c{ctx.version_index(v)}"></span>{_e(v)}'
        f"{' (active)' if v == d.active_version else ''}</span>"
        for v in ctx.version_class
    )
    legend = (
        f'<div class="legend">{legend_versions}<span><i class="lg-re"></i>realised</span>'
        '<span><i class="lg-es"></i>estimated (CBPE, before labels)</span>'
        '<span><i class="lg-bd"></i>PR-AUC error bound</span>'
        '<span><i class="lg-sp"></i>performance incident</span>'
        + ('<span><i class="lg-mk"></i>model event</span>' if d.markers else "")
        + "</div>"
    )
    acc = _perf_chart(ctx, "accuracy", lambda p: p.accuracy, lambda p: p.estimated_accuracy, None)
    pr = _perf_chart(
        ctx, "PR-AUC", lambda p: p.pr_auc, lambda p: p.estimated_pr_auc,
        lambda p: p.pr_auc_error_bound,
    )  # fmt: skip
    rows: list[str] = []
    order = sorted(
        d.performance,
        key=lambda p: (-p.window_start, ctx.version_class.get(p.model_version, 0)),
    )
    for p in order:
        rate = f" ({p.labelled / p.predictions:.0%})" if p.predictions > 0 else ""
        pr_s = _num(p.pr_auc)
        if _finite(p.pr_auc) and _finite(p.pr_auc_error_bound):
            pr_s += f' <span class="mu">\u00b1 {_num(p.pr_auc_error_bound)}</span>'
        rows.append(
            f"<tr><td>{ctx.when(p.window_start)}</td><td>"
            f'<span class="sw c{ctx.version_index(p.model_version)}"></span>'
            f'{_e(p.model_version)}</td><td class="n">{_int(p.predictions)}</td>'
            f'<td class="n">{_int(p.labelled)}{rate}</td><td class="n">{_num(p.accuracy)}</td>'
            f'<td class="n">{_num(p.estimated_accuracy)}</td><td class="n">{pr_s}</td>'
            f'<td class="n">{_num(p.estimated_pr_auc)}</td><td class="n">{_num(p.roc_auc)}</td>'
            "</tr>"
        )
    table = (
        '<h3 class="tt">Per window (newest first)</h3><div class="tw tall">'
        '<table class="performance"><thead><tr><th>Window</th><th>Version</th>'
        '<th class="n">Predictions</th><th class="n">Labelled</th><th class="n">Accuracy</th>'
        '<th class="n">Est. accuracy</th><th class="n">PR-AUC</th><th class="n">Est. PR-AUC</th>'
        f'<th class="n">ROC-AUC</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
    )
    return (
        f'{head}{legend}<div class="card"><h3>Accuracy</h3>{acc}</div>'
        f'<div class="card gap"><h3>PR-AUC</h3>{pr}</div>'
        f'<div class="gap">{table}</div></section>'
    )


def _markers(ctx: _Ctx) -> str:
    d = ctx.data
    head = '<section id="model-events"><h2>Model events</h2>'
    if not d.markers:
        return head + '<p class="note">No promotions, rollbacks or retraining steps.</p></section>'
    rows = "".join(
        f"<tr><td>{_date(m.at, True)}</td><td>{_e(m.action)}</td><td>{_e(m.version)}</td>"
        f"<td>{_e(m.previous) if m.previous else chr(0x2014)}</td><td>{_e(m.reason)}</td></tr>"
        for m in sorted(d.markers, key=lambda m: (m.at, m.action, m.version))
    )
    return (
        f'{head}<div class="tw"><table class="markers"><thead><tr><th>When (UTC)</th>'
        "<th>Action</th><th>Version</th><th>Previous</th><th>Reason</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div></section>"
    )


def render_report(data: ReportData) -> str:
    """The whole report for one model as one self-contained HTML page."""
    ctx = _context(data)
    anchors = {f.name: f"feature-{i}" for i, f in enumerate(data.features)}
    title = f"Drift report \u2014 {data.tenant}/{data.model}"
    body = "".join(
        [
            _header(ctx),
            _incidents(ctx, anchors),
            _features(ctx, anchors),
            _performance(ctx),
            _markers(ctx),
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head>"
        f'<body><main class="wrap">{body}<footer>driftwatch drift report for '
        f"{_e(data.tenant)}/{_e(data.model)}, generated {_date(data.generated_at, True)} UTC "
        f"from {_e(data.source)}.</footer></main></body></html>\n"
    )
