"""Wire formats of the worker's internal topics (between its own agents; not a contract).

``join-input`` carries predictions and outcomes to the joiner, partitioned by ``event_id``
with our own hash (producers of ``outcomes`` may use any partitioner, so the join cannot
rely on theirs). A message holds a batch of frames, each a one-line JSON header, a newline,
then the original message bytes untouched, so a dead letter raised at the join still
carries the producer's bytes.

``performance-input`` carries what the joiner learnt to the partition that owns the
prediction's stream (its ``predictions`` partition, the *home*), batched: one message per
(join batch, home partition), each entry with its own position for the exactly-once guard.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from math import isfinite
from typing import Literal

import orjson

from streams.keyed_state import Position

JoinKind = Literal["p", "o"]


def join_partition(event_id: str, partitions: int) -> int:
    """Stable across processes and client libraries (unlike Python's ``hash``).

    >>> join_partition("evt-1", 4), join_partition("evt-1", 4) == join_partition("evt-1", 4)
    (1, True)
    """
    return zlib.crc32(event_id.encode()) % partitions


About = tuple[str, str, str, str, float, float]
"""What the join needs of a prediction: event id, tenant, model, model version, timestamp
(epoch seconds) and score, sent beside its bytes so the join need not decode them."""
JoinFrame = tuple[JoinKind, Position, int | None, bytes, About | None]
"""(kind, origin (topic partition, offset), home partition, original bytes, a prediction's
:data:`About` (None: an outcome, or a prediction forwarded by an older worker))."""
MAX_FRAMES = 4096
"""Frames per join-input message (their positions are ``offset * MAX_FRAMES + index``)."""
MAX_BATCH_BYTES = 256 * 1024


def encode_join(frames: list[JoinFrame]) -> bytes:
    """Many predictions/outcomes in one message: Faust's cost is per message, not per byte.

    >>> about = ("e\u00e9", "acme", "fraud", "v1", 1.5e9, 0.25)
    >>> frames = [("o", (2, 41), None, b'{"a":1}', None), ("p", (0, 7), 0, b"{}", about)]
    >>> decode_join(encode_join(frames)) == frames
    True
    """
    parts = []
    dumps = orjson.dumps
    for kind, (partition, offset), home, raw, about in frames:
        # orjson: a third of the time of formatting the head by hand, which was a fifth of
        # the drift agent's forwarding. Its JSON may differ from ``json.dumps``'s (UTF-8 for
        # \u escapes, ``1e-7`` for ``1e-07``), never in what it decodes to.
        if kind not in ("p", "o"):
            raise ValueError(f"unknown join-input kind {kind!r}")
        h = None if home is None else int(home)
        head: dict[str, object] = {"k": kind, "o": (int(partition), int(offset)), "h": h}
        head["n"] = len(raw)
        if about is not None and isfinite(about[4]) and isfinite(about[5]):
            event_id, tenant, model, version, timestamp, score = about
            head["a"] = (event_id, tenant, model, version, float(timestamp), float(score))
        try:
            parts += [dumps(head), b"\n", raw]
        except orjson.JSONEncodeError:
            # A lone surrogate in the head (never in a validated name or id), which no
            # decoder of ours reads back, or an integer beyond 64 bits: the head without the
            # prediction's facts (the join decodes its bytes instead), by the standard library.
            head.pop("a", None)
            parts += [json.dumps(head, separators=(",", ":")).encode(), b"\n", raw]
    return b"".join(parts)


def decode_join(value: bytes) -> list[JoinFrame]:
    frames: list[JoinFrame] = []
    pos = 0
    while pos < len(value):
        end = value.index(b"\n", pos)
        meta = orjson.loads(value[pos:end])
        kind = meta["k"]
        if kind not in ("p", "o"):
            raise ValueError(f"unknown join-input kind {kind!r}")
        n = int(meta["n"])
        raw = value[end + 1 : end + 1 + n]
        if len(raw) != n:
            raise ValueError("truncated join-input frame")
        origin = (int(meta["o"][0]), int(meta["o"][1]))
        a = meta.get("a")
        about: About | None = None
        if a is not None:
            about = (str(a[0]), str(a[1]), str(a[2]), str(a[3]), float(a[4]), float(a[5]))
        home = None if meta["h"] is None else int(meta["h"])
        frames.append((kind, origin, home, raw, about))
        pos = end + 1 + n
    return frames


def batch_join(
    frames: list[tuple[str, JoinFrame]], partitions: int
) -> list[tuple[bytes, bytes, int]]:
    """(event_id, frame) pairs -> join-input messages (key, value, partition): one per join
    partition per ``MAX_FRAMES`` frames or ``MAX_BATCH_BYTES``, in order."""
    by_part: dict[int, list[list[JoinFrame]]] = {}
    sizes: dict[int, int] = {}
    for event_id, frame in frames:
        p = join_partition(event_id, partitions)
        chunks = by_part.setdefault(p, [[]])
        size = len(frame[3]) + (64 if frame[4] is None else 192)  # with its header
        if len(chunks[-1]) >= MAX_FRAMES or (chunks[-1] and sizes[p] + size > MAX_BATCH_BYTES):
            chunks.append([])
            sizes[p] = 0
        chunks[-1].append(frame)
        sizes[p] = sizes.get(p, 0) + size
    return [
        (b"join-batch", encode_join(chunk), p)
        for p, chunks in sorted(by_part.items())
        for chunk in chunks
    ]


# Not frozen: one is made per prediction and label, and a frozen dataclass's __init__ costs 6x.
@dataclass(slots=True)
class PerfEntry:
    """A prediction (``label`` None) or a label to apply to the performance history."""

    offset: int
    """Position within the join partition: 2 * (join-input offset * MAX_FRAMES + frame)
    (+1 for a label), so every prediction and label is guarded on its own."""
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
    # orjson: every number here is finite (validated scores and times), which is all it
    # writes differently from the standard library (a third of the performance agent's time).
    return orjson.dumps({"jp": join_part, "e": [e.to_list() for e in entries]})


def decode_perf(value: bytes) -> tuple[int, list[PerfEntry]]:
    body = orjson.loads(value)
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
