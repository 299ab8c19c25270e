"""Building a :class:`~driftwatch.report.model.ReportData` from detection state.

The same code serves the offline report (a backtest's stores) and the live one (a worker's
RocksDB partitions, through :mod:`streams.views`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from driftwatch.report.model import (
    Distribution,
    FeatureReport,
    IncidentSpan,
    ModelMarker,
    PerformancePoint,
    ReportData,
    TestPoint,
)
from schemas import parse_timestamp
from streams import views
from streams.config import PerformanceConfig, parse_objectives
from streams.state import FeatureWindow

MAIN_TESTS = ("ks", "chi2")


def _point(window: float, fw: FeatureWindow) -> TestPoint | None:
    for test in (*MAIN_TESTS, "missing_rate"):
        r = fw.results.get(test)
        if r is None:
            continue
        d = views.result_dict(test, r)
        return TestPoint(
            window_start=window,
            statistic=float(d["effect_size"]),
            p_value=None if d["p_value"] is None else float(d["p_value"]),
            threshold=float(d["threshold"]),
            drifting=bool(d["drifting"])
            or any(bool(views.result_dict(t, v)["drifting"]) for t, v in fw.results.items()),
            test=test,
            count=int(d["count"]),
        )
    return None


def _spans(state: dict[str, Any] | None) -> list[IncidentSpan]:
    if state is None:
        return []
    out = []
    for row in [*state["open_incidents"], *state["recent_incidents"]]:
        is_open = row["status"] == "open"
        out.append(
            IncidentSpan(
                drift_id=row["drift_id"],
                feature=row["feature"],
                test=row["test"] or row.get("signal") or "",
                start=parse_timestamp(row["opened_window"]),
                end=None if is_open else parse_timestamp(row["closed_at"]),
                severity=row["severity"],
                confirmed=bool(row["confirmed"]),
                persistence=int(row["persistence"]),
                open=is_open,
                impact=row.get("impact"),
                importance=row.get("importance"),
                importance_source=row.get("importance_source"),
                segment=row.get("segment"),
            )
        )
    return out


def collect(
    drift: views.KeyValues,
    perf: views.KeyValues,
    pcfg: PerformanceConfig,
    tenant: str,
    model: str,
    *,
    source: str,
    markers: Iterable[ModelMarker] = (),
    active_version: str | None = None,
    settings: dict[str, str] | None = None,
    now: float | None = None,
    importances: Mapping[str, float] | None = None,
) -> ReportData | None:
    """The report of one model; None when there is no state for it. ``importances``: the
    registry's feature importances of the active version, if known (incident ranking)."""
    cfg = pcfg.engine
    st = views.stream(drift, tenant, model)
    status = views.drift_status(drift, perf, cfg, tenant, model, importances=importances)
    history = views.performance_history(perf, pcfg, tenant, model)
    if st is None and history is None:
        return None
    incidents = _spans(status)
    drifted = {i.feature for i in incidents if i.feature is not None}
    features: list[FeatureReport] = []
    windows = views.feature_windows(drift, tenant, model)
    first: float | None = None
    last: float | None = None
    for feature, kind in sorted((st.features if st is not None else {}).items()):
        fws = windows.get(feature, {})
        points = [p for w, fw in fws.items() if (p := _point(w, fw)) is not None]
        if points:
            first = min(first or points[0].window_start, points[0].window_start)
            last = max(last or points[-1].window_start, points[-1].window_start)
        dist = None
        if feature in drifted:
            drifting = [p for p in points if p.drifting and p.test in MAIN_TESTS]
            if drifting:
                worst = max(drifting, key=lambda p: p.statistic)
                base = views.merged_baseline(cfg, fws, worst.window_start)
                if base is not None:
                    summary, b_start, b_end = base
                    k, labels, b_shares, w_shares = views.distribution(
                        fws[worst.window_start].summary, summary
                    )
                    dist = Distribution(
                        k, labels, b_shares, w_shares, worst.window_start, b_start, b_end
                    )
        features.append(FeatureReport(feature, kind, points, dist))
    performance = [
        PerformancePoint(
            window_start=parse_timestamp(r["window_start"]),
            model_version=str(r["model_version"]),
            predictions=int(r["predictions"]),
            labelled=int(r["labelled"]),
            accuracy=r["accuracy"],
            pr_auc=r["pr_auc"],
            pr_auc_error_bound=r["pr_auc_error_bound"],
            roc_auc=r["roc_auc"],
            estimated_accuracy=r.get("estimated_accuracy"),
            estimated_pr_auc=r.get("estimated_pr_auc"),
        )
        for r in history or []
    ]
    versions = sorted({p.model_version for p in performance} | (
        {st.model_version} if st is not None and st.model_version else set()
    ))  # fmt: skip
    all_markers = list(markers)
    if not all_markers:
        # Offline there is no model-events topic: mark where each version first served.
        seen: dict[str, float] = {}
        for row in performance:
            seen.setdefault(row.model_version, row.window_start)
        all_markers = [
            ModelMarker(at, "first seen", version, None, "first window with its predictions")
            for version, at in sorted(seen.items(), key=lambda kv: kv[1])
        ][1:]
    if performance:
        first = min(first or performance[0].window_start, performance[0].window_start)
        last = max(last or performance[-1].window_start, performance[-1].window_start)
    return ReportData(
        tenant=tenant,
        model=model,
        generated_at=time.time() if now is None else now,
        window_seconds=cfg.window_seconds,
        source=source,
        first_window=first,
        last_window=last,
        versions=versions,
        active_version=active_version or (st.model_version if st is not None else None),
        features=features,
        incidents=incidents,
        performance=performance,
        markers=sorted(all_markers, key=lambda m: m.at),
        settings=settings or default_settings(pcfg),
    )


def default_settings(pcfg: PerformanceConfig) -> dict[str, str]:
    cfg = pcfg.engine
    return {
        "window": f"{cfg.window_seconds / 3600:g} h",
        "baseline": f"{cfg.baseline_start_days:g}-{cfg.baseline_end_days:g} days before",
        "alpha (features, FDR per model-window)": f"{cfg.alpha:g}",
        "minimum effect": f"{cfg.min_effect_size:g}",
        "confirmation": f"{cfg.confirm_windows} windows",
        "segment columns": ", ".join(cfg.segment_column_names) or "none",
        "alpha (performance, per window and version)": f"{pcfg.alpha:g}",
        "minimum accuracy drop": f"{pcfg.min_accuracy_drop:g}",
        "performance objectives": "; ".join(
            f"{o.tenant}:{o.model} {o.metric}>={o.floor:g}"
            for o in parse_objectives(pcfg.objectives)
        )
        + (f"; *:* pr_auc>={pcfg.pr_auc_floor:g}" if pcfg.pr_auc_floor > 0 else "")
        or "none",
    }
