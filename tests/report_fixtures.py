"""Seeded synthetic report data for the renderer's tests and benchmark.

``synthetic_report()`` builds what a 90-day backtest of one model with 50 features would show:
quiet features whose statistic wanders below the effect floor, ``drifting`` features that
shift at some day (some recover, some stay open), two model versions with their performance
(labels arriving late, so the newest windows have only CBPE estimates), a promotion, a rejected
challenger and a rollback. Realistic enough to look at, and the size the report must handle.
"""

from __future__ import annotations

import hashlib
import itertools
import math

import numpy as np

from driftwatch.report.model import (
    Distribution,
    FeatureReport,
    IncidentSpan,
    ModelMarker,
    PerformancePoint,
    ReportData,
    TestPoint,
)

DAY = 86400.0
START = 1_735_689_600.0  # 2025-01-01T00:00:00Z
EFFECT_FLOOR = 0.05
CONFIRM_AFTER = 7
CLOSE_AFTER = 2

_NAMES = (
    "amount", "merchant_category", "country", "device_type", "account_age_days",
    "txn_count_24h", "avg_amount_30d", "hour_of_day", "card_present", "channel",
    "distance_from_home_km", "velocity_1h", "email_domain", "ip_risk_score",
    "billing_shipping_match", "customer_tenure_months", "num_failed_logins",
    "browser", "os_version", "currency",
)  # fmt: skip
_CATEGORIES = {
    "merchant_category": ["grocery", "travel", "electronics", "fuel", "restaurants",
                          "fashion", "gaming", "pharmacy", "utilities", "other"],
    "country": ["US", "GB", "DE", "FR", "NL", "ES", "IT", "CA", "BR", "IN", "JP", "AU"],
    "device_type": ["desktop", "mobile", "tablet", "pos"],
    "channel": ["web", "app", "store", "phone"],
    "email_domain": ["gmail.com", "outlook.com", "yahoo.com", "icloud.com", "corp", "other"],
    "browser": ["chrome", "safari", "firefox", "edge", "other"],
    "card_present": ["yes", "no"],
    "currency": ["USD", "EUR", "GBP", "JPY", "CAD", "BRL"],
}  # fmt: skip
_SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")


def _feature_names(n: int) -> list[str]:
    names = list(_NAMES[:n])
    i = 0
    while len(names) < n:
        names.append(f"{_NAMES[i % len(_NAMES)]}_{i // len(_NAMES) + 2}")
        i += 1
    return names


def _drift_id(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _severity(stat: float, count: int) -> str:
    """The README's rule: effect net of sampling noise (1.36/sqrt(n_eff)), banded."""
    n_eff = count * 4 * count / (5 * count)
    net = stat - 1.36 / math.sqrt(max(n_eff, 1.0))
    if net < 0.06:
        return "LOW"
    if net < 0.15:
        return "MEDIUM"
    if net < 0.30:
        return "HIGH"
    return "CRITICAL"


def _ks_p(stat: float, count: int) -> float:
    n_eff = count * 0.8
    return float(min(1.0, 2.0 * math.exp(-2.0 * n_eff * stat * stat)))


def _spans(name: str, test: str, points: list[TestPoint], window: float) -> list[IncidentSpan]:
    """Incidents as the engine forms them: open on a drifting window, close after 2 clean."""
    spans: list[IncidentSpan] = []
    cur: list[TestPoint] = []
    clean = 0

    def close(open_: bool) -> None:
        worst = max(_SEVERITIES.index(_severity(p.statistic, p.count)) for p in cur)
        end = None if open_ else cur[-1].window_start + window
        spans.append(
            IncidentSpan(
                drift_id=_drift_id(name, test, str(cur[0].window_start)),
                feature=name,
                test=test,
                start=cur[0].window_start,
                end=end,
                severity=_SEVERITIES[worst],
                confirmed=len(cur) >= CONFIRM_AFTER,
                persistence=len(cur),
                open=open_,
            )
        )

    for p in points:
        if p.drifting:
            cur.append(p)
            clean = 0
        elif cur:
            clean += 1
            if clean >= CLOSE_AFTER:
                close(False)
                cur = []
                clean = 0
    if cur:
        close(True)
    return spans


def _numeric_distribution(
    rng: np.random.Generator, shift: float, window_start: float
) -> Distribution:
    edges = np.linspace(-3.0, 3.0, 31)
    mids = (edges[:-1] + edges[1:]) / 2
    scale = float(rng.uniform(20.0, 120.0))
    base = np.exp(-0.5 * mids**2)
    win = np.exp(-0.5 * ((mids - shift) / (1.0 + 0.2 * abs(shift))) ** 2)
    base = base * rng.uniform(0.9, 1.1, base.size)
    win = win * rng.uniform(0.85, 1.15, win.size)
    labels = [
        f"[{(a + 3) * scale:.1f}, {(b + 3) * scale:.1f})" for a, b in itertools.pairwise(edges)
    ]
    return Distribution(
        kind="numeric",
        labels=labels,
        baseline=[round(float(v), 5) for v in base / base.sum()],
        window=[round(float(v), 5) for v in win / win.sum()],
        window_start=window_start,
        baseline_start=window_start - 60 * DAY,
        baseline_end=window_start - 30 * DAY,
    )


def _categorical_distribution(
    rng: np.random.Generator, cats: list[str], window_start: float
) -> Distribution:
    base = rng.dirichlet(np.full(len(cats), 3.0))
    moved = rng.dirichlet(np.full(len(cats), 1.0))
    win = 0.45 * base + 0.55 * moved
    return Distribution(
        kind="categorical",
        labels=list(cats),
        baseline=[round(float(v), 5) for v in base],
        window=[round(float(v), 5) for v in win],
        window_start=window_start,
        baseline_start=window_start - 60 * DAY,
        baseline_end=window_start - 30 * DAY,
    )


def _performance(
    rng: np.random.Generator, days: int, versions: list[str], promote_day: int
) -> list[PerformancePoint]:
    out: list[PerformancePoint] = []
    concept_day = int(days * 0.55)
    for d in range(days):
        ws = START + d * DAY
        for vi, version in enumerate(versions):
            live = (vi == 0 and d < promote_day) or (vi == 1 and d >= promote_day)
            preds = int(rng.normal(1500 if live else 150, 60 if live else 15))
            age = days - 1 - d  # labels arrive 1-3 days later
            rate = 0.0 if age < 1 else 0.35 if age < 2 else 0.8 if age < 4 else 0.97
            labelled = int(preds * rate)
            if vi == 0:
                acc_mu = 0.94 - (0.09 if d >= concept_day else 0.0)
                pr_mu = 0.82 - (0.16 if d >= concept_day else 0.0)
            else:
                acc_mu, pr_mu = 0.935, 0.80
            acc_mu += 0.006 * math.sin(2 * math.pi * d / 7)
            acc: float | None = None
            pr: float | None = None
            bound: float | None = None
            roc: float | None = None
            if labelled >= 50:
                acc = round(float(acc_mu + rng.normal(0, 0.012)), 4)
                pr = round(float(pr_mu + rng.normal(0, 0.025)), 4)
                bound = round(float(0.9 / math.sqrt(labelled) + rng.uniform(0.004, 0.012)), 4)
                roc = round(float(min(0.99, pr + 0.1 + rng.normal(0, 0.01))), 4)
            est_acc: float | None = None
            est_pr: float | None = None
            if labelled < preds / 2:
                est_acc = round(float(acc_mu + 0.03 + rng.normal(0, 0.008)), 4)
                est_pr = round(float(pr_mu + 0.05 + rng.normal(0, 0.02)), 4)
            out.append(
                PerformancePoint(
                    window_start=ws,
                    model_version=version,
                    predictions=preds,
                    labelled=labelled,
                    accuracy=acc,
                    pr_auc=pr,
                    pr_auc_error_bound=bound,
                    roc_auc=roc,
                    estimated_accuracy=est_acc,
                    estimated_pr_auc=est_pr,
                )
            )
    return out


def synthetic_report(
    days: int = 90, features: int = 50, drifting: int = 10, seed: int = 0
) -> ReportData:
    """A seeded, realistic ``ReportData`` for one model (``acme/fraud``), daily windows."""
    rng = np.random.default_rng(seed)
    names = _feature_names(features)
    drift_idx = set(rng.permutation(features)[: min(drifting, features)].tolist())
    feature_reports: list[FeatureReport] = []
    incidents: list[IncidentSpan] = []
    last_start = START + (days - 1) * DAY
    for i, name in enumerate(names):
        base_name = name.rsplit("_", 1)[0] if name not in _CATEGORIES else name
        cats = _CATEGORIES.get(name) or _CATEGORIES.get(base_name)
        kind = "categorical" if cats else "numeric"
        test = "chi2" if cats else "ks"
        if i in drift_idx and i % 7 == 3:
            test = "missing_rate"
        level = float(rng.uniform(0.008, 0.025))
        is_drift = i in drift_idx and days >= 10
        d0 = int(rng.integers(int(days * 0.45), max(int(days * 0.9), int(days * 0.45) + 1)))
        recover = bool(rng.random() < 0.4)
        d1 = min(days, d0 + int(rng.integers(6, 16))) if recover else days
        magnitude = float(rng.choice([0.07, 0.12, 0.2, 0.3, 0.45]))
        points: list[TestPoint] = []
        for d in range(days):
            count = int(rng.normal(1500, 80))
            stat = abs(level + rng.normal(0, 0.007))
            if is_drift and d0 <= d < d1:
                ramp = min(1.0, (d - d0 + 1) / 3)
                stat = abs(magnitude * ramp + rng.normal(0, 0.015 + magnitude * 0.05))
            stat = round(min(stat, 1.0), 4)
            p = _ks_p(stat, count)
            points.append(
                TestPoint(
                    window_start=START + d * DAY,
                    statistic=stat,
                    p_value=float(f"{p:.3g}"),
                    threshold=EFFECT_FLOOR,
                    drifting=stat >= EFFECT_FLOOR and p < 0.001,
                    test=test,
                    count=count,
                )
            )
        dist: Distribution | None = None
        spans = _spans(name, test, points, DAY)
        if spans:
            worst = max(points, key=lambda q: q.statistic)
            dist = (
                _categorical_distribution(rng, cats, worst.window_start)
                if cats
                else _numeric_distribution(rng, 0.5 + 3 * worst.statistic, worst.window_start)
            )
            incidents.extend(spans)
        feature_reports.append(
            FeatureReport(name=name, kind=kind, points=points, distribution=dist)
        )

    versions = ["v1", "r1"]
    promote_day = min(days - 1, int(days * 0.65))
    performance = _performance(rng, days, versions, promote_day) if days else []
    concept_day = int(days * 0.55)
    if days >= 10:
        incidents.append(
            IncidentSpan(
                drift_id=_drift_id("performance", "v1", "accuracy_drop"),
                feature=None,
                test="accuracy_drop",
                start=START + (concept_day + 1) * DAY,
                end=START + promote_day * DAY,
                severity="HIGH",
                confirmed=True,
                persistence=promote_day - concept_day - 1,
                open=False,
            )
        )
        incidents.append(
            IncidentSpan(
                drift_id=_drift_id("performance", "v1", "pr_auc_drop"),
                feature=None,
                test="pr_auc_drop",
                start=START + (concept_day + 2) * DAY,
                end=START + promote_day * DAY,
                severity="MEDIUM",
                confirmed=True,
                persistence=promote_day - concept_day - 2,
                open=False,
            )
        )
    markers: list[ModelMarker] = []
    if days >= 10:
        t_prom = START + promote_day * DAY + 5 * 3600
        markers = [
            ModelMarker(
                at=START + (concept_day + promote_day) / 2 * DAY + 9 * 3600,
                action="challenger_rejected",
                version="r0",
                previous="v1",
                reason="challenger PR-AUC 0.646 < 0.70 floor (champion 0.662 on the same holdout)",
            ),
            ModelMarker(
                at=t_prom,
                action="promoted",
                version="r1",
                previous="v1",
                reason="challenger PR-AUC 0.808 >= floor; champion 0.667",
            ),
            ModelMarker(
                at=t_prom + 1.2 * DAY,
                action="validated",
                version="r1",
                previous="v1",
                reason="r1 held up for 24 h of its own traffic (1,412 labels)",
            ),
        ]
    return ReportData(
        tenant="acme",
        model="fraud",
        generated_at=START + days * DAY + 2 * 3600 + 17 * 60,
        window_seconds=DAY,
        source="backtest of predictions.jsonl",
        first_window=START if days else None,
        last_window=last_start if days else None,
        versions=versions if days else [],
        active_version="r1" if days else None,
        features=feature_reports,
        incidents=incidents,
        performance=performance,
        markers=markers,
        settings={
            "window": "1 day (UTC midnight), allowed lateness 1 h",
            "baseline": "windows 60-30 days earlier, same weekday, >= 3 windows",
            "alpha": "0.01 per model-window (Benjamini-Hochberg), half for sub-day looks",
            "effect floor": "0.05 (KS / total variation / missing-rate change)",
            "confirm after": f"{CONFIRM_AFTER} drifting windows",
            "close after": f"{CLOSE_AFTER} clean windows",
            "performance alpha": "0.001 per window and version",
            "min accuracy drop": "0.05",
            "min PR-AUC drop": "0.05; floor 0.70",
        },
    )
