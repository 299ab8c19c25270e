"""The performance monitor's state values, and their keys, apart from the logic that fills them.

:mod:`streams.perf_monitor` keeps, per (tenant, model):

* one :class:`PerfWindow` per window of **prediction** time: a
  :class:`~streams.performance.PerformanceSummary` per model version, which late labels keep
  filling in (the history says how complete each window is);
* one :class:`PerfStream`: the event-time clock, the windows with data and the open
  incidents.

Readers of the stored state (``streams.views`` for the API and the report, the state-file
tools) decode these without a monitor. Every value carries the source offsets it applied
(``offsets``), so a replay after a crash changes nothing (see ``streams.keyed_state``).
"""

from __future__ import annotations

import functools
import json
import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from schemas import format_timestamp
from streams.incidents import IncidentBook
from streams.keyed_state import offsets_from_json, offsets_to_json
from streams.performance import PerformanceSummary

__all__ = ["PerfStream", "PerfWindow", "history_row", "perf_stream_key", "perf_window_key"]

_LEN = struct.Struct("<I")


@functools.lru_cache(maxsize=512)
def perf_window_key(tenant: str, model: str, window: float) -> str:
    """Store key of a :class:`PerfWindow` (JSON, so readers can parse the window back)."""
    return json.dumps(["pw", tenant, model, int(window)])


@functools.lru_cache(maxsize=1024)
def perf_stream_key(tenant: str, model: str) -> str:
    """Store key of a :class:`PerfStream`."""
    return json.dumps(["ps", tenant, model])


@dataclass
class PerfWindow:
    """One window's performance summaries, one per model version."""

    versions: dict[str, PerformanceSummary] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)
    looks: dict[str, int] = field(default_factory=dict)
    """Milestone looks done, per version."""
    final: bool = False
    estimated: bool = False
    raised: list[str] = field(default_factory=list)
    """Incident keys this window was already found drifting for (one count per window)."""
    spanned: bool = False
    """The span test ending at this window was done (at its end)."""
    told: list[list[Any]] = field(default_factory=list)
    """What this window told its stream's incident book, in order: ``[write, key, severity,
    test]`` found drifting, ``[write, key]`` judged clean, ``write`` the stream's write that
    recorded it (:attr:`PerfStream.writes`). A crash can keep this record and lose the
    stream's (``PerformanceMonitor.flush``); the flags above then skip the looks, and the book
    is told again what the lost write held."""
    written: int = 0
    """The stream's :attr:`PerfStream.writes` of the flush that wrote this record: above the
    stream's own, the stream's record of that flush was lost."""

    def merged(self) -> PerformanceSummary:
        out = PerformanceSummary()
        for s in self.versions.values():
            out = out.merge(s)
        return out

    def to_bytes(self) -> bytes:
        names = sorted(self.versions)
        head = json.dumps(
            {
                "v": names,
                "o": offsets_to_json(self.offsets),
                "l": self.looks,
                "f": self.final,
                "e": self.estimated,
                "r": self.raised,
                "s": self.spanned,
                **({"k": self.told, "g": self.written} if self.written else {}),
            },
            separators=(",", ":"),
        ).encode()
        parts = [_LEN.pack(len(head)), head]
        for name in names:
            raw = self.versions[name].to_bytes()
            parts += [_LEN.pack(len(raw)), raw]
        return b"".join(parts)

    @staticmethod
    def version_names(raw: bytes) -> list[str]:
        """The versions in an encoded window, without decoding its summaries."""
        (n,) = _LEN.unpack_from(raw, 0)
        names: list[str] = json.loads(raw[_LEN.size : _LEN.size + n])["v"]
        return names

    @classmethod
    def from_bytes(cls, raw: bytes) -> PerfWindow:
        (n,) = _LEN.unpack_from(raw, 0)
        pos = _LEN.size + n
        head = json.loads(raw[_LEN.size : pos])
        versions = {}
        for name in head["v"]:
            (m,) = _LEN.unpack_from(raw, pos)
            pos += _LEN.size
            versions[name] = PerformanceSummary.from_bytes(raw[pos : pos + m])
            pos += m
        return cls(
            versions,
            offsets_from_json(head["o"]),
            head["l"],
            head["f"],
            head["e"],
            head["r"],
            head.get("s", False),  # absent in windows written before the span test
            head.get("k", []),  # these two: absent in windows never flushed by a monitor
            head.get("g", 0),
        )


@dataclass
class PerfStream:
    """A stream's clock, its windows with data and its performance incidents."""

    tenant: str
    model: str
    clock: float = -math.inf
    windows: list[float] = field(default_factory=list)
    """Starts of the windows with data, ascending."""
    offsets: dict[int, int] = field(default_factory=dict)
    latest_version: str = ""
    incidents: IncidentBook = field(default_factory=IncidentBook)
    next_due: float = -math.inf
    """Event time of the next window close, final look or expiry: the clock only scans the
    windows when it passes this."""
    writes: int = 0
    """Flushes that wrote this record (:attr:`PerfWindow.written`)."""
    dropped: list[float] = field(default_factory=list)
    """The windows whose records this write deletes, after this record: a crash between
    the two leaves them, and whoever reads this record next deletes them again."""

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "t": self.tenant,
                "m": self.model,
                "c": self.clock if math.isfinite(self.clock) else None,
                "w": self.windows,
                "o": offsets_to_json(self.offsets),
                "lv": self.latest_version,
                "i": self.incidents.to_json(),
                "nd": self.next_due if math.isfinite(self.next_due) else None,
                **({"n": self.writes} if self.writes else {}),
                **({"dr": self.dropped} if self.dropped else {}),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> PerfStream:
        d = json.loads(raw)
        incidents = IncidentBook.from_json(d["i"])
        for k, v in d.get("cw", {}).items():  # state written before the book kept them
            incidents.counted.setdefault(k, [float(w) for w in v])
        return cls(
            tenant=d["t"],
            model=d["m"],
            clock=-math.inf if d["c"] is None else float(d["c"]),
            windows=[float(w) for w in d["w"]],
            offsets=offsets_from_json(d["o"]),
            latest_version=d["lv"],
            incidents=incidents,
            next_due=-math.inf if d["nd"] is None else float(d["nd"]),
            writes=d.get("n", 0),
            dropped=d.get("dr", []),
        )


def labelled_baseline(
    candidates: Iterable[float], window_of: Callable[[float], PerfWindow | None]
) -> tuple[PerformanceSummary, int]:
    """The candidate windows' summaries merged, over the windows that have labels, and how
    many those were (the baseline rule's ``min_baseline_windows`` counts them)."""
    merged = PerformanceSummary()
    n = 0
    for c in candidates:
        win = window_of(c)
        if win is None:
            continue
        s = win.merged()
        if s.labelled:
            merged = merged.merge(s)
            n += 1
    return merged, n


def history_row(
    tenant: str, model: str, version: str, window: float, s: PerformanceSummary
) -> dict[str, Any]:
    """One row of the performance history (the seed plan's ModelPerformanceMetrics)."""
    return {
        "tenant": tenant,
        "model": model,
        "model_version": version,
        "window_start": format_timestamp(window),
        "predictions": s.predictions,
        "labelled": s.labelled,
        "label_rate": s.label_rate,
        "accuracy": s.accuracy(),
        "precision": s.precision(),
        "recall": s.recall(),
        "f1": s.f1(),
        "roc_auc": s.roc_auc(),
        "roc_auc_error_bound": s.roc_auc_error_bound(),
        "pr_auc": s.pr_auc(),
        "pr_auc_error_bound": s.pr_auc_error_bound(),
        "brier": s.brier(),
        "calibration_error": s.calibration_error(),
        "positive_rate": s.positive_rate,
    }


OBJECTIVE_KIND = "objective"
"""The incident kind of a performance objective's breach (not a DriftKind: never drift)."""


def objective_key(metric: str, version: str) -> str:
    """The incident key of an objective (``objective:<metric>:<version>``)."""
    return f"objective:{metric}:{version}"


def split_incident_key(key: str) -> tuple[str, str]:
    """(incident kind, model version) of a key in a performance incident book."""
    if key.startswith("objective:"):
        return OBJECTIVE_KIND, key.split(":", 2)[2]
    return "performance", key.split(":", 1)[1]
