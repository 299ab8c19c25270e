"""Label-free performance estimates: a score calibration learned on a labelled baseline, and
what it makes of a window's unlabelled predictions.

Pure statistics over :class:`~streams.performance.PerformanceSummary` histograms (numpy only).
"""

from __future__ import annotations

import struct
from typing import Final

import numpy as np
import numpy.typing as npt

from streams.performance import THRESHOLD, PerformanceSummary, average_precision, roc_auc

__all__ = ["MIN_CALIBRATION_LABELS", "CalibrationMap", "estimate_performance"]

FloatArray = npt.NDArray[np.float64]

MIN_CALIBRATION_LABELS: Final = 200
_SMOOTHING: Final = 5.0  # pseudo-labels pulling a sparse calibration bin toward its own score
_MAP_HEADER: Final = struct.Struct("<4sBxxxI")
_MAP_MAGIC: Final = b"DWCM"
_MAP_VERSION: Final = 2


def _pav(values: FloatArray, weights: FloatArray) -> FloatArray:
    """Weighted pool-adjacent-violators: the closest non-decreasing sequence (least squares)."""
    blocks: list[list[float]] = []  # [mean, weight, length]
    for v, w in zip(values.tolist(), weights.tolist(), strict=True):
        blocks.append([v, w, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks[-1]
            blocks[-1] = [(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2]
    return np.repeat([b[0] for b in blocks], [int(b[2]) for b in blocks]).astype(np.float64)


# --------------------------------------------------------------------------- calibration


class CalibrationMap:
    """Score -> P(label=1) learned on a baseline's labelled histograms.

    Label-free performance estimates are only as good as the probabilities they average, and
    a model's raw scores are rarely calibrated. The map groups the baseline's bins so that no
    group is wider than ``1/bins`` of the score range nor holds more than ``1/bins`` of the
    labels (up to one bin's worth), so resolution follows the data where scores crowd (most
    predictions of an imbalanced model sit near 0, and ranking them matters for the AUC
    estimates). It takes each group's positive share, smoothed toward the
    group's own mean score by ``_SMOOTHING`` pseudo-labels (a sparse group falls back on
    the model's word rather than on noise), makes it non-decreasing with weighted
    pool-adjacent-violators (binned isotonic regression), and interpolates linearly between
    the groups' mean scores (flat beyond the first and last).

    >>> import numpy as np
    >>> rng = np.random.default_rng(11)
    >>> s = rng.random(20_000)
    >>> base = PerformanceSummary()
    >>> base.add_predictions(s)
    >>> base.add_labels(s, (rng.random(20_000) < s).astype(int))
    >>> cal = CalibrationMap.fit(base)
    >>> assert cal is not None
    >>> cal.probability(np.array([0.2, 0.5, 0.8])).round(1).tolist()
    [0.2, 0.5, 0.8]
    """

    def __init__(self, knots: FloatArray, values: FloatArray) -> None:
        if knots.shape != values.shape or knots.size == 0 or np.any(np.diff(knots) <= 0):
            raise ValueError("knots must be non-empty, strictly increasing and match values")
        if np.any(np.diff(values) < 0) or np.any((values < 0) | (values > 1)):
            raise ValueError("values must be non-decreasing probabilities")
        self.knots = knots
        self.values = values

    @classmethod
    def fit(cls, baseline: PerformanceSummary, bins: int = 20) -> CalibrationMap | None:
        """None when the baseline has fewer than ``MIN_CALIBRATION_LABELS`` labels."""
        if not 1 <= bins <= baseline.BINS:
            raise ValueError(f"bins must be in 1..{baseline.BINS}")
        if baseline.labelled < MIN_CALIBRATION_LABELS:
            return None
        labelled = baseline._pos + baseline._neg
        width_id = np.minimum((baseline.bin_centers() * bins).astype(np.int64), bins - 1)
        freq_id = (np.cumsum(labelled) - labelled) * bins // int(labelled.sum())
        cut = np.concatenate(([False], (np.diff(width_id) > 0) | (np.diff(freq_id) > 0)))
        group = np.cumsum(cut)
        groups = int(group[-1]) + 1
        pos = np.bincount(group, baseline._pos.astype(np.float64), groups)
        count = np.bincount(group, labelled.astype(np.float64), groups)
        score = np.bincount(group, baseline._score_sum, groups)
        seen = count > 0
        pos, count, score = pos[seen], count[seen], score[seen]
        mean_score = np.clip(score / count, 0.0, 1.0)
        rate: FloatArray = (pos + _SMOOTHING * mean_score) / (count + _SMOOTHING)
        weights = np.asarray(count + _SMOOTHING, np.float64)
        values = np.clip(_pav(rate, weights), 0.0, 1.0)
        knots = mean_score
        keep = np.concatenate(([True], np.diff(knots) > 0))  # defensive: float ties
        return cls(knots[keep], values[keep])

    def probability(self, scores: npt.ArrayLike) -> FloatArray:
        """Calibrated P(label=1) for each score (non-decreasing in the score)."""
        out: FloatArray = np.interp(np.asarray(scores, dtype=np.float64), self.knots, self.values)
        return out

    def to_bytes(self) -> bytes:
        header = _MAP_HEADER.pack(_MAP_MAGIC, _MAP_VERSION, self.knots.size)
        return header + self.knots.astype("<f8").tobytes() + self.values.astype("<f8").tobytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> CalibrationMap:
        if len(raw) < _MAP_HEADER.size:
            raise ValueError("truncated CalibrationMap")
        magic, version, n = _MAP_HEADER.unpack_from(raw)
        if magic != _MAP_MAGIC or version != _MAP_VERSION or len(raw) != _MAP_HEADER.size + 16 * n:
            raise ValueError("corrupt CalibrationMap")
        knots = np.frombuffer(raw, "<f8", n, _MAP_HEADER.size).astype(np.float64)
        values = np.frombuffer(raw, "<f8", n, _MAP_HEADER.size + 8 * n).astype(np.float64)
        return cls(knots, values)

    def __repr__(self) -> str:
        return f"CalibrationMap(knots={self.knots.size})"


def estimate_performance(
    window: PerformanceSummary, calibration: CalibrationMap
) -> dict[str, float]:
    """Confidence-based performance estimation (as NannyML's CBPE does in batch).

    Each of the window's predictions (labelled or not) is taken at its bin's midpoint score
    and given its calibrated probability ``p``; then expected accuracy is
    ``mean(p if score >= 0.5 else 1 - p)``, and expected ROC-AUC / PR-AUC are computed from
    the fractional histograms ``count * p`` (positives) and ``count * (1 - p)`` (negatives).
    Valid while the score -> label relation is the baseline's (covariate shift only); it
    says nothing about concept drift, which only real labels reveal. Figures that are
    undefined (no expected positives or negatives) are left out.

    >>> import numpy as np
    >>> rng = np.random.default_rng(2)
    >>> s = rng.random(20_000)
    >>> base = PerformanceSummary()
    >>> base.add_predictions(s)
    >>> base.add_labels(s, (rng.random(20_000) < s).astype(int))
    >>> cal = CalibrationMap.fit(base)
    >>> assert cal is not None
    >>> win = PerformanceSummary()
    >>> win.add_predictions(rng.random(5_000))
    >>> round(estimate_performance(win, cal)["accuracy"], 2)
    0.75
    """
    unl, pos, neg = window.histograms()
    count = (np.maximum(unl, 0) + pos + neg).astype(np.float64)
    total = float(count.sum())
    if total == 0:
        raise ValueError("estimate_performance needs at least one prediction")
    mid = window.bin_centers()
    p = calibration.probability(mid)
    exp_pos, exp_neg = count * p, count * (1.0 - p)
    predicted = mid >= THRESHOLD
    out = {"accuracy": float((exp_pos[predicted].sum() + exp_neg[~predicted].sum()) / total)}
    ap = average_precision(exp_pos, exp_neg)
    auc = roc_auc(exp_pos, exp_neg)
    if ap is not None:
        out["pr_auc"] = ap
    if auc is not None:
        out["roc_auc"] = auc
    return out
