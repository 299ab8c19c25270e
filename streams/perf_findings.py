"""The performance monitor's tests: pure functions from summaries to findings.

Each returns a :class:`Finding` (a test's result with its severity and the DriftEvent's
extras) or nothing; deciding which findings count (Benjamini-Hochberg over a look, the
alpha of each look) and what they do to the incidents is :mod:`streams.perf_monitor`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scipy import stats

from schemas import Severity
from streams.config import Objective, PerformanceConfig
from streams.perf_drop_tests import auc_drop_test, proportion_drop_test
from streams.performance import PerformanceSummary

__all__ = [
    "Z95",
    "Finding",
    "accuracy_floor",
    "ap_se",
    "drop_severity",
    "drop_tests",
    "estimated",
    "ndtr",
    "objective_test",
    "objective_value",
    "positives",
    "span_test",
]

Z95 = 1.6448536269514722  # one-sided 95 %


@dataclass(frozen=True)
class Finding:
    """One test's result on a window, ready for a performance DriftEvent."""

    test: str
    statistic: float
    p_value: float | None
    effect: float
    severity: Severity
    extra: dict[str, Any]


def ndtr(z: float) -> float:
    """The standard normal CDF: the one-sided p-value of a drop's z statistic."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def positives(s: PerformanceSummary) -> float:
    """Labelled positives of a summary."""
    return s.labelled * (s.positive_rate or 0.0)


def ap_se(ap: float, n_pos: float) -> float:
    """Normal-approximation standard error of average precision over ``n_pos`` positives (the
    one ``streams.perf_drop_tests.auc_drop_test`` uses), at least one positive."""
    return math.sqrt(ap * (1 - ap) / max(n_pos, 1.0))


def drop_severity(lower_bound: float) -> Severity:
    """Severity of a drop by its 95 % lower bound, so a noisy large drop does not rate HIGH."""
    if lower_bound >= 0.15:
        return Severity.HIGH
    if lower_bound >= 0.05:
        return Severity.MEDIUM
    return Severity.LOW


def accuracy_floor(base_error_rate: float, cfg: PerformanceConfig) -> float:
    """Smallest accuracy drop (= error-rate rise) that counts against a baseline with this
    error rate: the absolute ``min_accuracy_drop``, or ``relative_error_rise`` times the
    baseline's error rate when that is less, so the floor scales to a high-accuracy model.

    >>> cfg = PerformanceConfig()  # 0.05 absolute, 0.4 relative
    >>> round(accuracy_floor(0.06, cfg), 3)  # a 0.94 model: 0.94 -> 0.91 (0.03) counts
    0.024
    >>> accuracy_floor(0.25, cfg)  # a 0.75 model: the absolute floor, as before
    0.05
    >>> accuracy_floor(0.06, PerformanceConfig(relative_error_rise=0.0))  # off
    0.05
    """
    floor = cfg.min_accuracy_drop
    if cfg.relative_error_rise > 0:
        floor = min(floor, cfg.relative_error_rise * max(base_error_rate, 0.0))
    return floor


def span_test(
    base: PerformanceSummary, span: PerformanceSummary, cfg: PerformanceConfig, alpha: float
) -> Finding | None:
    """Accuracy of several consecutive windows' labels merged (``span``) against their
    baselines merged: a one-sided Fisher exact test at ``alpha`` and the accuracy floor, or
    None. A drop too small for one window's labels shows over a week of them.

    >>> import numpy as np
    >>> from streams.performance import PerformanceSummary
    >>> rng = np.random.default_rng(12)
    >>> def summary(n, error_rate):  # n labels of a model with this error rate
    ...     s, y = PerformanceSummary(), (rng.random(n) < 0.1).astype(int)
    ...     wrong = rng.random(n) < error_rate
    ...     scores = np.where((y == 1) != wrong, 0.9, 0.1)
    ...     s.add_predictions(scores)
    ...     s.add_labels(scores, y)
    ...     return s
    >>> cfg, base = PerformanceConfig(), summary(4_620, 0.06)  # 28 baseline days of 165
    >>> span_test(base, summary(1_000, 0.06), cfg, 1e-4) is None  # nothing changed
    True
    >>> f = span_test(base, summary(1_000, 0.09), cfg, 1e-4)  # 0.94 -> 0.91, ~6 days
    >>> f.test, round(f.effect, 3), f.p_value < 1e-4
    ('recent_accuracy_drop', 0.036, True)
    >>> span_test(base, summary(165, 0.09), cfg, 1e-4) is None  # one day's labels: too few
    True
    """
    tp, _, tn, _ = base.confusion()
    wtp, _, wtn, _ = span.confusion()
    nb, nw = base.labelled, span.labelled
    if nb == 0 or nw < cfg.min_labels:
        return None
    acc_b, acc_w = (tp + tn) / nb, (wtp + wtn) / nw
    drop = acc_b - acc_w
    if drop <= 0 or drop < accuracy_floor(1.0 - acc_b, cfg):
        return None
    table = [[tp + tn, nb - tp - tn], [wtp + wtn, nw - wtp - wtn]]
    p = float(stats.fisher_exact(table, alternative="greater").pvalue)
    if p >= alpha:
        return None
    z, _ = proportion_drop_test(tp + tn, nb, wtp + wtn, nw)
    se = math.sqrt(acc_b * (1 - acc_b) / nb + acc_w * (1 - acc_w) / nw)
    return Finding(
        "recent_accuracy_drop",
        z,
        p,
        drop,
        drop_severity(drop - Z95 * se),
        {"baseline_accuracy": acc_b, "window_accuracy": acc_w, "labels": nw},
    )


def drop_tests(
    base: PerformanceSummary, win: PerformanceSummary, cfg: PerformanceConfig
) -> list[Finding]:
    """Accuracy and PR-AUC drops that reach the minimum size (significance is the caller's);
    for accuracy the floor scales to the baseline's error rate (:func:`accuracy_floor`)."""
    out: list[Finding] = []
    tp, _, tn, _ = base.confusion()
    wtp, _, wtn, _ = win.confusion()
    nb, nw = base.labelled, win.labelled
    acc_b, acc_w = (tp + tn) / nb, (wtp + wtn) / nw
    if acc_b - acc_w >= accuracy_floor(1.0 - acc_b, cfg):
        z, _ = proportion_drop_test(tp + tn, nb, wtp + wtn, nw)
        # One-sided Fisher exact test: the z-test is anti-conservative at the first looks,
        # where a window has ~100 labels and accuracy sits near 1.
        table = [[tp + tn, nb - tp - tn], [wtp + wtn, nw - wtp - wtn]]
        p = float(stats.fisher_exact(table, alternative="greater").pvalue)
        se = math.sqrt(acc_b * (1 - acc_b) / nb + acc_w * (1 - acc_w) / nw)
        drop = acc_b - acc_w
        out.append(
            Finding(
                "accuracy_drop",
                z,
                p,
                drop,
                drop_severity(drop - Z95 * se),
                {"baseline_accuracy": acc_b, "window_accuracy": acc_w},
            )
        )
    pr_b, pr_w = base.pr_auc(), win.pr_auc()
    enough = positives(win) >= cfg.min_floor_positives
    if enough and pr_b is not None and pr_w is not None and pr_b - pr_w >= cfg.min_pr_auc_drop:
        try:
            z, p = auc_drop_test(base, win, "pr_auc")
        except ValueError:
            return out
        se = math.hypot(ap_se(pr_b, positives(base)), ap_se(pr_w, positives(win)))
        drop = pr_b - pr_w
        out.append(
            Finding(
                "pr_auc_drop",
                z,
                p,
                drop,
                drop_severity(drop - Z95 * se),
                {"baseline_pr_auc": pr_b, "window_pr_auc": pr_w},
            )
        )
    return out


def objective_value(
    win: PerformanceSummary, objective: Objective, cfg: PerformanceConfig
) -> tuple[float, float] | None:
    """The window's value of the objective's metric and its sample size (labels, or
    positives for PR-AUC), or None while there is too little to test it."""
    if objective.metric == "pr_auc":
        pr, n_pos = win.pr_auc(), round(positives(win))
        return None if pr is None or n_pos < cfg.min_floor_positives else (pr, n_pos)
    acc = win.accuracy()
    n = win.labelled
    return None if acc is None or n < cfg.min_labels else (acc, n)


def objective_test(
    win: PerformanceSummary, objective: Objective, cfg: PerformanceConfig, alpha: float
) -> Finding | None:
    """The metric significantly below the objective's floor (one-sided z-test: the binomial
    standard error of the value, for PR-AUC over the positives), or None."""
    found = objective_value(win, objective, cfg)
    if found is None or found[0] >= objective.floor:
        return None
    value, n = found
    se = math.sqrt(max(value * (1 - value), 1e-12) / n)
    z = (value - objective.floor) / se
    p = ndtr(z)
    if p >= alpha:
        return None
    return Finding(
        f"{objective.metric}_objective",
        value,
        p,
        objective.floor - value,
        Severity.CRITICAL,
        {"objective": objective.floor, "metric": objective.metric, "value": value},
    )


def estimated(test: str, z: float, p: float, drop: float, value: float) -> Finding:
    """A finding from CBPE estimates: never above MEDIUM, since no label backs it yet."""
    severity = Severity.MEDIUM if drop >= 0.15 else Severity.LOW
    return Finding(test, z, p, drop, severity, {"estimated": True, "estimate": value})
