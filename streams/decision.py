"""Turning per-feature test results into drift decisions: FDR control and severity."""

from __future__ import annotations

import math
from collections.abc import Sequence

from schemas import Severity

# Effect sizes are distances between distributions in [0, 1]: the KS distance for numeric
# features, the total variation distance for categorical ones. Both read the same way:
# "this share of the probability mass moved". Thresholds are the lower bounds of each level.
SEVERITY_THRESHOLDS: tuple[tuple[float, Severity], ...] = (
    (0.30, Severity.CRITICAL),
    (0.15, Severity.HIGH),
    (0.06, Severity.MEDIUM),
    (0.0, Severity.LOW),
)
KS_NOISE = 1.358
"""95% quantile of the Kolmogorov distribution: when nothing changed, D < 1.36 / sqrt(n_eff)
in 95% of samples. Severity reads the effect above that (a 95% lower bound of the change)."""
_NOISE_QUANTILE = 1.358 / 0.8687
"""For the other tests' mean-noise estimates: scale a mean to the same ~95% level."""
BROAD_DRIFT_SHARE = 0.5
"""When at least this share of a model's tested features drift (and at least two do), the
input as a whole has moved: every drifting feature's severity goes up one level."""


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


def debiased_effect(
    test: str,
    effect_size: float,
    n_window: int,
    n_baseline: int,
    baseline_shares: Sequence[float] = (),
) -> float:
    """The effect minus what sampling noise alone could show at these sample sizes (95%).

    A distance measured on 64 values (an hour's sample) is inflated by noise: two samples of
    the same distribution differ by KS up to ~0.17 at that size, and the first look that
    crosses significance is the one whose noise pushed it up. Severity must describe the
    change, not the sample, so it reads a lower confidence bound of the effect.

    >>> round(debiased_effect("ks", 0.305, 64, 40_000), 3)    # an hour's look
    0.135
    >>> round(debiased_effect("ks", 0.305, 1_500, 40_000), 3)  # a whole day
    0.269
    """
    if n_window <= 0 or n_baseline <= 0:
        return 0.0
    n_eff = n_window * n_baseline / (n_window + n_baseline)
    if test == "ks":
        noise = KS_NOISE / math.sqrt(n_eff)
    elif test == "chi2":
        # E|p_hat - q_hat| ~ sqrt(2/pi) sqrt(p(1-p)/n_eff) per category; TVD is half the sum.
        noise = (
            0.5
            * math.sqrt(2 / math.pi)
            * sum(math.sqrt(max(p * (1 - p), 0.0) / n_eff) for p in baseline_shares)
        )
    else:  # a difference of two rates
        p = baseline_shares[0] if baseline_shares else 0.0
        noise = _NOISE_QUANTILE * math.sqrt(2 / math.pi) * math.sqrt(max(p * (1 - p), 0.0) / n_eff)
    return max(0.0, effect_size - noise)


def severity_for(effect_size: float, drifting_share: float, drifting_count: int) -> Severity:
    """Severity of one feature's drift, from its (debiased) effect size.

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
