"""``MomentSummary``: the first and second moments of a stream's numeric features together, per
window: what the multivariate drift test (:mod:`streams.drift_tests.multivariate`) reads.

Per-feature summaries cannot see a change in how features move together (two features whose
correlation flips from +0.8 to -0.8 keep their marginals). The count, mean vector and
co-moment matrix of the tracked features are enough for a covariance test and for NannyML's
PCA reconstruction error, bounded (``k`` features: ``k (k + 3) / 2`` floats plus an unfolded
tail of fewer than ``MOMENT_CHUNK`` rows) and mergeable exactly (Chan et al.'s parallel
formula).

Missing values: a row counts only when every tracked feature is present and finite
(complete-case); the others are counted in ``missing``. Complete-case keeps one count for the
whole matrix, so merges are exact and the matrix is always positive semi-definite, which the
test's determinants need (pairwise deletion gives neither).

Folding is batching-independent: rows are buffered and folded ``MOMENT_CHUNK`` at a time at
fixed points of the row sequence, so a live worker and a backtest, which batch the same
events differently, keep the same bits (as :class:`~streams.numeric_summary.NumericSummary`).
"""

from __future__ import annotations

import functools
import json
import struct
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from streams.buckets import FloatArray
from streams.keyed_state import offsets_from_json, offsets_to_json

__all__ = ["MOMENT_CHUNK", "MomentSummary", "MomentWindow", "moment_key"]

MOMENT_CHUNK: Final = 64
"""Rows buffered before they are folded into the moments (at fixed points of the sequence)."""

_HEAD = struct.Struct("<HqqHI")  # features, folded count, missing, tail rows, names' bytes


@dataclass
class MomentSummary:
    """Count, mean vector and co-moment matrix of ``features`` over the complete rows.

    >>> rng = np.random.default_rng(1)
    >>> x = rng.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], 5_000)
    >>> a, b = MomentSummary(("u", "v")), MomentSummary(("u", "v"))
    >>> a.add_rows(x[:3_000]); b.add_rows(x[3_000:])
    >>> round(float(a.merge(b).covariance()[0, 1]), 2), a.merge(b).count
    (0.8, 5000)
    """

    features: tuple[str, ...]
    n: int = 0
    """Rows folded into ``mean`` and ``comoment`` (the tail's are not)."""
    missing: int = 0
    """Rows left out: some tracked feature missing or not finite."""
    mean: FloatArray = field(default_factory=lambda: np.zeros(0))
    comoment: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    m34: FloatArray = field(default_factory=lambda: np.zeros((2, 0)))
    """Per feature, the sums of cubed and fourth-power deviations from the mean (rows 0, 1):
    the marginal kurtosis, which the test's p-value corrects for (heavy tails)."""
    tail: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    """Complete rows not folded yet (fewer than ``MOMENT_CHUNK``)."""
    _memo: _Moments | None = field(default=None, repr=False, compare=False)
    _bytes: bytes | None = field(default=None, repr=False, compare=False)
    """(:meth:`moments`, :meth:`to_bytes`) until rows are added: a closed window's block is
    read by every look of the windows it is a baseline of, and encoded at every flush."""
    version: int = field(default=0, repr=False, compare=False)
    """Counts the calls of :meth:`add_rows` (in memory only): what a merge of it depends on."""

    def __post_init__(self) -> None:
        k = len(self.features)
        if self.mean.shape != (k,):
            self.mean = np.zeros(k)
        if self.comoment.shape != (k, k):
            self.comoment = np.zeros((k, k))
        if self.m34.shape != (2, k):
            self.m34 = np.zeros((2, k))
        if self.tail.ndim != 2 or self.tail.shape[1] != k:
            self.tail = np.zeros((0, k))

    @property
    def count(self) -> int:
        """Complete rows: the test's sample size."""
        return self.n + int(self.tail.shape[0])

    def add_rows(self, rows: FloatArray) -> None:
        """Add rows (one column per tracked feature, NaN where missing), in order."""
        # C order whatever the caller's: a fold's sums run in memory order, and the same
        # rows must give the same bits however they were batched or laid out.
        rows = np.ascontiguousarray(rows, dtype=np.float64).reshape(-1, len(self.features))
        self._memo = self._bytes = None
        self.version += 1
        complete = np.isfinite(rows).all(axis=1)
        kept = int(complete.sum())
        self.missing += rows.shape[0] - kept
        if not kept:
            return
        tail = np.concatenate((self.tail, rows[complete] if kept < rows.shape[0] else rows))
        full = tail.shape[0] - tail.shape[0] % MOMENT_CHUNK
        for start in range(0, full, MOMENT_CHUNK):
            self._fold(tail[start : start + MOMENT_CHUNK])
        self.tail = np.ascontiguousarray(tail[full:])

    def fold_tail(self) -> bool:
        """Fold the buffered rows now (a window's close: a fixed point of its row sequence,
        so live and backtest fold the same rows); returns whether anything changed."""
        if not self.tail.shape[0]:
            return False
        self._memo = self._bytes = None
        self.version += 1
        self._fold(self.tail)
        self.tail = np.zeros((0, len(self.features)))
        return True

    def _fold(self, block: FloatArray) -> None:
        own = (self.n, self.mean, self.comoment, self.m34)
        self.n, self.mean, self.comoment, self.m34 = _combine([own, _block_moments(block)])

    def moments(self) -> tuple[int, FloatArray, FloatArray]:
        """(count, mean, co-moment) of every complete row, the tail included."""
        return self._memoised()[:3]

    def excess_kurtosis(self) -> FloatArray:
        """Per feature, the sample excess kurtosis of the complete rows (0 for a normal)."""
        n, _, comoment, m34 = self._memoised()
        m2 = np.diag(comoment)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = n * m34[1] / (m2 * m2) - 3.0
        return np.where(np.isfinite(out), out, 0.0)

    def _memoised(self) -> _Moments:
        if self._memo is None:
            whole: _Moments = (self.n, self.mean, self.comoment, self.m34)
            if self.tail.shape[0]:
                whole = _combine([whole, _block_moments(self.tail)])
            self._memo = whole
        return self._memo

    def covariance(self) -> FloatArray:
        """The sample covariance matrix (``n - 1`` in the denominator)."""
        n, _, comoment = self.moments()
        return comoment / max(n - 1, 1)

    def merge(self, other: MomentSummary) -> MomentSummary:
        """Both summaries' rows as one (Chan's formula: exact up to float rounding)."""
        if other.features != self.features:
            raise ValueError("cannot merge moments of different features")
        n, mean, comoment, m34 = _combine([self._memoised(), other._memoised()])
        return MomentSummary(self.features, n, self.missing + other.missing, mean, comoment, m34)

    @classmethod
    def merge_all(cls, parts: list[MomentSummary]) -> MomentSummary:
        """All parts' rows as one, in one pass: ``N = sum n_i``, ``mean = sum n_i mean_i / N``,
        ``C = sum C_i + sum n_i (mean_i - mean)(mean_i - mean)^T`` (what pairwise merges give,
        to float rounding, without their per-merge overhead)."""
        features = parts[0].features
        if any(p.features != features for p in parts):
            raise ValueError("cannot merge moments of different features")
        n, mean, comoment, m34 = _combine([p._memoised() for p in parts])
        missing = sum(p.missing for p in parts)
        return MomentSummary(features, n, missing, mean, comoment, m34)

    def to_bytes(self) -> bytes:
        """Header, names (JSON), mean, the co-moment's upper triangle, the tail (all f64)."""
        if self._bytes is None:
            self._bytes = self._encode()
        return self._bytes

    def _encode(self) -> bytes:
        k = len(self.features)
        names = _names_json(self.features)
        rows = int(self.tail.shape[0])
        upper: FloatArray = self.comoment[_upper(k)]
        return (
            _HEAD.pack(k, self.n, self.missing, rows, len(names))
            + names
            + self.mean.astype("<f8").tobytes()
            + self.m34.astype("<f8").tobytes()
            + upper.astype("<f8").tobytes()
            + self.tail.astype("<f8").tobytes()
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> MomentSummary:
        k, n, missing, rows, names_len = _HEAD.unpack_from(raw)
        pos = _HEAD.size
        features = tuple(json.loads(raw[pos : pos + names_len]))
        pos += names_len
        mean = np.frombuffer(raw, "<f8", k, pos).astype(np.float64)
        pos += 8 * k
        m34 = np.frombuffer(raw, "<f8", 2 * k, pos).astype(np.float64).reshape(2, k)
        pos += 16 * k
        tri = k * (k + 1) // 2
        upper = np.frombuffer(raw, "<f8", tri, pos)
        pos += 8 * tri
        comoment = np.zeros((k, k))
        comoment[_upper(k)] = upper
        comoment = comoment + np.triu(comoment, 1).T
        tail = np.frombuffer(raw, "<f8", rows * k, pos).astype(np.float64).reshape(rows, k)
        return cls(features, n, missing, mean, comoment, m34, tail)


@functools.lru_cache(maxsize=64)
def _upper(k: int) -> tuple[np.ndarray, np.ndarray]:
    """The upper triangle's indices of a k x k matrix (diagonal included), made once."""
    rows, cols = np.triu_indices(k)
    return rows, cols


@functools.lru_cache(maxsize=1024)
def _names_json(features: tuple[str, ...]) -> bytes:
    return json.dumps(features, separators=(",", ":")).encode()


_Moments = tuple[int, FloatArray, FloatArray, FloatArray]
"""(count, mean, co-moment, per-feature third and fourth central sums)."""


def _block_moments(block: FloatArray) -> _Moments:
    mean = block.mean(axis=0)
    centred = block - mean
    squared = centred * centred
    m34 = np.stack(((squared * centred).sum(axis=0), (squared * squared).sum(axis=0)))
    return block.shape[0], mean, centred.T @ centred, m34


def _combine(parts: list[_Moments]) -> _Moments:
    """Several parts' moments as one, exactly (to float rounding): every part's central sums
    moved to the pooled mean (``d = mean_i - mean``): ``C = sum C_i + n_i d d^T``,
    ``M3 = sum M3_i + 3 d M2_i + n_i d^3``, ``M4 = sum M4_i + 4 d M3_i + 6 d^2 M2_i +
    n_i d^4`` (Chan et al.'s and Pebay's parallel formulas, in one pass)."""
    parts = [p for p in parts if p[0] > 0]
    if not parts:
        k = 0
        return 0, np.zeros(k), np.zeros((k, k)), np.zeros((2, k))
    if len(parts) == 1:
        n, mean, comoment, m34 = parts[0]
        return n, mean.copy(), comoment.copy(), m34.copy()
    if len(parts) == 2:
        return _combine_two(parts[0], parts[1])
    counts = np.array([p[0] for p in parts], dtype=np.float64)
    total = int(counts.sum())
    means = np.array([p[1] for p in parts])
    mean = counts @ means / total
    d = means - mean
    dev = d * np.sqrt(counts)[:, None]
    comoment = np.sum([p[2] for p in parts], axis=0) + dev.T @ dev
    m2 = np.array([np.diag(p[2]) for p in parts])
    m3 = np.array([p[3][0] for p in parts])
    m4 = np.array([p[3][1] for p in parts])
    c = counts[:, None]
    new3 = (m3 + 3 * d * m2 + c * d**3).sum(axis=0)
    new4 = (m4 + 4 * d * m3 + 6 * d * d * m2 + c * d**4).sum(axis=0)
    return total, mean, (comoment + comoment.T) / 2, np.stack((new3, new4))


def _combine_two(a: _Moments, b: _Moments) -> _Moments:
    """:func:`_combine` of two parts (a fold, a merge), without stacking them."""
    n_a, mean_a, c_a, m34_a = a
    n_b, mean_b, c_b, m34_b = b
    n = n_a + n_b
    mean = (n_a * mean_a + n_b * mean_b) / n
    d_a, d_b = mean_a - mean, mean_b - mean
    comoment = c_a + c_b + n_a * np.outer(d_a, d_a) + n_b * np.outer(d_b, d_b)
    m2_a, m2_b = np.diagonal(c_a), np.diagonal(c_b)
    da2, db2 = d_a * d_a, d_b * d_b
    m3 = m34_a[0] + m34_b[0] + 3 * (d_a * m2_a + d_b * m2_b) + n_a * da2 * d_a + n_b * db2 * d_b
    m4 = (
        m34_a[1] + m34_b[1] + 4 * (d_a * m34_a[0] + d_b * m34_b[0])
        + 6 * (da2 * m2_a + db2 * m2_b) + n_a * da2 * da2 + n_b * db2 * db2
    )  # fmt: skip
    return n, mean, (comoment + comoment.T) / 2, np.stack((m3, m4))


@dataclass
class MomentWindow:
    """A stream's moments of one window, by block of ``EngineConfig.moment_block_seconds``
    (8 h by default; one block when there are no interim looks), plus the offset guard
    (replays after a crash are no-ops, as for a feature window).

    Why blocks: an interim look tests the window so far, a part of the day. Under a daily
    cycle its covariance differs from a whole day's although nothing drifted; with blocks the
    look compares the same hours of the baseline windows (blocks ``0 .. j - 1`` on both
    sides), and the close compares whole days. State: one summary per block.
    """

    blocks: list[MomentSummary]
    offsets: dict[int, int] = field(default_factory=dict)
    _merged: dict[int | None, tuple[tuple[int, ...], MomentSummary]] = field(
        default_factory=dict, repr=False, compare=False
    )
    """:meth:`upto`'s results with the blocks' versions they merged (a window serves as the
    baseline of several later ones, at each of their looks)."""

    @classmethod
    def new(cls, features: tuple[str, ...], blocks: int) -> MomentWindow:
        return cls([MomentSummary(features) for _ in range(blocks)])

    @property
    def features(self) -> tuple[str, ...]:
        return self.blocks[0].features

    def close(self) -> bool:
        """The window closed: its blocks' tails are folded (a closed window keeps
        ``k (k + 3) / 2`` floats a block); returns whether that changed it."""
        return any([b.fold_tail() for b in self.blocks])

    def upto(self, blocks: int | None = None) -> MomentSummary:
        """The first ``blocks`` blocks merged (all of them: None)."""
        parts = self.blocks if blocks is None else self.blocks[: max(blocks, 1)]
        if len(parts) == 1:
            return parts[0]
        versions = tuple(p.version for p in parts)
        hit = self._merged.get(blocks)
        if hit is None or hit[0] != versions:
            hit = self._merged[blocks] = (versions, MomentSummary.merge_all(parts))
        return hit[1]

    def to_bytes(self) -> bytes:
        head = json.dumps({"o": offsets_to_json(self.offsets)}, separators=(",", ":")).encode()
        parts = [b.to_bytes() for b in self.blocks]
        lengths = struct.pack(f"<{len(parts)}I", *map(len, parts))
        return struct.pack("<II", len(head), len(parts)) + head + lengths + b"".join(parts)

    @classmethod
    def from_bytes(cls, raw: bytes) -> MomentWindow:
        hlen, count = struct.unpack_from("<II", raw)
        head = json.loads(raw[8 : 8 + hlen])
        pos = 8 + hlen
        lengths = struct.unpack_from(f"<{count}I", raw, pos)
        pos += 4 * count
        blocks = []
        for n in lengths:
            blocks.append(MomentSummary.from_bytes(raw[pos : pos + n]))
            pos += n
        return cls(blocks, offsets_from_json(head["o"]))


def moment_key(tenant: str, model: str, window_start: float) -> str:
    """The store key of a stream's moments in one window (not a feature window's ``"w"``)."""
    return json.dumps(["v", tenant, model, int(window_start)])
