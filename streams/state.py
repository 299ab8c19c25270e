"""The detection state kept per stream, per feature-window and per incident, and its codecs.

Every value carries the source offsets it has applied (``offsets``: partition -> last
offset). After a crash the worker re-reads events since its last commit; the guard makes the
re-application a no-op, so counts stay exact under at-least-once delivery without Kafka
transactions.
"""

from __future__ import annotations

import functools
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Literal

from streams.summary import CategoricalSummary, NumericSummary, RecentNumericSummary

FeatureKind = Literal["numeric", "categorical"]
Summary = NumericSummary | CategoricalSummary
Position = tuple[int, int]
"""(partition, offset) of the source message, or None offline."""


def _guard(offsets: dict[int, int], position: Position | None) -> bool:
    """Record ``position``; False when it (or a later offset) was applied already."""
    if position is None:
        return True
    partition, offset = position
    if offsets.get(partition, -1) >= offset:
        return False
    offsets[partition] = offset
    return True


def _offsets_to_json(offsets: dict[int, int]) -> dict[str, int]:
    return {str(p): o for p, o in offsets.items()}


def _offsets_from_json(raw: dict[str, int]) -> dict[int, int]:
    return {int(p): int(o) for p, o in raw.items()}


RECENT_LEVELS = 4
"""Recent-span summaries kept for an open window: the last 1, 2, 4 and 8 interim slots."""


@dataclass
class FeatureWindow:
    """One feature's values in one window: a bounded summary plus its offset guard.

    While the window is open it also keeps ``recent``: summaries of the values since the last
    1, 2, 4 and 8 interim boundaries (level k restarts every 2**k slots). A shift that starts
    mid-day is diluted in the whole day's summary; testing the recent spans finds it hours
    earlier. They are dropped when the window closes.
    """

    kind: FeatureKind
    numeric: NumericSummary | None = None
    categorical: CategoricalSummary | None = None
    offsets: dict[int, int] = field(default_factory=dict)
    recent: list[Summary] | None = None

    @classmethod
    def new(cls, kind: FeatureKind, recent: bool = False) -> FeatureWindow:
        fw = (
            cls(kind, numeric=NumericSummary())
            if kind == "numeric"
            else cls(kind, categorical=CategoricalSummary())
        )
        if recent:
            fw.recent = [fw.empty_recent() for _ in range(RECENT_LEVELS)]
        return fw

    def empty_recent(self) -> Summary:
        return RecentNumericSummary() if self.kind == "numeric" else CategoricalSummary()

    @property
    def summary(self) -> Summary:
        summary = self.numeric if self.numeric is not None else self.categorical
        assert summary is not None
        return summary

    def apply(self, value: float | str | None, position: Position | None) -> bool:
        if not _guard(self.offsets, position):
            return False
        targets: list[Summary] = [self.summary]
        if self.recent is not None:
            targets.append(self.recent[0])
        for summary in targets:
            if value is None:
                summary.add_missing()
            elif isinstance(summary, NumericSummary):
                summary.add(float(value))
            else:
                summary.add(str(value))
        return True

    def roll_recent(self, slot: int) -> list[tuple[int, Summary]]:
        """At the end of interim ``slot`` (1-based): the spans that just completed, as
        (slots covered, summary); then restart them. Level 0 (the last slot) folds into the
        longer levels first."""
        if self.recent is None:
            return []
        last = self.recent[0]
        for k in range(1, RECENT_LEVELS):
            self.recent[k] = _merge_summaries(self.recent[k], last)
        done = []
        for k in range(RECENT_LEVELS):
            if slot % (1 << k) == 0:
                done.append((1 << k, self.recent[k]))
                self.recent[k] = self.empty_recent()
        return done

    @property
    def count(self) -> int:
        """Values present (not missing)."""
        return self.summary.count

    @property
    def missing(self) -> int:
        return self.summary.missing

    def to_bytes(self) -> bytes:
        parts = [] if self.recent is None else [r.to_bytes() for r in self.recent]
        header = json.dumps(
            {"k": self.kind, "o": _offsets_to_json(self.offsets), "r": [len(p) for p in parts]}
        ).encode()
        return struct.pack("<I", len(header)) + header + b"".join(parts) + self.summary.to_bytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> FeatureWindow:
        (hlen,) = struct.unpack_from("<I", raw)
        header = json.loads(raw[4 : 4 + hlen])
        pos = 4 + hlen
        kind: FeatureKind = header["k"]
        offsets = _offsets_from_json(header["o"])
        recent: list[Summary] | None = None
        if header.get("r"):
            recent = []
            for size in header["r"]:
                chunk = raw[pos : pos + size]
                pos += size
                recent.append(
                    RecentNumericSummary.from_bytes(chunk)
                    if kind == "numeric"
                    else CategoricalSummary.from_bytes(chunk)
                )
        body = raw[pos:]
        if kind == "numeric":
            return cls(
                kind, numeric=NumericSummary.from_bytes(body), offsets=offsets, recent=recent
            )
        return cls(
            kind, categorical=CategoricalSummary.from_bytes(body), offsets=offsets, recent=recent
        )


def _merge_summaries(a: Summary, b: Summary) -> Summary:
    if isinstance(a, NumericSummary) and isinstance(b, NumericSummary):
        return a.merge(b)
    if isinstance(a, CategoricalSummary) and isinstance(b, CategoricalSummary):
        return a.merge(b)
    raise TypeError("cannot merge numeric and categorical summaries")


@dataclass
class StreamState:
    """Event-time progress and schema of one (tenant, model) stream."""

    tenant: str
    model: str
    partition: int | None = None
    watermark: float | None = None
    """Highest event time seen: the stream's clock."""
    last_closed: float | None = None
    """Start of the newest window already tested."""
    first_window: float | None = None
    model_version: str = ""
    features: dict[str, FeatureKind] = field(default_factory=dict)
    window_events: dict[float, int] = field(default_factory=dict)
    """Events per window start, for the windows still retained."""
    events: int = 0
    late_events: int = 0
    offsets: dict[int, int] = field(default_factory=dict)
    interim_window: float | None = None
    """Window of the latest interim look, and which look it was (1 = after the first hour)."""
    interim_look: int = 0

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "t": self.tenant,
                "m": self.model,
                "p": self.partition,
                "wm": self.watermark,
                "lc": self.last_closed,
                "fw": self.first_window,
                "v": self.model_version,
                "f": self.features,
                "we": [[w, n] for w, n in sorted(self.window_events.items())],
                "n": self.events,
                "late": self.late_events,
                "o": _offsets_to_json(self.offsets),
                "iw": self.interim_window,
                "il": self.interim_look,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> StreamState:
        d = json.loads(raw)
        return cls(
            tenant=d["t"],
            model=d["m"],
            partition=d["p"],
            watermark=d["wm"],
            last_closed=d["lc"],
            first_window=d["fw"],
            model_version=d["v"],
            features=d["f"],
            window_events={float(w): int(n) for w, n in d["we"]},
            events=d["n"],
            late_events=d["late"],
            offsets=_offsets_from_json(d["o"]),
            interim_window=d.get("iw"),
            interim_look=d.get("il", 0),
        )


@dataclass
class Incident:
    """An open drift incident of one feature; re-detections update it instead of alerting anew."""

    drift_id: str
    opened_window: float
    persistence: int = 1
    clean_streak: int = 0
    confirmed: bool = False
    max_severity: str = "LOW"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.drift_id,
            "ow": self.opened_window,
            "p": self.persistence,
            "c": self.clean_streak,
            "ok": self.confirmed,
            "sev": self.max_severity,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Incident:
        return cls(d["id"], d["ow"], d["p"], d["c"], d["ok"], d["sev"])


@dataclass
class IncidentBook:
    """All incidents of one stream, plus the window each feature was last judged on."""

    open: dict[str, Incident] = field(default_factory=dict)
    last_window: dict[str, float] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return json.dumps(
            {"open": {f: i.to_json() for f, i in self.open.items()}, "lw": self.last_window},
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> IncidentBook:
        d = json.loads(raw)
        return cls(
            open={f: Incident.from_json(i) for f, i in d["open"].items()},
            last_window={f: float(w) for f, w in d["lw"].items()},
        )


# Keys are JSON arrays (unambiguous whatever the names contain); building them is on the hot
# path, once per feature value, so they are memoised.
@functools.lru_cache(maxsize=4096)
def stream_key(tenant: str, model: str) -> str:
    return json.dumps(["s", tenant, model])


@functools.lru_cache(maxsize=1 << 16)
def window_key(tenant: str, model: str, window_start: float, feature: str) -> str:
    return json.dumps(["w", tenant, model, int(window_start), feature])


def incidents_key(tenant: str, model: str) -> str:
    return json.dumps(["i", tenant, model])
