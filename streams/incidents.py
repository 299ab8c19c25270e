"""What happens to an incident, told once: the notices the engines hand to whoever alerts.

The feature engine and the performance monitor keep their incidents in their own state; each
time one is opened, confirmed, escalated (its severity rose) or resolved they also append an
:class:`IncidentNotice`. The worker turns notices into alerts (``alerts`` topic); their ids
come from the incident's ``drift_id`` and the change, so replaying the same events after a
crash yields the same notices and the same alert ids, and nobody is told twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CLOSED_KEPT = 50
"""Closed incidents kept per stream (newest), for "recent incidents" in the API and report."""


@dataclass(frozen=True)
class IncidentNotice:
    change: str
    """``opened``, ``confirmed``, ``escalated`` or ``resolved``."""
    drift_id: str
    kind: str
    """``statistical`` or ``performance``."""
    tenant: str
    model: str
    model_version: str
    feature: str | None
    test: str
    severity: str
    confirmed: bool
    persistence: int
    window_start: float
    """The window whose test made the change (for ``resolved``: the last clean one)."""
    event_time: float
    """Event time of the stream when it happened."""
    statistic: float | None = None
    p_value: float | None = None
    effect_size: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "change": self.change,
            "drift_id": self.drift_id,
            "kind": self.kind,
            "tenant": self.tenant,
            "model": self.model,
            "model_version": self.model_version,
            "feature": self.feature,
            "test": self.test,
            "severity": self.severity,
            "confirmed": self.confirmed,
            "persistence": self.persistence,
            "window_start": self.window_start,
            "event_time": self.event_time,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "effect_size": self.effect_size,
            **self.extra,
        }


def closed_record(
    key: str,
    drift_id: str,
    opened_window: float,
    closed_window: float,
    severity: str,
    confirmed: bool,
    persistence: int,
    test: str,
) -> dict[str, Any]:
    """What is kept of a closed incident (compact: it lives in the stream's state)."""
    return {
        "k": key,
        "id": drift_id,
        "ow": opened_window,
        "cw": closed_window,
        "sev": severity,
        "ok": confirmed,
        "p": persistence,
        "t": test,
    }


def remember_closed(closed: list[dict[str, Any]], record: dict[str, Any]) -> None:
    """Append ``record`` once (a replay resolves the same incident again), keep the newest."""
    if any(r["id"] == record["id"] for r in closed):
        return
    closed.append(record)
    del closed[:-CLOSED_KEPT]
