"""Anytime-valid sequential tests: a false-alarm rate that holds however often one looks.

A window's labels arrive one by one over days. Testing after every label with a fixed-sample
test, or letting a change detector pick the cut that looks worst and then testing that cut,
spends the false-alarm budget many times over. A test martingale does not: under the null,
a likelihood ratio against any alternative is a non-negative supermartingale, so by Ville's
inequality the chance that it *ever* reaches ``1/alpha`` is at most ``alpha``, whatever the
number of looks and whenever one stops.

:class:`RateRiseTest` is that test for a rate (an error rate) rising above a baseline. The
alternative is not one value but a mixture over a grid of rises from ``min_rise`` upwards
(a mixture of test martingales is one), so it is quick for large rises and still valid for
small ones. The price of validity is delay: about ``log(grid / alpha)`` nats of evidence,
at the Kullback-Leibler divergence per observation between the new rate and the baseline
(at a rise from 0.06 to 0.5, about 0.7 nats a label: some 15 labels; a fixed-sample test at
alpha would need a few less, but only once).

The baseline rate is estimated, so the null is tested against its one-sided upper confidence
bound (:func:`rate_upper_bound`, Clopper-Pearson); the two errors add: a false alarm needs
either the bound to fail (probability ``baseline_alpha``) or the martingale to cross.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats

GRID_RATIO = math.sqrt(2.0)
"""Alternatives at baseline + ``min_rise`` * GRID_RATIO**j, up to a rate of 1."""
_DECIDED = 1e-9
"""How far the bounds of :meth:`RateRiseTest.rejects_one` must clear the threshold to decide
without the exact log-sum-exp (rounding in it is ~1e-15)."""


def rate_upper_bound(events: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound of a binomial rate.

    >>> round(rate_upper_bound(60, 1000, 0.001), 4)
    0.0868
    >>> rate_upper_bound(0, 0, 0.01)
    1.0
    """
    if n <= 0 or events >= n:
        return 1.0
    return float(stats.beta.ppf(1.0 - alpha, events + 1, n - events))


@dataclass(frozen=True)
class RateRiseTest:
    """H0: a Bernoulli rate is at most ``p0``; evidence for a rate of ``p0 + min_rise`` or more.

    ``rejects(n, k)`` after each observation (n observed, k events) keeps the chance of ever
    rejecting a rate <= ``p0`` at most ``alpha`` (Ville's inequality). It also asks that the
    observed rate be ``min_rise`` above ``p0``, as the fixed-sample tests do.

    >>> import numpy as np
    >>> t = RateRiseTest(p0=0.06, min_rise=0.05, alpha=0.001)
    >>> rng = np.random.default_rng(7)
    >>> n = np.arange(1, 401)
    >>> after = np.cumsum(rng.random(400) < 0.5)  # a window after the error rate rose to 0.5
    >>> int(np.argmax(t.rejects(n, after))) + 1  # labels until the first look that rejects
    12
    >>> before = np.cumsum(rng.random(400) < 0.06)  # nothing changed: never, at any look
    >>> bool(t.rejects(n, before).any())
    False
    """

    p0: float
    min_rise: float
    alpha: float
    _log_p1: NDArray[np.float64] = field(init=False, repr=False, compare=False)
    _log_q1: NDArray[np.float64] = field(init=False, repr=False, compare=False)
    _threshold: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.p0 < 1.0:
            raise ValueError("p0 must be in [0, 1)")
        if self.min_rise <= 0.0:
            raise ValueError("min_rise must be positive")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError("alpha must be in (0, 1)")
        p0 = max(self.p0, 1e-12)
        grid = []
        step = self.min_rise
        while p0 + step < 1.0:
            grid.append(p0 + step)
            step *= GRID_RATIO
        p1 = np.array(grid, dtype=float)
        object.__setattr__(self, "_log_p1", np.log(p1) - math.log(p0))
        object.__setattr__(self, "_log_q1", np.log1p(-p1) - math.log1p(-p0))
        object.__setattr__(self, "_threshold", math.log(1.0 / self.alpha))

    @property
    def alternatives(self) -> int:
        return len(self._log_p1)

    def log_evidence(self, n: ArrayLike, k: ArrayLike) -> NDArray[np.float64]:
        """log of the mixture likelihood ratio (equal weights) after ``n`` observations with
        ``k`` events; vectorised over ``n`` and ``k``."""
        n_arr = np.asarray(n, dtype=float)
        k_arr = np.asarray(k, dtype=float)
        if not self.alternatives:
            return np.full(np.broadcast(n_arr, k_arr).shape, -np.inf)
        terms = k_arr[..., None] * self._log_p1 + (n_arr - k_arr)[..., None] * self._log_q1
        out: NDArray[np.float64] = special.logsumexp(terms, axis=-1) - math.log(self.alternatives)
        return out

    def rejects(self, n: ArrayLike, k: ArrayLike) -> NDArray[np.bool_]:
        n_arr = np.asarray(n, dtype=float)
        k_arr = np.asarray(k, dtype=float)
        rate = np.divide(k_arr, n_arr, out=np.zeros(np.broadcast(n_arr, k_arr).shape),
                         where=n_arr > 0)  # fmt: skip
        big_enough = rate - self.p0 >= self.min_rise
        out: NDArray[np.bool_] = big_enough & (self.log_evidence(n_arr, k_arr) >= self._threshold)
        return out

    def rejects_one(self, n: int, k: int) -> bool:
        """:meth:`rejects` for one look, without numpy's overhead when it cannot reject, and
        without the log-sum-exp where its bounds decide: the largest term ``m`` of the
        mixture gives ``m - log A <= log_evidence <= m`` for ``A`` alternatives (scipy's
        ``logsumexp`` was two thirds of a labelled backtest's performance looks).

        >>> t = RateRiseTest(p0=0.05, min_rise=0.05, alpha=0.001)
        >>> [t.rejects_one(n, k) for n, k in ((100, 5), (100, 12), (100, 40))]
        [False, False, True]
        >>> all(t.rejects_one(100, k) == bool(t.rejects(100, k)) for k in range(101))
        True
        """
        if n <= 0 or k / n - self.p0 < self.min_rise or not self.alternatives:
            return False
        top = float((k * self._log_p1 + (n - k) * self._log_q1).max())
        if top < self._threshold - _DECIDED:
            return False
        if top - math.log(self.alternatives) >= self._threshold + _DECIDED:
            return True
        return bool(self.log_evidence(n, k) >= self._threshold)

    def p_value(self, n: int, k: int) -> float:
        """The anytime-valid p-value of this look: min(1, 1 / likelihood ratio)."""
        return float(min(1.0, math.exp(-float(self.log_evidence(n, k)))))
