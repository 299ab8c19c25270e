"""The chi-square homogeneity test of categorical features, on their summaries."""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from streams.categorical_summary import CategoricalSummary, known_to_both
from streams.drift_tests.base import DriftTest, TestResult

__all__ = ["ChiSquare", "chi2_test"]


class ChiSquare(DriftTest[CategoricalSummary]):
    """Chi-square statistic and p-value; the total variation distance as the effect.

    Noise: E|p_hat - q_hat| ~ sqrt(2/pi) sqrt(p(1-p)/n_eff) per category of baseline share
    ``p``, and the TVD is half the sum over categories.

    >>> base = CategoricalSummary()
    >>> base.add_values(["a"] * 50 + ["b"] * 50)
    >>> round(ChiSquare().noise(100.0, base), 4)
    0.0399
    """

    name = "chi2"
    kinds = frozenset({"categorical"})

    def run(self, window: CategoricalSummary, baseline: CategoricalSummary) -> TestResult:
        return chi2_test(window, baseline)

    def noise(self, n_eff: float, baseline: CategoricalSummary) -> float:
        shares = [n / baseline.count for n in baseline.counts.values()] if baseline.count else []
        return (
            0.5
            * math.sqrt(2 / math.pi)
            * sum(math.sqrt(max(p * (1 - p), 0.0) / n_eff) for p in shares)
        )


def chi2_test(window: CategoricalSummary, baseline: CategoricalSummary) -> TestResult:
    """Chi-square homogeneity test on the 2 x K table over the union of categories.

    When a side has folded rare categories into ``OTHER``, only the categories both sides
    count are compared and the rest is pooled alike on both sides. Categories with an
    expected count < 5 in either row are pooled into one column (and if
    that pool is still too small, the next-smallest columns join it) so the asymptotic
    chi-square p-value stays valid. ``effect_size`` is the total variation distance between
    the two category distributions; ``error_bound`` is the share of each side that was
    folded into OTHER, which bounds how far that distance can be from the unfolded one.

    >>> w, b = CategoricalSummary(), CategoricalSummary()
    >>> for v in ["a"] * 60 + ["b"] * 40:
    ...     w.add(v)
    >>> for v in ["a"] * 40 + ["b"] * 60:
    ...     b.add(v)
    >>> r = chi2_test(w, b)
    >>> round(r.statistic, 3), round(r.effect_size, 2), r.p_value < 0.01
    (8.0, 0.2, True)
    """
    n_w, n_b = window.count, baseline.count
    if n_w == 0 or n_b == 0:
        raise ValueError("chi2_test needs at least one value on each side")
    cw, cb = window.counts, baseline.counts
    o_w, o_b = cw.get(window.OTHER, 0), cb.get(baseline.OTHER, 0)
    bound = o_w / n_w + o_b / n_b
    exact = o_w == 0 and o_b == 0
    if exact:
        cats = sorted(set(cw) | set(cb))
        obs = np.array([[cw.get(c, 0) for c in cats], [cb.get(c, 0) for c in cats]], np.float64)
    else:
        # A side that folded its rare categories into OTHER does not know them: a category
        # missing from its counts may be in its OTHER. Compare only what both sides count
        # (a category absent from an unfolded side is a true 0) and pool the rest on each
        # side alike, or a category kept on one side and folded on the other looks like a
        # change (a false alarm on any feature with more than MAX_CATEGORIES categories).
        cats = known_to_both(cw, cb, window.OTHER)
        known = [[cw.get(c, 0) for c in cats], [cb.get(c, 0) for c in cats]]
        obs = np.array(
            [known[0] + [n_w - sum(known[0])], known[1] + [n_b - sum(known[1])]], np.float64
        )
    tvd = 0.5 * float(np.abs(obs[0] / n_w - obs[1] / n_b).sum())

    rows = obs.sum(axis=1, keepdims=True)
    cols = obs.sum(axis=0)
    expected_min = (rows * cols / rows.sum()).min(axis=0)
    small = expected_min < 5
    table = obs[:, ~small]
    if small.any():
        pool = obs[:, small].sum(axis=1)
        # Grow the pool with the smallest remaining columns until it is itself testable.
        order = np.argsort(table.sum(axis=0), kind="stable")
        table = table[:, order]
        while table.shape[1] and (rows[:, 0] * pool.sum() / rows.sum()).min() < 5:
            pool = pool + table[:, 0]
            table = table[:, 1:]
        table = np.column_stack((table, pool))
    if table.shape[1] < 2:
        return TestResult(0.0, 1.0, tvd, bound, exact, "chi2")
    # scipy's chi2_contingency(correction=False) for a 2 x K table, without its overhead.
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
    statistic = float((np.square(table - expected) / expected).sum())
    p_value = float(special.chdtrc(table.shape[1] - 1, statistic))
    return TestResult(statistic, p_value, tvd, bound, exact, "chi2")
