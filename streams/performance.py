"""Bounded, mergeable per-window model-performance summaries.

Label-free estimates from them are :mod:`streams.calibration`'s; the tests of a drop between
two of them are :mod:`streams.perf_drop_tests`'s.

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

__all__ = ["PerformanceSummary", "average_precision", "roc_auc"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

THRESHOLD: Final = 0.5
"""Scores >= THRESHOLD are predicted positive."""
CALIBRATION_BINS: Final = 10

_HEADER: Final = struct.Struct("<4sBxxxqqqqd")
_MAGIC: Final = b"DWPS"
_VERSION: Final = 2
_INT32_MAX: Final = 2**31 - 1
_add: Final = np.add.reduce


def check_score(score: float) -> None:
    """Refuse a score that is not a probability (NaN included)."""
    if not 0.0 <= score <= 1.0:  # also rejects NaN
        raise ValueError(f"score must be a probability in [0, 1], got {score!r}")


def _check_scores(scores: FloatArray) -> None:
    if not bool(np.all((scores >= 0.0) & (scores <= 1.0))):
        raise ValueError("scores must be probabilities in [0, 1]")


# --------------------------------------------------------------------------- histogram metrics


def roc_auc(pos: FloatArray, neg: FloatArray) -> float | None:
    """Mann-Whitney AUC of (possibly fractional) per-bin counts, in ascending score order;
    pairs sharing a bin count 1/2."""
    n_pos, n_neg = float(pos.sum()), float(neg.sum())
    if n_pos <= 0.0 or n_neg <= 0.0:
        return None
    neg_below = np.cumsum(neg) - neg
    return float((pos @ neg_below + 0.5 * (pos @ neg)) / (n_pos * n_neg))


def average_precision(pos: FloatArray, neg: FloatArray) -> float | None:
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
    def _blank(cls) -> PerformanceSummary:
        """An instance without its arrays, for a caller that sets every field itself (a
        merge, a decode): ``__init__``'s seven zeroed arrays were most of a merge's cost,
        and the performance monitor merges a baseline's windows at every batch."""
        return cls.__new__(cls)

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
        check_score(score)
        self._unlabelled[self._bin(score)] += 1

    def add_label(self, score: float, label: int) -> None:
        """The label of a prediction with this score arrived."""
        check_score(score)
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
        out = self._blank()
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
        return int(_add(self._unlabelled)) + self.labelled

    @property
    def labelled(self) -> int:
        # Asked at every label (twice): the ufunc, without ``ndarray.sum``'s wrapper.
        return int(_add(self._pos)) + int(_add(self._neg))

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
        return roc_auc(self._pos.astype(np.float64), self._neg.astype(np.float64))

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
        return average_precision(self._pos.astype(np.float64), self._neg.astype(np.float64))

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
        out = cls._blank()
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
