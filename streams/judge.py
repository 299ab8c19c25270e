"""Judging a feature window: the tests, the decision and the incidents, apart from the clocks.

:class:`~streams.engine.DriftEngine` decides *when* a window is judged (its close, an interim
look) and keeps the state; :class:`FeatureJudge` decides *what* that window says: each
feature's summary against its merged baseline, Benjamini-Hochberg over the window's tests,
the effect floors, severity, the incident lifecycle (``IncidentBook.drifting``/``clean``), the
incident notices and the DriftEvents. It reads and marks feature windows through
:class:`~streams.baselines.WindowAccess` and changes the stream's incident book in place;
persisting the stream is the caller's job (the engine marks it after every clock advance).
"""

from __future__ import annotations

import functools
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas import DriftEvent, DriftKind
from schemas.events import INCIDENT_SEVERITY
from streams.baselines import Baselines, MomentAccess, WindowAccess
from streams.config import EngineConfig
from streams.decision import benjamini_hochberg, severity_for, surely_above
from streams.drift_tests import DRIFT_TESTS, DriftTest, TestResult
from streams.drift_tests.base import AnySummary, TestKind
from streams.drift_tests.multivariate import MULTIVARIATE_FEATURE
from streams.importance import (
    Association,
    ImportanceSource,
    choose_importance,
)
from streams.incidents import Incident, IncidentNotice
from streams.moments import moment_key
from streams.segments import OTHER, is_segment_feature, split_segment_feature
from streams.slot_series import SlotSeries, SlotSpan, pooled
from streams.state import (
    FeatureKind,
    FeatureWindow,
    StreamState,
    Summary,
    window_key,
)

__all__ = ["FeatureInputs", "FeatureJudge", "FeatureTest", "Picker", "whole_window"]

Picker = Callable[[str, FeatureWindow], Summary | SlotSeries | SlotSpan | None]
"""Which summary of a feature's window a test looks at (the whole window, a recent span)."""


FeatureInputs = list[tuple[str, FeatureKind, FeatureWindow, Any]]
"""Per feature (and segment feature) with a window, in judging order: its kind, its window and
its baseline (:meth:`~streams.baselines.Baselines.feature`'s, None while it has none)."""


def whole_window(feature: str, fw: FeatureWindow) -> Summary | None:
    """The default :data:`Picker`: the window's whole summary (end-of-window tests)."""
    return fw.summary


def _effect_floor(cfg: EngineConfig, test: str) -> float:
    return DRIFT_TESTS[test].effect_floor(cfg)


_DRIFT_NAMESPACE = uuid.UUID("6f1c2b1e-6d0b-4c55-9a59-3c1f4f8d2a10")


# Not frozen: one is made per feature tested at a look, and a frozen dataclass's __init__ costs 6x.
@dataclass(slots=True)
class FeatureTest:
    feature: str
    kind: TestKind
    result: TestResult
    window_count: int
    baseline_count: int
    baseline_start: float
    baseline_end: float
    window_summary: AnySummary
    baseline_summary: AnySummary
    association_of: Callable[[], Association | None] | None = None
    """The feature's association with the score over the baseline windows, asked for only
    when the test finds drift (its incident's impact): most tests never need it."""
    incident_key: str = field(init=False)
    """One incident per feature and kind of change (distribution, missing rate): made once:
    a judgement reads it several times a test (six at a look, up to ~13 at a close)."""

    def __post_init__(self) -> None:
        self.incident_key = self.feature + self.test.incident_suffix

    @property
    def baseline_association(self) -> Association | None:
        return None if self.association_of is None else self.association_of()

    @property
    def test(self) -> DriftTest[Any]:
        """The registered test that produced :attr:`result`."""
        return DRIFT_TESTS[self.result.test]

    def severity_effect(self) -> float:
        """The effect size net of sampling noise (see :meth:`DriftTest.debiased_effect`)."""
        return self.test.debiased_effect(
            self.result.effect_size, self.window_count, self.baseline_count, self.baseline_summary
        )

    @property
    def name(self) -> str:
        """The feature's own name (``feature`` less its segment, for a segment feature)."""
        return split_segment_feature(self.feature)[0]

    @property
    def is_segment(self) -> bool:
        return is_segment_feature(self.feature)

    def describe(self) -> dict[str, object]:
        """Effect sizes and signals beyond the test's own, for the DriftEvent."""
        return self.test.describe(self.window_summary, self.baseline_summary)


class FeatureJudge:
    """Tests a stream's window of features and turns the results into incidents and events.

    ``stats`` and ``notices`` are the engine's: the judge counts and tells into them. The
    merged baselines are :attr:`baselines`' (derived data, see :meth:`forget`).

    >>> from streams.keyed_state import MemoryStore, StateCache
    >>> windows = StateCache(MemoryStore(), FeatureWindow.from_bytes, FeatureWindow.to_bytes)
    >>> judge = FeatureJudge(EngineConfig(), windows, Counter(), [])
    >>> judge.judge(StreamState("acme", "fraud"), 0.0, 86400.0, 0.01, None)  # no data yet
    []
    """

    def __init__(
        self,
        config: EngineConfig,
        windows: WindowAccess,
        stats: Counter[str],
        notices: list[IncidentNotice],
        importances: ImportanceSource | None = None,
        moments: MomentAccess | None = None,
    ) -> None:
        """``moments``: the streams' moment windows, for the multivariate test (None: off)."""
        self.config = config
        self.importances = importances
        self.moments = moments
        self.windows = windows
        self.stats = stats
        self.notices = notices
        self.baselines = Baselines(config, windows, moments)

    def forget(self) -> None:
        """Drop the cached baselines (the windows they merged may have changed elsewhere)."""
        self.baselines.forget()

    def judge(
        self,
        stream: StreamState,
        window: float,
        detected_at: float,
        alpha: float,
        partial_end: float | None,
        pick: Picker | None = None,
        span: float | None = None,
        scan: bool = False,
        inputs: FeatureInputs | None = None,
    ) -> list[DriftEvent]:
        """Test a window's features against their baselines and update the incidents.

        ``partial_end`` is set for an interim look at the still-open window: only drifts count
        there (a partial window is no evidence that a feature is clean), and a feature found
        drifting is not judged again in this window. ``scan``: the sequential scan's tests
        (``DriftTest.scan_only``) on what ``pick`` gives, instead of the others. ``inputs``:
        :meth:`inputs` of this window, when the caller judges it several times in a row (a
        look's spans and scan) and nothing between changes a window or a baseline.
        """
        cfg = self.config
        book = stream.incidents
        # At a look only discoveries count: tests may skip exact p-values they prove > alpha.
        decide_at = alpha if partial_end is not None else None
        all_tests, judged = self._test_features(
            stream, window, pick or whole_window, decide_at, partial_end, scan, inputs
        )
        tests = [t for t in all_tests if book.last_window.get(t.incident_key, -1) < window]
        # Judged at an interim look already: found drifting in this window.
        judged |= {t.incident_key for t in all_tests} - {t.incident_key for t in tests}
        if partial_end is None:
            self._count_untested_as_clean(stream, window, {t.incident_key for t in tests})
            if not tests:
                self._record_results(stream, window, all_tests, judged)
        if not tests:
            return []
        # A missing-rate test with nothing missing on either side (p = 1) cannot be a
        # discovery: it counts as a clean result but stays out of the BH family, where it
        # would only make the other tests stricter.
        family = [
            t for t in tests if not (t.result.test == "missing_rate" and t.result.p_value >= 1)
        ]
        significant = _significant_by_family(family, alpha)
        drifting = [
            t
            for t, sig in zip(family, significant, strict=True)
            if sig and t.result.effect_size >= _effect_floor(cfg, t.result.test)
        ]
        drifting, covered = self._without_covered_segments(drifting, judged)
        if partial_end is not None and not drifting:
            return []
        # The drifting share (severity) within each family: features, segment features. It
        # counts features, not tests: a feature's distribution and missing rate are one
        # feature, and the multivariate test is none.
        if scan:  # the scan tests numeric features only: the share is of all of them
            sizes = Counter(is_segment_feature(f) for f, _ in stream.judged_features())
        else:
            sizes = _features_by_family(family)
        found = _features_by_family(drifting)
        registry = None
        if drifting and self.importances is not None:
            registry = self.importances(stream.tenant, stream.model)
        drifting_names = {t.incident_key for t in drifting}
        if partial_end is None:
            self._record_results(stream, window, all_tests, drifting_names | judged)
        events: list[DriftEvent] = []
        for t in tests:
            if t.incident_key in covered:
                continue  # neither drift nor a clean window of the segment: its feature's
            incident = book.open.get(t.incident_key)
            if t.incident_key not in drifting_names:
                if partial_end is not None:
                    continue
                book.last_window[t.incident_key] = window
                if incident is not None:
                    self._clean(stream, t.incident_key, window)
                continue
            book.last_window[t.incident_key] = window
            share = found[t.is_segment] / max(sizes[t.is_segment], 1)
            severity = severity_for(t.severity_effect(), share, found[t.is_segment])
            incident, changes = book.drifting(
                t.incident_key, window, severity, t.result.test,
                functools.partial(_drift_id, stream, t.incident_key, window),
                confirm_windows=cfg.confirm_windows, remember=1,  # windows are judged in order
            )  # fmt: skip
            if (span is None and not scan) or incident.effect_size is None:
                # A sub-day span's effect (a small sample) stands in only until a look at
                # the whole window (so far, or closed) measures it.
                incident.effect_size = t.result.effect_size
            incident.importance, incident.importance_source = choose_importance(
                t.name, registry, t.baseline_association
            )
            ranking = ranking_fields(incident)
            segment = self._segment_fields(stream, window, t.feature)
            for change in changes:
                if change != "escalated":
                    self.stats[f"incidents_{change}"] += 1
            for change in changes:
                self.notices.append(
                    IncidentNotice(
                        change, incident.drift_id, DriftKind.STATISTICAL.value, stream.tenant,
                        stream.model, stream.model_version, t.name, t.result.test,
                        incident.max_severity, incident.confirmed, incident.persistence, window,
                        detected_at, t.result.statistic, t.result.p_value, t.result.effect_size,
                        ranking | segment,
                    )
                )  # fmt: skip
            events.append(
                DriftEvent(
                    drift_id=incident.drift_id,
                    kind=DriftKind.STATISTICAL,
                    tenant=stream.tenant,
                    model=stream.model,
                    model_version=stream.model_version,
                    feature=t.name,
                    test=t.result.test,
                    statistic=t.result.statistic,
                    p_value=t.result.p_value,
                    effect_size=t.result.effect_size,
                    window_start=window,
                    window_end=partial_end
                    if partial_end is not None
                    else window + cfg.window_seconds,
                    baseline_start=t.baseline_start,
                    baseline_end=t.baseline_end,
                    severity=severity,
                    confirmed=incident.confirmed,
                    detected_at=detected_at,
                    persistence=incident.persistence,
                    window_count=t.window_count,
                    baseline_count=t.baseline_count,
                    drifting_share=share,
                    partial=partial_end is not None,
                    extra=t.describe()
                    | ({} if span is None else {"span_seconds": span})
                    | ranking
                    | segment
                    | {INCIDENT_SEVERITY: incident.max_severity},
                )
            )
        self.stats["drift_events"] += len(events)
        return events

    # ------------------------------------------------------------------ tests

    def inputs(self, stream: StreamState, window: float) -> FeatureInputs:
        """What the tests of ``window`` read, feature by feature (see :data:`FeatureInputs`):
        a look judges the same window up to six times (its spans, the window so far, the
        scan), and this is the same each time."""
        windows = self.baselines.windows_of(stream, window)
        tenant, model = stream.tenant, stream.model
        out: FeatureInputs = []
        for feature, kind in stream.judged_features():
            fw = self.windows.get(window_key(tenant, model, window, feature))
            if fw is None:
                continue
            baseline = self.baselines.feature(
                stream, feature, window, _same_segments(stream, feature, window, windows)
            )
            out.append((feature, kind, fw, baseline))
        return out

    def _test_features(
        self,
        stream: StreamState,
        window: float,
        pick: Picker,
        decide_at: float | None,
        partial_end: float | None = None,
        scan: bool = False,
        inputs: FeatureInputs | None = None,
    ) -> tuple[list[FeatureTest], set[str]]:
        """The features' tests, and the incident keys of those a look did not run: found
        drifting in this window already, a look judges them no more (at a close they run:
        their results are recorded). At a look (``decide_at``) the tests come back only if
        one of them could be a discovery: none where every p is above ``decide_at``, the
        multivariate test's too where one joins them (they ran; their results are dropped)."""
        tests: list[FeatureTest] = []
        jobs: list[tuple[DriftTest[Any], str, FeatureKind, int, Any, tuple[Any, float, float]]]
        jobs = []
        whole = pick is whole_window
        windows = self.baselines.windows_of(stream, window)
        min_count = self.config.min_window_count
        no_baseline = values_tests = skipped = 0  # counted once, at the end
        judged: set[str] = set()
        last_window = stream.incidents.last_window if partial_end is not None else {}
        if inputs is None:
            inputs = self.inputs(stream, window)
        for feature, kind, fw, baseline in inputs:
            # The baseline first: a stream's first weeks have none, and no span to build.
            if baseline is None:
                no_baseline += 1
                continue
            summary = pick(feature, fw)
            if summary is None or summary.count + summary.missing < min_count:
                continue
            for test in DRIFT_TESTS.for_kind(kind, whole, scan):
                n_window = test.size(summary)
                if n_window < min_count:
                    continue
                if last_window:
                    key = feature + test.incident_suffix
                    if last_window.get(key, -1) >= window:
                        judged.add(key)
                        skipped += 1
                        continue
                if test.sample == "values":
                    values_tests += 1  # the metric counts the tests of the values
                jobs.append((test, feature, kind, n_window, summary, baseline))
        if no_baseline:
            self.stats["tests_skipped_no_baseline"] += no_baseline
        if skipped:
            self.stats["tests_skipped_judged"] += skipped
        if values_tests:
            self.stats["tests"] += values_tests
        if scan and jobs:
            self.stats["scan_tests"] += len(jobs)
        # Each test runs over all its features at once (a look may decide many for less).
        by_test: dict[DriftTest[Any], list[int]] = {}
        for k, job in enumerate(jobs):
            by_test.setdefault(job[0], []).append(k)
        results: dict[int, TestResult] = {}
        for test, ks in by_test.items():
            pairs = [(jobs[k][4], jobs[k][5][0]) for k in ks]
            # A result of p = 1 (say, nothing missing on either side) is a clean one too.
            found = (
                [test.run(pooled(w), b) for w, b in pairs]
                if decide_at is None
                else test.run_many_for_decision(pairs, decide_at)
            )
            for k, result in zip(ks, found, strict=True):
                results[k] = result
        # The window (so far) adds the multivariate test to the family: made first, so that
        # a look sees the whole family's p-values before it makes the features' tests.
        moments = None
        moments_judged = partial_end is not None and (
            stream.incidents.last_window.get(MULTIVARIATE_FEATURE, -1) >= window
        )
        if whole and self.moments is not None and not moments_judged:
            blocks = None
            if partial_end is not None:
                blocks = round((partial_end - window) / self.config.moment_block_seconds)
                if window + blocks * self.config.moment_block_seconds != partial_end:
                    blocks = 0  # a cumulative look between two block ends: none at this one
            if blocks != 0:
                moments = self._test_moments(stream, window, windows, blocks)
        # At a look only discoveries count, and Benjamini-Hochberg at alpha finds none where
        # every p is above alpha: nearly every look's parts. Their tests are not made. The
        # margin covers BH's own rounding (``alpha * m / m`` can be an ulp above alpha).
        if decide_at is not None:
            above = surely_above(decide_at)
            if all(r.p_value > above for r in results.values()) and (
                moments is None or moments.result.p_value > above
            ):
                return tests, judged
        association_of: functools.partial[Association | None] | None = None
        of_feature = None  # a feature's jobs are contiguous: one thunk for its tests
        for k, (test, feature, kind, n_window, summary, baseline) in enumerate(jobs):
            result = results[k]
            base, b_start, b_end = baseline
            if feature != of_feature:
                of_feature = feature
                association_of = functools.partial(
                    self.baselines.association, stream, feature, window, windows
                )
            tests.append(
                FeatureTest(
                    feature,
                    kind,
                    result,
                    n_window if result.sample_size is None else result.sample_size,
                    test.size(base),
                    b_start,
                    b_end,
                    summary,
                    base,
                    association_of,
                )
            )
        if moments is not None:
            tests.append(moments)
        return tests, judged

    def _test_moments(
        self,
        stream: StreamState,
        window: float,
        windows: tuple[tuple[float, int], ...],
        blocks: int | None,
    ) -> FeatureTest | None:
        """The multivariate test of the window's moments against the merged moments of the
        baseline windows that track the same features (only those merge exactly); run where
        the whole window (or the window so far) is tested, never on sub-day spans. The window
        so far (its first ``blocks`` blocks) is compared with the same hours of the baseline
        windows: a daily cycle is then no drift (see ``MomentWindow``)."""
        assert self.moments is not None
        mw = self.moments.get(moment_key(stream.tenant, stream.model, window))
        if mw is None:
            return None
        summary = mw.upto(blocks)
        if summary.count < self.config.min_window_count:
            return None
        baseline = self.baselines.moments_of(stream, window, windows, summary.features, blocks)
        if baseline is None:
            self.stats["tests_skipped_no_baseline"] += 1
            return None
        base, b_start, b_end = baseline
        self.stats["multivariate_tests"] += 1
        (test,) = DRIFT_TESTS.for_kind("multivariate", True)
        return FeatureTest(
            MULTIVARIATE_FEATURE, "multivariate", test.run(summary, base), summary.count,
            base.count, b_start, b_end, summary, base,
        )  # fmt: skip

    # ------------------------------------------------------------------ incidents

    def _count_untested_as_clean(
        self, stream: StreamState, window: float, tested: set[str]
    ) -> None:
        """An open incident whose feature was not tested in a closed window (too few values, or
        the feature is gone) got no new evidence of drift: that window counts as clean."""
        book = stream.incidents
        for key in list(book.open):
            if key in tested or book.last_window.get(key, -1) >= window:
                continue
            book.last_window[key] = window
            self._clean(stream, key, window)

    def _record_results(
        self, stream: StreamState, window: float, tests: list[FeatureTest], drifting: set[str]
    ) -> None:
        """Keep each end-of-window test on its feature-window (for the API and the report)."""
        cfg = self.config
        for t in tests:
            key = window_key(stream.tenant, stream.model, window, t.feature)
            fw = self.windows.get(key)
            if fw is None:
                continue
            r = t.result
            fw.results[r.test] = [
                round(r.statistic, 6), r.p_value, round(r.effect_size, 6),
                _effect_floor(cfg, r.test), t.incident_key in drifting, t.window_count,
                t.baseline_count,
            ]  # fmt: skip
            self.windows.mark(key, stream.partition)

    def _clean(self, stream: StreamState, key: str, window: float) -> None:
        """A clean window for ``key``; tells of the resolution if that resolved it."""
        cfg = self.config
        incident = stream.incidents.clean(
            key, window, resolve_windows=cfg.resolve_windows, window_seconds=cfg.window_seconds
        )
        if incident is None:
            return
        self.stats["incidents_resolved"] += 1
        feature = key.removesuffix("#missing")
        self.notices.append(
            IncidentNotice(
                "resolved", incident.drift_id, DriftKind.STATISTICAL.value, stream.tenant,
                stream.model, stream.model_version, split_segment_feature(feature)[0],
                incident.test, incident.max_severity, incident.confirmed, incident.persistence,
                window, stream.watermark if stream.watermark is not None else window,
                extra=ranking_fields(incident) | self._segment_fields(stream, window, feature),
            )
        )  # fmt: skip

    def _without_covered_segments(
        self, drifting: list[FeatureTest], judged: set[str]
    ) -> tuple[list[FeatureTest], set[str]]:
        """``drifting`` less the segments' drifts of a feature whose whole traffic drifts the
        same way in this window (found by this judgement, or by an earlier look at it), and
        the incident keys of those held back: one change would otherwise be told once per
        segment. A held-back segment's test counts neither as drift nor as a clean window.
        (Only within the window: holding segments back while the feature's incident is
        merely open kept a 5 % segment's own incident from persisting, since such a change
        can move the whole traffic enough for an incident now and then: confirmed after
        489 h instead of 153 in bench.detection.)"""
        whole = {t.incident_key for t in drifting if not t.is_segment} | judged
        kept: list[FeatureTest] = []
        covered: set[str] = set()
        for t in drifting:
            if t.is_segment and t.name + t.test.incident_suffix in whole:
                self.stats["segment_drifts_covered"] += 1
                covered.add(t.incident_key)
                continue
            kept.append(t)
        return kept, covered

    def _segment_fields(self, stream: StreamState, window: float, name: str) -> dict[str, object]:
        """A segment feature's additive fields (``segment``: its column and value;
        ``segment_share``: its share of the window's events); none for a feature."""
        _, column, value = split_segment_feature(name)
        if column is None:
            return {}
        fw = self.windows.get(window_key(stream.tenant, stream.model, window, name))
        events = stream.window_events.get(window, 0)
        share = None if fw is None or not events else (fw.count + fw.missing) / events
        return {
            "segment": {column: value},
            "segment_share": None if share is None else round(min(share, 1.0), 6),
        }


def ranking_fields(incident: Incident) -> dict[str, object]:
    """What a notice and a DriftEvent tell of an incident's rank (additive fields)."""
    return {
        "importance": incident.importance,
        "importance_source": incident.importance_source or "unknown",
        "impact": incident.impact,
    }


def _drift_id(stream: StreamState, feature: str, window: float) -> str:
    """Deterministic, so a replay after a crash (or a backtest) names the incident the same."""
    return str(
        uuid.uuid5(
            _DRIFT_NAMESPACE, f"{stream.tenant}\x1f{stream.model}\x1f{feature}\x1f{int(window)}"
        )
    )


def _same_segments(
    stream: StreamState, feature: str, window: float, windows: tuple[tuple[float, int], ...]
) -> tuple[tuple[float, int], ...]:
    """The baseline windows a feature's window compares with: for ``__other__`` (the values
    without a segment of their own), those whose column had the same segments, since what
    ``__other__`` holds changes with them (a value given its own segment leaves it)."""
    _, column, value = split_segment_feature(feature)
    if column is None or value != OTHER:
        return windows
    chosen = stream.segment_values.get(window, {}).get(column)
    return tuple(
        (w, n) for w, n in windows if stream.segment_values.get(w, {}).get(column) == chosen
    )


def _features_by_family(tests: list[FeatureTest]) -> Counter[bool]:
    """Distinct features (not tests) per family (segment or not); the multivariate test,
    of no one feature, counts in neither."""
    features = {(t.feature, t.is_segment) for t in tests if t.feature != MULTIVARIATE_FEATURE}
    return Counter(segment for _, segment in features)


def _significant_by_family(family: list[FeatureTest], alpha: float) -> list[bool]:
    """Benjamini-Hochberg at ``alpha`` within the features' tests and, apart, within the
    segment features' (FDR over segments x features): segments add no tests to the features'
    family, so the marginal tests keep the power they have without them."""
    out = [False] * len(family)
    for segments in (False, True):
        index = [k for k, t in enumerate(family) if t.is_segment == segments]
        if not index:
            continue
        found = benjamini_hochberg([family[k].result.p_value for k in index], alpha)
        for k, sig in zip(index, found, strict=True):
            out[k] = sig
    return out
