"""Edge validation: raw message bytes -> a valid event, or a reason to dead-letter it."""

from __future__ import annotations

from dataclasses import dataclass

from schemas import InvalidEvent, OutcomeEvent, PredictionEvent


def _check_policy(
    tenant: str,
    timestamp: float,
    now: float | None,
    tenants: frozenset[str],
    max_future_seconds: float | None,
) -> None:
    if tenants and tenant not in tenants:
        raise InvalidEvent("unknown_tenant", f"tenant {tenant[:64]!r} is not in DRIFTWATCH_TENANTS")
    if now is not None and max_future_seconds is not None and timestamp > now + max_future_seconds:
        raise InvalidEvent(
            "future_timestamp", f"timestamp is {timestamp - now:.0f}s ahead of the wall clock"
        )


@dataclass(frozen=True, slots=True)
class PredictionValidator:
    """Contract checks plus the deployment's own policy (size, tenants, clock skew).

    >>> v = PredictionValidator(max_bytes=1000, tenants=frozenset({"acme"}))
    >>> v.validate(b'{"event_id":"e","tenant":"other","model":"m","model_version":"1",'
    ...            b'"timestamp":0,"features":{},"score":0.1}', now=0.0)
    Traceback (most recent call last):
    ...
    schemas.events.InvalidEvent: unknown_tenant: tenant 'other' is not in DRIFTWATCH_TENANTS
    """

    max_bytes: int = 1 << 20
    tenants: frozenset[str] = frozenset()
    max_future_seconds: float | None = 3600.0

    def validate(self, raw: bytes | None, now: float | None) -> PredictionEvent:
        if raw is None:
            raise InvalidEvent("empty", "message has no value (tombstone)")
        event = PredictionEvent.from_json(raw, self.max_bytes)
        _check_policy(event.tenant, event.timestamp, now, self.tenants, self.max_future_seconds)
        return event


@dataclass(frozen=True, slots=True)
class OutcomeValidator:
    """The outcome side of :class:`PredictionValidator`: contract, size, tenants, clock skew.

    >>> v = OutcomeValidator(max_bytes=1000)
    >>> v.validate(b'{"event_id":"e","tenant":"acme","model":"m","timestamp":0,"label":1}', 0.0)
    OutcomeEvent(event_id='e', tenant='acme', model='m', timestamp=0.0, label=1)
    """

    max_bytes: int = 1 << 20
    tenants: frozenset[str] = frozenset()
    max_future_seconds: float | None = 3600.0

    def validate(self, raw: bytes | None, now: float | None) -> OutcomeEvent:
        if raw is None:
            raise InvalidEvent("empty", "message has no value (tombstone)")
        event = OutcomeEvent.from_json(raw, self.max_bytes)
        _check_policy(event.tenant, event.timestamp, now, self.tenants, self.max_future_seconds)
        return event
