"""Detection settings shared by the live worker and the offline backtest."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import TypeVar

from streams.segments import parse_columns

_T = TypeVar("_T")


DAY = 86_400.0
CUMULATIVE_EVERY = 4
"""Interim looks test the whole open window so far at every 4th boundary (the recent spans
at every boundary): refolding a day's summary every hour costs more than it finds."""


def setting(default: _T, env: str, doc: str) -> _T:
    """A config field that is also a setting: ``env`` is its environment variable and ``doc``
    its line in the README's settings table. ``runtime.settings`` reads the environment
    from these; the default is written here only.

    >>> from dataclasses import fields
    >>> dict(fields(EngineConfig)[0].metadata)["env"]
    'DRIFTWATCH_WINDOW_SECONDS'
    """
    return field(default=default, metadata={"env": env, "doc": doc})


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything that decides *what* is detected. Defaults follow the seed plan.

    Windows, baselines and confirmation all run on event time, so the same config gives the
    same drift events live and in a backtest.
    """

    window_seconds: float = setting(
        DAY, "DRIFTWATCH_WINDOW_SECONDS", "Event-time window length, seconds."
    )
    """Length of a tumbling event-time window."""
    allowed_lateness_seconds: float = setting(
        3_600.0,
        "DRIFTWATCH_ALLOWED_LATENESS_SECONDS",
        "A window is tested once event time passes its end by this much.",
    )
    """A window is tested once the stream's event time passes its end by this much."""
    baseline_start_days: float = setting(
        60.0,
        "DRIFTWATCH_BASELINE_START_DAYS",
        "Baseline: windows from this many days before the tested one ...",
    )
    """Baseline: windows starting between this many and ``baseline_end_days`` days earlier."""
    baseline_end_days: float = setting(
        30.0, "DRIFTWATCH_BASELINE_END_DAYS", "... to this many days before it."
    )
    min_baseline_windows: int = setting(
        3,
        "DRIFTWATCH_MIN_BASELINE_WINDOWS",
        "Baseline windows with data (of the same weekly phase) needed before testing.",
    )
    """Clip the baseline to the history there is, but test only once this many baseline
    windows (of the same weekly phase, when ``seasonal_period_days`` is set) have data."""
    seasonal_period_days: float = setting(
        7.0,
        "DRIFTWATCH_SEASONAL_PERIOD_DAYS",
        "Compare a window only with baseline windows at the same phase of this period "
        "(daily windows: the same weekday); 0 turns it off.",
    )
    """Compare a window only with baseline windows at the same phase of this period (for daily
    windows: the same weekday), so a weekly pattern is not mistaken for drift. 0 = off."""
    interim_seconds: float = setting(
        3600.0,
        "DRIFTWATCH_INTERIM_SECONDS",
        "Also test the still-open window every this many seconds of event time; 0 turns it off.",
    )
    """Also test the still-open window every this many seconds of event time (0 = off)."""
    interim_alpha_share: float = setting(
        0.5,
        "DRIFTWATCH_INTERIM_ALPHA_SHARE",
        "Share of alpha spent on the interim looks (split evenly); the final test keeps the rest.",
    )
    """Share of ``alpha`` spent on the interim looks (split evenly over them, Bonferroni);
    the end-of-window test keeps the rest, so a window's false-alarm rate stays <= alpha."""
    sequential_alpha_share: float = setting(
        0.2,
        "DRIFTWATCH_SEQUENTIAL_ALPHA_SHARE",
        "Share of the interim looks' alpha spent on the sequential scan of numeric features "
        "(every look, the last 1-8 slots; test `mean_scan`); 0 turns it off.",
    )
    """Share of the interim looks' alpha (``interim_alpha_share``) that the sequential scan
    (``streams.drift_tests.mean_scan``) spends, split evenly over the looks; the spans'
    tests keep the rest, so a window's false-alarm rate stays <= alpha."""
    alpha: float = setting(
        0.01, "DRIFTWATCH_ALPHA", "Significance level (false-discovery rate per model-window)."
    )
    """Significance level, as a false-discovery rate across a model-window's features (BH)."""
    min_effect_size: float = setting(
        0.05,
        "DRIFTWATCH_MIN_EFFECT_SIZE",
        "Smallest KS / total-variation distance that counts as drift.",
    )
    """A drift needs significance *and* this effect (KS distance / total variation distance)."""
    min_missing_rate_change: float = setting(
        0.05,
        "DRIFTWATCH_MIN_MISSING_RATE_CHANGE",
        "Smallest absolute change of a feature's missing rate that counts as drift.",
    )
    """A change in a feature's missing rate counts as drift from this absolute difference."""
    absent_is_missing: bool = setting(
        False,
        "DRIFTWATCH_ABSENT_IS_MISSING",
        "A feature an event leaves out (no key) counts as missing, as a `null` does, once its "
        "stream has seen the feature (every model of the worker). For producers that drop "
        "null fields; see the README before turning it on.",
    )
    """On, a producer that drops null fields, or a pipeline that stops sending a feature,
    shows as a rising missing rate. Off by default: a feature sent with only some events
    (card-only fields) then has a missing rate that follows the traffic's mix, and turning it
    on over baselines built without it makes such features' missing rates jump; a sparse
    model's every event would carry all of its features."""
    multivariate: bool = setting(
        True,
        "DRIFTWATCH_MULTIVARIATE",
        "Also test a model's numeric features together (their correlations: Jennrich's test, "
        "feature "
        "`__multivariate__`), at the window's close and its cumulative interim looks.",
    )
    """Keep each window's moments of the numeric features (``streams.moments``) and test
    them (``streams.drift_tests.multivariate``): finds a change in how features move
    together that leaves every marginal as it was."""
    multivariate_max_features: int = setting(
        32,
        "DRIFTWATCH_MULTIVARIATE_MAX_FEATURES",
        "Numeric features the multivariate test tracks per model (the first in name order); "
        "the state grows with its square.",
    )
    """A window tracks the stream's numeric features known at its first event, the first
    this many in name order: fixed for the window (so its moments merge exactly) and chosen
    without a baseline (a top-k by variance would need one, and differ window to window, and
    only windows tracking the same features merge into a baseline)."""
    min_multivariate_effect: float = setting(
        0.1,
        "DRIFTWATCH_MIN_MULTIVARIATE_EFFECT",
        "Smallest bias-corrected Hellinger distance between the covariances that counts as "
        "multivariate drift (a correlation 0.8 -> 0.7 is ~0.11).",
    )
    """A multivariate drift needs significance and this effect (see ``CorrelationChange``)."""
    segment_columns: str = setting(
        "",
        "DRIFTWATCH_SEGMENT_COLUMNS",
        "Categorical features to segment by (comma-separated, e.g. `country,channel`): every "
        "feature is also tested within each segment of them; empty: no segments.",
    )
    """Segment drift (``streams.segments``): each model's features are also summarised and
    tested per value of these categorical features (a model without one has no segments)."""
    segment_values: int = setting(
        8,
        "DRIFTWATCH_SEGMENT_VALUES",
        "Values of a segment column with a segment of their own (the most frequent); the rest "
        "share `__other__`.",
    )
    """At most this many values per column get their own segment; state per model is bounded
    by ``columns x (segment_values + 1) x features`` feature windows."""
    segment_min_share: float = setting(
        0.02,
        "DRIFTWATCH_SEGMENT_MIN_SHARE",
        "Share of a model's traffic a value needs (in the previous window) for a segment of "
        "its own.",
    )
    """A value gets its own segment with this share of the previous window's events (and
    keeps it down to half of it)."""
    max_features_per_stream: int = setting(
        500,
        "DRIFTWATCH_MAX_FEATURES_PER_STREAM",
        "Events that would add features to a (tenant, model) beyond this are dead-lettered.",
    )
    """Events that would add a feature beyond this many to a stream are rejected, so a
    producer sending a new feature name per event cannot grow the state without bound."""
    min_window_count: int = setting(
        50, "DRIFTWATCH_MIN_WINDOW_COUNT", "Features with fewer values in a window are not tested."
    )
    """Features with fewer values than this in the window are not tested."""
    confirm_windows: int = setting(
        7, "DRIFTWATCH_CONFIRM_WINDOWS", "Windows of persistence before an incident is confirmed."
    )
    """An incident is ``confirmed`` once drift was found in this many windows while open."""
    resolve_windows: int = setting(
        2, "DRIFTWATCH_RESOLVE_WINDOWS", "Consecutive clean windows that close an incident."
    )
    """An incident closes after this many consecutive tested windows without drift."""
    retention_days: float = setting(
        62.0, "DRIFTWATCH_RETENTION_DAYS", "Window summaries older than this are deleted."
    )
    """Window summaries older than this (event time) are deleted; must cover the baseline."""
    cached_windows: int = setting(
        8192,
        "DRIFTWATCH_CACHED_WINDOWS",
        "Decoded feature windows kept in memory between batches (each a few KiB to ~100 KiB).",
    )
    """Decoded feature windows kept between batches: the open window of every active feature,
    plus what the looks read. Beyond it the least recently changed are decoded again on use."""
    max_future_seconds: float = 3_600.0
    """Events stamped further than this ahead of the stream's event time are rejected."""

    def __post_init__(self) -> None:
        if self.window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        if self.allowed_lateness_seconds < 0:
            raise ValueError("allowed_lateness_seconds must be >= 0")
        if not self.baseline_start_days > self.baseline_end_days > 0:
            raise ValueError("need baseline_start_days > baseline_end_days > 0")
        if not 0 < self.alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        if self.confirm_windows < 1 or self.resolve_windows < 1 or self.min_baseline_windows < 1:
            raise ValueError("confirm_windows, resolve_windows, min_baseline_windows must be >= 1")
        if self.retention_days < self.baseline_start_days:
            raise ValueError("retention_days must cover baseline_start_days")
        if self.min_window_count < 1:
            raise ValueError("min_window_count must be >= 1")
        if self.multivariate_max_features < 2:
            raise ValueError("multivariate_max_features must be >= 2")
        if not 1 <= self.segment_values <= 64:
            raise ValueError("segment_values must be in 1..64")
        if not 0 < self.segment_min_share < 1:
            raise ValueError("segment_min_share must be in (0, 1)")
        if self.max_features_per_stream < 1:
            raise ValueError("max_features_per_stream must be >= 1")
        if self.cached_windows < 0:
            raise ValueError("cached_windows must be >= 0")
        if self.interim_seconds < 0 or self.seasonal_period_days < 0:
            raise ValueError("interim_seconds and seasonal_period_days must be >= 0")
        if not 0 <= self.interim_alpha_share < 1:
            raise ValueError("interim_alpha_share must be in [0, 1)")
        if not 0 <= self.sequential_alpha_share < 1:
            raise ValueError("sequential_alpha_share must be in [0, 1)")
        period = self.seasonal_period_days * DAY
        if period and (period % self.window_seconds or period < self.window_seconds):
            raise ValueError("seasonal_period_days must be a whole number of windows")

    @property
    def segment_column_names(self) -> tuple[str, ...]:
        """:attr:`segment_columns` as names (``streams.segments.parse_columns``)."""
        return parse_columns(self.segment_columns)

    @property
    def interim_looks(self) -> int:
        """Interim tests per window (at each ``interim_seconds`` boundary before its end)."""
        if not self.interim_seconds or self.interim_seconds >= self.window_seconds:
            return 0
        return int(-(-self.window_seconds // self.interim_seconds)) - 1

    @property
    def moment_block_seconds(self) -> float:
        """The span of one block of a window's moments (``streams.moments.MomentWindow``):
        what lies between two of the multivariate test's interim looks (every other
        cumulative look: 8 hours by default, so it costs half as much), or the whole window
        without looks."""
        if not self.interim_looks:
            return self.window_seconds
        return min(self.interim_seconds * CUMULATIVE_EVERY * 2, self.window_seconds)

    @property
    def moment_blocks(self) -> int:
        return math.ceil(self.window_seconds / self.moment_block_seconds)

    @property
    def final_alpha(self) -> float:
        return self.alpha * (1 - self.interim_alpha_share) if self.interim_looks else self.alpha

    @property
    def interim_tests(self) -> int:
        """Interim tests per feature and window: the window so far at every 4th look, plus
        the last 1, 2, 4 and 8 slots at the looks where those spans complete."""
        looks = self.interim_looks
        return looks // CUMULATIVE_EVERY + sum(looks // (1 << k) for k in range(4))

    @property
    def interim_alpha(self) -> float:
        """Per interim test of a span (Bonferroni over a window's span tests)."""
        tests = self.interim_tests
        share = self.interim_alpha_share * (1 - self.sequential_alpha_share)
        return self.alpha * share / tests if tests else 0.0

    @property
    def sequential_alpha(self) -> float:
        """Per look of the sequential scan (Bonferroni over a window's looks); 0: off.

        >>> cfg = EngineConfig()
        >>> spent = cfg.final_alpha + cfg.interim_tests * cfg.interim_alpha
        >>> round(spent + cfg.interim_looks * cfg.sequential_alpha, 12) == cfg.alpha
        True
        """
        looks = self.interim_looks
        share = self.interim_alpha_share * self.sequential_alpha_share
        return self.alpha * share / looks if looks else 0.0

    def baseline_candidates(self, window_start: float) -> list[float]:
        """Starts of every window that may serve in the baseline of ``window_start``, oldest
        first (whether it has data is for the caller to check).

        >>> [int((w - 70 * DAY) // DAY) for w in EngineConfig().baseline_candidates(70 * DAY)]
        [-56, -49, -42, -35]
        """
        lo, hi = self.baseline_range(window_start)
        step = self.seasonal_period_days * DAY or self.window_seconds
        first = window_start - step * ((window_start - lo) // step)
        out = []
        w = first
        while w < hi:
            if w >= lo and self.in_baseline(window_start, w):
                out.append(w)
            w += step
        return out

    def in_baseline(self, window_start: float, candidate: float) -> bool:
        """Is ``candidate`` one of the baseline windows of ``window_start``?"""
        lo, hi = self.baseline_range(window_start)
        if not lo <= candidate < hi:
            return False
        period = self.seasonal_period_days * DAY
        return not period or (window_start - candidate) % period == 0

    def window_start(self, ts: float) -> float:
        """Start of the window containing ``ts`` (windows are aligned to the epoch, UTC).

        >>> EngineConfig().window_start(86_400 * 3 + 5)
        259200.0
        """
        return (ts // self.window_seconds) * self.window_seconds

    def baseline_range(self, window_start: float) -> tuple[float, float]:
        """[start, end) of the baseline windows for the window starting at ``window_start``."""
        return (
            window_start - self.baseline_start_days * DAY,
            window_start - self.baseline_end_days * DAY,
        )


@dataclass(frozen=True, slots=True)
class PerformanceConfig:
    """What decides performance drift. Windows and baselines follow ``engine`` (the same rule
    as feature drift), on **prediction** time; labels only add to the windows they belong to.

    Labels trickle in, so a window is looked at several times: when its labelled count
    first reaches ``min_labels``, then at each doubling (at most ``max_looks`` such looks), and
    a last time once ``label_horizon_days`` have passed since it closed. Alpha is split
    evenly over those looks and the span test at the window's end (Bonferroni); between
    them, a sequential test watches the
    window's error rate at every label, on its own share of alpha; so each window's
    false-alarm rate stays <= alpha.
    """

    engine: EngineConfig = EngineConfig()
    join_retention_days: float = setting(
        30.0,
        "DRIFTWATCH_JOIN_RETENTION_DAYS",
        "Days (event time) a prediction waits for its outcome, and an outcome for its "
        "prediction; later ones are dead-lettered (`expired`, `unknown_prediction`).",
    )
    """Predictions wait this long (event time) for their outcome, then expire."""
    alpha: float = setting(
        0.001,
        "DRIFTWATCH_PERF_ALPHA",
        "False-alarm rate of performance drift per window and model version (all looks).",
    )
    """False-alarm rate per window and model version, all looks and tests together. Stricter
    than feature drift's: a performance alarm is what starts a retraining."""
    min_labels: int = setting(
        100,
        "DRIFTWATCH_PERF_MIN_LABELS",
        "Labels a window (per model version) needs before its performance is tested; it is "
        "tested again at each doubling.",
    )
    """First look at a window (per model version) once it has this many labels."""
    max_looks: int = setting(
        6, "DRIFTWATCH_PERF_MAX_LOOKS", "Performance tests per window before the final one."
    )
    """Looks at labelled counts min_labels * 2**k, k < max_looks, before the final one."""
    label_horizon_days: float = setting(
        7.0,
        "DRIFTWATCH_LABEL_HORIZON_DAYS",
        "Days after a window's end before its final performance test (late labels).",
    )
    """The final look at a window, which may also count it as clean, waits this long after
    the window's end for its late labels."""
    min_accuracy_drop: float = setting(
        0.05, "DRIFTWATCH_MIN_ACCURACY_DROP", "Smallest accuracy drop that counts (absolute)."
    )
    """An accuracy drop counts from this absolute difference (and must be significant)."""
    relative_error_rise: float = setting(
        0.4,
        "DRIFTWATCH_PERF_RELATIVE_ERROR_RISE",
        "An accuracy drop also counts once the error rate rose by this share of the "
        "baseline's (0.4: 0.06 -> 0.084 counts), when that is less than "
        "`DRIFTWATCH_MIN_ACCURACY_DROP`: the floor scales to a high-accuracy model. 0 turns "
        "it off.",
    )
    """The accuracy floor is ``min(min_accuracy_drop, relative_error_rise * baseline error
    rate)`` (``streams.perf_findings.accuracy_floor``): a model at 0.94 whose accuracy falls
    to 0.91 has its error rate up by half, a drop the absolute floor would never count. It
    applies to the looks, the sequential test's smallest rise, the span test and the
    label-free estimate; significance is still required of each."""
    span_windows: int = setting(
        7,
        "DRIFTWATCH_PERF_SPAN_WINDOWS",
        "When a window closes, also test the accuracy of it and the windows before it, this "
        "many in all, merged, against their baselines merged (finds small drops that no one "
        "window's labels can show); one more look per window on the looks' alpha. Below 2 "
        "turns it off.",
    )
    """The span test (``streams.perf_findings.span_test``): at each window's close, the last
    ``span_windows`` windows' labels so far against the union of their baselines."""
    min_pr_auc_drop: float = setting(
        0.05, "DRIFTWATCH_MIN_PR_AUC_DROP", "Smallest PR-AUC drop that counts (absolute)."
    )
    """A PR-AUC drop counts from this absolute difference (and must be significant)."""
    pr_auc_floor: float = setting(
        0.0,
        "DRIFTWATCH_PR_AUC_FLOOR",
        "A PR-AUC objective for every model (e.g. the seed plan's 0.70): significantly below "
        "it opens an objective breach, not a drift. 0: none.",
    )
    """Shorthand for the objective ``*:* pr_auc>=value`` (0: none). A floor is a service level
    an operator sets for a model, not a change against its baseline: a model whose PR-AUC
    was always 0.62 is not drifting."""
    objectives: str = setting(
        "",
        "DRIFTWATCH_PERF_OBJECTIVES",
        "Per-model performance objectives, `;`-separated: `tenant:model metric>=value` "
        "(`*` matches any tenant or model; metrics `pr_auc`, `accuracy`), e.g. "
        "`acme:fraud pr_auc>=0.7; *:* accuracy>=0.8`. Breaches are incidents of their own, "
        "never drift, never a reason to retrain.",
    )
    """Performance objectives per (tenant, model): see :func:`parse_objectives`."""
    min_floor_positives: int = 30
    """Labelled positives a window needs before a PR-AUC objective is tested."""
    sequential_alpha_share: float = setting(
        0.25,
        "DRIFTWATCH_PERF_SEQUENTIAL_ALPHA_SHARE",
        "Share of the performance alpha spent on the sequential test of each window's error "
        "rate at every label (anytime-valid); the label-count looks and the span test share "
        "the rest. 0 turns "
        "it off.",
    )
    """Share of ``alpha`` spent on the within-window sequential test of the error rate
    (``streams.sequential``: valid at every label, however many); the milestone and final
    looks and the span test share the rest."""
    estimate_max_label_rate: float = setting(
        0.5,
        "DRIFTWATCH_ESTIMATE_MAX_LABEL_RATE",
        "Closed windows labelled less than this share get label-free (CBPE) estimates.",
    )
    """A closed window with fewer labels than this share gets a label-free (CBPE) estimate."""

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        if self.min_labels < 1 or self.max_looks < 1 or self.min_floor_positives < 1:
            raise ValueError("min_labels, max_looks and min_floor_positives must be >= 1")
        if self.label_horizon_days < 0 or self.join_retention_days <= 0:
            raise ValueError("label_horizon_days must be >= 0, join_retention_days > 0")
        if not 0 <= self.sequential_alpha_share < 1:
            raise ValueError("sequential_alpha_share must be in [0, 1)")
        if not 0 <= self.estimate_max_label_rate <= 1:
            raise ValueError("estimate_max_label_rate must be in [0, 1]")
        if self.min_accuracy_drop < 0 or self.min_pr_auc_drop < 0:
            raise ValueError("min_accuracy_drop and min_pr_auc_drop must be >= 0")
        if self.relative_error_rise < 0 or self.span_windows < 0:
            raise ValueError("relative_error_rise and span_windows must be >= 0")
        if not 0 <= self.pr_auc_floor <= 1:
            raise ValueError("pr_auc_floor must be in [0, 1]")
        parse_objectives(self.objectives)  # raises ValueError for a malformed rule

    def objectives_for(self, tenant: str, model: str) -> list[Objective]:
        """The objectives that apply to a model: the rules that match it, the most specific
        one per metric, and ``pr_auc_floor`` when no rule names PR-AUC."""
        best: dict[str, tuple[int, Objective]] = {}
        for o in parse_objectives(self.objectives):
            if o.tenant in ("*", tenant) and o.model in ("*", model):
                rank = (o.tenant != "*") * 2 + (o.model != "*")
                if o.metric not in best or rank >= best[o.metric][0]:
                    best[o.metric] = (rank, o)
        if "pr_auc" not in best and self.pr_auc_floor > 0:
            best["pr_auc"] = (-1, Objective("*", "*", "pr_auc", self.pr_auc_floor))
        return [o for _, (_, o) in sorted(best.items())]

    @property
    def span_looks(self) -> int:
        """Span tests per window: one at its close, or none when ``span_windows`` < 2."""
        return 1 if self.span_windows >= 2 else 0

    @property
    def look_alpha(self) -> float:
        """Alpha of one look: the milestone looks, the final one and the span test share
        what the sequential test leaves of ``alpha``.

        >>> round(PerformanceConfig().look_alpha * 1e6, 2)  # 0.001 * 0.75 / (6 + 1 + 1)
        93.75
        """
        looks = self.max_looks + 1 + self.span_looks
        return self.alpha * (1 - self.sequential_alpha_share) / looks

    @property
    def objective_alpha(self) -> float:
        """Alpha of an objective's test at a look: objectives are their own family (never
        drift), tested at the milestone and final looks only, so the span test leaves their
        budget as it was."""
        return self.alpha * (1 - self.sequential_alpha_share) / (self.max_looks + 1)

    @property
    def estimate_alpha(self) -> float:
        """Alpha of a label-free (CBPE) estimate's test: a warning, never a retraining, on its
        own budget (one test per closed window)."""
        return self.alpha / (self.max_looks + 1)

    @property
    def sequential_alpha(self) -> float:
        """Alpha of the sequential test's martingale; the same again goes to the upper bound
        of the baseline's error rate it tests against (the two errors add)."""
        return self.alpha * self.sequential_alpha_share / 2

    def milestone(self, look: int) -> int:
        """Labelled count at which look number ``look`` (0-based) happens.

        >>> [PerformanceConfig().milestone(k) for k in range(3)]
        [100, 200, 400]
        """
        return self.min_labels << look


OBJECTIVE_METRICS = ("accuracy", "pr_auc")


@dataclass(frozen=True, slots=True)
class Objective:
    """A floor an operator sets for a model's realised performance."""

    tenant: str
    model: str
    metric: str
    floor: float


_OBJECTIVE = re.compile(r"^\s*([^:\s]+):([^\s]+)\s+([a-z_]+)\s*>=\s*([0-9.]+)\s*$")


@functools.lru_cache(maxsize=64)
def parse_objectives(text: str) -> tuple[Objective, ...]:
    """``tenant:model metric>=value`` rules separated by ``;`` (``*`` for any).

    >>> parse_objectives("acme:fraud pr_auc>=0.7; *:* accuracy>=0.8")[1]
    Objective(tenant='*', model='*', metric='accuracy', floor=0.8)
    >>> parse_objectives("acme:fraud auc>0.7")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: objective 'acme:fraud auc>0.7': expected 'tenant:model metric>=value' ...
    """
    out = []
    for rule in (r for r in text.split(";") if r.strip()):
        m = _OBJECTIVE.match(rule)
        ok = m is not None and m.group(3) in OBJECTIVE_METRICS
        floor = float(m.group(4)) if ok and m is not None and m.group(4).count(".") <= 1 else -1
        if m is None or not ok or not 0 <= floor <= 1:
            raise ValueError(
                f"objective {rule.strip()!r}: expected 'tenant:model metric>=value' with "
                f"metric one of {', '.join(OBJECTIVE_METRICS)} and value in [0, 1]"
            )
        out.append(Objective(m.group(1), m.group(2), m.group(3), floor))
    return tuple(out)
