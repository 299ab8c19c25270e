"""The multivariate drift test: did the covariance of the numeric features change together?

Why Box's M (the likelihood-ratio test of equal covariance matrices, with Box's small-sample
correction) and not NannyML's PCA reconstruction error as the decision: both need only the
moments, but the reconstruction error has no null distribution of its own. NannyML compares
it with the baseline's chunk-to-chunk spread (mean +- 3 sd), and a driftwatch baseline has 3
to 5 windows, too few for a spread to give the small p-values BH at alpha = 0.01 needs.
Box's M gives a chi-square p-value, calibrated for Gaussian rows from a few hundred rows up
(``tests/unit/test_multivariate.py`` checks the false-alarm rate), with power against any
change of the correlation structure, not only one that leaves the baseline's principal
subspace. The reconstruction error is still reported (``extra``), as NannyML defines it.

Heavy tails: Box's M assumes Gaussian rows, and with heavier tails a sample covariance
varies more than it assumes (multivariate t with 5 degrees of freedom: 78 % of null pairs at
p < 0.01). The p-value is corrected as for an elliptical distribution of kurtosis parameter
``kappa`` (estimated from the tracked features' marginal excess kurtosis, ``kappa = mean /
3``, pooled over window and baseline; never below 0): the statistic is then distributed as
``(1 + kappa) chi2(df - 1) + (1 + kappa + p kappa / 2) chi2(1)`` (the scale direction varies
most; Muirhead & Waternaux 1980), matched by Satterthwaite's ``g chi2(h)``. Non-elliptical
tails (one skewed feature among normal ones) are then over-corrected: less power, not more
false alarms. The effect floor (``min_multivariate_effect``) is the second guard.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

import numpy as np
from scipy import special

from streams.buckets import FloatArray
from streams.drift_tests.base import DriftTest, TestResult
from streams.moments import MomentSummary

if TYPE_CHECKING:
    from streams.config import EngineConfig

__all__ = ["MULTIVARIATE_FEATURE", "CovarianceChange", "box_m_test"]

MULTIVARIATE_FEATURE: Final = "__multivariate__"
"""The ``feature`` of a multivariate DriftEvent (and its incident key)."""
PCA_VARIANCE: Final = 0.65
"""Share of the baseline's standardised variance the kept components explain (NannyML's)."""
CONTRIBUTORS: Final = 3


class CovarianceChange(DriftTest[MomentSummary]):
    """Box's M on the tracked numeric features' covariance; effect: the Gaussian Hellinger
    distance between the two covariances, bias-corrected (what two samples of one
    distribution show at these sizes is subtracted), in [0, 1] like the other tests'.

    A correlation flip +0.8 -> -0.8 of two features is a Hellinger distance of 0.63;
    0.8 -> 0.7 is 0.11.
    """

    name = "cov_box_m"
    kinds = frozenset({"multivariate"})
    whole_window_only = True

    def run(self, window: MomentSummary, baseline: MomentSummary) -> TestResult:
        return box_m_test(window, baseline)

    def noise(self, n_eff: float, baseline: MomentSummary) -> float:
        scale, dof = _null_law(len(baseline.features), _kappa(baseline.excess_kurtosis()))
        return math.sqrt(max(0.0, scale * (_chi2_95(dof) - dof)) / (8.0 * n_eff))

    def effect_floor(self, config: EngineConfig) -> float:
        return config.min_multivariate_effect

    def describe(self, window: MomentSummary, baseline: MomentSummary) -> dict[str, object]:
        return describe_change(window, baseline)


def _df(p: int) -> float:
    return p * (p + 1) / 2.0


def _chi2_95(df: float) -> float:
    return float(special.chdtri(df, 0.05))


def _kappa(excess_kurtosis: FloatArray) -> float:
    """The elliptical kurtosis parameter from the marginals' excess kurtosis (3 kappa each)."""
    return max(0.0, float(np.mean(excess_kurtosis)) / 3.0) if excess_kurtosis.size else 0.0


def _null_law(p: int, kappa: float) -> tuple[float, float]:
    """(g, h): Box's M's null law ``(1 + k) chi2(df - 1) + (1 + k + p k / 2) chi2(1)`` as
    Satterthwaite's ``g chi2(h)`` (same mean and variance); ``(1, df)`` for normal rows."""
    df = _df(p)
    a, b = 1.0 + kappa, 1.0 + kappa + p * kappa / 2.0
    mean, var = a * (df - 1) + b, a * a * (df - 1) + b * b
    return var / mean, mean * mean / var


def _logdet(matrix: FloatArray) -> float:
    """log det of a symmetric positive semi-definite matrix: from its Cholesky factor (a
    third of an eigendecomposition's time), or when that fails, its eigenvalues floored at
    1e-12 of the largest, so a (nearly) singular one stays finite."""
    try:
        diag = np.diagonal(np.linalg.cholesky(matrix))
        if float(diag.min()) > 1e-6 * float(diag.max()):
            return 2.0 * float(np.sum(np.log(diag)))
    except np.linalg.LinAlgError:
        pass
    eig = np.linalg.eigvalsh(matrix)
    top = float(eig[-1]) if eig.size else 0.0
    if top <= 0.0:
        return -math.inf
    return float(np.sum(np.log(np.maximum(eig, top * 1e-12))))


def _standardised(
    window: MomentSummary, baseline: MomentSummary
) -> tuple[int, int, FloatArray, FloatArray, FloatArray, np.ndarray] | None:
    """Both covariances and the window's mean shift in the baseline's standard deviations,
    over the features that vary on both sides; None when no test is possible."""
    if window.features != baseline.features:
        raise ValueError("window and baseline track different features")
    n_w, mean_w, c_w = window.moments()
    n_b, mean_b, c_b = baseline.moments()
    if n_w < 2 or n_b < 2:
        return None
    s_w, s_b = c_w / (n_w - 1), c_b / (n_b - 1)
    d_b, d_w = np.diag(s_b), np.diag(s_w)
    keep = np.flatnonzero((d_b > 1e-12 * max(float(d_b.max()), 1e-300)) & (d_w > 0))
    p = keep.size
    if p < 2 or n_w <= p + 1 or n_b <= p + 1:
        return None
    scale = 1.0 / np.sqrt(d_b[keep])
    sub = np.ix_(keep, keep)
    s_w = s_w[sub] * np.outer(scale, scale)
    s_b = s_b[sub] * np.outer(scale, scale)
    shift = (mean_w[keep] - mean_b[keep]) * scale
    return n_w, n_b, s_w, s_b, shift, keep


def box_m_test(window: MomentSummary, baseline: MomentSummary) -> TestResult:
    """Box's M test of equal covariance matrices, two groups (chi-square approximation).

    ``M = (N - 2) ln|S_p| - (n_w - 1) ln|S_w| - (n_b - 1) ln|S_b|`` with the pooled ``S_p``;
    ``M (1 - c) ~ chi2(p (p + 1) / 2)`` for normal rows, ``g chi2(h)`` with heavier tails (see
    the module). The effect's bias correction subtracts that law's mean. Features constant in
    either sample are left out; with fewer than two left, or no more rows than features, the
    result is ``p = 1``.

    >>> rng = np.random.default_rng(2)
    >>> def sample(rho, n):
    ...     s = MomentSummary(("a", "b", "c"))
    ...     s.add_rows(rng.multivariate_normal([0] * 3, [[1, rho, 0], [rho, 1, 0], [0, 0, 1]], n))
    ...     return s
    >>> base = sample(0.8, 20_000)
    >>> flipped, same = box_m_test(sample(-0.8, 1_000), base), box_m_test(sample(0.8, 1_000), base)
    >>> flipped.p_value < 1e-100, round(flipped.effect_size, 2), same.p_value > 0.01
    (True, 0.64, True)
    """
    parts = _standardised(window, baseline)
    if parts is None:
        return TestResult(0.0, 1.0, 0.0, 0.0, True, "cov_box_m")
    n_w, n_b, s_w, s_b, _, keep = parts
    p = keep.size
    kappa = _kappa(window.merge(baseline).excess_kurtosis()[keep])
    n = n_w + n_b
    pooled = ((n_w - 1) * s_w + (n_b - 1) * s_b) / (n - 2)
    ld_w, ld_b, ld_p = _logdet(s_w), _logdet(s_b), _logdet(pooled)
    m = (n - 2) * ld_p - (n_w - 1) * ld_w - (n_b - 1) * ld_b
    c = (2 * p * p + 3 * p - 1) / (6.0 * (p + 1)) * (1 / (n_w - 1) + 1 / (n_b - 1) - 1 / (n - 2))
    scale, dof = _null_law(p, kappa)
    statistic = max(0.0, m * (1.0 - c))
    p_value = float(special.chdtrc(dof, statistic / scale)) if math.isfinite(statistic) else 0.0
    # Hellinger distance of N(0, S_w) and N(0, S_b): 1 - |S_w|^1/4 |S_b|^1/4 / |mean|^1/2.
    h2 = 1.0 - math.exp(0.25 * ld_w + 0.25 * ld_b - 0.5 * _logdet((s_w + s_b) / 2))
    n_eff = n_w * n_b / n
    effect = math.sqrt(min(1.0, max(0.0, h2 - scale * dof / (8.0 * n_eff))))
    return TestResult(
        statistic if math.isfinite(statistic) else 1e300, p_value, effect, 0.0, True, "cov_box_m"
    )


def describe_change(window: MomentSummary, baseline: MomentSummary) -> dict[str, object]:
    """For the DriftEvent's ``extra``: the features whose standardised covariance row changed
    most (``contributing_features``, largest first, with ``contributions``: the row's
    Frobenius norm), the tracked features' count, and NannyML's PCA reconstruction error
    (mean squared, standardised units) of the window and of the baseline under the
    baseline's components explaining ``PCA_VARIANCE`` of its variance."""
    parts = _standardised(window, baseline)
    out: dict[str, object] = {"tracked_features": len(window.features)}
    if parts is None:
        return out
    _, _, s_w, s_b, shift, keep = parts
    rows = np.sqrt(np.sum((s_w - s_b) ** 2, axis=1))
    top = np.argsort(-rows, kind="stable")[:CONTRIBUTORS]
    out["contributing_features"] = [window.features[int(keep[i])] for i in top]
    out["contributions"] = [round(float(rows[i]), 6) for i in top]
    # Correlation of the baseline; the window's second moment about the baseline's mean.
    d = np.sqrt(np.diag(s_b))
    corr_b = s_b / np.outer(d, d)
    second_w = (s_w + np.outer(shift, shift)) / np.outer(d, d)
    eig, vec = np.linalg.eigh(corr_b)
    eig, vec = eig[::-1], vec[:, ::-1]
    share = np.cumsum(eig) / max(float(eig.sum()), 1e-300)
    kept = int(np.searchsorted(share, PCA_VARIANCE) + 1)
    residual = np.eye(keep.size) - vec[:, :kept] @ vec[:, :kept].T
    out["reconstruction_error"] = round(float(np.trace(residual @ second_w @ residual)), 6)
    out["baseline_reconstruction_error"] = round(float(np.trace(residual @ corr_b @ residual)), 6)
    out["pca_components"] = kept
    return out
