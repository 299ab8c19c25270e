"""The drift tests, as plug-ins: :data:`DRIFT_TESTS` is the one list of what is tested.

The engine asks it which tests apply to a feature (by summary kind, and whether the look is
at a whole window or a sub-day span) and looks a finished test up by its wire name for its
effect floor, severity noise, incident and DriftEvent fields. Registration order is the
order the tests of one feature run and are reported in.

Adding a test is one new module here plus one line below. A Welch z-test on the means, for
example (its effect is the total variation distance between two normals that far apart, so
it reads on the same [0, 1] scale as the others)::

>>> import math
>>> import numpy as np
>>> from streams.numeric_summary import NumericSummary
>>> class MeanShift(DriftTest[NumericSummary]):
...     name = "mean_z"
...     kinds = frozenset({"numeric"})
...     def run(self, window, baseline):
...         se = math.sqrt(window.variance / window.count + baseline.variance / baseline.count)
...         z = (window.mean - baseline.mean) / se
...         tvd = math.erf(abs(window.mean - baseline.mean) / baseline.std / (2 * math.sqrt(2)))
...         return TestResult(z, math.erfc(abs(z) / math.sqrt(2)), tvd, 0.0, False, self.name)
...     def noise(self, n_eff, baseline):
...         return math.erf(1.96 / math.sqrt(n_eff) / (2 * math.sqrt(2)))
>>> registry = Registry(*DRIFT_TESTS.values(), MeanShift())  # i.e. one more line below
>>> [t.name for t in registry.for_kind("numeric", whole_window=True)]
['ks', 'missing_rate', 'mean_z']
>>> [t.name for t in registry.for_kind("numeric", whole_window=False)]  # hourly spans
['ks', 'mean_z']
>>> rng = np.random.default_rng(5)
>>> w, b = NumericSummary(), NumericSummary()
>>> w.add_many(rng.normal(0.3, 1.0, 2_000))
>>> b.add_many(rng.normal(0.0, 1.0, 20_000))
>>> r = registry["mean_z"].run(w, b)
>>> r.p_value < 1e-10, round(r.effect_size, 2)
(True, 0.12)

``tests/unit/test_contracts.py`` then checks the new test like every registered one: p in
[0, 1], finite figures, no alarm on a null pair, an alarm on a shifted pair, deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final, get_args

from streams.drift_tests.base import DriftTest, Sample, TestKind, TestResult
from streams.drift_tests.chi2 import ChiSquare
from streams.drift_tests.ks import KolmogorovSmirnov
from streams.drift_tests.mean_scan import MeanShiftScan
from streams.drift_tests.missing_rate import MissingRate
from streams.drift_tests.multivariate import CorrelationChange
from streams.state import FeatureKind

__all__ = [
    "DRIFT_TESTS",
    "FEATURE_KINDS",
    "TEST_KINDS",
    "DriftTest",
    "Registry",
    "Sample",
    "TestResult",
]

FEATURE_KINDS: Final[tuple[FeatureKind, ...]] = get_args(FeatureKind)
TEST_KINDS: Final[tuple[TestKind, ...]] = (*FEATURE_KINDS, "multivariate")
"""The feature kinds plus ``multivariate``: a test of a stream's numeric features together
(one per model-window, feature ``__multivariate__``), run by the judge on its moments."""


class Registry(Mapping[str, DriftTest[Any]]):
    """Drift tests by wire name, in registration order, with the per-kind selection made
    once (the engine asks for every feature at every look)."""

    def __init__(self, *tests: DriftTest[Any]) -> None:
        self._tests: dict[str, DriftTest[Any]] = {}
        for test in tests:
            if not test.name or test.name in self._tests:
                raise ValueError(f"drift test name {test.name!r} is empty or taken")
            if not test.kinds or not test.kinds <= set(TEST_KINDS):
                raise ValueError(f"{test!r}: kinds must be a non-empty subset of {TEST_KINDS}")
            if test.sample not in get_args(Sample):
                raise ValueError(f"{test!r}: sample must be one of {get_args(Sample)}")
            self._tests[test.name] = test
        self._selection = {
            (kind, whole, False): tuple(
                t
                for t in tests
                if kind in t.kinds and not t.scan_only and (whole or not t.whole_window_only)
            )
            for kind in TEST_KINDS
            for whole in (True, False)
        } | {
            (kind, False, True): tuple(t for t in tests if kind in t.kinds and t.scan_only)
            for kind in TEST_KINDS
        }

    def for_kind(
        self, kind: TestKind, whole_window: bool, scan: bool = False
    ) -> tuple[DriftTest[Any], ...]:
        """The tests to run on a feature of ``kind``: on a whole (or cumulative) window, on a
        sub-day span of an open one, or (``scan``) by the sequential scan of its recent
        slots at every look."""
        return self._selection[kind, whole_window and not scan, scan]

    def __getitem__(self, name: str) -> DriftTest[Any]:
        return self._tests[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tests)

    def __len__(self) -> int:
        return len(self._tests)


DRIFT_TESTS: Final = Registry(
    KolmogorovSmirnov(),
    ChiSquare(),
    MissingRate(),
    CorrelationChange(),
    MeanShiftScan(),
)
