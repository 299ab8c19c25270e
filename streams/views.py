"""Read-side views of the detection state: what the API answers and the report shows.

Pure functions over key-value state (:class:`KeyValues`: a worker's RocksDB partitions, or
a backtest's :class:`~streams.keyed_state.MemoryStore`), so the live API and the offline report
read the same way. Nothing here writes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import numpy as np

from schemas import format_timestamp
from streams.calibration import CalibrationMap, estimate_performance
from streams.categorical_summary import CategoricalSummary
from streams.config import EngineConfig, PerformanceConfig
from streams.importance import choose_importance, impact, rank_key
from streams.incidents import Incident
from streams.numeric_summary import NumericSummary
from streams.perf_state import (
    PerfStream,
    PerfWindow,
    history_row,
    labelled_baseline,
    perf_stream_key,
    split_incident_key,
)
from streams.performance import PerformanceSummary
from streams.segments import split_segment_feature
from streams.state import FeatureWindow, StreamState, merge_summaries, stream_key, window_key

SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
RESULT_FIELDS = (
    "statistic", "p_value", "effect_size", "threshold", "drifting", "count", "baseline_count",
)  # fmt: skip


class KeyValues(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def scan(self, prefix: str) -> Iterable[tuple[str, bytes]]: ...


def _prefix(*parts: str) -> str:
    """The key prefix of every key that starts with these parts (keys are JSON arrays)."""
    return json.dumps(list(parts))[:-1] + ", "


def streams(drift: KeyValues) -> list[StreamState]:
    """Every stream whose state is here, sorted by (tenant, model)."""
    out = [StreamState.from_bytes(raw) for _, raw in drift.scan('["s", ')]
    return sorted(out, key=lambda s: (s.tenant, s.model))


def stream(drift: KeyValues, tenant: str, model: str) -> StreamState | None:
    raw = drift.get(stream_key(tenant, model))
    return None if raw is None else StreamState.from_bytes(raw)


def perf_stream(perf: KeyValues, tenant: str, model: str) -> PerfStream | None:
    raw = perf.get(perf_stream_key(tenant, model))
    return None if raw is None else PerfStream.from_bytes(raw)


def perf_windows(perf: KeyValues, tenant: str, model: str) -> dict[float, PerfWindow]:
    out: dict[float, PerfWindow] = {}
    for key, raw in perf.scan(_prefix("pw", tenant, model)):
        out[float(json.loads(key)[3])] = PerfWindow.from_bytes(raw)
    return out


def perf_versions(perf: KeyValues, tenant: str, model: str) -> set[str]:
    """Model versions with performance windows (cheap: window headers only)."""
    out: set[str] = set()
    for _, raw in perf.scan(_prefix("pw", tenant, model)):
        out.update(PerfWindow.version_names(raw))
    return out


def feature_windows(
    drift: KeyValues, tenant: str, model: str
) -> dict[str, dict[float, FeatureWindow]]:
    """Per feature, its retained windows (oldest first)."""
    out: dict[str, dict[float, FeatureWindow]] = {}
    for key, raw in drift.scan(_prefix("w", tenant, model)):
        _, _, _, window, feature = json.loads(key)
        out.setdefault(feature, {})[float(window)] = FeatureWindow.from_bytes(raw)
    return {f: dict(sorted(ws.items())) for f, ws in sorted(out.items())}


def result_dict(test: str, values: list[Any]) -> dict[str, Any]:
    return {"test": test} | dict(zip(RESULT_FIELDS, values, strict=False))


def incident_counts(st: StreamState | None, ps: PerfStream | None) -> dict[str, int]:
    counts = dict.fromkeys(SEVERITIES, 0)
    for book in [b for b in (None if st is None else st.incidents,
                             None if ps is None else ps.incidents) if b is not None]:  # fmt: skip
        for incident in book.open.values():
            counts[incident.max_severity] = counts.get(incident.max_severity, 0) + 1
    return counts


def model_summary(
    st: StreamState | None, ps: PerfStream | None, versions: Iterable[str]
) -> dict[str, Any]:
    """One model's line in ``GET /v1/models`` (without the catalog's active version)."""
    versions = set(versions)
    if st is not None and st.model_version:
        versions.add(st.model_version)
    latest = None
    if st is not None and st.model_version:
        latest = st.model_version
    elif ps is not None and ps.latest_version:
        latest = ps.latest_version
    tenant = st.tenant if st is not None else ps.tenant if ps is not None else ""
    model = st.model if st is not None else ps.model if ps is not None else ""
    return {
        "tenant": tenant,
        "model": model,
        "versions": sorted(versions),
        "latest_version": latest,
        "open_incidents": incident_counts(st, ps),
        "last_window_tested": None
        if st is None or st.last_closed is None
        else format_timestamp(st.last_closed),
        "event_time": None
        if st is None or st.watermark is None
        else format_timestamp(st.watermark),
        "features": 0 if st is None else len(st.features),
        "events": 0 if st is None else st.events,
    }


def _ranking(
    kind: str, feature: str | None, inc: Incident, registry: Mapping[str, float] | None
) -> dict[str, Any]:
    """An open incident's rank fields: its stored importance, unless the registry (the
    active version's importances, read now) names the feature."""
    if kind != "statistical" or feature is None:
        return {"effect_size": None, "importance": None, "importance_source": None, "impact": None}
    importance, source = inc.importance, inc.importance_source or "unknown"
    if registry and feature in registry:
        importance, source = choose_importance(feature, registry, None)
    return {
        "effect_size": inc.effect_size,
        "importance": importance,
        "importance_source": source,
        "impact": impact(importance, inc.effect_size),
    }


def _incident_rows(
    st: StreamState | None,
    ps: PerfStream | None,
    window_seconds: float,
    registry: Mapping[str, float] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    open_rows: list[dict[str, Any]] = []
    recent: list[dict[str, Any]] = []
    for kind, book in (("statistical", None if st is None else st.incidents),
                       ("performance", None if ps is None else ps.incidents)):  # fmt: skip
        if book is None:
            continue
        for key, inc in book.open.items():
            last = inc.last_window if inc.last_window is not None else inc.opened_window
            feature, segment = _feature_and_segment(key, kind)
            open_rows.append(
                {
                    "drift_id": inc.drift_id,
                    "kind": kind if kind == "statistical" else split_incident_key(key)[0],
                    "feature": feature,
                    "segment": segment,
                    "model_version": split_incident_key(key)[1] if kind != "statistical" else None,
                    "signal": key if kind != "statistical" else None,
                    "test": inc.test or None,
                    "severity": inc.max_severity,
                    "confirmed": inc.confirmed,
                    "persistence": inc.persistence,
                    "opened_window": format_timestamp(inc.opened_window),
                    "last_window": format_timestamp(last),
                    "status": "open",
                }
                | _ranking(kind, feature, inc, registry)
            )
        for rec in book.closed:
            key = str(rec["k"])
            feature, segment = _feature_and_segment(key, kind)
            recent.append(
                {
                    "drift_id": rec["id"],
                    "kind": kind if kind == "statistical" else split_incident_key(key)[0],
                    "feature": feature,
                    "segment": segment,
                    "model_version": split_incident_key(key)[1] if kind != "statistical" else None,
                    "signal": key if kind != "statistical" else None,
                    "test": rec.get("t") or None,
                    "severity": rec["sev"],
                    "confirmed": rec["ok"],
                    "persistence": rec["p"],
                    "opened_window": format_timestamp(float(rec["ow"])),
                    "closed_at": format_timestamp(float(rec["cw"])),
                    "status": "resolved",
                }
            )
    open_rows.sort(key=open_incident_order)
    recent.sort(key=lambda r: r["closed_at"], reverse=True)
    return open_rows, recent


def _feature_and_segment(key: str, kind: str) -> tuple[str | None, dict[str, str] | None]:
    """An incident key's feature and segment (``{column: value}``; None: the whole traffic)."""
    if kind != "statistical":
        return None, None
    feature, column, value = split_segment_feature(key.removesuffix("#missing"))
    return feature, None if column is None or value is None else {column: value}


def open_incident_order(row: dict[str, Any]) -> tuple[Any, ...]:
    """The order of open incidents (API, report): :func:`streams.importance.rank_key` -
    impact, then severity, then feature name; incidents without an impact (performance,
    objective, unknown importance) after those with one - and then the signal and the id,
    so the order is total."""
    return (
        *rank_key(row.get("impact"), row["severity"], row.get("feature")),
        row.get("signal") or "",
        row["drift_id"],
    )


def drift_status(
    drift: KeyValues,
    perf: KeyValues,
    cfg: EngineConfig,
    tenant: str,
    model: str,
    importances: Mapping[str, float] | None = None,
) -> dict[str, Any] | None:
    """``GET /v1/models/{tenant}/{model}/drift``: incidents, open ones ranked by impact
    (:func:`open_incident_order`), and per feature its latest end-of-window tests
    (statistic, p-value, effect size, threshold). ``importances``: the registry's feature
    importances of the active version, if known (they win over what the incidents hold)."""
    st = stream(drift, tenant, model)
    ps = perf_stream(perf, tenant, model)
    if st is None and ps is None:
        return None
    open_rows, recent = _incident_rows(st, ps, cfg.window_seconds, importances)
    features: list[dict[str, Any]] = []
    if st is not None:
        closed = sorted((w for w in st.window_events if st.last_closed is not None
                         and w <= st.last_closed), reverse=True)  # fmt: skip
        for feature, kind in sorted(st.features.items()):
            latest: dict[str, Any] | None = None
            for w in closed:
                raw = drift.get(window_key(tenant, model, w, feature))
                if raw is None:
                    continue
                fw = FeatureWindow.from_bytes(raw)
                if fw.results:
                    latest = {
                        "window_start": format_timestamp(w),
                        "tests": [result_dict(t, v) for t, v in sorted(fw.results.items())],
                    }
                    break
            incident = st.incidents.open.get(feature)
            features.append(
                {
                    "feature": feature,
                    "kind": kind,
                    "latest": latest,
                    "drifting": incident is not None,
                    "drift_id": None if incident is None else incident.drift_id,
                }
            )
    return {
        "tenant": tenant,
        "model": model,
        "event_time": None
        if st is None or st.watermark is None
        else format_timestamp(st.watermark),
        "open_incidents": open_rows,
        "recent_incidents": recent,
        "features": features,
    }


def _baseline(
    cfg: EngineConfig, windows: dict[float, PerfWindow], window: float
) -> PerformanceSummary | None:
    merged, n = labelled_baseline(cfg.baseline_candidates(window), windows.get)
    return merged if n >= cfg.min_baseline_windows else None


def performance_history(
    perf: KeyValues,
    pcfg: PerformanceConfig,
    tenant: str,
    model: str,
    start: float | None = None,
    end: float | None = None,
) -> list[dict[str, Any]] | None:
    """Per window and version: realised metrics with their error bounds, and for windows
    whose labels are mostly missing the label-free (CBPE) estimates; None: unknown model."""
    windows = perf_windows(perf, tenant, model)
    if not windows and perf_stream(perf, tenant, model) is None:
        return None
    cfg = pcfg.engine
    rows: list[dict[str, Any]] = []
    calibrations: dict[float, CalibrationMap | None] = {}
    for w, win in sorted(windows.items()):
        if (start is not None and w + cfg.window_seconds <= start) or (
            end is not None and w >= end
        ):
            continue
        for version, summary in sorted(win.versions.items()):
            row = history_row(tenant, model, version, w, summary)
            row["window_end"] = format_timestamp(w + cfg.window_seconds)
            row["complete"] = win.final
            row["estimated_accuracy"] = row["estimated_pr_auc"] = None
            rate = summary.label_rate
            if summary.predictions and (rate is None or rate < pcfg.estimate_max_label_rate):
                if w not in calibrations:
                    base = _baseline(cfg, windows, w)
                    calibrations[w] = None if base is None else CalibrationMap.fit(base)
                calibration = calibrations[w]
                if calibration is not None:
                    est = estimate_performance(summary, calibration)
                    row["estimated_accuracy"] = est.get("accuracy")
                    row["estimated_pr_auc"] = est.get("pr_auc")
            rows.append({k: _finite(v) for k, v in row.items()})
    return rows


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def merged_baseline(
    cfg: EngineConfig, windows: dict[float, FeatureWindow], window: float
) -> tuple[NumericSummary | CategoricalSummary, float, float] | None:
    """The merged baseline of a feature's ``window`` (the engine's rule)."""
    merged: NumericSummary | CategoricalSummary | None = None
    used: list[float] = []
    for c in cfg.baseline_candidates(window):
        fw = windows.get(c)
        if fw is None or fw.count == 0:
            continue
        merged = fw.summary if merged is None else merge_summaries(merged, fw.summary)
        used.append(c)
    if merged is None or len(used) < cfg.min_baseline_windows:
        return None
    return merged, used[0], used[-1] + cfg.window_seconds


def distribution(
    window: NumericSummary | CategoricalSummary,
    baseline: NumericSummary | CategoricalSummary,
    bins: int = 24,
    categories: int = 20,
) -> tuple[str, list[str], list[float], list[float]]:
    """(kind, labels, baseline shares, window shares) over common bins or categories."""
    if isinstance(window, NumericSummary) and isinstance(baseline, NumericSummary):
        lo = min(window.min, baseline.min)
        hi = max(window.max, baseline.max)
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
            hi = lo + 1.0
        edges = np.linspace(lo, hi, bins + 1)
        shares = []
        for s in (baseline, window):
            cdf = s.cdf(edges)
            cdf[0], cdf[-1] = 0.0, 1.0
            shares.append([round(float(x), 5) for x in np.clip(np.diff(cdf), 0, 1)])
        labels = [f"[{edges[i]:.4g}, {edges[i + 1]:.4g})" for i in range(bins)]
        return "numeric", labels, shares[0], shares[1]
    assert isinstance(window, CategoricalSummary) and isinstance(baseline, CategoricalSummary)
    totals: dict[str, int] = {}
    for cat in (baseline, window):
        for k, v in cat.counts.items():
            totals[k] = totals.get(k, 0) + v
    top = sorted(totals, key=lambda k: (-totals[k], k))[:categories]
    labels = [*top, "other"]
    out = []
    for cat in (baseline, window):
        n = max(cat.count, 1)
        counts = cat.counts
        row = [counts.get(k, 0) / n for k in top]
        row.append(max(0.0, 1.0 - sum(row)))
        out.append([round(x, 5) for x in row])
    return "categorical", labels, out[0], out[1]
