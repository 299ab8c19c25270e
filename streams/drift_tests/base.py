"""What a drift test is, to the engine: the base class every registered test derives from.

Why a class and not a function: running a test is only part of what the engine needs. It
also needs to know which features the test applies to (by summary kind), whether it reads
the non-missing values or every row, whether it may run on the sub-day spans of an open
window, the smallest effect that counts (a setting), how much of an effect sampling noise
alone would show (for severity), and what else a DriftEvent of it carries. Kept together
in one class per test, adding a test touches one module plus one line of
:mod:`streams.drift_tests`, and the contract suite (``tests/unit/test_contracts.py``)
checks it without being told.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Generic, Literal, TypeVar, cast

from streams.effects import drift_extras
from streams.moments import MomentSummary
from streams.slot_series import SlotSeries, SlotSpan, pooled
from streams.state import FeatureKind, Summary

if TYPE_CHECKING:
    from streams.config import EngineConfig

__all__ = ["AnySummary", "DriftTest", "Sample", "TestKind", "TestResult"]

TestKind = FeatureKind | Literal["multivariate"]
"""What a test reads: one feature's summary of a kind, or a stream's ``multivariate``
moments (:class:`~streams.moments.MomentSummary`) of its numeric features together."""
AnySummary = Summary | MomentSummary | SlotSeries | SlotSpan
S = TypeVar("S", bound=AnySummary)
"""The summary type a test reads (``NumericSummary``, ``CategoricalSummary``, either, or a
``MomentSummary``). At the looks, :meth:`DriftTest.run_many_for_decision` may also be given a
numeric span's slots (a :class:`~streams.slot_series.SlotSpan`): the base pools them before
:meth:`DriftTest.run_for_decision`; a test that can use the slots apart overrides it (KS)."""

Sample = Literal["values", "rows"]
"""What a test counts as its sample: the non-missing ``values`` (a summary's ``count``) or
every ``rows`` including the missing ones (``count + missing``)."""


# Not frozen: one is made per test run, and a frozen dataclass's __init__ costs 6x.
@dataclass(slots=True)
class TestResult:
    """Outcome of a two-sample test.

    ``error_bound`` bounds |effect_size - the value exact data would give| (for KS that is
    also the statistic's error); ``exact`` means no summary approximation was involved;
    ``test`` is the test's registered name, written to ``DriftEvent.test``.
    """

    __test__ = False  # not a pytest test class

    statistic: float
    p_value: float
    effect_size: float
    error_bound: float
    exact: bool
    test: str
    sample_size: int | None = None
    """The values the finding rests on, where fewer than the window's (the scan's best span):
    severity's noise and the DriftEvent's ``window_count`` are for them."""


class DriftTest(ABC, Generic[S]):
    """A two-sample test of one feature's window against its baseline, as a plug-in.

    Subclasses set the class attributes and implement :meth:`run` and :meth:`noise`; the
    rest has defaults that fit a test of the values' distribution. ``effect_size`` must be
    a distance in [0, 1] ("this share of the probability mass moved"), the scale the
    severity thresholds (:mod:`streams.decision`) and the effect floor are written in.
    :mod:`streams.drift_tests` shows a whole new test being added (a seeded doctest).
    """

    name: ClassVar[str]
    """The wire name (``DriftEvent.test``, the key of stored results): never rename one."""
    kinds: ClassVar[frozenset[TestKind]]
    """The feature kinds (summary types) the test applies to."""
    sample: ClassVar[Sample] = "values"
    """``values``: tested once the window has ``min_window_count`` non-missing values, and
    counted in the engine's ``tests`` statistic. ``rows``: sizes include missing rows."""
    whole_window_only: ClassVar[bool] = False
    """True: run on whole (or cumulative) windows only, never on the sub-day spans of the
    hourly looks (their ~64-value samples are too small for it)."""
    scan_only: ClassVar[bool] = False
    """True: run only by the sequential scan at every hourly look, on the recent slots one
    by one (a :class:`~streams.slot_series.SlotSeries`), never on whole windows or spans."""
    incident_suffix: ClassVar[str] = ""
    """Appended to the feature name to make the incident key: tests with the same suffix
    share one incident per feature. Distribution tests share the plain feature name; the
    missing-rate test has its own ("#missing"), so a feature can have both at once."""

    @abstractmethod
    def run(self, window: S, baseline: S) -> TestResult:
        """Test ``window`` against ``baseline``; the result's ``test`` is :attr:`name`."""

    def run_for_decision(self, window: S, baseline: S, alpha: float) -> TestResult:
        """:meth:`run` where only the decision at level ``alpha`` matters (the hourly looks:
        a result that is not a discovery is dropped). A test may then return, for a p-value
        it can *prove* is above ``alpha``, a cheaper p that is also above ``alpha``: under
        Benjamini-Hochberg at level alpha such a test is never significant and never moves
        another's rank, so every decision stays as exact p-values would make it."""
        return self.run(window, baseline)

    def run_many_for_decision(self, pairs: Sequence[tuple[S, S]], alpha: float) -> list[TestResult]:
        """:meth:`run_for_decision` of each (window, baseline) pair of one look, in order (a
        :class:`~streams.slot_series.SlotSpan` window pooled first): a test that can decide
        many features at once for less (KS) overrides this."""
        return [self.run_for_decision(cast(S, pooled(w)), b, alpha) for w, b in pairs]

    @abstractmethod
    def noise(self, n_eff: float, baseline: S) -> float:
        """The effect size two samples of the baseline's distribution would show at
        effective size ``n_eff = n m / (n + m)`` (a ~95% level): what severity subtracts."""

    def effect_floor(self, config: EngineConfig) -> float:
        """The smallest effect size that counts as drift (a setting)."""
        return config.min_effect_size

    def size(self, summary: AnySummary) -> int:
        """The sample size this test sees in ``summary`` (see :attr:`sample`)."""
        return summary.count if self.sample == "values" else summary.count + summary.missing

    def debiased_effect(
        self, effect_size: float, n_window: int, n_baseline: int, baseline: S
    ) -> float:
        """The effect minus what sampling noise alone could show at these sample sizes (95%).

        A distance measured on 64 values (an hour's sample) is inflated by noise, and the
        first look that crosses significance is the one whose noise pushed it up. Severity
        must describe the change, not the sample, so it reads this lower confidence bound.
        """
        if n_window <= 0 or n_baseline <= 0:
            return 0.0
        n_eff = n_window * n_baseline / (n_window + n_baseline)
        return max(0.0, effect_size - self.noise(n_eff, baseline))

    def describe(self, window: S, baseline: S) -> dict[str, object]:
        """Signals beyond the test's own for its DriftEvent's ``extra``: by default the
        effect sizes of the distribution change (PSI, Jensen-Shannon, Wasserstein)."""
        values = pooled(window)
        assert not isinstance(values, MomentSummary | SlotSeries | SlotSpan)
        assert not isinstance(baseline, MomentSummary | SlotSeries | SlotSpan)
        return drift_extras(values, baseline)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
