"""Tests of a drop in model performance between a baseline and a window.

A proportion (accuracy, or any rate of successes) by a pooled two-proportion z-test, and the
areas under the ROC and precision-recall curves of two
:class:`~streams.performance.PerformanceSummary` by normal approximations; one-sided, since
only a drop is an incident.
"""

from __future__ import annotations

import math

from scipy import special

from streams.performance import PerformanceSummary

__all__ = ["auc_drop_test", "proportion_drop_test"]


def proportion_drop_test(
    base_successes: int, base_n: int, win_successes: int, win_n: int
) -> tuple[float, float]:
    """One-sided pooled two-proportion z-test that the window's rate is lower than the
    baseline's: ``(z, p)`` with ``z < 0`` when the window is lower. Equal (or both 0/1)
    rates give ``(0.0, 0.5)``.

    >>> z, p = proportion_drop_test(950, 1_000, 850, 1_000)
    >>> round(z, 2), p < 1e-10
    (-7.45, True)
    """
    for s, n in ((base_successes, base_n), (win_successes, win_n)):
        if n <= 0 or not 0 <= s <= n:
            raise ValueError("need n > 0 and 0 <= successes <= n on each side")
    pooled = (base_successes + win_successes) / (base_n + win_n)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / base_n + 1.0 / win_n))
    if se == 0.0:
        return 0.0, 0.5
    z = (win_successes / win_n - base_successes / base_n) / se
    return z, float(special.ndtr(z))


def _hanley_mcneil_se(auc: float, n_pos: int, n_neg: int) -> float:
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    var = (auc * (1.0 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (
        n_pos * n_neg
    )
    return math.sqrt(max(var, 0.0))


def auc_drop_test(
    base: PerformanceSummary, win: PerformanceSummary, metric: str = "pr_auc"
) -> tuple[float, float]:
    """One-sided z-test that the window's ``metric`` ("pr_auc" or "roc_auc") is lower than
    the baseline's: ``(z, p)``, ``z < 0`` when lower; the two windows are independent.

    Standard errors: Hanley & McNeil (1982) for ROC-AUC; for PR-AUC the bootstrap-free
    normal approximation ``se = sqrt(ap (1 - ap) / n_pos)`` per side (average precision
    treated as a precision averaged over the positives). That approximation ignores the
    negatives' sampling noise and is rough for small n_pos; binning error (the
    ``*_error_bound`` methods) is not folded in. A zero combined se gives ``(0.0, 0.5)``.
    """
    if metric not in ("pr_auc", "roc_auc"):
        raise ValueError(f"metric must be 'pr_auc' or 'roc_auc', got {metric!r}")
    ses: list[float] = []
    values: list[float] = []
    for s in (base, win):
        n_pos, n_neg = int(s._pos.sum()), int(s._neg.sum())
        value = s.pr_auc() if metric == "pr_auc" else s.roc_auc()
        if value is None or n_neg == 0:
            raise ValueError(f"{metric} needs labelled positives and negatives on each side")
        values.append(value)
        if metric == "pr_auc":
            ses.append(math.sqrt(value * (1.0 - value) / n_pos))
        else:
            ses.append(_hanley_mcneil_se(value, n_pos, n_neg))
    se = math.hypot(*ses)
    if se == 0.0:
        return 0.0, 0.5
    z = (values[1] - values[0]) / se
    return z, float(special.ndtr(z))
