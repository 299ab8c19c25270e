"""Whether a challenger may replace the champion, and whether a promoted model keeps its word.

Pure: figures in, verdicts out. The gate is the seed plan's ModelValidator (PR-AUC >= 0.70)
plus a champion comparison on the same recent holdout; the post-deploy check watches the new
version's realised performance for a period of event time and calls for a rollback when it is
significantly and materially worse than what its predecessor did on that holdout.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from schemas import parse_timestamp
from streams.join import binary_label
from streams.perf_drop_tests import proportion_drop_test
from streams.performance import THRESHOLD, PerformanceSummary, check_score


@dataclass(frozen=True)
class GatePolicy:
    min_pr_auc: float = 0.70
    """The seed plan's absolute floor for a model to serve."""
    champion_margin: float = 0.01
    """A challenger may be at most this much PR-AUC below the champion on the same holdout."""


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str
    challenger: dict[str, float]
    champion: dict[str, float] | None


def gate(
    challenger: dict[str, float], champion: dict[str, float] | None, policy: GatePolicy
) -> GateResult:
    """
    >>> gate({"pr_auc": 0.81}, {"pr_auc": 0.64}, GatePolicy()).passed
    True
    >>> gate({"pr_auc": 0.66}, {"pr_auc": 0.50}, GatePolicy()).reason
    'challenger PR-AUC 0.660 < 0.70 floor'
    >>> gate({"pr_auc": 0.75}, {"pr_auc": 0.80}, GatePolicy()).reason
    'challenger PR-AUC 0.750 < champion 0.800 - margin 0.01 on the same holdout'

    The champion's figure is the one computed the challenger's way on the same rows
    (``champion_pr_auc`` in the challenger's metrics: exact, as the challenger's), when there
    is one: ``holdout_metrics`` bins scores (the post-deploy check's way), and on scores
    packed close together it read 0.05 below the exact figure, five times the margin.

    >>> gate({"pr_auc": 0.75, "champion_pr_auc": 0.80}, {"pr_auc": 0.74}, GatePolicy()).passed
    False
    """
    pr = challenger.get("pr_auc", math.nan)
    if not pr >= policy.min_pr_auc:  # also NaN
        return GateResult(
            False,
            f"challenger PR-AUC {pr:.3f} < {policy.min_pr_auc:.2f} floor",
            challenger,
            champion,
        )
    champ = challenger.get("champion_pr_auc")
    if champ is None or not math.isfinite(champ):
        champ = None if champion is None else champion.get("pr_auc")
    if champ is not None and not math.isfinite(champ):
        champ = None  # no figure to compare with (a NaN compares as passing)
    if champ is not None and pr < champ - policy.champion_margin:
        return GateResult(
            False,
            f"challenger PR-AUC {pr:.3f} < champion {champ:.3f} - margin "
            f"{policy.champion_margin:.2f} on the same holdout",
            challenger,
            champion,
        )
    vs = "no champion figures" if champ is None else f"champion {champ:.3f}"
    return GateResult(True, f"challenger PR-AUC {pr:.3f} >= floor; {vs}", challenger, champion)


def holdout_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and PR-AUC of ``scores`` on a holdout, as the gate and the check read them."""
    s = PerformanceSummary()
    s.add_predictions(scores)
    s.add_labels(scores, labels)
    out: dict[str, float] = {"n": float(s.labelled)}
    for name, value in (("accuracy", s.accuracy()), ("pr_auc", s.pr_auc())):
        if value is not None:
            out[name] = value
    return out


@dataclass(frozen=True)
class PostDeployPolicy:
    window_hours: float = 24.0
    """Predictions of the new version made this long (event time) from its first one served
    are watched."""
    settle_days: float = 3.0
    """After the window, labels get this long to arrive before the check passes."""
    max_drop: float = 0.05
    """Roll back when accuracy is this much (absolute) below the predecessor's, significantly."""
    alpha: float = 0.01
    min_labels: int = 100
    max_wait_days: float = 7.0
    """If the new version serves nothing for this long after the window could have closed,
    the watch ends (inconclusive) instead of lasting forever."""


class Verdict(StrEnum):
    WATCHING = "watching"
    PASSED = "passed"
    ROLLBACK = "rollback"
    INCONCLUSIVE = "inconclusive"
    """The window closed (or no traffic came) with too few labels to judge: the watch ends
    without a verdict on quality, and says so."""


@dataclass
class PostDeployCheck:
    """The watch over one promotion.

    >>> import numpy as np
    >>> check = PostDeployCheck("acme", "fraud", "r1", "v1", 0.0, {"accuracy": 0.95, "n": 2000})
    >>> rng = np.random.default_rng(1)
    >>> for i in range(300):  # the new version is right only 70 % of the time
    ...     _ = check.observe({"event_id": f"e{i}", "model_version": "r1", "score": 0.9,
    ...                        "prediction_timestamp": 60.0 * i, "label": int(rng.random() < 0.7)})
    >>> check.verdict(now=7200.0)[0]
    <Verdict.ROLLBACK: 'rollback'>
    """

    tenant: str
    model: str
    version: str
    previous: str | None
    promoted_at: float
    baseline: dict[str, float]
    """The predecessor's holdout figures: ``accuracy`` and ``n``."""
    policy: PostDeployPolicy = field(default_factory=PostDeployPolicy)
    request_id: str | None = None
    """The retrain request that promoted it: the verdict is published against it."""
    counted: dict[str, bool] = field(default_factory=dict, repr=False)
    """The rows in the window, by event id (at-least-once delivery: each counts once):
    whether the score's side of the threshold matched the label (their prediction times are
    in ``_by_time``)."""
    correct: int = 0
    """How many of ``counted`` were right (accuracy as :func:`holdout_metrics` reads it)."""
    _by_time: list[tuple[float, str]] = field(default_factory=list, repr=False)
    """``counted`` as a heap, latest prediction first: the rows a moved window drops."""
    warnings: list[str] = field(default_factory=list)
    """Label-free (estimated) performance warnings raised on the new version meanwhile."""
    first_served: float | None = None
    """Prediction time of the new version's first prediction seen: serving switches when it
    hears of the promotion, so the watched window starts there, not at the promotion."""

    @property
    def window_start(self) -> float:
        return self.promoted_at if self.first_served is None else self.first_served

    @property
    def window_end(self) -> float:
        return self.window_start + self.policy.window_hours * 3600

    @property
    def labelled(self) -> int:
        return len(self.counted)

    def observe(self, row: dict[str, Any]) -> bool:
        """Count a joined row if it is one of the watched predictions; True if it was.

        The window is the new version's own first ``window_hours`` of prediction (event)
        time, whatever order the labels arrive in: the earliest prediction seen so far starts
        it, and when an earlier one arrives, rows counted past the window's new end leave the
        count (kept, a few early labels of a later day rolled back a version whose first 24 h
        were fine)."""
        if row.get("model_version") != self.version:
            return False  # the predecessor's traffic (or another version's) is not evidence
        ts = parse_timestamp(row["prediction_timestamp"], "prediction_timestamp")
        if ts < self.promoted_at:
            return False
        event_id = str(row["event_id"])
        score = float(row["score"])
        check_score(score)
        right = (score >= THRESHOLD) == (binary_label(row["label"]) == 1)
        if self.first_served is None or ts < self.first_served:
            self.first_served = ts  # labels arrive out of order: the earliest seen so far
            self._drop_past(self.window_end)
        if ts >= self.window_end or event_id in self.counted:
            return False
        self.counted[event_id] = right
        self.correct += right
        heapq.heappush(self._by_time, (-ts, event_id))
        return True

    def _drop_past(self, end: float) -> None:
        """Uncount the rows predicted at or after ``end`` (the window's end moved back)."""
        while self._by_time and -self._by_time[0][0] >= end:
            _, event_id = heapq.heappop(self._by_time)
            right = self.counted.pop(event_id)
            self.correct -= right

    def verdict(self, now: float) -> tuple[Verdict, str, dict[str, float]]:
        """At event time ``now``: keep watching, passed, or roll back (with the figures)."""
        p, labelled = self.policy, self.labelled
        figures: dict[str, float] = {"labelled": float(labelled)}
        acc = self.correct / labelled if labelled else None
        base_acc, base_n = self.baseline.get("accuracy"), int(self.baseline.get("n", 0))
        if acc is not None:
            figures["accuracy"] = acc
        if base_acc is not None:
            figures["baseline_accuracy"] = base_acc
        if acc is not None and base_acc is not None and base_n and labelled >= p.min_labels:
            z, pv = proportion_drop_test(round(base_acc * base_n), base_n, self.correct, labelled)
            figures |= {"z": z, "p_value": pv}
            if base_acc - acc >= p.max_drop and pv < p.alpha:
                return (
                    Verdict.ROLLBACK,
                    f"{self.version} accuracy {acc:.3f} on {labelled} labels vs "
                    f"{base_acc:.3f} for {self.previous} (p={pv:.1e})",
                    figures,
                )
        settled = self.first_served is not None and now >= self.window_end + p.settle_days * 86_400
        if settled and labelled < p.min_labels:
            return (
                Verdict.INCONCLUSIVE,
                f"only {labelled} labels of {self.version}'s own traffic: too few to judge",
                figures,
            )
        idle_until = self.window_end + (p.settle_days + p.max_wait_days) * 86_400
        if self.first_served is None and now >= idle_until:
            return Verdict.INCONCLUSIVE, f"{self.version} served no traffic to check", figures
        if settled:
            warned = f"; label-free warnings: {', '.join(self.warnings)}" if self.warnings else ""
            return (
                Verdict.PASSED,
                f"{self.version} held up for {p.window_hours:.0f} h of its own traffic "
                f"({labelled} labels){warned}",
                figures,
            )
        return Verdict.WATCHING, "", figures  # no evidence yet is not a pass
