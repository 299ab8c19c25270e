"""Wire formats of the worker's internal topics (between its own agents; not a contract).

``join-input`` carries predictions and outcomes to the joiner, partitioned by ``event_id``
with our own hash (producers of ``outcomes`` may use any partitioner, so the join cannot
rely on theirs). A message is a one-line JSON header, a newline, then the original message
bytes untouched, so a dead letter raised at the join still carries the producer's bytes.

``performance-input`` carries what the joiner learnt to the partition that owns the
prediction's stream (its ``predictions`` partition, the *home*), batched: one message per
(join batch, home partition), each entry with its own position for the exactly-once guard.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Literal

from streams.state import Position

JoinKind = Literal["p", "o"]


def join_partition(event_id: str, partitions: int) -> int:
    """Stable across processes and client libraries (unlike Python's ``hash``).

    >>> join_partition("evt-1", 4), join_partition("evt-1", 4) == join_partition("evt-1", 4)
    (1, True)
    """
    return zlib.crc32(event_id.encode()) % partitions


def encode_join(kind: JoinKind, origin: Position, home: int | None, raw: bytes) -> bytes:
    """
    >>> decode_join(encode_join("o", (2, 41), None, b'{"a":1}'))
    ('o', (2, 41), None, b'{"a":1}')
    """
    head = json.dumps({"k": kind, "o": list(origin), "h": home}, separators=(",", ":"))
    return head.encode() + b"\n" + raw


def decode_join(value: bytes) -> tuple[JoinKind, Position, int | None, bytes]:
    head, sep, raw = value.partition(b"\n")
    if not sep:
        raise ValueError("join-input message without a header")
    meta = json.loads(head)
    kind = meta["k"]
    if kind not in ("p", "o"):
        raise ValueError(f"unknown join-input kind {kind!r}")
    origin = (int(meta["o"][0]), int(meta["o"][1]))
    home = None if meta["h"] is None else int(meta["h"])
    return kind, origin, home, raw


@dataclass(frozen=True, slots=True)
class PerfEntry:
    """A prediction (``label`` None) or a label to apply to the performance history."""

    offset: int
    """Position within the join partition: 2 * join-input offset (+1 for a label), so the
    prediction and the label one message can yield are guarded separately."""
    tenant: str
    model: str
    version: str
    prediction_ts: float
    score: float
    label: int | None = None
    outcome_ts: float | None = None

    def to_list(self) -> list[object]:
        return [
            self.offset,
            self.tenant,
            self.model,
            self.version,
            self.prediction_ts,
            self.score,
            self.label,
            self.outcome_ts,
        ]


def encode_perf(join_part: int, entries: list[PerfEntry]) -> bytes:
    """
    >>> e = PerfEntry(10, "acme", "fraud", "v1", 5.0, 0.25, 1, 9.0)
    >>> decode_perf(encode_perf(3, [e])) == (3, [e])
    True
    """
    body = {"jp": join_part, "e": [e.to_list() for e in entries]}
    return json.dumps(body, separators=(",", ":")).encode()


def decode_perf(value: bytes) -> tuple[int, list[PerfEntry]]:
    body = json.loads(value)
    entries = [
        PerfEntry(
            int(o),
            str(t),
            str(m),
            str(v),
            float(pts),
            float(s),
            None if y is None else int(y),
            None if ots is None else float(ots),
        )
        for o, t, m, v, pts, s, y, ots in body["e"]
    ]
    return int(body["jp"]), entries
