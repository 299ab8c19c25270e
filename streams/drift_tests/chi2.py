"""The chi-square homogeneity test of categorical features, on their summaries."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy import special

from streams.categorical_summary import CategoricalSummary, known_to_both
from streams.drift_tests.base import DriftTest, TestResult

__all__ = ["ChiSquare", "Contingency", "chi2_test", "contingency"]

DECISION_MARGIN: Final = 2.0
"""How far above a look's alpha a p summed in another order must be to stand in for the
exact one (the two differ in the last few bits)."""


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

    def run_for_decision(
        self, window: CategoricalSummary, baseline: CategoricalSummary, alpha: float
    ) -> TestResult:
        """The same table, its statistic summed in Python: a few categories cost numpy more in
        calls than in arithmetic. The table is built of integer counts, exactly, so only the
        statistic's last bits can differ from :func:`chi2_test`'s; a p that is not clearly
        above ``alpha`` (``DECISION_MARGIN``) is computed again by it, so every decision is
        the one its p-value makes."""
        table = contingency(window, baseline)
        if len(table.columns) < 2:
            return chi2_test(window, baseline, table)
        w_total, b_total = table.rows
        total = w_total + b_total
        statistic = 0.0
        for x, y in table.columns:
            col = x + y
            for observed, row in ((x, w_total), (y, b_total)):
                expected = row * col / total
                statistic += (observed - expected) ** 2 / expected
        p_value = float(special.chdtrc(len(table.columns) - 1, statistic))
        if p_value <= DECISION_MARGIN * alpha:
            return chi2_test(window, baseline, table)
        n_w, n_b = window.count, baseline.count
        tvd = 0.5 * sum(abs(x / n_w - y / n_b) for x, y in zip(*table.observed, strict=True))
        return TestResult(statistic, p_value, tvd, table.bound, table.exact, "chi2")

    def noise(self, n_eff: float, baseline: CategoricalSummary) -> float:
        counts = baseline.read_counts().values()  # the categories the table compares
        shares = [n / baseline.count for n in counts] if baseline.count else []
        return (
            0.5
            * math.sqrt(2 / math.pi)
            * sum(math.sqrt(max(p * (1 - p), 0.0) / n_eff) for p in shares)
        )


# Not frozen: one is made per categorical test, and a frozen dataclass's __init__ costs 6x.
@dataclass(slots=True)
class Contingency:
    """The 2 x K table a chi-square test reads: ``observed`` (window row, baseline row) over
    the compared categories; ``columns``, the (window, baseline) counts of the columns tested
    after pooling the small ones; ``rows``, each row's total; ``bound`` and ``exact`` as
    :func:`chi2_test` reports them. Counts are integers: every sum here is exact."""

    observed: tuple[list[int], list[int]]
    columns: list[tuple[int, int]]
    rows: tuple[int, int]
    bound: float
    exact: bool


def contingency(window: CategoricalSummary, baseline: CategoricalSummary) -> Contingency:
    """The table of :func:`chi2_test`.

    When a side has folded rare categories into ``OTHER``, only the categories both sides
    count are compared and the rest is pooled alike on both sides. Categories with an
    expected count < 5 in either row are pooled into one column (and if that pool is still
    too small, the next-smallest columns join it) so the asymptotic chi-square p-value stays
    valid.

    >>> w, b = CategoricalSummary(), CategoricalSummary()
    >>> w.add_values(["a"] * 30 + ["b"] * 2 + ["c"])
    >>> b.add_values(["a"] * 40 + ["b"] * 50 + ["c"] * 3)
    >>> t = contingency(w, b)
    >>> t.observed, t.columns, t.rows
    (([30, 2, 1], [40, 50, 3]), [(30, 40), (3, 53)], (33, 93))
    """
    n_w, n_b = window.count, baseline.count
    if n_w == 0 or n_b == 0:
        raise ValueError("chi2_test needs at least one value on each side")
    cw, cb = window.read_counts(), baseline.read_counts()
    o_w, o_b = cw.get(window.OTHER, 0), cb.get(baseline.OTHER, 0)
    bound = o_w / n_w + o_b / n_b
    exact = o_w == 0 and o_b == 0
    if exact:
        if cw.keys() <= cb.keys():  # the usual: the baseline's categories, sorted once
            cats, b_row = baseline.sorted_counts()
            b_row = list(b_row)  # the table's own
        else:
            cats = sorted(set(cw) | set(cb))
            b_row = [cb.get(c, 0) for c in cats]
        w_row = [cw.get(c, 0) for c in cats]
    else:
        # A side that folded its rare categories into OTHER does not know them: a category
        # missing from its counts may be in its OTHER. Compare only what both sides count
        # (a category absent from an unfolded side is a true 0) and pool the rest on each
        # side alike, or a category kept on one side and folded on the other looks like a
        # change (a false alarm on any feature with more than MAX_CATEGORIES categories).
        cats = known_to_both(cw, cb, window.OTHER)
        w_row, b_row = [cw.get(c, 0) for c in cats], [cb.get(c, 0) for c in cats]
        w_row.append(n_w - sum(w_row))
        b_row.append(n_b - sum(b_row))
    rows = (sum(w_row), sum(b_row))
    total = rows[0] + rows[1]
    # An expected count below 5 in either row is one below 5 in the smaller row: the same
    # test (``least * col`` is an exact integer; its quotient, rounded, is the smaller).
    least = min(rows)

    def too_small(x: int, y: int) -> bool:
        return least * (x + y) / total < 5

    columns: list[tuple[int, int]] = []
    small: list[tuple[int, int]] = []
    for c in zip(w_row, b_row, strict=True):
        (small if too_small(*c) else columns).append(c)
    if small:
        pool = (sum(x for x, _ in small), sum(y for _, y in small))
        # Grow the pool with the smallest remaining columns until it is itself testable.
        columns.sort(key=sum)  # stable: ties keep category order
        while columns and too_small(*pool):
            x, y = columns.pop(0)
            pool = (pool[0] + x, pool[1] + y)
        columns.append(pool)
    return Contingency((w_row, b_row), columns, rows, bound, exact)


def chi2_test(
    window: CategoricalSummary, baseline: CategoricalSummary, table: Contingency | None = None
) -> TestResult:
    """Chi-square homogeneity test on the 2 x K table over the union of categories (see
    :func:`contingency`; ``table``: it, if the caller has it). ``effect_size`` is the total
    variation distance between the two category distributions; ``error_bound`` is the share
    of each side that was folded into OTHER, which bounds how far that distance can be from
    the unfolded one.

    >>> w, b = CategoricalSummary(), CategoricalSummary()
    >>> for v in ["a"] * 60 + ["b"] * 40:
    ...     w.add(v)
    >>> for v in ["a"] * 40 + ["b"] * 60:
    ...     b.add(v)
    >>> r = chi2_test(w, b)
    >>> round(r.statistic, 3), round(r.effect_size, 2), r.p_value < 0.01
    (8.0, 0.2, True)
    """
    if table is None:
        table = contingency(window, baseline)
    n_w, n_b = window.count, baseline.count
    obs = np.array(table.observed, np.float64)
    tvd = 0.5 * float(np.abs(obs[0] / n_w - obs[1] / n_b).sum())
    if len(table.columns) < 2:
        return TestResult(0.0, 1.0, tvd, table.bound, table.exact, "chi2")
    # scipy's chi2_contingency(correction=False) for a 2 x K table, without its overhead.
    cells = np.array(table.columns, np.float64).T
    expected = cells.sum(axis=1, keepdims=True) * cells.sum(axis=0) / cells.sum()
    statistic = float((np.square(cells - expected) / expected).sum())
    p_value = float(special.chdtrc(cells.shape[1] - 1, statistic))
    return TestResult(statistic, p_value, tvd, table.bound, table.exact, "chi2")
