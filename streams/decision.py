"""Turning per-feature test results into drift decisions: FDR control and severity."""

from __future__ import annotations

from collections.abc import Sequence

from schemas import Severity

# Effect sizes are distances between distributions in [0, 1] (every drift test's contract,
# streams.drift_tests.base): the KS distance for numeric features, the total variation
# distance for categorical ones. They read the same way: "this share of the probability mass
# moved". Thresholds are the lower bounds of each level.
SEVERITY_THRESHOLDS: tuple[tuple[float, Severity], ...] = (
    (0.30, Severity.CRITICAL),
    (0.15, Severity.HIGH),
    (0.06, Severity.MEDIUM),
    (0.0, Severity.LOW),
)
BROAD_DRIFT_SHARE = 0.5
"""When at least this share of a model's tested features drift (and at least two do), the
input as a whole has moved: every drifting feature's severity goes up one level."""


def surely_above(alpha: float) -> float:
    """The least p that can be no Benjamini-Hochberg discovery at ``alpha`` however it is
    rounded: ``alpha * rank / m`` can come out an ulp above alpha, so a look's p is compared
    with alpha plus a relative 1e-12 (within it, the part is judged in full).

    >>> surely_above(0.001) > 0.001
    True
    """
    return alpha * (1.0 + 1e-12)


def benjamini_hochberg(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Which hypotheses to reject at false-discovery rate ``alpha`` (step-up procedure).

    Testing 20 features at 0.01 each would raise a false alarm on ~18% of null windows; BH
    keeps the expected share of false discoveries among the alarms at ``alpha`` and, when no
    feature drifted, the chance of any alarm in a window at ``alpha``.

    >>> benjamini_hochberg([0.001, 0.008, 0.039, 0.041, 0.042, 0.06], alpha=0.05)
    [True, True, False, False, False, False]
    >>> benjamini_hochberg([], alpha=0.05)
    []
    """
    m = len(p_values)
    if m == 0:
        return []
    order = sorted(range(m), key=lambda i: p_values[i])
    cutoff_rank = 0
    for rank, idx in enumerate(order, start=1):
        if p_values[idx] <= alpha * rank / m:
            cutoff_rank = rank
    rejected = [False] * m
    for idx in order[:cutoff_rank]:
        rejected[idx] = True
    return rejected


def severity_for(effect_size: float, drifting_share: float, drifting_count: int) -> Severity:
    """Severity of one feature's drift, from its effect size net of sampling noise (each
    test's ``DriftTest.debiased_effect``).

    >>> severity_for(0.04, 0.1, 1).value      # 4% of the mass moved, one feature of ten
    'LOW'
    >>> severity_for(0.065, 0.1, 1).value     # a 0.25 sigma shift, a day of 1,500 events
    'MEDIUM'
    >>> severity_for(0.165, 0.1, 1).value     # a 0.5 sigma shift
    'HIGH'
    >>> severity_for(0.10, 0.6, 6).value      # moderate, but most of the inputs moved
    'HIGH'
    >>> severity_for(0.345, 0.0, 1).value     # a 1 sigma shift
    'CRITICAL'
    """
    level = next(sev for bound, sev in SEVERITY_THRESHOLDS if effect_size >= bound)
    if drifting_count >= 2 and drifting_share >= BROAD_DRIFT_SHARE:
        level = Severity(_bump(level))
    return level


def _bump(level: Severity) -> str:
    order = [Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL]
    return order[min(order.index(level) + 1, len(order) - 1)].value
