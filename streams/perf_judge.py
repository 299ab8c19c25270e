"""Looking at a performance window: the tests, which findings count, and the incidents.

:class:`~streams.perf_monitor.PerformanceMonitor` keeps the history and decides *when* a
window is looked at (a labelled-count milestone, its end, its close, its settling);
:class:`PerformanceJudge` decides *what* that look says: the window against its merged
baseline windows (the realised drops, Benjamini-Hochberg over them), the span of recent
windows, the CBPE estimates of a window whose labels are mostly missing, the sequential test
at every label, and what each does to the incidents
(:class:`~streams.perf_incidents.PerfIncidents`). The tests themselves are pure functions
in :mod:`streams.perf_findings`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from schemas import DriftEvent
from streams.calibration import CalibrationMap, estimate_performance
from streams.config import PerformanceConfig
from streams.decision import benjamini_hochberg
from streams.perf_drop_tests import proportion_drop_test
from streams.perf_findings import (
    Z95,
    Finding,
    accuracy_floor,
    ap_se,
    drop_severity,
    drop_tests,
    estimated,
    ndtr,
    positives,
    span_test,
)
from streams.perf_incidents import PerfIncidents
from streams.perf_state import PerfStream, PerfWindow, labelled_baseline, perf_stream_key
from streams.performance import PerformanceSummary
from streams.sequential import RateRiseTest, rate_upper_bound

__all__ = ["PerformanceJudge", "WindowReader"]

WindowReader = Callable[[str, str, float], PerfWindow | None]
"""A stream's window by (tenant, model, window start), from the monitor's cache or store."""


@dataclass(frozen=True)
class _RateBaseline:
    test: RateRiseTest
    rate: float
    n: int
    start: float
    end: float


class PerformanceJudge:
    """The looks at one monitor's performance windows (see the module's docstring)."""

    def __init__(
        self,
        config: PerformanceConfig,
        stats: Counter[str],
        incidents: PerfIncidents,
        window: WindowReader,
    ) -> None:
        self.config = config
        self.stats = stats
        self._incidents = incidents
        self._window = window
        self._rate_tests: dict[tuple[str, float], _RateBaseline | None] = {}
        """Per (stream, window): the sequential test against its baseline, until the next
        flush (a baseline window's late labels can still move its bound a little)."""

    def forget(self) -> None:
        """Drop the sequential tests' baselines (at every flush: see ``_rate_tests``)."""
        self._rate_tests.clear()

    def baseline(
        self, stream: PerfStream, window: float
    ) -> tuple[PerformanceSummary, float, float] | None:
        ecfg = self.config.engine
        have = set(stream.windows)
        used = [c for c in ecfg.baseline_candidates(window) if c in have]
        merged, n = labelled_baseline(used, lambda c: self._window(stream.tenant, stream.model, c))
        if n < ecfg.min_baseline_windows:
            return None
        return merged, used[0], used[-1] + ecfg.window_seconds

    def look(
        self,
        stream: PerfStream,
        window: float,
        win: PerfWindow,
        version: str,
        detected_at: float,
        final: bool,
    ) -> list[DriftEvent]:
        cfg = self.config
        summary = win.versions[version]
        self.stats["looks"] += 1
        findings: list[Finding] = []
        base = self.baseline(stream, window)
        alpha = cfg.look_alpha
        base_start = base_end = window
        if base is not None and summary.labelled >= cfg.min_labels:
            b, base_start, base_end = base
            drops = drop_tests(b, summary, cfg)
            significant = benjamini_hochberg([f.p_value or 1.0 for f in drops], alpha)
            findings += [f for f, sig in zip(drops, significant, strict=True) if sig]
        self._incidents.objectives(stream, win, version, window, summary, detected_at, final)
        key = f"realised:{version}"
        if key in win.raised:
            return []  # this window was already found drifting at an earlier look
        tested = base is not None and summary.labelled >= cfg.min_labels
        if not findings:
            if final and tested:  # a look with nothing to compare against is no evidence
                self._incidents.clean(stream, win, key, window)
                if f"sequential:{version}" not in win.raised:
                    self._incidents.clean(stream, win, f"sequential:{version}", window)
            return []
        baseline_count = 0 if base is None else base[0].labelled
        return self._incidents.drift(
            stream, win, key, version, window, findings, detected_at, base_start, base_end,
            summary, baseline_count, partial=not final,
        )  # fmt: skip

    def estimate(
        self, stream: PerfStream, window: float, win: PerfWindow, now: float
    ) -> list[DriftEvent]:
        cfg = self.config
        events: list[DriftEvent] = []
        base = self.baseline(stream, window)
        if base is None:
            return []
        b, base_start, base_end = base
        calibration = CalibrationMap.fit(b)
        if calibration is None:
            return []
        base_acc, base_pr = b.accuracy(), b.pr_auc()
        base_est = estimate_performance(b, calibration)
        for version in sorted(win.versions):
            s = win.versions[version]
            rate = s.label_rate
            n = s.predictions
            if rate is None or rate >= cfg.estimate_max_label_rate:
                continue
            if n < cfg.engine.min_window_count or base_acc is None:
                continue
            est = estimate_performance(s, calibration)
            self.stats["estimates"] += 1
            findings: list[Finding] = []
            # Compare estimate with estimate (both through the same calibration), so the
            # calibration's own error cancels; the realised baseline is reported alongside.
            acc, acc0 = est["accuracy"], base_est["accuracy"]
            z, p = proportion_drop_test(
                round(acc0 * b.predictions), b.predictions, round(acc * n), n
            )
            if p < cfg.estimate_alpha and acc0 - acc >= accuracy_floor(1.0 - acc0, cfg):
                findings.append(estimated("estimated_accuracy_drop", z, p, acc0 - acc, acc))
            pr, pr0 = est.get("pr_auc"), base_est.get("pr_auc")
            if pr is not None and pr0 is not None and pr0 - pr >= cfg.min_pr_auc_drop:
                exp_pos = n * (s.positive_rate or b.positive_rate or 0.0)
                se = math.hypot(ap_se(pr, exp_pos), ap_se(pr0, positives(b)))
                z = (pr - pr0) / se if se > 0 else 0.0
                p = ndtr(z)
                if p < cfg.estimate_alpha:
                    findings.append(estimated("estimated_pr_auc_drop", z, p, pr0 - pr, pr))
            if not findings:
                self._incidents.clean(stream, win, f"estimated:{version}", window)
            if findings:
                for f in findings:
                    f.extra.update(
                        baseline_accuracy=base_acc,
                        baseline_pr_auc=base_pr,
                        label_rate=rate,
                    )
                events += self._incidents.drift(
                    stream, win, f"estimated:{version}", version, window, findings, now,
                    base_start, base_end, s, b.labelled, partial=False,
                )  # fmt: skip
        return events

    def span(
        self, stream: PerfStream, window: float, win: PerfWindow, now: float
    ) -> list[DriftEvent]:
        """At a window's close: its labels so far and those of the ``span_windows - 1``
        windows before it, per version, against the union of their baselines (one test per
        window and version, on the look's alpha)."""
        cfg = self.config
        ecfg = cfg.engine
        if not cfg.span_looks:
            return []
        have = set(stream.windows)
        members = [
            window - i * ecfg.window_seconds
            for i in range(cfg.span_windows - 1, -1, -1)
            if window - i * ecfg.window_seconds in have
        ]
        base_windows = sorted({c for m in members for c in ecfg.baseline_candidates(m)} & have)
        base, used = labelled_baseline(
            base_windows, lambda c: self._window(stream.tenant, stream.model, c)
        )
        if used < ecfg.min_baseline_windows:
            return []
        events: list[DriftEvent] = []
        for version in sorted(win.versions):
            span = PerformanceSummary()
            with_version = []
            for m in members:
                mw = win if m == window else self._window(stream.tenant, stream.model, m)
                if mw is not None and version in mw.versions:
                    span = span.merge(mw.versions[version])
                    with_version.append(m)
            if span.labelled < cfg.min_labels:
                continue
            self.stats["span_looks"] += 1
            key = f"span:{version}"
            finding = span_test(base, span, cfg, cfg.look_alpha)
            if finding is None:
                self._incidents.clean(stream, win, key, window)
                continue
            # The event names the window at whose end the span was tested (the window its
            # incident counts, as for every other test); the span is in ``extra``.
            finding.extra.update(span_start=with_version[0], span_windows=len(with_version))
            events += self._incidents.drift(
                stream, win, key, version, window, [finding], now, base_windows[0],
                base_windows[-1] + ecfg.window_seconds, span, base.labelled, partial=True,
            )  # fmt: skip
        return events

    def _rate_test(self, stream: PerfStream, window: float) -> _RateBaseline | None:
        key = (perf_stream_key(stream.tenant, stream.model), window)
        if key in self._rate_tests:
            return self._rate_tests[key]
        cfg = self.config
        found: _RateBaseline | None = None
        base = self.baseline(stream, window) if cfg.sequential_alpha > 0 else None
        if base is not None and base[0].labelled:
            b, base_start, base_end = base
            tp, _, tn, _ = b.confusion()
            errors = b.labelled - tp - tn
            bound = rate_upper_bound(errors, b.labelled, cfg.sequential_alpha)
            if bound < 1.0:
                floor = accuracy_floor(errors / b.labelled, cfg)
                test = RateRiseTest(bound, max(floor, 1e-3), cfg.sequential_alpha)
                found = _RateBaseline(test, errors / b.labelled, b.labelled, base_start, base_end)
        self._rate_tests[key] = found
        return found

    def sequential(
        self, stream: PerfStream, window: float, win: PerfWindow, version: str, now: float
    ) -> list[DriftEvent]:
        """The window's error rate, tested at every label against the baseline's bound."""
        key = f"sequential:{version}"
        if key in win.raised:
            return []
        summary = win.versions[version]
        tp, _, tn, _ = summary.confusion()
        n = summary.labelled
        errors = n - tp - tn
        base = self._rate_test(stream, window)
        if base is None or not base.test.rejects_one(n, errors):
            return []
        self.stats["sequential_alarms"] += 1
        rate = errors / n
        rise = rate - base.rate
        se = math.sqrt(rate * (1 - rate) / n + base.rate * (1 - base.rate) / base.n)
        finding = Finding(
            "sequential_error_rate",
            rate,
            base.test.p_value(n, errors),
            rise,
            drop_severity(rise - Z95 * se),
            {
                "baseline_error_rate": base.rate,
                "baseline_error_rate_bound": base.test.p0,
                "window_error_rate": rate,
                "labels": n,
            },
        )
        return self._incidents.drift(
            stream, win, key, version, window, [finding], now, base.start, base.end,
            summary, base.n, partial=True,
        )  # fmt: skip
