"""Wire formats of the retrain consumer's topics (v1): ``retrain-events``, ``model-events``
and ``retrain-control``. Depends on nothing else in the project but ``schemas.events``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from schemas.events import (
    SCHEMA_VERSION,
    InvalidEvent,
    check_name,
    decode_json_object,
    format_timestamp,
    parse_timestamp,
)

MANUAL_ROLLBACK = "manual rollback by "
"""How the reason of a rollback a person made starts (``driftwatch rollback``, the API), on
``model-events`` and in the registry: a rollback is told apart by it (its alerts, the
request it ends)."""
AUTO_ROLLBACK = "rollback: "
"""How the registry's reason starts for the retrain worker's own rollback."""


class RetrainStatus(StrEnum):
    """Where a retrain request is. Terminal (for starting a training): rejected,
    challenger_rejected, promoted, validated, rolled_back, failed.
    ``ignored`` and ``waiting`` are decided again on the incident's next DriftEvent."""

    IGNORED = "ignored"
    WAITING = "waiting"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    TRAINING = "training"
    CHALLENGER_REJECTED = "challenger_rejected"
    PROMOTED = "promoted"
    VALIDATED = "validated"
    """The promoted version passed its post-deploy check, or (``details.inconclusive``) the
    check ended without a verdict on quality: too few labels of its own traffic, none for a
    week, or the version replaced before the check ended."""
    ROLLED_BACK = "rolled_back"
    """The promoted version failed its post-deploy check and was replaced by its predecessor,
    or a person rolled it back during the check (``details.manual``)."""
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {
        RetrainStatus.REJECTED,
        RetrainStatus.CHALLENGER_REJECTED,
        RetrainStatus.PROMOTED,
        RetrainStatus.VALIDATED,
        RetrainStatus.ROLLED_BACK,
        RetrainStatus.FAILED,
    }
)


def _dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class RetrainEvent:
    """One decision or step of one retrain request (topic ``retrain-events``, key
    ``tenant:model``). The topic is the request's whole history: the consumer rebuilds its
    state from it at start, which is what makes decisions idempotent across restarts."""

    request_id: str
    tenant: str
    model: str
    drift_id: str
    status: RetrainStatus
    reason: str
    event_time: float
    """Event time of the stream when this happened (the DriftEvent's ``detected_at``)."""
    at: float
    """Wall clock."""
    model_version: str = ""
    """The champion (version serving) when the request was made."""
    attempt: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def stream_key(self) -> str:
        return f"{self.tenant}:{self.model}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "request_id": self.request_id,
            "tenant": self.tenant,
            "model": self.model,
            "drift_id": self.drift_id,
            "status": self.status.value,
            "reason": self.reason,
            "event_time": format_timestamp(self.event_time),
            "at": format_timestamp(self.at),
            "model_version": self.model_version,
            "attempt": self.attempt,
            "details": self.details,
        }

    def to_json(self) -> bytes:
        return _dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RetrainEvent:
        try:
            return cls(
                request_id=str(d["request_id"]),
                tenant=str(d["tenant"]),
                model=str(d["model"]),
                drift_id=str(d["drift_id"]),
                status=RetrainStatus(d["status"]),
                reason=str(d["reason"]),
                event_time=parse_timestamp(d["event_time"], "event_time"),
                at=parse_timestamp(d["at"], "at"),
                model_version=str(d.get("model_version", "")),
                attempt=int(d.get("attempt", 0)),
                details=dict(d.get("details") or {}),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidEvent("bad_value", f"not a RetrainEvent: {exc!r}") from None


class ModelAction(StrEnum):
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class ModelEvent:
    """The active version of (tenant, model) changed (topic ``model-events``, key
    ``tenant:model``): serving systems load ``version`` from the registry when they see it."""

    action: ModelAction
    tenant: str
    model: str
    version: str
    previous_version: str | None
    reason: str
    at: float
    event_time: float
    request_id: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    feature_importances: dict[str, float] = field(default_factory=dict)
    """The version's feature importances as training recorded them in the registry (sum 1;
    empty if it recorded none): the workers rank drift incidents by them. Optional on the
    wire (absent when empty)."""

    @property
    def stream_key(self) -> str:
        return f"{self.tenant}:{self.model}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "action": self.action.value,
            "tenant": self.tenant,
            "model": self.model,
            "version": self.version,
            "previous_version": self.previous_version,
            "reason": self.reason,
            "at": format_timestamp(self.at),
            "event_time": format_timestamp(self.event_time),
            "request_id": self.request_id,
            "metrics": self.metrics,
        } | ({"feature_importances": self.feature_importances} if self.feature_importances else {})

    def to_json(self) -> bytes:
        return _dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelEvent:
        try:
            return cls(
                action=ModelAction(d["action"]),
                tenant=str(d["tenant"]),
                model=str(d["model"]),
                version=str(d["version"]),
                previous_version=None
                if d.get("previous_version") is None
                else str(d["previous_version"]),
                reason=str(d["reason"]),
                at=parse_timestamp(d["at"], "at"),
                event_time=parse_timestamp(d["event_time"], "event_time"),
                request_id=None if d.get("request_id") is None else str(d["request_id"]),
                metrics=dict(d.get("metrics") or {}),
                feature_importances={
                    str(k): float(v) for k, v in (d.get("feature_importances") or {}).items()
                },
            )
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise InvalidEvent("bad_value", f"not a ModelEvent: {exc!r}") from None


MAX_CONTROL_BYTES = 64 * 1024
"""A control message is a flag or a request of a few hundred bytes."""
_TEXT_FIELDS = ("by", "note", "reason", "request_id")


@dataclass(frozen=True)
class ControlMessage:
    """Operators' commands and switches (compacted topic ``retrain-control``; the key says
    what it is about, the latest value per key wins):

    - ``flag:global`` / ``flag:tenant:<tenant>``: ``{"auto_retrain": true|false}``
    - ``approval:<request_id>``: ``{"decision": "approve"|"reject", "by": ..., "note": ...}``
    - ``retrain:<request_id>``: ``{"action": "retrain", "tenant": ..., "model": ..., ...}``
    - ``rollback:<request_id>``: ``{"action": "rollback", "tenant": ..., "model": ...,
      "to": <version> or null, ...}``

    A tombstone (no value) deletes its key on compaction and is read as ``{}``.
    """

    key: str
    value: dict[str, Any]
    at: float

    def to_json(self) -> bytes:
        return _dumps(
            {"schema_version": SCHEMA_VERSION, **self.value, "at": format_timestamp(self.at)}
        )

    @classmethod
    def parse(cls, key: bytes | None, value: bytes | None) -> ControlMessage:
        """Checked as strictly as a prediction: the retrain worker folds every control
        message into its state and reads the topic again at every start, so one that cannot
        be acted on (a tenant ``../etc``, a flag ``"false"`` that ``bool()`` would read as on,
        JSON nested too deeply to decode) would otherwise fail later, or at every start.

        >>> ControlMessage.parse(b"flag:tenant:acme", b'{"auto_retrain": true}').value
        {'auto_retrain': True}
        >>> ControlMessage.parse(b"flag:tenant:../etc", b'{"auto_retrain": true}')
        Traceback (most recent call last):
        ...
        schemas.events.InvalidEvent: bad_name: bad tenant '../etc': use 1-128 of A-Z a-z 0-9 _ . - \
(not starting with '.' or '-', no '..')
        """
        if not key:
            raise InvalidEvent("missing_field", "control message without a key")
        try:
            text = key.decode()
        except UnicodeDecodeError:
            raise InvalidEvent("bad_value", f"key is not UTF-8: {key[:64]!r}") from None
        data: dict[str, Any] = decode_json_object(value, MAX_CONTROL_BYTES) if value else {}
        at = parse_timestamp(data.pop("at", 0.0), "at")
        data.pop("schema_version", None)
        _check_control(text, data, tombstone=not value)
        return cls(text, data, at)


def _check_control(key: str, data: dict[str, Any], tombstone: bool) -> None:
    """The key's kind and names, and the fields the retrain service reads, by type."""
    kind, _, rest = key.partition(":")
    if key == "flag:global":
        pass
    elif kind == "flag" and rest.startswith("tenant:"):
        check_name(rest.removeprefix("tenant:"), "tenant")
    elif kind in ("approval", "retrain", "rollback"):
        check_name(rest, "request_id")
    else:
        raise InvalidEvent("bad_value", f"unknown control key {key[:64]!r}")
    if tombstone:
        return
    for name in _TEXT_FIELDS:
        if data.get(name) is not None and not isinstance(data[name], str):
            raise InvalidEvent("wrong_type", f"{name} must be a string")
    if kind == "flag":
        if "auto_retrain" not in data:  # a typo must not clear a flag (a tombstone does)
            raise InvalidEvent("missing_field", "auto_retrain is required (null clears the flag)")
        if not isinstance(data["auto_retrain"], bool | None):  # None: cleared
            raise InvalidEvent("wrong_type", "auto_retrain must be true, false or null")
    elif kind == "approval":
        decision = data.get("decision")
        if decision is None:
            raise InvalidEvent("missing_field", "decision is required")
        if decision not in ("approve", "reject"):
            raise InvalidEvent("bad_value", "decision must be approve or reject")
    else:
        if data.get("action") != kind:
            raise InvalidEvent("bad_value", f'a {kind}: key needs "action": "{kind}"')
        for name in ("tenant", "model"):
            if name not in data:
                raise InvalidEvent("missing_field", f"{name} is required")
            check_name(data[name], name)
        if kind == "rollback" and data.get("to") is not None:
            check_name(data["to"], "to")
