"""How much a drifting feature matters to the model's score, and the order incidents are told in.

Two sources of a feature's *importance* (a number in [0, 1]), in order of preference:

* ``registry``: the importances training recorded for the active model version (permutation
  importance, normalised to sum 1: see :func:`retrain.training.permutation_importances`),
  handed to the engine by an :data:`ImportanceSource`;
* ``association``: for models no retraining ever touched, the share of the score's variance
  that the feature explains in the baseline windows, from a bounded, mergeable
  :data:`Association` kept on every feature-window: the squared Pearson correlation
  ``r**2`` for a numeric feature, the correlation ratio ``eta**2`` (between-category share
  of the score's variance) for a categorical one. Both are "fraction of the score's variance
  accounted for" (for a two-category feature ``eta**2`` is the squared point-biserial ``r``),
  so numeric and categorical features are on one scale.

If neither is known the source is ``unknown`` and the incident has no impact.

:func:`impact` multiplies importance by the incident's effect size; :func:`rank_key` is the
order the API, the alerts and the report list incidents in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = [
    "Association",
    "CategoricalAssociation",
    "ImportanceSource",
    "NumericAssociation",
    "ScoreBatch",
    "association_from_json",
    "choose_importance",
    "impact",
    "merge_associations",
    "new_association",
    "rank_key",
]

ImportanceSource = Callable[[str, str], Mapping[str, float] | None]
"""(tenant, model) -> the registry's feature importances of the active version, or None."""

SOURCES = ("registry", "association", "unknown")
_SEVERITY_RANK = {"LOW": 0, "MEDIUM": 1, "HIGH": 2, "CRITICAL": 3}
MIN_ASSOCIATION_COUNT = 30
"""Pairs needed before an association counts (fewer: the source is ``unknown``)."""


def impact(importance: float | None, effect_size: float | None) -> float | None:
    """``importance * effect_size``: the estimated share of the score that the drift moves.

    Why a product: the importance is the part of the score's behaviour that runs through the
    feature (a share in [0, 1]), the effect size how far the feature's distribution moved
    (total variation distance, KS distance or absolute change of the missing rate: in [0, 1]
    for every test). A large shift of a feature the model ignores changes nothing; a small
    shift of the feature the score hangs on can change a lot; either factor at 0 means no
    impact, and equal effects rank by importance, equal importances by effect. Not a
    prediction of the score's change in score units: a ranking figure.

    >>> impact(0.5, 0.2)
    0.1
    >>> impact(None, 0.2) is None, impact(0.5, None) is None
    (True, True)
    """
    if importance is None or effect_size is None:
        return None
    if not (math.isfinite(importance) and math.isfinite(effect_size)):
        return None
    return max(0.0, importance) * max(0.0, effect_size)


def rank_key(
    impact_value: float | None, severity: str, name: str | None
) -> tuple[int, float, int, str]:
    """Sort key of an incident: highest impact first; ties by severity (highest first), then
    by feature name. Incidents without an impact (performance and objective incidents, whose
    harm is measured on their own endpoint, and features of unknown importance) come after
    every incident with one, by severity then name: an estimate on the score's scale and a
    severity are not comparable, and a ranking must not pretend they are.

    >>> rows = [(None, "CRITICAL", None), (0.1, "LOW", "b"), (0.1, "HIGH", "c"), (0.3, "LOW", "a")]
    >>> [r[2] for r in sorted(rows, key=lambda r: rank_key(*r))]
    ['a', 'c', 'b', None]
    """
    known = impact_value is not None and math.isfinite(impact_value)
    return (
        0 if known else 1,
        -(impact_value if known and impact_value is not None else 0.0),
        -_SEVERITY_RANK.get(severity, -1),
        name or "",
    )


def choose_importance(
    feature: str, registry: Mapping[str, float] | None, association: Association | None
) -> tuple[float | None, str]:
    """(importance, source) of ``feature``: the registry's if it names the feature, else the
    association's if it has enough pairs, else (None, ``unknown``).

    >>> choose_importance("x", {"x": 0.7}, None)
    (0.7, 'registry')
    >>> choose_importance("x", {"y": 0.7}, None)
    (None, 'unknown')
    """
    if registry:
        value = registry.get(feature)
        if value is not None and math.isfinite(float(value)):
            return min(1.0, max(0.0, float(value))), "registry"
    if association is not None:
        share = association.importance()
        if share is not None:
            # Rounded: an association is a merge of per-batch moments whose last bits depend
            # on how its events were batched (a live worker and a backtest batch differently,
            # and so do two runs of a worker); a ranking needs no more digits than this, and
            # the DriftEvents of the two then agree.
            return round(share, ASSOCIATION_DIGITS), "association"
    return None, "unknown"


ASSOCIATION_DIGITS = 6


def _comoments(x: np.ndarray, y: np.ndarray) -> tuple[int, float, float, float, float, float]:
    n = int(x.size)
    if n == 0:
        return 0, 0.0, 0.0, 0.0, 0.0, 0.0
    mx, my = float(np.add.reduce(x)) / n, float(np.add.reduce(y)) / n  # == .mean(), cheaper
    dx, dy = x - mx, y - my
    return n, mx, my, float(dx @ dx), float(dy @ dy), float(dx @ dy)


@dataclass
class NumericAssociation:
    """Co-moments of (feature value, score) pairs: count, means, and the centred sums
    ``Cxx = sum (x - mx)**2``, ``Cyy``, ``Cxy``. Merged with Chan's pairwise rule, which is
    the addition of the raw sums (n, sum x, sum y, sum xy, sum x**2, sum y**2) written so
    it does not cancel catastrophically for large x: associative and commutative up to
    rounding, bounded (six numbers), whatever the traffic.

    >>> a = NumericAssociation()
    >>> a.add([1.0, 2.0, 3.0] * 10, [0.1, 0.2, 0.3] * 10)
    >>> round(a.r2() or 0, 6)
    1.0
    """

    n: int = 0
    mx: float = 0.0
    my: float = 0.0
    cxx: float = 0.0
    cyy: float = 0.0
    cxy: float = 0.0

    def add(self, xs: Iterable[float], ys: Iterable[float]) -> None:
        x = np.asarray(list(xs) if not isinstance(xs, np.ndarray) else xs, dtype=np.float64)
        y = np.asarray(list(ys) if not isinstance(ys, np.ndarray) else ys, dtype=np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        if not ok.all():
            x, y = x[ok], y[ok]
        self._merge_in(*_comoments(x, y))

    def _merge_in(self, n: int, mx: float, my: float, cxx: float, cyy: float, cxy: float) -> None:
        if n == 0:
            return
        if self.n == 0:
            self.n, self.mx, self.my, self.cxx, self.cyy, self.cxy = n, mx, my, cxx, cyy, cxy
            return
        total = self.n + n
        dx, dy = mx - self.mx, my - self.my
        w = self.n * n / total
        self.cxx += cxx + dx * dx * w
        self.cyy += cyy + dy * dy * w
        self.cxy += cxy + dx * dy * w
        self.mx += dx * n / total
        self.my += dy * n / total
        self.n = total

    def merge(self, other: NumericAssociation) -> NumericAssociation:
        out = NumericAssociation(self.n, self.mx, self.my, self.cxx, self.cyy, self.cxy)
        out._merge_in(other.n, other.mx, other.my, other.cxx, other.cyy, other.cxy)
        return out

    def importance(self) -> float | None:
        return self.r2()

    def r2(self) -> float | None:
        """Squared Pearson correlation; None below ``MIN_ASSOCIATION_COUNT`` pairs; 0 when
        the feature or the score is constant (nothing to explain, or nothing explains it)."""
        if self.n < MIN_ASSOCIATION_COUNT:
            return None
        if self.cxx <= 0 or self.cyy <= 0:
            return 0.0
        return float(min(1.0, self.cxy * self.cxy / (self.cxx * self.cyy)))

    def to_json(self) -> list[Any]:
        return ["n", self.n, self.mx, self.my, self.cxx, self.cyy, self.cxy]

    @classmethod
    def from_json(cls, d: list[Any]) -> NumericAssociation:
        return cls(int(d[1]), float(d[2]), float(d[3]), float(d[4]), float(d[5]), float(d[6]))


@dataclass
class CategoricalAssociation:
    """Per category the count and the score sum, and over all pairs the count, mean and
    centred sum of squares of the score: enough for ``eta**2 = SS_between / SS_total``. All
    of it merges by addition (the score's moments by Chan's rule). Bounded like the
    categorical summary: past ``2 * max_categories`` categories the smallest are folded into
    ``OTHER``. Folding joins groups, which can only lower ``SS_between``: ``eta**2`` from a
    folded association is a lower bound of the exact one.

    >>> a = CategoricalAssociation()
    >>> a.add(["a", "b"] * 20, [0.9, 0.1] * 20)
    >>> round(a.eta2() or 0, 6)
    1.0
    """

    groups: dict[str, list[float]] = field(default_factory=dict)
    """category -> [count, sum of scores]"""
    n: int = 0
    my: float = 0.0
    cyy: float = 0.0
    max_categories: int = 64
    OTHER = "__other__"

    def add(self, categories: Iterable[str], ys: Iterable[float]) -> None:
        cats = list(categories)
        y = np.asarray(list(ys), dtype=np.float64)
        if not cats:
            return
        n, _, my, _, cyy, _ = _comoments(y, y)
        self._add_pairs(cats, y.tolist(), n, my, cyy)

    def _add_pairs(self, cats: list[str], ys: list[float], n: int, my: float, cyy: float) -> None:
        """:meth:`add` with the scores' moments (``_comoments``) already computed."""
        groups = self.groups
        for c, v in zip(cats, ys, strict=True):
            g = groups.get(c)
            if g is None:
                g = groups[c] = [0.0, 0.0]
            g[0] += 1
            g[1] += v
        self._merge_moments(n, my, cyy)
        self._fold()

    def _merge_moments(self, n: int, my: float, cyy: float) -> None:
        if n == 0:
            return
        if self.n == 0:
            self.n, self.my, self.cyy = n, my, cyy
            return
        total = self.n + n
        d = my - self.my
        self.cyy += cyy + d * d * self.n * n / total
        self.my += d * n / total
        self.n = total

    def _fold(self) -> None:
        if len(self.groups) <= 2 * self.max_categories:
            return
        ranked = sorted(
            ((k, g) for k, g in self.groups.items() if k != self.OTHER),
            key=lambda kg: (-kg[1][0], kg[0]),
        )
        keep = dict(ranked[: self.max_categories - 1])
        other = list(self.groups.get(self.OTHER, [0.0, 0.0]))
        for _, g in ranked[self.max_categories - 1 :]:
            other[0] += g[0]
            other[1] += g[1]
        keep[self.OTHER] = other
        self.groups = keep

    def merge(self, other: CategoricalAssociation) -> CategoricalAssociation:
        out = CategoricalAssociation(
            {k: list(g) for k, g in self.groups.items()}, self.n, self.my, self.cyy,
            self.max_categories,
        )  # fmt: skip
        for k, g in other.groups.items():
            mine = out.groups.setdefault(k, [0.0, 0.0])
            mine[0] += g[0]
            mine[1] += g[1]
        out._merge_moments(other.n, other.my, other.cyy)
        out._fold()
        return out

    def importance(self) -> float | None:
        return self.eta2()

    def eta2(self) -> float | None:
        """Between-category share of the score's variance; None below
        ``MIN_ASSOCIATION_COUNT`` pairs, 0 for a constant score."""
        if self.n < MIN_ASSOCIATION_COUNT:
            return None
        if self.cyy <= 0:
            return 0.0
        between = sum(g[1] * g[1] / g[0] for g in self.groups.values() if g[0] > 0)
        between -= self.n * self.my * self.my
        return float(min(1.0, max(0.0, between / self.cyy)))

    def to_json(self) -> list[Any]:
        return [
            "c",
            self.n,
            self.my,
            self.cyy,
            {k: [int(g[0]), g[1]] for k, g in self.groups.items()},
        ]

    @classmethod
    def from_json(cls, d: list[Any]) -> CategoricalAssociation:
        groups = {str(k): [float(g[0]), float(g[1])] for k, g in d[4].items()}
        return cls(groups, int(d[1]), float(d[2]), float(d[3]))


Association = NumericAssociation | CategoricalAssociation


class ScoreBatch:
    """The scores of one batch of events (one stream and window), for the associations of
    all their features at once: the scores' moments are computed once, not per feature, and
    the co-moments of the numeric features present in every event with a few numpy calls over
    their stacked columns (:meth:`finish`) rather than a few per feature. (A feature missing
    from some events pairs with a subset of the scores: its moments are its own.) The result
    is the same, bit for bit, as :meth:`NumericAssociation.add` and
    :meth:`CategoricalAssociation.add` of each feature's present pairs: the same means
    (numpy's pairwise sum, per row of a C-contiguous array as of a vector) and dot products
    (a stacked ``matmul`` of vectors is BLAS's ``ddot`` per row, like ``dx @ dy``).

    >>> a, b, c = NumericAssociation(), NumericAssociation(), CategoricalAssociation()
    >>> batch = ScoreBatch([0.1, 0.2, 0.3] * 20)
    >>> batch.add(a, [1.0, 2.0, 3.0] * 20); batch.add(b, [3.0, None, 1.0] * 20)
    >>> batch.add(c, ["x", "y", "z"] * 20)
    >>> batch.finish()
    >>> round(a.r2() or 0, 6), round(b.r2() or 0, 6), b.n, round(c.eta2() or 0, 6)
    (1.0, 1.0, 40, 1.0)
    """

    __slots__ = ("_cyy", "_dy", "_finished", "_matrix", "_my", "_numeric", "_y", "_ys", "scores")

    def __init__(self, scores: list[float]) -> None:
        self.scores = scores
        self._y: np.ndarray | None = None
        self._ys: list[float] = []
        self._my = self._cyy = math.nan
        self._dy: np.ndarray | None = None
        self._numeric: list[_Held] = []
        """The numeric features' values, held back for :meth:`finish`."""
        self._matrix: np.ndarray | None = None
        self._finished: list[_Held] = []
        """After :meth:`finish`, the rows of ``_matrix`` as they were added (their lists
        kept alive with it, so no other list can have one's ``id``)."""

    def __len__(self) -> int:
        return len(self.scores)

    def _moments(self) -> np.ndarray:
        y = self._y = np.asarray(self.scores, dtype=np.float64)
        self._ys = y.tolist()
        if y.size:
            self._my = float(np.add.reduce(y)) / y.size  # == float(y.mean()), cheaper
            self._dy = y - self._my
            self._cyy = float(self._dy @ self._dy)
        return y

    def add(
        self,
        assoc: Association,
        values: list[Any],
        summary: ValueSink | None = None,
    ) -> None:
        """Pairs ``values`` (one per score; None for a missing value, left out) with the
        scores into ``assoc``: a categorical association at once, a numeric one at
        :meth:`finish`, which also hands ``summary`` (a numeric summary) the present values
        as a float array, from the array it builds anyway, and the number of missing ones
        (:func:`_nones`)."""
        if not values:
            return
        if not isinstance(assoc, CategoricalAssociation):
            self._numeric.append((assoc, values, summary))
            return
        y = self._y if self._y is not None else self._moments()
        if None not in values:
            assoc._add_pairs(values, self._ys, len(values), self._my, self._cyy)
            return
        subset = [k for k, v in enumerate(values) if v is not None]
        if subset:
            ys = y.take(subset)
            n = len(subset)
            my = float(np.add.reduce(ys)) / n
            dy = ys - my
            assoc._add_pairs([values[k] for k in subset], ys.tolist(), n, my, float(dy @ dy))

    def finish(self) -> None:
        """Adds the numeric pairs :meth:`add` held back, with a few numpy calls for all the
        features present in every event (their scores' moments shared) and a few per number
        of present values for the others (each with its own scores' moments)."""
        rows = self._numeric
        if not rows:
            return
        self._numeric = []
        y = self._y if self._y is not None else self._moments()
        flat: list[Any] = []
        for _, values, _ in rows:
            flat += values  # one flat list: a sixth cheaper to convert than a nested one
        x = np.array(flat, dtype=np.float64).reshape(len(rows), len(self.scores))  # None: NaN
        self._matrix, self._finished = x, rows
        n = x.shape[1]
        ok = np.isfinite(x)
        if ok.all() and math.isfinite(self._my):
            for i, (_, _, summary) in enumerate(rows):
                if summary is not None:
                    summary.extend(x[i])
            self._finish_full(rows, x)
            return
        counts: list[int] = np.add.reduce(ok, axis=1).tolist()
        for i, (_, values, summary) in enumerate(rows):
            if summary is None:
                continue
            if counts[i] == n:  # a None is a NaN in ``x``: none here
                summary.extend(x[i])
                continue
            nones = _nones(values, ok[i], n - counts[i])
            if counts[i] + nones == n:
                summary.extend(x[i][ok[i]])
            else:  # non-finite values: the summary is handed them as they were
                summary.extend(np.array([v for v in values if v is not None], dtype=np.float64))
            if nones:
                summary.add_missing(nones)
        if not math.isfinite(self._my):
            ok &= np.isfinite(y)
            counts = np.add.reduce(ok, axis=1).tolist()
        full: list[int] = []
        partial: dict[int, list[int]] = {}
        for i, c in enumerate(counts):
            if c == n:
                full.append(i)
            elif c:
                partial.setdefault(c, []).append(i)
        if full:
            self._finish_full([rows[i] for i in full], x[full])
        every = np.broadcast_to(y, x.shape) if partial else y  # each row's scores (a view)
        for m, some in partial.items():
            # Rows with m pairs each: their present values and scores, compacted in order.
            sel = ok[some]
            xs = x[some][sel].reshape(len(some), m)
            ys = every[: len(some)][sel].reshape(len(some), m)
            mx = np.add.reduce(xs, axis=1) / m  # == xs.mean(axis=1): a pairwise sum per row
            my = np.add.reduce(ys, axis=1) / m
            dx = xs - mx[:, None]
            dy = ys - my[:, None]
            cxx = np.matmul(dx[:, None, :], dx[:, :, None]).ravel().tolist()
            cyy = np.matmul(dy[:, None, :], dy[:, :, None]).ravel().tolist()
            cxy = np.matmul(dx[:, None, :], dy[:, :, None]).ravel().tolist()
            for i, a, b, sxx, syy, sxy in zip(
                some, mx.tolist(), my.tolist(), cxx, cyy, cxy, strict=True
            ):
                rows[i][0]._merge_in(m, a, b, sxx, syy, sxy)

    def rows_of(self, columns: Sequence[list[Any]]) -> np.ndarray | None:
        """After :meth:`finish`, the float rows it made of these value lists (the same list
        objects :meth:`add` was handed), as one array; None if one was not handed to it:
        the multivariate moments read the same columns, and converting them again was a
        tenth of applying a batch."""
        if self._matrix is None:
            return None
        row = {id(values): i for i, (_, values, _) in enumerate(self._finished)}
        index = [row.get(id(column), -1) for column in columns]
        if -1 in index:
            return None
        return self._matrix[index]

    def _finish_full(self, rows: list[_Held], x: np.ndarray) -> None:
        """The co-moments of features present, with finite values and scores, in every event."""
        n = x.shape[1]
        mx = np.add.reduce(x, axis=1) / n  # == x.mean(axis=1): a pairwise sum per row
        dx = x - mx[:, None]
        cxx = np.matmul(dx[:, None, :], dx[:, :, None]).ravel().tolist()
        cxy = np.matmul(dx[:, None, :], self._dy[:, None]).ravel().tolist()  # type: ignore[index]
        my, cyy = self._my, self._cyy
        for (assoc, _, _), m, sxx, sxy in zip(rows, mx.tolist(), cxx, cxy, strict=True):
            assoc._merge_in(n, m, my, sxx, cyy, sxy)


def _nones(values: list[Any], finite: np.ndarray, bad: int) -> int:
    """How many of ``values`` are None, given the row's ``finite`` mask and its ``bad``
    (non-finite) count: a None is a NaN in the float row, and so is a non-finite value (only
    unvalidated input has one). Mostly missing, ``list.count(None)`` (an identity check per
    None); else only the non-finite cells are looked at, in C, as ``list.count(None)`` makes
    a rich comparison of every float."""
    if 2 * bad > len(values):
        return values.count(None)
    return list(map(values.__getitem__, np.flatnonzero(~finite).tolist())).count(None)


class ValueSink(Protocol):
    """What :meth:`ScoreBatch.finish` hands a numeric feature's values to (its summary)."""

    def extend(self, values: np.ndarray) -> None: ...

    def add_missing(self, n: int = 1) -> None: ...


_Held = tuple[NumericAssociation, list[Any], ValueSink | None]
"""A numeric feature's association, values and summary, held for ``finish``."""


def new_association(kind: str) -> Association:
    return NumericAssociation() if kind == "numeric" else CategoricalAssociation()


def association_from_json(d: list[Any]) -> Association:
    if d and d[0] == "n":
        return NumericAssociation.from_json(d)
    if d and d[0] == "c":
        return CategoricalAssociation.from_json(d)
    raise ValueError("corrupt score association")


def merge_associations(parts: Iterable[Association | None]) -> Association | None:
    """All of ``parts`` merged (None ones skipped; a kind that differs from the first is
    skipped too: a feature never changes kind within a stream)."""
    out: Association | None = None
    for p in parts:
        if p is None:
            continue
        if out is None:
            out = p.merge(p.__class__())  # type: ignore[arg-type]  # a copy
        elif type(out) is type(p):
            out = out.merge(p)  # type: ignore[arg-type]  # the same kind
    return out
