"""What a report shows, independent of where it came from (a backtest or a live worker).

Timestamps are epoch seconds (event time). Everything is plain data so the renderer is a pure
function of it and tests can build reports of any size without running an engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TestPoint:
    """One final (end-of-window) test of one feature."""

    window_start: float
    statistic: float
    """The test statistic shown on the chart: the effect size the drift decision uses (KS
    distance for numeric features, total variation distance for categorical ones, the
    absolute change for missing rates), in [0, 1]."""
    p_value: float | None
    threshold: float
    """The effect floor: drift needs ``statistic`` >= this (and significance)."""
    drifting: bool
    test: str
    """``ks``, ``chi2`` or ``missing_rate``."""
    count: int
    """Values in the window."""


@dataclass(frozen=True)
class IncidentSpan:
    drift_id: str
    feature: str | None
    """None for performance incidents."""
    test: str
    start: float
    """Start of the first window found drifting."""
    end: float | None
    """End of the last window found drifting; None while open."""
    severity: str
    """Highest severity reached: LOW, MEDIUM, HIGH, CRITICAL."""
    confirmed: bool
    persistence: int
    open: bool
    impact: float | None = None
    """importance x effect size (open feature incidents whose importance is known)."""
    importance: float | None = None
    importance_source: str | None = None
    """``registry``, ``association`` or ``unknown``; None for performance incidents."""
    segment: dict[str, str] | None = None
    """The segment a segment-drift incident is in (``{column: value}``); None: all traffic."""


@dataclass(frozen=True)
class Distribution:
    """Baseline vs tested window for one feature: numeric as shares per bin over common
    edges, categorical as shares per category (``labels``)."""

    kind: str
    """``numeric`` or ``categorical``."""
    labels: list[str]
    """Bin ranges (``[a, b)``) or category names, in order."""
    baseline: list[float]
    """Share of the baseline in each bin/category (sums to ~1)."""
    window: list[float]
    window_start: float
    baseline_start: float
    baseline_end: float


@dataclass(frozen=True)
class FeatureReport:
    name: str
    kind: str
    """``numeric`` or ``categorical``."""
    points: list[TestPoint]
    """Oldest first; one per tested window."""
    distribution: Distribution | None = None
    """For features that drifted: the window that drifted most against its baseline."""


@dataclass(frozen=True)
class PerformancePoint:
    window_start: float
    model_version: str
    predictions: int
    labelled: int
    accuracy: float | None
    pr_auc: float | None
    pr_auc_error_bound: float | None
    roc_auc: float | None
    estimated_accuracy: float | None = None
    """Label-free (CBPE) estimate, where the window had few labels when it closed."""
    estimated_pr_auc: float | None = None


@dataclass(frozen=True)
class ModelMarker:
    """A promotion or rollback (from ``model-events``), or another retraining step."""

    at: float
    action: str
    """``promoted``, ``rolled_back``, ``challenger_rejected``, ..."""
    version: str
    previous: str | None
    reason: str


@dataclass
class ReportData:
    tenant: str
    model: str
    generated_at: float
    """Wall clock (shown as "generated")."""
    window_seconds: float
    source: str
    """``backtest of P.jsonl`` or ``live worker <host>``: where the data came from."""
    first_window: float | None = None
    last_window: float | None = None
    versions: list[str] = field(default_factory=list)
    active_version: str | None = None
    features: list[FeatureReport] = field(default_factory=list)
    incidents: list[IncidentSpan] = field(default_factory=list)
    performance: list[PerformancePoint] = field(default_factory=list)
    markers: list[ModelMarker] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)
    """The detection settings that decided the results (alpha, windows, baseline, floors)."""
