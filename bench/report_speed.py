"""HTML drift report: size, Python render time, and what the page costs Chromium.

    python -m bench.report_speed [--days 90] [--features 50] [--drifting 10] [--runs 5]

Builds the synthetic report (``tests/report_fixtures.py``: 90 days x 50 features, 10 of them
drifting with distributions, 2 model versions of performance) and prints:

- its size in bytes;
- the Python render time (median and best of ``--runs`` renders in this process);
- Chromium's cost, measured two ways, because a headless start alone is 0.5-1 s and varies:
  1. *Wall clock, difference to an empty page*: ``--dump-dom`` (load, parse, style, layout,
     then serialise) and ``--screenshot`` of the full page height (adds paint and raster) are
     run on the report and on an empty HTML page, interleaved, ``--runs`` times each; the
     median of the report's runs minus the median of the empty page's is what the report
     costs. Both with a fresh profile and the flags of ``tests/browser.py``.
  2. *The page's own Navigation Timing*: a copy of the report with a tiny inline script (the
     real report has none) that, in its ``load`` handler, writes ``domInteractive``,
     ``domContentLoadedEventEnd`` and ``loadEventStart`` (ms since navigation start) into the
     DOM, which ``--dump-dom`` then prints; medians over the runs. No virtual time budget
     here, so the clock is the real one.

Headless Chromium is installed first if it is missing (Debian's ``chromium`` package, as root).
A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

from driftwatch.report.render import render_report
from tests.browser import ensure_chromium, run_chromium
from tests.report_fixtures import synthetic_report

EMPTY_PAGE = (
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>x</title></head>'
    "<body></body></html>\n"
)
TIMING_SCRIPT = """<script>
addEventListener("load", function () {
  var n = performance.getEntriesByType("navigation")[0];
  var p = document.createElement("pre");
  p.id = "dw-timing";
  p.textContent = "interactive=" + n.domInteractive.toFixed(1) +
    " dcl=" + n.domContentLoadedEventEnd.toFixed(1) + " load=" + n.loadEventStart.toFixed(1);
  document.body.appendChild(p);
});
</script>"""
TIMING_RE = re.compile(r"interactive=([\d.]+) dcl=([\d.]+) load=([\d.]+)")


def _timed(args: list[str]) -> float:
    t = time.perf_counter()
    run_chromium(args, virtual_time_budget_ms=None)
    return time.perf_counter() - t


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--days", type=int, default=90)
    p.add_argument("--features", type=int, default=50)
    p.add_argument("--drifting", type=int, default=10)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    runs = max(1, args.runs)

    t = time.perf_counter()
    data = synthetic_report(days=args.days, features=args.features, drifting=args.drifting)
    build_s = time.perf_counter() - t
    render_s: list[float] = []
    html = ""
    for _ in range(runs):
        t = time.perf_counter()
        html = render_report(data)
        render_s.append(time.perf_counter() - t)
    size = len(html.encode("utf-8"))

    print(
        f"report: {args.days} days x {args.features} features ({args.drifting} drifting), "
        f"{len(data.incidents)} incidents, {len(data.performance)} performance points"
    )
    print(f"  size                {size:>12,} bytes ({size / 1024:.0f} KiB; limit 2 MiB)")
    print(f"  synthetic data      {build_s * 1000:>12.1f} ms")
    print(
        f"  python render       {_median_ms(render_s):>12.1f} ms median, "
        f"{min(render_s) * 1000:.1f} ms best of {runs}"
    )

    chromium = ensure_chromium()
    with tempfile.TemporaryDirectory(prefix="dw-bench-") as tmp:
        d = Path(tmp)
        report, empty, timed = d / "report.html", d / "empty.html", d / "timed.html"
        report.write_text(html, encoding="utf-8")
        empty.write_text(EMPTY_PAGE, encoding="utf-8")
        timed.write_text(html.replace("</body>", TIMING_SCRIPT + "</body>", 1), encoding="utf-8")
        page_height = 6000
        _timed(["--dump-dom", empty.as_uri()])  # warm the disk cache once
        dom_r: list[float] = []
        dom_e: list[float] = []
        shot_r: list[float] = []
        shot_e: list[float] = []
        nav: list[tuple[float, float, float]] = []
        for i in range(runs):
            dom_e.append(_timed(["--dump-dom", empty.as_uri()]))
            dom_r.append(_timed(["--dump-dom", report.as_uri()]))
            for src, sink in ((empty, shot_e), (report, shot_r)):
                png = d / f"shot-{i}.png"
                sink.append(
                    _timed(
                        [
                            "--hide-scrollbars",
                            f"--window-size=1280,{page_height}",
                            f"--screenshot={png}",
                            src.as_uri(),
                        ]
                    )
                )
            out = run_chromium(["--dump-dom", timed.as_uri()], virtual_time_budget_ms=None)
            m = TIMING_RE.search(out.stdout.decode("utf-8", errors="replace"))
            if m:
                nav.append((float(m.group(1)), float(m.group(2)), float(m.group(3))))

    print(f"chromium ({chromium}, headless, {runs} runs each, interleaved):")
    dom_cost = _median_ms(dom_r) - _median_ms(dom_e)
    print(
        f"  --dump-dom          report {_median_ms(dom_r):7.0f} ms, empty page "
        f"{_median_ms(dom_e):7.0f} ms  ->  report costs {dom_cost:6.0f} ms"
    )
    print(
        f"  --screenshot 1280x{page_height} report {_median_ms(shot_r):7.0f} ms, empty page "
        f"{_median_ms(shot_e):7.0f} ms  ->  report costs "
        f"{_median_ms(shot_r) - _median_ms(shot_e):6.0f} ms"
    )
    if nav:
        inter, dcl, load = (statistics.median(v[k] for v in nav) for k in range(3))
        print(
            f"  navigation timing   domInteractive {inter:.0f} ms, DOMContentLoaded {dcl:.0f} ms, "
            f"load {load:.0f} ms (medians, since navigation start)"
        )
    else:
        print("  navigation timing   not available (the timing script did not report)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
