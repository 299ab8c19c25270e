"""The multivariate drift test: did the correlations of the numeric features change?

Why Jennrich's test of equal correlation matrices (1970), and not Box's M on the covariances
or NannyML's PCA reconstruction error as the decision. All three need only the moments. The
reconstruction error has no null distribution of its own: NannyML compares it with the
baseline's chunk-to-chunk spread (mean +- 3 sd), and a driftwatch baseline has 3 to 5
windows, too few for the small p-values BH at alpha = 0.01 needs. Box's M (tried first) has a
chi-square p-value but tests the variances too, so it fired on every marginal variance
change, which the per-feature tests already report (the detection benchmark's variance
scenario: 139 false multivariate alarms per 1,000 feature-days). The correlations are what
no per-feature test can see; Jennrich's statistic has a chi-square law with ``p (p - 1) / 2``
degrees of freedom, calibrated for Gaussian rows from a few hundred rows up
(``tests/unit/test_multivariate.py`` checks the false-alarm rate), and power against any
change of the correlation structure. The reconstruction error is still reported
(``extra``), as NannyML defines it.

Heavy tails: with heavier tails than the normal's a sample correlation varies more than the
test assumes. For an elliptical distribution of kurtosis parameter ``kappa`` the statistic
is ``(1 + kappa)`` times a chi-square (the covariance of the correlations scales so; Browne
& Shapiro), and ``kappa`` is estimated from the tracked features' marginal excess kurtosis
(``3 kappa`` each), the larger of the window's and the baseline's, never below 0.
Multivariate t with 5 degrees of freedom, 6 features, a day of 1,000 rows against 5,000:
1 of 200 null pairs below p = 0.01 (121 without the correction).
Non-elliptical tails (one skewed feature among normal ones) are over-corrected: less power,
not more false alarms. The effect floor (``min_multivariate_effect``) is the second guard.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

import numpy as np
from scipy import special

from schemas.names import MULTIVARIATE_KEY
from streams.buckets import FloatArray
from streams.drift_tests.base import DriftTest, TestResult
from streams.moments import MomentSummary

if TYPE_CHECKING:
    from streams.config import EngineConfig

__all__ = ["MULTIVARIATE_FEATURE", "CorrelationChange", "jennrich_test"]

MULTIVARIATE_FEATURE: Final = MULTIVARIATE_KEY
"""The ``feature`` of a multivariate DriftEvent (and its incident key)."""
PCA_VARIANCE: Final = 0.65
"""Share of the baseline's standardised variance the kept components explain (NannyML's)."""
CONTRIBUTORS: Final = 3


class CorrelationChange(DriftTest[MomentSummary]):
    """Jennrich's test on the tracked numeric features' correlation matrix; effect: the
    Hellinger distance between the two Gaussians of those correlations, bias-corrected (what
    two samples of one distribution show at these sizes is subtracted), in [0, 1] like the
    other tests'. A correlation flip +0.8 -> -0.8 of two features is 0.63; 0.8 -> 0.7 is 0.11.
    """

    name = "corr_jennrich"
    kinds = frozenset({"multivariate"})
    whole_window_only = True

    def run(self, window: MomentSummary, baseline: MomentSummary) -> TestResult:
        return jennrich_test(window, baseline)

    def noise(self, n_eff: float, baseline: MomentSummary) -> float:
        df = _df(len(baseline.features))
        scale = 1.0 + _kappa(baseline.excess_kurtosis())
        return math.sqrt(max(0.0, scale * (_chi2_95(df) - df)) / (8.0 * n_eff))

    def effect_floor(self, config: EngineConfig) -> float:
        return config.min_multivariate_effect

    def describe(self, window: MomentSummary, baseline: MomentSummary) -> dict[str, object]:
        return describe_change(window, baseline)


def _df(p: int) -> float:
    return p * (p - 1) / 2.0


def _chi2_95(df: float) -> float:
    return float(special.chdtri(df, 0.05))


def _kappa(excess_kurtosis: FloatArray) -> float:
    """The elliptical kurtosis parameter from the marginals' excess kurtosis (3 kappa each)."""
    return max(0.0, float(np.mean(excess_kurtosis)) / 3.0) if excess_kurtosis.size else 0.0


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


def _correlation(cov: FloatArray) -> FloatArray:
    d = np.sqrt(np.diag(cov))
    r: FloatArray = cov / np.outer(d, d)
    np.fill_diagonal(r, 1.0)
    return r


def jennrich_test(window: MomentSummary, baseline: MomentSummary) -> TestResult:
    """Jennrich's chi-square test of equal correlation matrices, two samples.

    With ``R = (n_w R_w + n_b R_b) / N``, ``Z = sqrt(n_w n_b / N) R^-1 (R_w - R_b)`` and
    ``S = I + R o R^-1`` (elementwise product): ``chi2 = tr(Z^2) / 2 - dg(Z)' S^-1 dg(Z)``,
    ``p (p - 1) / 2`` degrees of freedom; divided by ``1 + kappa`` for heavier tails (see the
    module). Features constant in either sample are left out; with fewer than two left, or no
    more rows than features, the result is ``p = 1``.

    >>> rng = np.random.default_rng(2)
    >>> def sample(rho, n, sd=1.0):
    ...     s = MomentSummary(("a", "b", "c"))
    ...     cov = np.array([[1, rho, 0], [rho, 1, 0], [0, 0, 1]]) * sd * sd
    ...     s.add_rows(rng.multivariate_normal([0] * 3, cov, n))
    ...     return s
    >>> base = sample(0.8, 20_000)
    >>> flipped = jennrich_test(sample(-0.8, 1_000), base)
    >>> flipped.p_value < 1e-100, round(flipped.effect_size, 2)
    (True, 0.64)
    >>> jennrich_test(sample(0.8, 1_000, sd=2.0), base).p_value > 0.01  # variances: not its job
    True
    """
    parts = _standardised(window, baseline)
    if parts is None:
        return TestResult(0.0, 1.0, 0.0, 0.0, True, "corr_jennrich")
    n_w, n_b, s_w, s_b, _, keep = parts
    p = keep.size
    r_w, r_b = _correlation(s_w), _correlation(s_b)
    n = n_w + n_b
    r_bar = (n_w * r_w + n_b * r_b) / n
    try:
        inv = np.linalg.inv(r_bar)
        z = math.sqrt(n_w * n_b / n) * (inv @ (r_w - r_b))
        dz = np.diag(z)
        s_matrix = np.eye(p) + r_bar * inv
        chi2 = 0.5 * float(np.trace(z @ z)) - float(dz @ np.linalg.solve(s_matrix, dz))
    except np.linalg.LinAlgError:
        return TestResult(0.0, 1.0, 0.0, 0.0, True, "corr_jennrich")  # collinear features
    # The heavier-tailed side's (each memoised with its moments; a merge per test cost more).
    kappa = max(_kappa(window.excess_kurtosis()[keep]), _kappa(baseline.excess_kurtosis()[keep]))
    scale = 1.0 + kappa
    df = _df(p)
    statistic = max(0.0, chi2 / scale)
    p_value = float(special.chdtrc(df, statistic)) if math.isfinite(statistic) else 0.0
    # Hellinger distance of N(0, R_w) and N(0, R_b): 1 - |R_w|^1/4 |R_b|^1/4 / |mean|^1/2.
    ld_w, ld_b, ld_m = _logdet(r_w), _logdet(r_b), _logdet((r_w + r_b) / 2)
    h2 = 1.0 - math.exp(0.25 * ld_w + 0.25 * ld_b - 0.5 * ld_m)
    n_eff = n_w * n_b / n
    effect = math.sqrt(min(1.0, max(0.0, h2 - scale * df / (8.0 * n_eff))))
    return TestResult(
        statistic if math.isfinite(statistic) else 1e300, p_value, effect, 0.0, True,
        "corr_jennrich",
    )  # fmt: skip


def describe_change(window: MomentSummary, baseline: MomentSummary) -> dict[str, object]:
    """For the DriftEvent's ``extra``: the features whose correlations changed most
    (``contributing_features``, largest first, with ``contributions``: the norm of the
    change of their row of the correlation matrix), the tracked features' count, and
    NannyML's PCA reconstruction error (mean squared, standardised units) of the window and
    of the baseline under the baseline's components explaining ``PCA_VARIANCE`` of its variance."""
    parts = _standardised(window, baseline)
    out: dict[str, object] = {"tracked_features": len(window.features)}
    if parts is None:
        return out
    _, _, s_w, s_b, shift, keep = parts
    rows = np.sqrt(np.sum((_correlation(s_w) - _correlation(s_b)) ** 2, axis=1))
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
