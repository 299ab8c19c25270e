"""Bounded, mergeable per-window model-performance summaries, label-free estimates and drop tests.

Pure statistics (numpy + scipy only, no streaming framework imports), like the feature summaries.

Labels arrive hours or days after their predictions, so a window's figures must keep
updating as they land, in any order, with the window's state staying a few KiB whatever the
traffic. A :class:`PerformanceSummary` therefore keeps, per score bin (equal width in
log-odds), how many predictions are still unlabelled and how many were labelled 1 and 0
(plus the labelled scores' sum per bin), together with exact running counts and sums for
the threshold metrics and the Brier score. Everything is a sum, so merging is addition and
the result does not depend on arrival order or on how the stream was split (counts exactly;
float sums up to rounding).

What binning costs, stated as true (not probabilistic) bounds:

* accuracy, precision, recall, F1 (threshold 0.5) and Brier are exact;
* ROC-AUC counts a positive/negative pair whose scores share a bin as 1/2; its truth is 0,
  1/2 or 1, so the error is at most half the share of such pairs
  (:meth:`PerformanceSummary.roc_auc_error_bound`);
* PR-AUC (average precision) treats a bin's scores as tied, which is what sklearn does for
  tied scores; orderings inside a bin move it by at most
  :meth:`PerformanceSummary.pr_auc_error_bound` (exact extremes per bin, via digamma sums);
* calibration error (the usual 10 equal-width bins) is exact: it has its own per-decile
  counts and score sums.

Bins are equal-width in log-odds, not in score: a fraud model puts most of its scores below
0.01, where equal-width score bins would tie them all and the AUC bounds would be useless.
"""

from __future__ import annotations

import math
import struct
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import special

__all__ = [
    "CalibrationMap",
    "PerformanceSummary",
    "auc_drop_test",
    "estimate_performance",
    "proportion_drop_test",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

THRESHOLD: Final = 0.5
"""Scores >= THRESHOLD are predicted positive."""
CALIBRATION_BINS: Final = 10
MIN_CALIBRATION_LABELS: Final = 200
_SMOOTHING: Final = 5.0  # pseudo-labels pulling a sparse calibration bin toward its own score

_HEADER: Final = struct.Struct("<4sBxxxqqqqd")
_MAGIC: Final = b"DWPS"
_VERSION: Final = 2
_MAP_HEADER: Final = struct.Struct("<4sBxxxI")
_MAP_MAGIC: Final = b"DWCM"
_INT32_MAX: Final = 2**31 - 1


def _check_score(score: float) -> None:
    if not 0.0 <= score <= 1.0:  # also rejects NaN
        raise ValueError(f"score must be a probability in [0, 1], got {score!r}")


def _check_scores(scores: FloatArray) -> None:
    if not bool(np.all((scores >= 0.0) & (scores <= 1.0))):
        raise ValueError("scores must be probabilities in [0, 1]")


# --------------------------------------------------------------------------- histogram metrics


def _roc_auc(pos: FloatArray, neg: FloatArray) -> float | None:
    """Mann-Whitney AUC of (possibly fractional) per-bin counts, in ascending score order;
    pairs sharing a bin count 1/2."""
    n_pos, n_neg = float(pos.sum()), float(neg.sum())
    if n_pos <= 0.0 or n_neg <= 0.0:
        return None
    neg_below = np.cumsum(neg) - neg
    return float((pos @ neg_below + 0.5 * (pos @ neg)) / (n_pos * n_neg))


def _average_precision(pos: FloatArray, neg: FloatArray) -> float | None:
    """sklearn's step-wise average precision with each bin's lower edge as a threshold."""
    n_pos = float(pos.sum())
    if n_pos <= 0.0:
        return None
    pos_d, neg_d = pos[::-1], neg[::-1]
    tp = np.cumsum(pos_d)
    fp = np.cumsum(neg_d)
    hit = pos_d > 0
    return float(np.sum(pos_d[hit] * tp[hit] / (tp[hit] + fp[hit])) / n_pos)


def _sum_ratio(a: FloatArray, x: FloatArray, k: FloatArray) -> FloatArray:
    """sum_{j=1..k} (a + j) / (x + j), vectorised: k - (x - a) * (psi(x + k + 1) - psi(x + 1))."""
    harmonic = special.digamma(x + k + 1.0) - special.digamma(x + 1.0)
    out: FloatArray = k - (x - a) * harmonic
    return out


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


# --------------------------------------------------------------------------- summary


class PerformanceSummary:
    """Bounded, mergeable summary of one window's predictions and their (late) labels.

    ``add_prediction`` counts a prediction as unlabelled in its score bin; ``add_label``
    moves one from unlabelled to labelled. A label may even arrive before its prediction is
    counted (e.g. in another partition's summary): the bin's unlabelled count dips below zero
    until the prediction is added or the summaries are merged, so every figure depends only
    on *which* events were applied, never on their order. State is ~4 KiB serialised.

    >>> import numpy as np
    >>> rng = np.random.default_rng(5)
    >>> scores = rng.beta(0.5, 4.5, 5_000)
    >>> labels = (rng.random(5_000) < scores).astype(int)
    >>> s = PerformanceSummary()
    >>> s.add_predictions(scores)
    >>> s.add_labels(scores[:4_000], labels[:4_000])
    >>> s.predictions, s.labelled, s.label_rate
    (5000, 4000, 0.8)
    >>> auc, bound = s.roc_auc(), s.roc_auc_error_bound()
    >>> auc is not None and bound is not None and 0.7 < auc < 0.9 and bound < 0.01
    True
    >>> PerformanceSummary.from_bytes(s.to_bytes()) == s, len(s.to_bytes()) < 8 * 1024
    (True, True)
    """

    BINS: int = 256
    """Equal width in log-odds over [-LOGIT_RANGE, LOGIT_RANGE] (the ends take the tails):
    an imbalanced model puts most scores below 0.01, where equal-width score bins would tie
    them all. 0.5 is a bin edge, so the threshold metrics and bins agree."""
    LOGIT_RANGE: float = 10.0

    def __init__(self) -> None:
        bins = self.BINS
        self._unlabelled = np.zeros(bins, np.int64)
        self._pos = np.zeros(bins, np.int64)
        self._neg = np.zeros(bins, np.int64)
        self._score_sum = np.zeros(bins, np.float64)  # labelled scores, per bin
        # Labelled count, positives and score sum per equal-width score decile (exact ECE).
        self._dec_n = np.zeros(CALIBRATION_BINS, np.int64)
        self._dec_pos = np.zeros(CALIBRATION_BINS, np.int64)
        self._dec_score = np.zeros(CALIBRATION_BINS, np.float64)
        self._sse = 0.0  # sum of (score - label)^2 over labelled predictions
        self._tp = self._fp = self._tn = self._fn = 0

    @classmethod
    def bin_centers(cls) -> FloatArray:
        """Each bin's score at its log-odds midpoint."""
        width = 2 * cls.LOGIT_RANGE / cls.BINS
        mid = -cls.LOGIT_RANGE + (np.arange(cls.BINS) + 0.5) * width
        out: FloatArray = 1.0 / (1.0 + np.exp(-mid))
        return out

    def _bin(self, score: float) -> int:
        """:meth:`_bins` of one score (per prediction: the same numpy functions on a scalar,
        without the array and error-state set-up)."""
        if not 0.0 < score < 1.0:
            return 0 if not score > 0.0 else self.BINS - 1  # log-odds -inf / +inf (NaN: 0)
        logit = np.log(score) - np.log1p(-score)
        idx = math.floor((logit + self.LOGIT_RANGE) / (2 * self.LOGIT_RANGE / self.BINS))
        return int(min(max(idx, 0), self.BINS - 1))

    def _bins(self, scores: FloatArray) -> IntArray:
        with np.errstate(divide="ignore"):
            logit = np.log(scores) - np.log1p(-scores)
        width = 2 * self.LOGIT_RANGE / self.BINS
        idx = np.floor((logit + self.LOGIT_RANGE) / width)
        out: IntArray = np.clip(np.nan_to_num(idx, nan=0.0), 0, self.BINS - 1).astype(np.int64)
        return out

    @staticmethod
    def _deciles(scores: FloatArray) -> IntArray:
        return np.minimum((scores * CALIBRATION_BINS).astype(np.int64), CALIBRATION_BINS - 1)

    # ----------------------------------------------------------------- ingestion

    def add_prediction(self, score: float) -> None:
        """A prediction was made (its label is not known yet)."""
        _check_score(score)
        self._unlabelled[self._bin(score)] += 1

    def add_label(self, score: float, label: int) -> None:
        """The label of a prediction with this score arrived."""
        _check_score(score)
        if label not in (0, 1):
            raise ValueError(f"label must be 0 or 1, got {label!r}")
        b = self._bin(score)
        self._unlabelled[b] -= 1
        self._score_sum[b] += score
        d = min(int(score * CALIBRATION_BINS), CALIBRATION_BINS - 1)
        self._dec_n[d] += 1
        self._dec_pos[d] += label
        self._dec_score[d] += score
        self._sse += (score - label) ** 2
        if label:
            self._pos[b] += 1
            if score >= THRESHOLD:
                self._tp += 1
            else:
                self._fn += 1
        else:
            self._neg[b] += 1
            if score >= THRESHOLD:
                self._fp += 1
            else:
                self._tn += 1

    def add_predictions(self, scores: npt.ArrayLike) -> None:
        """Bulk :meth:`add_prediction`."""
        s = np.asarray(scores, dtype=np.float64).ravel()
        _check_scores(s)
        self._unlabelled += np.bincount(self._bins(s), minlength=self.BINS)

    def add_labels(self, scores: npt.ArrayLike, labels: npt.ArrayLike) -> None:
        """Bulk :meth:`add_label`."""
        s = np.asarray(scores, dtype=np.float64).ravel()
        y = np.asarray(labels).ravel()
        if s.shape != y.shape:
            raise ValueError("scores and labels differ in length")
        _check_scores(s)
        if not bool(np.all((y == 0) | (y == 1))):
            raise ValueError("labels must be 0 or 1")
        one = y == 1
        b = self._bins(s)
        n = self.BINS
        self._unlabelled -= np.bincount(b, minlength=n)
        self._pos += np.bincount(b[one], minlength=n)
        self._neg += np.bincount(b[~one], minlength=n)
        self._score_sum += np.bincount(b, weights=s, minlength=n)
        d = self._deciles(s)
        self._dec_n += np.bincount(d, minlength=CALIBRATION_BINS)
        self._dec_pos += np.bincount(d[one], minlength=CALIBRATION_BINS)
        self._dec_score += np.bincount(d, weights=s, minlength=CALIBRATION_BINS)
        self._sse += float(np.sum((s - one) ** 2))
        hit = s >= THRESHOLD
        self._tp += int(np.sum(hit & one))
        self._fn += int(np.sum(~hit & one))
        self._fp += int(np.sum(hit & ~one))
        self._tn += int(np.sum(~hit & ~one))

    def merge(self, other: PerformanceSummary) -> PerformanceSummary:
        """A new summary of both parts' events (exact for counts); the inputs are unchanged."""
        if self.BINS != other.BINS:
            raise ValueError("cannot merge summaries with different BINS")
        out = type(self)()
        out._unlabelled = self._unlabelled + other._unlabelled
        out._pos = self._pos + other._pos
        out._neg = self._neg + other._neg
        out._score_sum = self._score_sum + other._score_sum
        out._dec_n = self._dec_n + other._dec_n
        out._dec_pos = self._dec_pos + other._dec_pos
        out._dec_score = self._dec_score + other._dec_score
        out._sse = self._sse + other._sse
        out._tp, out._fp = self._tp + other._tp, self._fp + other._fp
        out._tn, out._fn = self._tn + other._tn, self._fn + other._fn
        return out

    # ----------------------------------------------------------------- counts

    @property
    def predictions(self) -> int:
        """Predictions added (labelled or not)."""
        return int(self._unlabelled.sum() + self._pos.sum() + self._neg.sum())

    @property
    def labelled(self) -> int:
        return int(self._pos.sum() + self._neg.sum())

    @property
    def unlabelled(self) -> int:
        return self.predictions - self.labelled

    @property
    def label_rate(self) -> float | None:
        """Share of the window's predictions labelled so far (its completeness)."""
        n = self.predictions
        return self.labelled / n if n > 0 else None

    @property
    def positive_rate(self) -> float | None:
        """Share of labelled predictions whose label is 1."""
        n = self.labelled
        return int(self._pos.sum()) / n if n > 0 else None

    def histograms(self) -> tuple[IntArray, IntArray, IntArray]:
        """Copies of the per-bin (unlabelled, label 1, label 0) counts."""
        return self._unlabelled.copy(), self._pos.copy(), self._neg.copy()

    def confusion(self) -> tuple[int, int, int, int]:
        """Exact (tp, fp, tn, fn) at ``score >= THRESHOLD``."""
        return self._tp, self._fp, self._tn, self._fn

    # ----------------------------------------------------------------- metrics

    def accuracy(self) -> float | None:
        n = self.labelled
        return (self._tp + self._tn) / n if n > 0 else None

    def precision(self) -> float | None:
        d = self._tp + self._fp
        return self._tp / d if d > 0 else None

    def recall(self) -> float | None:
        d = self._tp + self._fn
        return self._tp / d if d > 0 else None

    def f1(self) -> float | None:
        d = 2 * self._tp + self._fp + self._fn
        return 2 * self._tp / d if d > 0 else None

    def brier(self) -> float | None:
        n = self.labelled
        return self._sse / n if n > 0 else None

    def roc_auc(self) -> float | None:
        """ROC-AUC from the per-label histograms; within :meth:`roc_auc_error_bound` of the
        exact value. None without both classes."""
        return _roc_auc(self._pos.astype(np.float64), self._neg.astype(np.float64))

    def roc_auc_error_bound(self) -> float | None:
        """Half the share of positive/negative pairs whose scores share a bin: each such pair
        is credited 1/2 while its truth is 0, 1/2 or 1."""
        n_pos, n_neg = float(self._pos.sum()), float(self._neg.sum())
        if n_pos == 0 or n_neg == 0:
            return None
        pos, neg = self._pos.astype(np.float64), self._neg.astype(np.float64)
        return float(0.5 * (pos @ neg) / (n_pos * n_neg))

    def pr_auc(self) -> float | None:
        """Average precision (sklearn's step definition) with bin edges as thresholds; within
        :meth:`pr_auc_error_bound` of the exact value. None without positives."""
        return _average_precision(self._pos.astype(np.float64), self._neg.astype(np.float64))

    def pr_auc_error_bound(self) -> float | None:
        """Largest change of average precision that orderings (or ties) inside bins can make.

        With ``a`` positives and ``c`` predictions ranked above a bin holding ``k`` positives
        and ``m`` negatives, the bin adds ``k (a+k)/(c+k+m)`` (over all positives); the truth
        lies between ``sum_j (a+j)/(c+m+j)`` (negatives first) and ``k (a+k)/(c+k)`` (all
        positives tied ahead of the negatives). Summing the worse side per bin bounds the error.
        """
        n_pos = float(self._pos.sum())
        if n_pos == 0:
            return None
        pos = self._pos[::-1].astype(np.float64)
        neg = self._neg[::-1].astype(np.float64)
        a = np.cumsum(pos) - pos
        c = a + np.cumsum(neg) - neg
        hit = pos > 0
        a, c, k, m = a[hit], c[hit], pos[hit], neg[hit]
        binned = k * (a + k) / (c + k + m)
        low = _sum_ratio(a, c + m, k)
        high = k * (a + k) / (c + k)
        return float(np.sum(np.maximum(high - binned, binned - low)) / n_pos)

    def calibration_error(self) -> float | None:
        """Expected calibration error over ``CALIBRATION_BINS`` equal-width score bins: the
        count-weighted mean |mean score - positive share| of the labelled predictions."""
        n = self.labelled
        if n == 0:
            return None
        # sum_g n_g/n * |mean score_g - positive share_g|
        return float(np.sum(np.abs(self._dec_score - self._dec_pos)) / n)

    # ----------------------------------------------------------------- serialization

    def to_bytes(self) -> bytes:
        """``struct`` header + int32 histograms and decile counts + float64 sums (~5 KiB)."""
        counts = np.concatenate(
            (self._unlabelled, self._pos, self._neg, self._dec_n, self._dec_pos)
        )
        if counts.size and int(np.abs(counts).max()) > _INT32_MAX:
            raise OverflowError("a bin count exceeds int32")
        header = _HEADER.pack(_MAGIC, _VERSION, self._tp, self._fp, self._tn, self._fn, self._sse)
        sums = np.concatenate((self._score_sum, self._dec_score))
        return header + counts.astype("<i4").tobytes() + sums.astype("<f8").tobytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> PerformanceSummary:
        n, d = cls.BINS, CALIBRATION_BINS
        if len(raw) != _HEADER.size + 4 * (3 * n + 2 * d) + 8 * (n + d):
            raise ValueError("corrupt PerformanceSummary (length)")
        magic, version, tp, fp, tn, fn, sse = _HEADER.unpack_from(raw)
        if magic != _MAGIC or version != _VERSION:
            raise ValueError("not a PerformanceSummary (bad magic or version)")
        counts = np.frombuffer(raw, "<i4", 3 * n + 2 * d, _HEADER.size).astype(np.int64)
        sums = np.frombuffer(raw, "<f8", n + d, _HEADER.size + 4 * (3 * n + 2 * d))
        sums = sums.astype(np.float64)
        out = cls()
        out._unlabelled, out._pos, out._neg = counts[:n], counts[n : 2 * n], counts[2 * n : 3 * n]
        out._dec_n, out._dec_pos = counts[3 * n : 3 * n + d], counts[3 * n + d :]
        out._score_sum, out._dec_score, out._sse = sums[:n], sums[n:], sse
        out._tp, out._fp, out._tn, out._fn = tp, fp, tn, fn
        if (
            min(tp, fp, tn, fn) < 0
            or np.any(out._pos < 0)
            or np.any(out._neg < 0)
            or tp + fn != int(out._pos.sum())
            or fp + tn != int(out._neg.sum())
            or not math.isfinite(sse)
        ):
            raise ValueError("corrupt PerformanceSummary (counts)")
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PerformanceSummary):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"PerformanceSummary(predictions={self.predictions}, labelled={self.labelled}, "
            f"positive_rate={self.positive_rate}, roc_auc={self.roc_auc()})"
        )


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
        header = _MAP_HEADER.pack(_MAP_MAGIC, _VERSION, self.knots.size)
        return header + self.knots.astype("<f8").tobytes() + self.values.astype("<f8").tobytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> CalibrationMap:
        if len(raw) < _MAP_HEADER.size:
            raise ValueError("truncated CalibrationMap")
        magic, version, n = _MAP_HEADER.unpack_from(raw)
        if magic != _MAP_MAGIC or version != _VERSION or len(raw) != _MAP_HEADER.size + 16 * n:
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
    ap = _average_precision(exp_pos, exp_neg)
    auc = _roc_auc(exp_pos, exp_neg)
    if ap is not None:
        out["pr_auc"] = ap
    if auc is not None:
        out["roc_auc"] = auc
    return out


# --------------------------------------------------------------------------- drop tests


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
