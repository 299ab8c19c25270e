"""Performance incidents: what a finding of the performance monitor does to a stream's
incidents (opened, persisted, confirmed, resolved), the DriftEvents it raises and the
notices it tells, and the per-model objectives (floors), whose breaches are incidents of
their own kind, never DriftEvents.

:class:`~streams.perf_monitor.PerformanceMonitor` decides when a window is looked at and
which findings count; this module is what follows from them.
"""

from __future__ import annotations

import functools
import uuid
from collections import Counter
from collections.abc import Callable

from schemas import DriftEvent, DriftKind, Severity
from schemas.events import INCIDENT_SEVERITY
from streams.config import PerformanceConfig
from streams.incidents import Incident, IncidentNotice
from streams.perf_findings import Finding, objective_test, objective_value
from streams.perf_state import (
    OBJECTIVE_KIND,
    PerfStream,
    PerfWindow,
    objective_key,
    split_incident_key,
)
from streams.performance import PerformanceSummary

_NAMESPACE = uuid.UUID("0b9a3c52-8f7e-4f51-a0c2-7f5d6e4b1a93")


class PerfIncidents:
    """The incident side of the performance monitor. ``stats`` and ``notices`` are the
    monitor's (changed in place); ``mark(stream, window)`` tells the monitor that the stream
    and, unless None, its window changed and must be written."""

    def __init__(
        self,
        config: PerformanceConfig,
        stats: Counter[str],
        notices: list[IncidentNotice],
        mark: Callable[[PerfStream, float | None], None],
    ) -> None:
        self.config = config
        self.stats = stats
        self.notices = notices
        self._mark = mark

    def drift(
        self,
        stream: PerfStream,
        win: PerfWindow,
        key: str,
        version: str,
        window: float,
        findings: list[Finding],
        detected_at: float,
        baseline_start: float,
        baseline_end: float,
        summary: PerformanceSummary,
        baseline_count: int,
        partial: bool,
    ) -> list[DriftEvent]:
        cfg = self.config.engine
        top = max(findings, key=lambda f: f.severity.rank)
        win.raised.append(key)
        incident, changes = self._found(stream, win, key, window, top.severity, top.test)
        for change in changes:
            self.notices.append(
                IncidentNotice(
                    change, incident.drift_id, DriftKind.PERFORMANCE.value, stream.tenant,
                    stream.model, version, None, top.test, incident.max_severity,
                    incident.confirmed, incident.persistence, window, detected_at, top.statistic,
                    top.p_value, top.effect,
                    {"estimated": True} if top.extra.get("estimated") else {},
                )
            )  # fmt: skip
        metrics = {
            "predictions": summary.predictions,
            "labelled": summary.labelled,
            "label_rate": summary.label_rate,
            "accuracy": summary.accuracy(),
            "pr_auc": summary.pr_auc(),
        }
        events = [
            DriftEvent(
                drift_id=incident.drift_id,
                kind=DriftKind.PERFORMANCE,
                tenant=stream.tenant,
                model=stream.model,
                model_version=version,
                feature=None,
                test=f.test,
                statistic=f.statistic,
                p_value=f.p_value,
                effect_size=f.effect,
                window_start=window,
                window_end=min(window + cfg.window_seconds, max(detected_at, window)),
                baseline_start=baseline_start,
                baseline_end=baseline_end,
                severity=f.severity,
                confirmed=incident.confirmed,
                detected_at=detected_at,
                persistence=incident.persistence,
                window_count=summary.labelled,
                baseline_count=baseline_count,
                partial=partial,
                extra={"metrics": metrics} | f.extra | {INCIDENT_SEVERITY: incident.max_severity},
            )
            for f in findings
        ]
        self.stats["drift_events"] += len(events)
        return events

    def objectives(
        self,
        stream: PerfStream,
        win: PerfWindow,
        version: str,
        window: float,
        summary: PerformanceSummary,
        detected_at: float,
        final: bool,
    ) -> None:
        """The model's objectives at a look: a breach is an incident of kind ``objective``
        (opened, confirmed once it persists, resolved by clean windows), told in notices and
        never a DriftEvent: a floor is a service level, not a change, and no reason to
        retrain a model that was always below it."""
        cfg = self.config
        objectives = cfg.objectives_for(stream.tenant, stream.model)
        if final:  # a breach of an objective no longer set is over: its windows count as clean
            active = {objective_key(o.metric, version) for o in objectives}
            for key in [k for k in stream.incidents.open if k.startswith("objective:")]:
                if key not in active and split_incident_key(key)[1] == version:
                    self.clean(stream, win, key, window, version, OBJECTIVE_KIND)
        for objective in objectives:
            key = objective_key(objective.metric, version)
            if key in win.raised:
                continue  # this window breached it at an earlier look
            finding = objective_test(summary, objective, cfg, cfg.objective_alpha)
            if finding is None:
                if final and objective_value(summary, objective, cfg) is not None:
                    self.clean(stream, win, key, window, version, OBJECTIVE_KIND)
                continue
            win.raised.append(key)
            incident, changes = self._found(
                stream, win, key, window, finding.severity, finding.test
            )
            self.stats["objective_breaches"] += 1
            for change in changes:
                self.notices.append(
                    IncidentNotice(
                        change, incident.drift_id, OBJECTIVE_KIND, stream.tenant, stream.model,
                        version, None, finding.test, incident.max_severity, incident.confirmed,
                        incident.persistence, window, detected_at, finding.statistic,
                        finding.p_value, finding.effect, dict(finding.extra),
                    )
                )  # fmt: skip

    def clean(
        self,
        stream: PerfStream,
        win: PerfWindow,
        key: str,
        window: float,
        version: str | None = None,
        kind: str = DriftKind.PERFORMANCE.value,
    ) -> None:
        """``key`` was judged clean in window ``window`` (``win``)."""
        win.told.append([stream.writes + 1, key])  # the next flush writes the stream
        self._mark(stream, window)
        self._clean(stream, key, window, version, kind)

    def _found(
        self,
        stream: PerfStream,
        win: PerfWindow,
        key: str,
        window: float,
        severity: Severity,
        test: str,
    ) -> tuple[Incident, list[str]]:
        """``key`` found drifting in window ``window`` (``win``): told to the book, and
        remembered by the window (:meth:`retell`)."""
        win.told.append([stream.writes + 1, key, severity.value, test])
        self._mark(stream, window)
        return self._count(stream, key, window, severity, test)

    def _count(
        self, stream: PerfStream, key: str, window: float, severity: Severity, test: str
    ) -> tuple[Incident, list[str]]:
        """The book's count of ``key`` drifting in ``window``, and its changes counted. Once
        per window, even if a crash lost the window's own record of it (the stream and the
        window are separate keys): a replay must not confirm an incident early. Windows are
        judged out of order here (labels arrive late), so the book remembers 64."""
        incident, changes = stream.incidents.drifting(
            key, window, severity, test,
            functools.partial(_incident_id, stream, key, window),
            confirm_windows=self.config.engine.confirm_windows, remember=64,
        )  # fmt: skip
        prefix = "objective_incidents" if key.startswith("objective:") else "incidents"
        for change in changes:
            if change != "escalated":
                self.stats[f"{prefix}_{change}"] += 1
        return incident, changes

    def retell(self, stream: PerfStream, window: float, win: PerfWindow) -> None:
        """Tell the book again what window ``win`` told it in writes the stream's record does
        not have (a crash cut the flush short after the window's record): the window's flags
        will skip the looks that told it. Notices are told again under the same ids (alerts
        are idempotent), without the tests' figures, which only the looks had."""
        self.stats["incident_books_retold"] += 1
        for told in win.told:
            if told[0] <= stream.writes:
                continue  # in a write the stream's record has
            key = told[1]
            kind, version = split_incident_key(key)
            if len(told) == 2:
                self._clean(stream, key, window, version, kind)
                continue
            incident, changes = self._count(stream, key, window, Severity(told[2]), told[3])
            for change in changes:
                self.notices.append(
                    IncidentNotice(
                        change, incident.drift_id, kind, stream.tenant, stream.model, version,
                        None, told[3], incident.max_severity, incident.confirmed,
                        incident.persistence, window, stream.clock,
                    )
                )  # fmt: skip
        self._mark(stream, None)

    def _clean(
        self, stream: PerfStream, key: str, window: float, version: str | None, kind: str
    ) -> None:
        ecfg = self.config.engine
        incident = stream.incidents.clean(
            key, window, resolve_windows=ecfg.resolve_windows, window_seconds=ecfg.window_seconds
        )
        if incident is not None:
            self.stats["incidents_resolved" if kind != OBJECTIVE_KIND
                       else "objective_incidents_resolved"] += 1  # fmt: skip
            self.notices.append(
                IncidentNotice(
                    "resolved", incident.drift_id, kind, stream.tenant, stream.model,
                    key.split(":", 1)[1] if version is None else version, None, incident.test,
                    incident.max_severity, incident.confirmed, incident.persistence, window,
                    stream.clock,
                )
            )  # fmt: skip


def _incident_id(stream: PerfStream, key: str, window: float) -> str:
    """Deterministic, so a replay (or a backtest) names the incident the same."""
    return str(
        uuid.uuid5(_NAMESPACE, f"{stream.tenant}\x1f{stream.model}\x1f{key}\x1f{int(window)}")
    )
