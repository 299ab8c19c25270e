"""The incident lifecycle, one for feature drift and performance drift, and its notices.

A drift found in one window opens an incident (a stable ``drift_id``, so a replay after a
crash names it the same); found again in later windows it persists, and after
``confirm_windows`` windows it is confirmed (what retraining acts on); its severity only
rises (escalated); ``resolve_windows`` clean windows in a row resolve it. Each window counts
once per incident, even when it is judged again (a replayed look, a late final look), which
:class:`IncidentBook` remembers per key.

Each change is also an :class:`IncidentNotice`. The worker turns notices into alerts
(``alerts`` topic); their ids come from the incident's ``drift_id`` and the change, so
replaying the same events after a crash yields the same notices and the same alert ids, and
nobody is told twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas import Severity
from streams.importance import impact

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


@dataclass
class Incident:
    """An open drift incident; re-detections update it instead of alerting anew."""

    drift_id: str
    opened_window: float
    persistence: int = 1
    clean_streak: int = 0
    confirmed: bool = False
    max_severity: str = "LOW"
    test: str = ""
    """The test that last found it drifting."""
    last_window: float | None = None
    """The last window found drifting."""
    effect_size: float | None = None
    """The effect size of the test that last found it drifting (on the whole window, or
    the window so far; a sub-day span's only until then)."""
    importance: float | None = None
    """How much the feature matters to the score (:mod:`streams.importance`); None for
    performance incidents and features of unknown importance."""
    importance_source: str = ""
    """``registry``, ``association`` or ``unknown``; empty for performance incidents."""

    @property
    def impact(self) -> float | None:
        """importance x effect size (:func:`streams.importance.impact`)."""
        return impact(self.importance, self.effect_size)

    def to_json(self) -> dict[str, Any]:
        out = {
            "id": self.drift_id,
            "ow": self.opened_window,
            "p": self.persistence,
            "c": self.clean_streak,
            "ok": self.confirmed,
            "sev": self.max_severity,
            "t": self.test,
            "lw": self.last_window,
        }
        # Only when known: incidents without an estimate keep the bytes they always had.
        if self.effect_size is not None:
            out["ef"] = self.effect_size
        if self.importance is not None:
            out["im"] = self.importance
        if self.importance_source:
            out["is"] = self.importance_source
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Incident:
        return cls(
            d["id"], d["ow"], d["p"], d["c"], d["ok"], d["sev"], d.get("t", ""), d.get("lw"),
            d.get("ef"), d.get("im"), d.get("is", ""),
        )  # fmt: skip


@dataclass
class IncidentBook:
    """All incidents of one stream: open ones by key, the window each key was last judged on,
    the windows already counted per key, and the newest closed ones.

    >>> book = IncidentBook()
    >>> rules = dict(confirm_windows=2, remember=1)
    >>> _, changes = book.drifting("x", 0.0, Severity.LOW, "ks", lambda: "id-1", **rules)
    >>> changes
    ['opened']
    >>> book.drifting("x", 0.0, Severity.LOW, "ks", lambda: "id-1", **rules)[1]  # same window
    []
    >>> book.drifting("x", 1.0, Severity.HIGH, "ks", lambda: "id-1", **rules)[1]
    ['escalated', 'confirmed']
    >>> book.clean("x", 2.0, resolve_windows=2, window_seconds=1.0), "x" in book.open
    (None, True)
    >>> book.clean("x", 3.0, resolve_windows=2, window_seconds=1.0).drift_id, book.open
    ('id-1', {})
    >>> book.closed[0]["cw"], book.closed[0]["p"]
    (2.0, 2)
    """

    open: dict[str, Incident] = field(default_factory=dict)
    last_window: dict[str, float] = field(default_factory=dict)
    closed: list[dict[str, Any]] = field(default_factory=list)
    """The newest closed incidents (:func:`closed_record`)."""
    counted: dict[str, list[float]] = field(default_factory=dict)
    """Per incident key (``key`` drifting, ``key#clean`` clean), the windows already counted."""

    def drifting(
        self,
        key: str,
        window: float,
        severity: Severity,
        test: str,
        drift_id: Callable[[], str],
        *,
        confirm_windows: int,
        remember: int,
    ) -> tuple[Incident, list[str]]:
        """``key`` was found drifting in ``window``: open its incident, or count the window
        towards its persistence (once per window); escalate and confirm. Returns the incident
        and its changes (``opened``, ``escalated``, ``confirmed``). ``remember``: how many
        windows back a window may be judged again (1 when windows are judged in order)."""
        incident = self.open.get(key)
        counted = self.counted.setdefault(key, [])
        changes: list[str] = []
        if incident is None:
            incident = self.open[key] = Incident(drift_id(), window)
            counted[:] = [window]
            changes.append("opened")
        elif window not in counted:
            incident.persistence += 1
            incident.clean_streak = 0
            counted.append(window)
            del counted[:-remember]
        incident.test = test
        incident.last_window = max(window, incident.last_window or window)
        if Severity(incident.max_severity).rank < severity.rank:
            if not changes:
                changes.append("escalated")
            incident.max_severity = severity.value
        if not incident.confirmed and incident.persistence >= confirm_windows:
            incident.confirmed = True
            changes.append("confirmed")
        return incident, changes

    def clean(
        self, key: str, window: float, *, resolve_windows: int, window_seconds: float
    ) -> Incident | None:
        """``key`` was judged clean in ``window`` (counted once per window, and only after
        the window that opened it); returns the incident if that resolved it."""
        incident = self.open.get(key)
        if incident is None or incident.opened_window >= window:
            return None
        seen = self.counted.setdefault(f"{key}#clean", [])
        if window in seen:
            return None
        seen.append(window)
        del seen[:-RESOLVE_MEMORY]
        incident.clean_streak += 1
        if incident.clean_streak < resolve_windows:
            return None
        del self.open[key]
        self.counted.pop(key, None)
        self.counted.pop(f"{key}#clean", None)
        closed_window = (incident.last_window or incident.opened_window) + window_seconds
        remember_closed(
            self.closed,
            closed_record(
                key, incident.drift_id, incident.opened_window, closed_window,
                incident.max_severity, incident.confirmed, incident.persistence, incident.test,
            ),
        )  # fmt: skip
        return incident

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "open": {f: i.to_json() for f, i in self.open.items()},
            "lw": self.last_window,
        }
        if self.closed:
            out["cl"] = self.closed
        if self.counted:
            out["cw"] = self.counted
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IncidentBook:
        return cls(
            open={f: Incident.from_json(i) for f, i in d["open"].items()},
            last_window={f: float(w) for f, w in d["lw"].items()},
            closed=list(d.get("cl", [])),
            counted={k: [float(w) for w in v] for k, v in d.get("cw", {}).items()},
        )


RESOLVE_MEMORY = 64
"""Clean windows remembered per incident (a replayed final look must not count twice)."""
