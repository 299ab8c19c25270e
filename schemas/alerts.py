"""Wire format of the ``alerts`` topic (v1): what people are told, and what became of it.

Two record types share the topic, told apart by ``schema``:

* :class:`Alert` (``driftwatch.alert/v1``): one per incident lifecycle change (opened,
  confirmed, escalated, resolved) and per retraining or model outcome. ``alert_id`` is
  derived from what happened (the incident's ``drift_id`` and the change, or the retrain
  request and its status), so the same change seen twice - a redelivered DriftEvent, a
  restarted worker, two workers - has the same id, and notifiers deliver each id once.
* :class:`AlertDelivery` (``driftwatch.alert-delivery/v1``): the outcome of delivering an
  alert to a channel (``delivered`` after retries, or ``failed`` when they ran out), so what
  could not be delivered is on the topic, not only in a metric.

Depends on nothing in the project but ``schemas.events``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from schemas.events import InvalidEvent, Severity, format_timestamp, parse_timestamp

ALERT_SCHEMA = "driftwatch.alert/v1"
DELIVERY_SCHEMA = "driftwatch.alert-delivery/v1"
_NAMESPACE = uuid.UUID("5d0b1c3e-2b7a-4f7e-9c61-0e3f2a9d8b47")


class AlertKind(StrEnum):
    INCIDENT = "incident"
    """A drift incident (feature or performance) changed: ``change`` is an IncidentChange."""
    RETRAIN = "retrain"
    """A retrain request reached a status people act on: ``change`` is its RetrainStatus."""
    MODEL = "model"
    """The active model version changed: ``change`` is ``promoted`` or ``rolled_back``; or a
    person's rollback could not be done (:data:`ROLLBACK_REFUSED`), or serving runs another
    version than the registry's active one (:data:`SERVING_MISMATCH`)."""


ROLLBACK_REFUSED = "rollback_refused"
"""``change`` of a model alert: a rollback a person asked for (API) was not done, and why."""
SERVING_MISMATCH = "serving_mismatch"
"""``change`` of a model alert: a version the registry replaced still serves traffic a day
after the switch (serving never loaded the active version)."""


class IncidentChange(StrEnum):
    OPENED = "opened"
    CONFIRMED = "confirmed"
    ESCALATED = "escalated"
    """Its severity rose (to ``severity``) while it was open."""
    RESOLVED = "resolved"


def alert_id(source: str, change: str) -> str:
    """Stable id of one change of one thing (``source`` = drift_id, request_id, ...).

    >>> alert_id("d1", "opened") == alert_id("d1", "opened") != alert_id("d1", "resolved")
    True
    """
    return str(uuid.uuid5(_NAMESPACE, f"{source}\x1f{change}"))


@dataclass(frozen=True)
class Alert:
    alert_id: str
    kind: AlertKind
    change: str
    tenant: str
    model: str
    severity: Severity
    title: str
    """One line, for a pager or a chat message's first line."""
    text: str
    """A few lines, plain text with Slack-compatible markup (``*bold*``, no HTML)."""
    event_time: float
    """Event time of the stream when the change happened (not the wall clock)."""
    created_at: float
    """Wall clock when the alert was made."""
    model_version: str | None = None
    incident: dict[str, Any] | None = None
    """For incidents: drift_id, kind, feature, test, window_start, persistence, confirmed,
    statistic, p_value, effect_size."""
    retrain: dict[str, Any] | None = None
    """For retraining and model changes: request_id, status, reason, version, previous."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stream_key(self) -> str:
        return f"{self.tenant}:{self.model}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": ALERT_SCHEMA,
            "alert_id": self.alert_id,
            "kind": self.kind.value,
            "change": self.change,
            "tenant": self.tenant,
            "model": self.model,
            "model_version": self.model_version,
            "severity": self.severity.value,
            "title": self.title,
            "text": self.text,
            "event_time": format_timestamp(self.event_time),
            "created_at": format_timestamp(self.created_at),
            "incident": self.incident,
            "retrain": self.retrain,
        }
        out.update(self.extra)
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        if data.get("schema") != ALERT_SCHEMA:
            raise InvalidEvent("bad_value", f"not an alert: schema {data.get('schema')!r}")
        try:
            known = {
                "schema", "alert_id", "kind", "change", "tenant", "model", "model_version",
                "severity", "title", "text", "event_time", "created_at", "incident", "retrain",
            }  # fmt: skip
            return cls(
                alert_id=str(data["alert_id"]),
                kind=AlertKind(data["kind"]),
                change=str(data["change"]),
                tenant=str(data["tenant"]),
                model=str(data["model"]),
                model_version=None
                if data.get("model_version") is None
                else str(data["model_version"]),
                severity=Severity(data["severity"]),
                title=str(data["title"]),
                text=str(data["text"]),
                event_time=parse_timestamp(data["event_time"], "event_time"),
                created_at=parse_timestamp(data["created_at"], "created_at"),
                incident=data.get("incident"),
                retrain=data.get("retrain"),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except KeyError as exc:
            raise InvalidEvent("missing_field", f"alert lacks {exc.args[0]}") from None
        except ValueError as exc:
            raise InvalidEvent("bad_value", str(exc)) from None

    @classmethod
    def from_json(cls, raw: bytes) -> Alert:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidEvent("malformed_json", str(exc)) from None
        if not isinstance(data, dict):
            raise InvalidEvent("wrong_type", "an alert is a JSON object")
        return cls.from_dict(data)


class DeliveryStatus(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    """A delivery round's attempts ran out, or it met an error no retry mends. With
    ``retry_at`` (a retryable error: connection, timeout, 429, 5xx) the alert is tried again
    then; without, it was not delivered to this channel, for good."""


@dataclass(frozen=True)
class AlertDelivery:
    alert_id: str
    tenant: str
    model: str
    channel: str
    """``webhook`` (the endpoint's host only: URLs can carry secrets)."""
    target: str
    status: DeliveryStatus
    attempts: int
    at: float
    error: str | None = None
    retry_at: float | None = None
    """When a failed round's alert is tried again (None: delivered, or failed for good). On
    the wire only when set."""
    retryable: bool = field(default=False, compare=False)
    """Not on the wire: whether the round's last error is one a later round may not meet."""
    retry_after: float | None = field(default=None, compare=False)
    """Not on the wire: seconds the round's last answer asked to wait (``Retry-After``), if
    any, so that the next round is not before it (:mod:`agents.redelivery`)."""
    wait_asked: bool = field(default=False, compare=False)
    """Not on the wire: the round ended because its endpoint asked (``Retry-After``) for a
    longer wait than a round may take (``max_round_wait_seconds``): a later round is owed
    even with redelivery off. A ``Retry-After`` the round could wait (``0``, ``1``) is not."""

    def to_dict(self) -> dict[str, Any]:
        out = {
            "schema": DELIVERY_SCHEMA,
            "alert_id": self.alert_id,
            "tenant": self.tenant,
            "model": self.model,
            "channel": self.channel,
            "target": self.target,
            "status": self.status.value,
            "attempts": self.attempts,
            "at": format_timestamp(self.at),
            "error": self.error,
        }
        if self.retry_at is not None:
            out["retry_at"] = format_timestamp(self.retry_at)
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertDelivery:
        if data.get("schema") != DELIVERY_SCHEMA:
            raise InvalidEvent("bad_value", f"not a delivery: schema {data.get('schema')!r}")
        return cls(
            alert_id=str(data["alert_id"]),
            tenant=str(data["tenant"]),
            model=str(data["model"]),
            channel=str(data["channel"]),
            target=str(data["target"]),
            status=DeliveryStatus(data["status"]),
            attempts=int(data["attempts"]),
            at=parse_timestamp(data["at"], "at"),
            error=None if data.get("error") is None else str(data["error"]),
            retry_at=None
            if data.get("retry_at") is None
            else parse_timestamp(data["retry_at"], "retry_at"),
        )
