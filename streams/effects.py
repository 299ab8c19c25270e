"""Effect sizes (how *much* a feature drifted) on window summaries, for DriftEvents.

A p-value says whether a difference is real; with 45,000 baseline rows almost any difference
is. These measures say whether it is *large*, on scales people already read: PSI (credit-risk
convention), Jensen-Shannon distance (bounded in [0, 1], symmetric) and the Wasserstein
distance in baseline standard deviations ("the feature moved 0.3 sigma").

Everything is computed from ``NumericSummary.cdf`` / ``CategoricalSummary.counts``, so it
works the same on exact (<= 2,048 values) and bucketed summaries. In bucketed mode each CDF
value is within ``cdf_error`` of the truth, so every bin proportion is within
``2 * cdf_error``; the effect sizes inherit that approximation (see each function).

Pure statistics: numpy + scipy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special

from streams.categorical_summary import CategoricalSummary, known_to_both
from streams.numeric_summary import NumericSummary

__all__ = [
    "Effects",
    "drift_extras",
    "effects",
    "js_distance_categorical",
    "js_distance_numeric",
    "new_categories",
    "psi_categorical",
    "psi_numeric",
    "quantile_cuts",
    "wasserstein_normalized",
]

FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------- helpers


def _require_values(
    window: NumericSummary | CategoricalSummary, baseline: NumericSummary | CategoricalSummary
) -> None:
    if window.count == 0 or baseline.count == 0:
        raise ValueError("effect sizes need at least one non-missing value on each side")


def quantile_cuts(baseline: NumericSummary, bins: int) -> FloatArray:
    """Interior cut points at the baseline's ``k / bins`` quantiles (k = 1 .. bins-1), unique.

    The quantile for ``q`` is the smallest x with ``baseline.cdf(x) >= q`` (numpy's
    ``inverted_cdf``). ``cdf`` is evaluated at every edge (kink or jump) and just left of
    it; between two edges it is linear, so a crossing inside an interval is interpolated.
    In exact mode the CDF is a step function and the cut is always a sample value. Tied
    quantiles (heavy values) collapse, so fewer than ``bins`` bins may result.

    >>> s = NumericSummary()
    >>> s.add_many(np.arange(1.0, 101.0))
    >>> quantile_cuts(s, 4).tolist()
    [25.0, 50.0, 75.0]
    """
    if bins < 2:
        raise ValueError("bins must be >= 2")
    if baseline.count == 0:
        raise ValueError("quantiles of an empty summary")
    edges = np.unique(baseline.edges())
    at = baseline.cdf(edges)
    left = baseline.cdf(np.nextafter(edges, -np.inf))
    qs = np.arange(1, bins, dtype=np.float64) / bins
    idx = np.minimum(np.searchsorted(at, qs, side="left"), edges.size - 1)
    cuts = edges[idx].copy()
    prev = np.maximum(idx - 1, 0)
    inside = (idx > 0) & (left[idx] >= qs)  # crossing inside (edges[prev], edges[idx])
    if inside.any():
        i, p, q = idx[inside], prev[inside], qs[inside]
        frac = (q - at[p]) / (left[i] - at[p])
        cuts[inside] = edges[p] + frac * (edges[i] - edges[p])
    out: FloatArray = np.unique(cuts)
    return out


def _bin_proportions(summary: NumericSummary, cuts: FloatArray) -> FloatArray:
    """Mass of (-inf, c1], (c1, c2], ..., (c_last, inf) under ``summary.cdf``."""
    inner = summary.cdf(cuts)
    cum = np.concatenate(([0.0], inner, [1.0]))
    out: FloatArray = np.clip(np.diff(cum), 0.0, 1.0)
    return out


def _categorical_proportions(
    window: CategoricalSummary, baseline: CategoricalSummary
) -> tuple[FloatArray, FloatArray]:
    _require_values(window, baseline)
    # The counts the chi-square compares (the kept ones, and where a side folded only the
    # categories both know, the rest pooled alike), not each side's own top 63: read so, a
    # stationary feature of 100 categories showed a PSI of 2.8, a "major shift" (by review).
    cw, cb = window.read_counts(), baseline.read_counts()
    cats = known_to_both(cw, cb, window.OTHER)
    w_row = [cw.get(c, 0) for c in cats]
    b_row = [cb.get(c, 0) for c in cats]
    w_rest, b_rest = window.count - sum(w_row), baseline.count - sum(b_row)
    if w_rest or b_rest:
        w_row.append(w_rest)
        b_row.append(b_rest)
    p = np.array(w_row, np.float64) / window.count
    q = np.array(b_row, np.float64) / baseline.count
    return p, q


def _psi(p: FloatArray, q: FloatArray, eps: float) -> float:
    if eps <= 0:
        raise ValueError("eps must be > 0")
    p, q = np.maximum(p, eps), np.maximum(q, eps)
    return float(np.sum((p - q) * np.log(p / q)))


def _js_distance(p: FloatArray, q: FloatArray) -> float:
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)
    js = 0.5 * float(np.sum(special.rel_entr(p, m)) + np.sum(special.rel_entr(q, m)))
    return float(min(1.0, math.sqrt(max(js, 0.0) / math.log(2.0))))


# --------------------------------------------------------------------------- PSI


def psi_numeric(
    window: NumericSummary, baseline: NumericSummary, bins: int = 10, eps: float = 1e-4
) -> float:
    """Population Stability Index over the baseline's quantile bins (deciles by default).

    Why: the drift score model-risk teams already threshold. Reading: < 0.1 stable,
    0.1-0.25 moderate shift, > 0.25 major shift. How: cuts from ``quantile_cuts(baseline,
    bins)``; bin proportions from differences of ``window.cdf`` / ``baseline.cdf`` at the
    cuts; ``PSI = sum((p_w - p_b) * ln(p_w / p_b))`` with proportions floored at ``eps`` so
    an empty bin costs a large but finite amount. Limits: grows with ``bins`` and with
    small-window noise (about ``(bins - 1) / n_window`` for identical distributions);
    bucketed summaries shift each proportion by at most ``2 * cdf_error``, and tail bins
    with a large ratio ``p_w / p_b`` amplify that (see the unit tests for measured error).

    >>> rng = np.random.default_rng(11)
    >>> base, same, moved = NumericSummary(), NumericSummary(), NumericSummary()
    >>> base.add_many(rng.normal(0, 1, 20_000))
    >>> same.add_many(rng.normal(0, 1, 5_000))
    >>> moved.add_many(rng.normal(1, 1, 5_000))
    >>> psi_numeric(same, base) < 0.1, psi_numeric(moved, base) > 0.25
    (True, True)
    """
    _require_values(window, baseline)
    cuts = quantile_cuts(baseline, bins)
    return _psi(_bin_proportions(window, cuts), _bin_proportions(baseline, cuts), eps)


def psi_categorical(
    window: CategoricalSummary, baseline: CategoricalSummary, eps: float = 1e-4
) -> float:
    """Population Stability Index over the categories the chi-square compares: every one
    both sides count (up to 128 kept each; where a side folded, only those both list, the
    rest pooled alike on both sides).

    How: proportions ``count / total`` per category (missing excluded; the missing-rate
    test watches those), floored at ``eps``, ``sum((p_w - p_b) * ln(p_w / p_b))``. A
    category absent on one side contributes ``(p - eps) * ln(p / eps)``. Limits: where both
    sides folded (over 128 categories), a change among the pooled ones is seen only as a
    change of the pool's share (mass moved wholly to categories one side never kept reads
    as no change).

    >>> w, b = CategoricalSummary(), CategoricalSummary()
    >>> for v in ["a"] * 60 + ["b"] * 40:
    ...     w.add(v)
    >>> for v in ["a"] * 40 + ["b"] * 60:
    ...     b.add(v)
    >>> round(psi_categorical(w, b), 4)  # 2 * 0.2 * ln(1.5)
    0.1622
    """
    return _psi(*_categorical_proportions(window, baseline), eps)


# --------------------------------------------------------------------------- Jensen-Shannon


def js_distance_numeric(window: NumericSummary, baseline: NumericSummary, bins: int = 20) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) over the baseline's ``bins``-quantile bins.

    Why: unlike PSI it is symmetric, bounded and needs no ``eps`` for empty bins (0 means
    the same binned distribution, 1 disjoint support). How: the same quantile bins and
    CDF-difference proportions as ``psi_numeric``; ``sqrt(JSD)`` with ``JSD`` the mean KL
    divergence to the mixture, in bits (equal to ``scipy.spatial.distance.jensenshannon``
    with ``base=2``). Limits: only differences visible at the bin resolution count; the end
    bins are open and hold ``1 / bins`` of the baseline, so a window entirely beyond the
    baseline's range saturates at ~0.92 (20 bins), not 1; with bucketed summaries each
    proportion is within ``2 * cdf_error``.

    >>> rng = np.random.default_rng(12)
    >>> base, moved = NumericSummary(), NumericSummary()
    >>> base.add_many(rng.normal(0, 1, 20_000))
    >>> moved.add_many(rng.normal(1, 1, 5_000))
    >>> js_distance_numeric(base, base), 0.3 < js_distance_numeric(moved, base) < 0.5
    (0.0, True)
    """
    _require_values(window, baseline)
    cuts = quantile_cuts(baseline, bins)
    return _js_distance(_bin_proportions(window, cuts), _bin_proportions(baseline, cuts))


def js_distance_categorical(window: CategoricalSummary, baseline: CategoricalSummary) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between the two category distributions.

    How: proportions over the union of categories (missing excluded), as for
    ``psi_categorical``. Limits: ``OTHER`` is compared as a single category.

    >>> w, b = CategoricalSummary(), CategoricalSummary()
    >>> for v in ["a", "a", "b"]:
    ...     w.add(v)
    >>> for v in ["c", "c"]:
    ...     b.add(v)
    >>> js_distance_categorical(w, b), js_distance_categorical(w, w)
    (1.0, 0.0)
    """
    return _js_distance(*_categorical_proportions(window, baseline))


# --------------------------------------------------------------------------- Wasserstein


def wasserstein_normalized(window: NumericSummary, baseline: NumericSummary) -> float:
    """Wasserstein-1 distance between the two CDFs, in baseline standard deviations.

    Why: a shift in interpretable units ("moved 0.3 sigma"), sensitive to how *far* mass
    moved, which binned measures ignore. How: ``W1 = integral |F_w - F_b| dx``. Both CDFs
    jump only at their edges and are linear between them, so on each interval of the union
    of edges ``F_w - F_b`` is linear and its absolute integral is exact (trapezoid, or two
    triangles when it changes sign). In exact mode this equals
    ``scipy.stats.wasserstein_distance``. Divided by ``baseline.std`` (ddof=1); 0.0 when the
    baseline has no spread (no scale to express a shift in). Limits: in bucketed mode a
    bucket's linear ramp is off from its true values' CDF by an area of at most
    ``weight * width / 2``, so W1 is within ``sum(weight * width) / (2 * count)`` (both
    sides added) of the exact value; small for dense regions, but a wide tail bucket of a
    heavy-tailed feature can make it a few hundredths of a sigma.

    >>> rng = np.random.default_rng(13)
    >>> base, moved = NumericSummary(), NumericSummary()
    >>> base.add_many(rng.normal(0, 2, 20_000))
    >>> moved.add_many(rng.normal(1, 2, 5_000))  # half a baseline sigma
    >>> round(wasserstein_normalized(moved, base), 1)
    0.5
    """
    _require_values(window, baseline)
    std = baseline.std
    if std == 0.0:
        return 0.0
    edges = np.union1d(window.edges(), baseline.edges())
    if edges.size < 2:
        return 0.0
    lo, hi = edges[:-1], np.nextafter(edges[1:], -np.inf)
    a = window.cdf(lo) - baseline.cdf(lo)  # just right of each left edge
    b = window.cdf(hi) - baseline.cdf(hi)  # just left of each right edge
    h = np.diff(edges)
    aa, ab = np.abs(a), np.abs(b)
    total = aa + ab
    same_sign = a * b >= 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = np.where(total > 0.0, (a * a + b * b) / (2.0 * total), 0.0)
    area = np.where(same_sign, 0.5 * total, crossing) * h
    return float(area.sum()) / std


# --------------------------------------------------------------------------- bundle


@dataclass(frozen=True)
class Effects:
    """The effect sizes for one feature; ``wasserstein_sd`` is None for categoricals."""

    psi: float
    js_distance: float
    wasserstein_sd: float | None


def effects(
    window: NumericSummary | CategoricalSummary, baseline: NumericSummary | CategoricalSummary
) -> Effects:
    """All effect sizes with default settings, dispatched on the summary type.

    >>> w, b = CategoricalSummary(), CategoricalSummary()
    >>> for v in ["a", "b"]:
    ...     w.add(v)
    ...     b.add(v)
    >>> effects(w, b)
    Effects(psi=0.0, js_distance=0.0, wasserstein_sd=None)
    """
    if isinstance(window, NumericSummary) and isinstance(baseline, NumericSummary):
        return Effects(
            psi_numeric(window, baseline),
            js_distance_numeric(window, baseline),
            wasserstein_normalized(window, baseline),
        )
    if isinstance(window, CategoricalSummary) and isinstance(baseline, CategoricalSummary):
        return Effects(
            psi_categorical(window, baseline), js_distance_categorical(window, baseline), None
        )
    raise TypeError(
        f"window and baseline must both be numeric or both categorical summaries, "
        f"got {type(window).__name__} and {type(baseline).__name__}"
    )


def new_categories(window: CategoricalSummary, baseline: CategoricalSummary) -> list[str]:
    """Categories seen in the window but never in the baseline (OTHER excluded), sorted.

    A category the baseline folded into OTHER looks new here; callers that care can check
    ``baseline.other_count``.
    """
    seen = baseline.read_counts()
    return sorted(
        c for c, n in window.read_counts().items() if n > 0 and c != window.OTHER and c not in seen
    )


def drift_extras(
    window: NumericSummary | CategoricalSummary, baseline: NumericSummary | CategoricalSummary
) -> dict[str, object]:
    """What a DriftEvent of a distribution test carries beside the test's own figures (its
    ``extra``): the effect sizes, rounded, and for categoricals up to 20 new categories.

    >>> w, b = CategoricalSummary(), CategoricalSummary()
    >>> w.add_values(["a", "b", "c"])
    >>> b.add_values(["a", "b", "b"])
    >>> drift_extras(w, b)
    {'psi': 2.934147, 'js_distance': 0.455542, 'new_categories': ['c']}
    """
    e = effects(window, baseline)
    out: dict[str, object] = {"psi": round(e.psi, 6), "js_distance": round(e.js_distance, 6)}
    if e.wasserstein_sd is not None:
        out["wasserstein_sd"] = round(e.wasserstein_sd, 6)
    if isinstance(window, CategoricalSummary):
        assert isinstance(baseline, CategoricalSummary)
        out["new_categories"] = new_categories(window, baseline)[:20]
    return out
