"""Alerts: what the ``alerts`` topic says, made from incident notices and retraining news.

Ids come from what happened (``schemas.alerts.alert_id``), so the same change seen twice - a
replay after a crash, a partition moving to another worker - makes the same alert, and the
notifier (``agents.notify``) delivers each id once.
"""

from __future__ import annotations

import time

from schemas import (
    MANUAL_ROLLBACK,
    ModelAction,
    ModelEvent,
    RetrainEvent,
    RetrainStatus,
    Severity,
    format_timestamp,
)
from schemas.alerts import Alert, AlertKind, alert_id
from streams.importance import rank_key
from streams.incidents import IncidentNotice
from streams.segments import segment_label

RETRAIN_ALERTS: dict[RetrainStatus, Severity] = {
    RetrainStatus.AWAITING_APPROVAL: Severity.HIGH,
    RetrainStatus.TRAINING: Severity.LOW,
    RetrainStatus.PROMOTED: Severity.MEDIUM,
    RetrainStatus.CHALLENGER_REJECTED: Severity.MEDIUM,
    RetrainStatus.VALIDATED: Severity.LOW,
    RetrainStatus.ROLLED_BACK: Severity.HIGH,
    RetrainStatus.FAILED: Severity.HIGH,
    RetrainStatus.REJECTED: Severity.LOW,
}
"""Retraining steps people hear about (the rest - ignored, waiting - are on the topic only)."""


def _date(ts: float) -> str:
    return format_timestamp(ts)[:16].replace("T", " ")


def incident_alert(notice: IncidentNotice, now: float | None = None) -> Alert:
    n = notice
    what = (
        f"feature `{n.feature}`" if n.feature is not None else f"performance of {n.model_version}"
    )
    segment = n.extra.get("segment")
    if isinstance(segment, dict) and segment:
        share = n.extra.get("segment_share")
        of = f", {share:.1%} of the traffic" if isinstance(share, float) else ""
        what += f" {segment_label(segment)}{of}"
    change = n.change
    source = f"{n.drift_id}:{n.severity}" if change == "escalated" else n.drift_id
    verb = (
        {
            "opened": "below its objective",
            "confirmed": "below its objective, persisting",
            "escalated": f"objective breach escalated to {n.severity}",
            "resolved": "back above its objective",
        }
        if n.kind == "objective"
        else {
            "opened": "drift detected",
            "confirmed": "drift confirmed",
            "escalated": f"drift escalated to {n.severity}",
            "resolved": "drift resolved",
        }
    ).get(change, change)
    title = f"[{n.severity}] {n.tenant}/{n.model}: {verb} on {what} ({n.test})"
    lines = [
        f"*{n.tenant}/{n.model}* {what}: {verb}",
        f"test `{n.test}`, window {_date(n.window_start)} UTC, persisted {n.persistence} "
        f"window(s){', confirmed' if n.confirmed else ''}",
    ]
    if n.statistic is not None and change != "resolved":
        p = "n/a" if n.p_value is None else f"{n.p_value:.2g}"
        effect = "n/a" if n.effect_size is None else f"{n.effect_size:.3f}"
        lines.append(f"statistic {n.statistic:.4g}, p {p}, effect {effect}")
    ranking = impact_line(n)
    if ranking:
        lines.append(ranking)
    if n.extra.get("estimated"):
        lines.append("label-free estimate: a warning, it never starts a retraining")
    if n.kind == "objective" and "objective" in n.extra:
        lines.append(
            f"{n.extra.get('metric')} {n.extra.get('value', float('nan')):.3f} against an "
            f"objective of {n.extra['objective']:g}: not drift, it starts no retraining"
        )
    lines.append(f"incident `{n.drift_id[:8]}`")
    return Alert(
        alert_id=alert_id(source, change),
        kind=AlertKind.INCIDENT,
        change=change,
        tenant=n.tenant,
        model=n.model,
        severity=Severity(n.severity),
        title=title,
        text="\n".join(lines),
        event_time=n.event_time,
        created_at=time.time() if now is None else now,
        model_version=n.model_version or None,
        incident=n.to_dict(),
    )


def impact_line(notice: IncidentNotice) -> str | None:
    """``impact 0.31 = importance 0.80 (registry) x effect 0.39``; None for incidents
    without an importance (performance, objective)."""
    source = notice.extra.get("importance_source")
    if source is None:
        return None
    importance = notice.extra.get("importance")
    value = notice.extra.get("impact")
    if importance is None or value is None:
        return f"impact unknown (no importance known for `{notice.feature}`)"
    effect = (
        notice.effect_size if notice.effect_size is not None else value / max(importance, 1e-12)
    )
    return f"impact {value:.3f} = importance {importance:.3f} ({source}) x effect {effect:.3f}"


def rank_notices(notices: list[IncidentNotice]) -> list[IncidentNotice]:
    """The order a batch's incident alerts are sent in: per model (in the order the batch
    first told of it), incidents by :func:`streams.importance.rank_key` of their latest
    notice - impact, severity, feature -; one incident's notices stay in the order they
    happened (opened before confirmed)."""
    first: dict[tuple[str, str], int] = {}
    latest: dict[str, IncidentNotice] = {}
    order: dict[str, int] = {}
    for n in notices:
        first.setdefault((n.tenant, n.model), len(first))
        latest[n.drift_id] = n
        order.setdefault(n.drift_id, len(order))

    def key(n: IncidentNotice) -> tuple[object, ...]:
        last = latest[n.drift_id]
        return (
            first[(n.tenant, n.model)],
            *rank_key(last.extra.get("impact"), last.severity, last.feature),
            order[n.drift_id],
        )

    return sorted(notices, key=key)  # stable: an incident's notices keep their order


def retrain_alert(event: RetrainEvent, now: float | None = None) -> Alert | None:
    """An alert for the retraining steps people act on or want to know; None for the rest."""
    severity = RETRAIN_ALERTS.get(event.status)
    if severity is None:
        return None
    if event.details.get("manual"):  # a person's own rollback: they know, others are told
        severity = Severity.MEDIUM
    status = event.status.value
    step = status.replace("_", " ")
    if event.details.get("inconclusive"):
        step += " (inconclusive)"
    title = f"[{severity.value}] {event.tenant}/{event.model}: retraining {step}"
    lines = [f"*{event.tenant}/{event.model}* retraining `{status}`: {event.reason}"]
    if event.status is RetrainStatus.AWAITING_APPROVAL:
        lines.append(
            f"approve: `POST /v1/approvals/{event.request_id}` or "
            f"`driftwatch approve {event.request_id}`"
        )
    lines.append(f"request `{event.request_id[:8]}`, attempt {event.attempt}")
    return Alert(
        alert_id=alert_id(f"{event.request_id}:{event.attempt}", status),
        kind=AlertKind.RETRAIN,
        change=status,
        tenant=event.tenant,
        model=event.model,
        severity=severity,
        title=title,
        text="\n".join(lines),
        event_time=event.event_time,
        created_at=time.time() if now is None else now,
        model_version=event.model_version or None,
        retrain={
            "request_id": event.request_id,
            "status": status,
            "reason": event.reason,
            "drift_id": event.drift_id,
            "attempt": event.attempt,
        },
    )


def model_alert(event: ModelEvent, now: float | None = None) -> Alert:
    rolled_back = event.action is ModelAction.ROLLED_BACK
    # A person's own rollback: they know; the others are told, less loudly.
    by_person = rolled_back and event.reason.startswith(MANUAL_ROLLBACK)
    severity = Severity.HIGH if rolled_back and not by_person else Severity.MEDIUM
    verb = "rolled back" if rolled_back else "promoted"
    title = (
        f"[{severity.value}] {event.tenant}/{event.model}: {event.previous_version} -> "
        f"{event.version} ({verb})"
    )
    text = (
        f"*{event.tenant}/{event.model}* {verb}: active version now `{event.version}` "
        f"(was `{event.previous_version}`)\n{event.reason}"
    )
    source = f"{event.tenant}\x1f{event.model}\x1f{event.version}\x1f{event.at}"
    return Alert(
        alert_id=alert_id(source, event.action.value),
        kind=AlertKind.MODEL,
        change=event.action.value,
        tenant=event.tenant,
        model=event.model,
        severity=severity,
        title=title,
        text=text,
        event_time=event.event_time,
        created_at=time.time() if now is None else now,
        model_version=event.version,
        retrain={
            "request_id": event.request_id,
            "version": event.version,
            "previous": event.previous_version,
            "reason": event.reason,
        },
    )
