"""Joining outcomes to their predictions by ``event_id``.

Pure logic over a :class:`~streams.keyed_state.StateStore` (a Faust table in a worker, a dict in a
backtest), like the drift engine. State lives under keys of one ``event_id`` (the prediction
and what became of it), so a worker routes predictions and outcomes to one internal topic
partitioned by ``event_id`` and runs one joiner per partition. What the pairs are worth (the
performance history) is :mod:`streams.perf_monitor`'s job.

Labels arrive late, partially, twice, or before their prediction:

- a prediction is kept for ``retention_days`` of event time, then an outcome for it is
  ``expired`` (a prediction older than that is never joined);
- an outcome for a prediction not seen yet waits (``pending``) until it arrives, up to the
  same retention, then is given up as ``unknown_prediction``;
- a second outcome for the same prediction is a ``duplicate_outcome`` and never counted twice;
- a second prediction with the same ``event_id`` is a ``duplicate_prediction``;
- the *same* message delivered again (at-least-once, after a crash) is recognised by its
  source position and ignored silently: it is a replay, not a duplicate.

A record's prediction is its last field (records written before are read as they are), so
that expiry, which keeps none of it, reads the fields before it without decoding it.
Records become tombstones (their source positions only, to recognise a late replay) and
then disappear, each ``retention_days`` after the last change, via an index of the keys made
per (partition, day) kept in chunks, so expiry never scans the table. As in any two-input
event-time join, the expiry clock is the *slower* input's event time (the least of the
partition's latest prediction and latest outcome), so a backlog on one side (a lagging
producer, a replay, a restart) never expires records the other side is about to match. If
outcomes stop altogether, records still expire ``STALL_FACTOR`` retentions behind the
predictions, so the state stays bounded; in a worker only once no outcome has reached the
partition for ``JoinConfig.stall_grace_seconds`` of its own wall time: event time alone
cannot tell outcomes that stopped from outcomes still on their way (after a restart with a
backlog, the agent that routes predictions into the join can be weeks of event time ahead of
the one that routes outcomes, and the first outcomes then found their predictions expired).
The grace ends early once the worker has seen that no outcome is on its way (every outcome
in ``outcomes`` routed, and the partition read past all that was routed then: ``drained``);
a label-less stream then kept a grace's worth of records for nothing, and the worker's memory
rose by their later expiry. A backtest, which reads both inputs in event-time order, applies
it at once.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from typing import Any, Final

import orjson

from schemas import InvalidEvent, OutcomeEvent, PredictionEvent
from schemas.events import format_timestamp, json_bytes
from streams.config import DAY
from streams.keyed_state import Position, StateCache, StateStore, Write, load_json

POSITIVE_LABELS = frozenset({"1", "true", "yes", "positive", "fraud", "conflict"})
INDEX_CHUNK = 1_000
"""Keys per expiry-index value: appends rewrite one chunk, never a whole day."""
STALL_FACTOR = 3.0


def binary_label(label: int | str) -> int:
    """Outcomes on the wire are ints or strings; performance metrics need 0/1.

    >>> binary_label(1), binary_label("fraud"), binary_label("0"), binary_label("legit")
    (1, 1, 0, 0)
    """
    if isinstance(label, int):
        if label not in (0, 1):
            raise InvalidEvent("bad_value", f"label {label} is not 0 or 1")
        return label
    return 1 if label.strip().lower() in POSITIVE_LABELS else 0


DECODED_PER_STORED: Final = 5
"""Memory of a decoded join record per byte of its stored JSON: 4.2x for a prediction of 20
features, 5.1x for one of 1,000 (``tracemalloc`` over simulated records; floats and dict
slots take more than their digits)."""


@dataclass(frozen=True, slots=True)
class JoinConfig:
    retention_days: float = 30.0
    """Predictions wait this long (event time) for their outcome; outcomes for their
    prediction."""
    stall_grace_seconds: float = 600.0
    """Wall seconds without an outcome on a partition (counted from the joiner's first
    expiry, so from a worker's start or a partition's assignment) before its records expire
    ``STALL_FACTOR`` retentions behind the predictions (:meth:`OutcomeJoiner.expire`)."""
    cached_records: int = 16_384
    """Decoded join records kept between batches (a record is touched by its prediction and
    its outcome, often batches apart; beyond this they are read back from the store)."""
    cache_mb: float = 64.0
    """Most MiB the decoded records kept between batches take, as estimated from their
    stored size (:data:`DECODED_PER_STORED`): ``cached_records`` of a model with 1,000
    features would be ~1.4 GB. A worker shares its budget among its partitions'
    joiners (:meth:`OutcomeJoiner.set_cache_mb`)."""
    expire_per_pass: int = 10_000
    """Records a bounded expiry pass (a worker's) handles at most, beyond three for each
    record indexed since the last pass, so that it keeps ahead of what comes in. Without a
    bound, the first pass after the stall grace expired all that a backlog had read in it
    (1.1M records a partition, one write: the event loop blocked for a minute and RSS grew
    by a gigabyte); now the rest waits for the next batches."""


# Not frozen: one is made per joined pair, and a frozen dataclass's __init__ costs 6x.
@dataclass(slots=True)
class LabeledPrediction:
    """One joined pair: the training row for retraining (topic ``labeled-predictions``)."""

    prediction: PredictionEvent
    label: int | str
    outcome_timestamp: float

    def to_dict(self) -> dict[str, Any]:
        out = self.prediction.to_dict()
        out["prediction_timestamp"] = out.pop("timestamp")
        out["label"] = self.label
        out["outcome_timestamp"] = format_timestamp(self.outcome_timestamp)
        return out

    def to_json(self) -> bytes:
        try:
            return json_bytes(self.to_dict())
        except TypeError:  # an integer label beyond 64 bits
            return json.dumps(self.to_dict(), separators=(",", ":")).encode()


# Not frozen: one is made per prediction forwarded, and a frozen dataclass's __init__ costs 6x.
@dataclass(slots=True)
class ForwardedPrediction:
    """A prediction as the drift agent forwards it: what the join needs of it, beside its
    bytes. The join stores the bytes as they are and decodes them only to join an outcome
    that was waiting (decoding and re-encoding each prediction was ~40 % of the join's CPU).

    >>> raw = (b'{"event_id":"e1","tenant":"acme","model":"fraud","model_version":"v1",'
    ...        b'"timestamp":"2026-01-01T00:00:00Z","features":{"x":1},"score":0.5}')
    >>> f = ForwardedPrediction("e1", "acme", "fraud", "v1", 1767225600.0, 0.5, raw)
    >>> f.event() == PredictionEvent.from_json(raw)
    True
    """

    event_id: str
    tenant: str
    model: str
    model_version: str
    timestamp: float
    score: float
    raw: bytes
    """The prediction's JSON, as validated by the drift agent."""

    def event(self) -> PredictionEvent:
        return PredictionEvent.from_trusted_json(self.raw)


@dataclass
class JoinStats:
    joined: int = 0
    pending: int = 0
    replayed: int = 0
    expired_records: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExpiredOutcome:
    """An outcome given up on, and why: no prediction within the retention
    (``unknown_prediction``), its prediction another tenant's or model's
    (``mismatched_outcome``), or made more than the retention before it (``expired``)."""

    outcome: OutcomeEvent
    origin: Position | None
    reason: str = "unknown_prediction"


MAX_REFUSED_ORIGINS = 8
"""Origins of outcomes a record keeps as given up or refused while another waited (``xo``)."""


# Not frozen: one is made per event joined, and a frozen dataclass's __init__ costs 6x.
@dataclass(slots=True)
class JoinResult:
    """What one event did: ``new`` is False for a replayed message (nothing changed);
    ``joined`` is the pair it completed, if any."""

    new: bool
    joined: LabeledPrediction | None = None
    home: int | None = None
    """Partition of ``predictions`` the prediction came from (where its stream's state is)."""
    dropped: ExpiredOutcome | None = None
    """A waiting outcome the prediction showed to be for another tenant/model."""


# Keys are the JSON of a list, written as ``json.dumps`` writes it (state written by earlier
# versions is read by the same keys), built without its generic encoder: it was the join's
# largest single cost.


def prediction_key(event_id: str) -> str:
    """
    >>> prediction_key('e"1\u00e9') == json.dumps(["p", 'e"1\u00e9'])
    True
    """
    return '["p", ' + encode_basestring_ascii(event_id) + "]"


def _index_key(partition: int, day: int, chunk: int) -> str:
    return f'["x", {partition}, {day}, {chunk}]'


def _meta_key(partition: int) -> str:
    return f'["xm", {partition}]'


_PASS = orjson.OPT_PASSTHROUGH_DATACLASS
"""A forwarded prediction goes to :func:`_as_json`, not field by field."""


def _as_json(value: Any) -> Any:
    """A forwarded prediction in a record: its bytes, as they came (orjson's ``default``)."""
    if isinstance(value, ForwardedPrediction):
        return orjson.Fragment(value.raw)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _as_decoded(value: Any) -> Any:
    """:func:`_as_json` for ``json.dumps``, which takes no pre-encoded JSON."""
    if isinstance(value, ForwardedPrediction):
        return orjson.loads(value.raw)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _encode_record(record: dict[str, Any]) -> bytes:
    """orjson, except for the partition's meta (its clocks start at -inf, which orjson would
    write as null) and what orjson refuses (integer labels beyond 64 bits).

    >>> raw = b'{"event_id":"e1","score":0.5}'
    >>> f = ForwardedPrediction("e1", "t", "m", "v", 0.0, 0.5, raw)
    >>> _encode_record({"home": 0, "prediction": f})
    b'{"home":0,"prediction":{"event_id":"e1","score":0.5}}'
    >>> _encode_record({"outcome": {"label": 2**70}, "prediction": f})[-47:]
    b'"prediction": {"event_id": "e1", "score": 0.5}}'
    """
    if "clock" not in record:
        try:
            # orjson 3.12+ returns its whole working buffer: a copy of its own length.
            return bytes(memoryview(orjson.dumps(record, default=_as_json, option=_PASS)))
        except TypeError:
            pass
    return json.dumps(record, default=_as_decoded).encode()


_PREDICTION_LAST: Final = b',"prediction":'


def _record_head(raw: bytes) -> dict[str, Any] | None:
    """A stored record's fields before its prediction, with ``"prediction"`` as None (there,
    not decoded); None where that may not be all of its other fields: then it is decoded
    whole.

    - Where ``,"prediction":`` first occurs, it is the top-level field or inside an object
      nested in an earlier field (never inside a string, where a quote is escaped); nested,
      the bytes before it and one ``}`` leave an object open, which does not decode. Not
      there at all: a record without a prediction, or one written before predictions went
      last (the prediction first, after ``{``).
    - Fields after the prediction: an earlier version that joins an outcome to a record this
      one wrote adds ``"outcome"`` and ``"oo"`` after it. Either name anywhere after the cut
      (even inside the prediction) means a whole decode.

    >>> _record_head(b'{"home":1,"po":[0,5],"prediction":{"event_id":"e","features":{}}}')
    {'home': 1, 'po': [0, 5], 'prediction': None}
    >>> _record_head(b'{"prediction":{"features":{"a":1,"prediction":2}},"home":1}') is None
    True
    >>> _record_head(b'{"home":1,"prediction":{"event_id":"e"},"outcome":{},"oo":null}') is None
    True
    """
    cut = raw.find(_PREDICTION_LAST)
    if cut < 0 or raw.find(b'"oo":', cut) >= 0 or raw.find(b'"outcome":', cut) >= 0:
        return None
    try:
        head = orjson.loads(raw[:cut] + b"}")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(head, dict):
        return None
    head["prediction"] = None
    return head


def _stored_prediction(record: dict[str, Any]) -> PredictionEvent:
    """The prediction a record holds: forwarded (not written yet) or decoded from the store."""
    stored = record["prediction"]
    if isinstance(stored, ForwardedPrediction):
        return stored.event()
    return PredictionEvent.from_trusted_dict(stored)  # accepted once


def _tombstone(record: dict[str, Any], day: int) -> dict[str, Any]:
    """What is kept of an expired record: its positions (to know a redelivery for what it
    is) and ``day``, the day it is indexed under (to go at that entry only)."""
    tomb = {
        "tomb": True,
        "day": day,
        "po": record.get("po"),
        "oo": record.get("oo"),
        "home": record.get("home"),
        "had_outcome": record.get("outcome") is not None,
        "had_prediction": "prediction" in record,
    }
    if record.get("xo"):
        tomb["xo"] = record["xo"]
    return tomb


def _refused_here(record: dict[str, Any] | None, origin: Position | None) -> bool:
    """Was the outcome message at ``origin`` given up or refused by this record before (a
    re-read: the same decision again, not a new one)?"""
    return origin is not None and record is not None and list(origin) in record.get("xo", ())


def _remember_refused(record: dict[str, Any], origin: Position | None) -> None:
    if origin is not None:
        kept = record.setdefault("xo", [])
        kept.append(list(origin))
        del kept[:-MAX_REFUSED_ORIGINS]


def _pos(raw: list[int] | None) -> Position | None:
    return None if raw is None else (int(raw[0]), int(raw[1]))


class OutcomeJoiner:
    """Joins outcomes to predictions by ``event_id``, once each, whatever the order.

    >>> from streams.keyed_state import MemoryStore
    >>> j = OutcomeJoiner(JoinConfig(), MemoryStore())
    >>> p = PredictionEvent("e1", "acme", "fraud", "v1", 0.0, {"x": 1.0}, 0.9)
    >>> j.on_prediction(p, origin=(0, 5)).joined is None
    True
    >>> j.on_outcome(OutcomeEvent("e1", "acme", "fraud", 3600.0, 1)).joined.label
    1
    >>> j.on_prediction(p, origin=(0, 5)).new  # the same message again: a replay
    False
    >>> j.on_outcome(OutcomeEvent("e1", "acme", "fraud", 7200.0, 1))
    Traceback (most recent call last):
    ...
    schemas.events.InvalidEvent: duplicate_outcome: event e1 already has an outcome
    """

    def __init__(self, config: JoinConfig, store: StateStore, partition: int = 0) -> None:
        self.config = config
        self.store = store
        self.partition = partition
        """The partition this joiner's keys belong to (its index keys name it)."""
        self.stats = JoinStats()
        self._meta_key = _meta_key(partition)
        self._quiet_since: float | None = None
        """Wall time (``expire``'s ``now``) since which no outcome reached this joiner."""
        self._outcome_seen = False
        self._drained = False
        """No outcome was on its way when none had come here: stalled until one comes."""
        self._indexed = 0
        """Records indexed since the last expiry pass (its own tombstones not counted)."""
        # Records, index chunks and the partition's meta: JSON values (the meta's clocks
        # start at -inf, which json writes and reads back).
        self._records: StateCache[dict[str, Any]] = StateCache(
            store, load_json, _encode_record, config.cached_records
        )
        # Read by nearly every event: held between flushes (a flush may drop them from the
        # cache, and a later read would decode another copy) instead of looked up each time.
        self._meta: dict[str, Any] | None = None
        self._chunk: tuple[str, int, list[str]] | None = None
        """The index chunk ``_index`` last appended to: its day, number and keys (written
        at the next flush: it was put in this one)."""
        self.set_cache_mb(config.cache_mb)

    def set_cache_mb(self, mb: float) -> None:
        """Bound the decoded records kept between batches to about ``mb`` MiB (from the
        next flush)."""
        self._records.max_bytes = max(1, int(mb * (1 << 20) / DECODED_PER_STORED))

    # ------------------------------------------------------------------ events

    def on_prediction(
        self,
        event: PredictionEvent | ForwardedPrediction,
        origin: Position | None = None,
        home: int | None = None,
    ) -> JoinResult:
        """Record a prediction; the result carries the joined pair if its outcome was waiting.
        A :class:`ForwardedPrediction` is stored as its bytes (a :class:`PredictionEvent`,
        as its :meth:`~PredictionEvent.to_dict` with the timestamp in epoch seconds)."""
        key = prediction_key(event.event_id)
        record = self._record(key)
        if record is not None and "tomb" in record:
            if origin is not None and _pos(record.get("po")) == origin:
                self.stats.replayed += 1
                self._advance(event.timestamp)  # see below
                return JoinResult(new=False, home=record.get("home"))
            # (tombstones of earlier versions do not say: a worker's predictions always have
            # an origin, so one without is an outcome's)
            if not record.get("had_prediction", record.get("po") is not None):
                # Its outcome came first and was given up (no prediction within the
                # retention): the prediction is new, for the performance history, with
                # nothing left to join; the tombstone now knows it (refused as a duplicate
                # before, and missing from the history: found by review).
                record |= {"had_prediction": True, "home": home}
                record["po"] = None if origin is None else list(origin)
                self._put(key, record)
                self._advance(event.timestamp)
                return JoinResult(new=True, home=home)
            self._reject("duplicate_prediction")
            raise InvalidEvent(
                "duplicate_prediction", f"event {event.event_id} was predicted (and expired) before"
            )
        if record is not None and "prediction" in record:
            if origin is not None and _pos(record.get("po")) == origin:
                self.stats.replayed += 1
                self._index(key, event.timestamp)  # its index entry may not have been saved
                # Nor the clock it moved: a crash that cut a write short can keep the record
                # and lose the meta record (written last), and expiry would lag.
                self._advance(event.timestamp)
                return JoinResult(new=False, home=record.get("home"))
            self._reject("duplicate_prediction")
            raise InvalidEvent(
                "duplicate_prediction", f"event {event.event_id} was predicted before"
            )
        pending = None if record is None else record.get("outcome")
        outcome = None if pending is None else OutcomeEvent.from_dict(pending)
        full: PredictionEvent | None = None
        if (
            outcome is not None
            and (outcome.tenant, outcome.model) == (event.tenant, event.model)
            and outcome.timestamp - event.timestamp <= self.config.retention_days * DAY
        ):
            # It joins: decoded before anything changes, so that one that fails to decode
            # changes nothing (decoded after, its failure left the outcome consumed and never
            # joined: by review).
            full = event.event() if isinstance(event, ForwardedPrediction) else event
        if isinstance(event, ForwardedPrediction):
            stored: ForwardedPrediction | dict[str, Any] = event
        else:
            stored = event.to_dict(epoch_timestamp=True)
        # The prediction last in a record (and its stored JSON): see ``_record_head``.
        new_record: dict[str, Any] = {"home": home}
        if origin is not None:
            new_record["po"] = list(origin)
        if record is None:
            self._index(key, event.timestamp)
        self._advance(event.timestamp)
        if outcome is None:
            new_record["prediction"] = stored
            self._put(key, new_record)
            return JoinResult(new=True, home=home)
        self.stats.pending -= 1
        assert record is not None  # an outcome was pending in it
        waiting_origin = _pos(record.get("oo"))
        if record.get("xo"):
            new_record["xo"] = record["xo"]
        if (outcome.tenant, outcome.model) != (event.tenant, event.model):
            # The waiting outcome was not this prediction's: give it up, keep the slot open,
            # and its origin, so that a re-read of it is known for what it is (dead-lettered
            # once, not refused a second time).
            self._reject("mismatched_outcome")
            _remember_refused(new_record, waiting_origin)
            new_record["prediction"] = stored
            self._put(key, new_record)
            dropped = ExpiredOutcome(outcome, waiting_origin, "mismatched_outcome")
            return JoinResult(new=True, home=home, dropped=dropped)
        new_record |= {"outcome": pending, "oo": record.get("oo")}
        new_record["prediction"] = stored
        self._put(key, new_record)
        if full is None:
            # Its prediction came (out of order) from more than the retention before it: the
            # outcome is given up, as one arriving after its prediction would be refused, and
            # dead-lettered (it was kept in the record, counted neither joined nor lost).
            self._reject("expired")
            return JoinResult(
                new=True, home=home, dropped=ExpiredOutcome(outcome, waiting_origin, "expired")
            )
        assert full is not None
        return JoinResult(new=True, joined=self._join(full, outcome), home=home)

    def advance_clock(self, ts: float) -> None:
        """Move the prediction clock as a new prediction stamped ``ts`` would, keeping
        nothing: a backtest's prediction that no outcome names and whose id comes once
        (:mod:`driftwatch.join_keys`)."""
        self._advance(ts)

    def on_outcome(self, event: OutcomeEvent, origin: Position | None = None) -> JoinResult:
        """Join an outcome (``joined`` is None while it waits for its prediction). Raises
        :class:`InvalidEvent` for a duplicate, or for a prediction older than the retention."""
        self._outcome_seen = True  # whatever becomes of it: the outcomes are flowing
        binary_label(event.label)  # reject unusable labels before touching state
        key = prediction_key(event.event_id)
        record = self._record(key)
        if _refused_here(record, origin):
            assert record is not None
            self.stats.replayed += 1
            self._advance(event.timestamp, "oclock")  # as for a replayed outcome
            return JoinResult(new=False, home=record.get("home"))
        if record is not None and "tomb" in record:
            if origin is not None and _pos(record.get("oo")) == origin:
                self.stats.replayed += 1
                self._advance(event.timestamp, "oclock")  # as for a replayed prediction
                return JoinResult(new=False, home=record.get("home"))
            reason = "duplicate_outcome" if record.get("had_outcome") else "expired"
            self._reject(reason)
            raise InvalidEvent(reason, f"event {event.event_id} expired from the join")
        if record is not None and record.get("outcome") is not None:
            if origin is not None and _pos(record.get("oo")) == origin:
                self.stats.replayed += 1
                if "prediction" not in record:
                    self._index(key, event.timestamp)  # as for a replayed prediction
                self._advance(event.timestamp, "oclock")
                return JoinResult(new=False, home=record.get("home"))
            self._reject("duplicate_outcome")
            if "prediction" not in record:
                # Refused while another outcome waits, which its prediction may yet give up
                # (another tenant's): a re-read then is refused again, not joined.
                _remember_refused(record, origin)
                self._put(key, record)
            raise InvalidEvent(
                "duplicate_outcome", f"event {event.event_id} already has an outcome"
            )
        self._advance(event.timestamp, "oclock")
        if record is None or "prediction" not in record:
            self._put(
                key, {"outcome": event.to_dict(), "oo": None if origin is None else list(origin)}
            )
            self._index(key, event.timestamp)
            self.stats.pending += 1
            return JoinResult(new=True)
        prediction = _stored_prediction(record)
        if event.timestamp - prediction.timestamp > self.config.retention_days * DAY:
            self._reject("expired")
            raise InvalidEvent("expired", f"prediction {event.event_id} is past the retention")
        if (prediction.tenant, prediction.model) != (event.tenant, event.model):
            self._reject("mismatched_outcome")
            raise InvalidEvent(
                "mismatched_outcome",
                f"outcome for {event.tenant}/{event.model}, prediction was "
                f"{prediction.tenant}/{prediction.model}",
            )
        record["outcome"] = event.to_dict()
        record["oo"] = None if origin is None else list(origin)
        record["prediction"] = record.pop("prediction")  # last again (``_record_head``)
        self._put(key, record)
        return JoinResult(new=True, joined=self._join(prediction, event), home=record.get("home"))

    def _stalled(self, now: float | None, drained: bool) -> bool:
        """Have outcomes stopped? At once without a wall clock; else after the grace, or once
        none was on its way (``drained``) in a pass that none reached this partition."""
        if now is None:
            return True
        if self._quiet_since is None or self._outcome_seen:
            self._quiet_since, self._outcome_seen, self._drained = now, False, False
        elif drained:
            self._drained = True
        return self._drained or now - self._quiet_since >= self.config.stall_grace_seconds

    def expire(
        self, now: float | None = None, *, bounded: bool = False, drained: bool = False
    ) -> list[ExpiredOutcome]:
        """Delete the records made more than ``retention_days`` before this partition's event
        time; return the outcomes among them that never found their prediction. ``now``: a
        worker's monotonic wall clock, for the stall grace (None: no grace, as a backtest).

        ``bounded``: stop after about :attr:`JoinConfig.expire_per_pass` records plus three
        for each one indexed since the last pass (an index chunk is done whole), and go on
        from there at the next pass: what is due then expires over several batches, each
        write the size of its batch's work. A record past the retention that is still there
        is refused all the same (the join compares timestamps), so only the tombstones come
        later.

        ``drained``: the worker found no outcome on its way to this partition (see the
        module); the stall grace then ends at once, until an outcome comes."""
        meta = self._load_meta()
        self._chunk = None  # below, whole days of chunks are deleted (never today's, as it is)
        horizon = self.config.retention_days * DAY
        clock = min(meta["clock"], meta.get("oclock", -math.inf))
        if self._stalled(now, drained):
            clock = max(clock, meta["clock"] - STALL_FACTOR * horizon)
        budget = self.config.expire_per_pass + 3 * self._indexed if bounded else math.inf
        done = 0
        gone: list[ExpiredOutcome] = []
        for day_s, count in sorted(meta["days"].items(), key=lambda kv: int(kv[0])):
            day = int(day_s)
            if (day + 1) * DAY + horizon > clock:
                break
            cursor = meta.get("next")  # [day, chunk]: where the last bounded pass stopped
            first = cursor[1] if cursor is not None and cursor[0] == day else 0
            for chunk in range(first, count // INDEX_CHUNK + 1):
                if done >= budget:
                    meta["next"] = [day, chunk]
                    self._mark_meta()
                    self._indexed = 0
                    return gone
                ikey = _index_key(self.partition, day, chunk)
                index = self._record(ikey)  # cache first: it may be this batch's
                self._records.delete(ikey, self.partition)
                done += 1 if index is None else max(1, len(index["k"]))
                for key in [] if index is None else index["k"]:
                    record = self._expiring(key)
                    if record is None:
                        continue
                    if "tomb" in record:
                        # A key can be indexed twice (a replayed prediction is indexed again):
                        # a tombstone goes at its own entry, a retention after it was made,
                        # never at an older one (in the pass that made it, the delete was all
                        # the changelog got, and a redelivered outcome was new again).
                        made = record.get("day", day)
                        if made <= day:
                            self._records.delete(key, self.partition)
                        else:
                            # Met at an older entry: indexed again under its own day, where
                            # a crash cutting short the changelog of the pass that made it
                            # may have lost its entry (it stayed for good: found by review).
                            # Twice there costs a look-up that finds it gone.
                            self._index(key, made * DAY)
                        continue
                    if "prediction" not in record and record.get("outcome") is not None:
                        gone.append(
                            ExpiredOutcome(
                                OutcomeEvent.from_dict(record["outcome"]), _pos(record.get("oo"))
                            )
                        )
                        self.stats.pending -= 1
                        self._reject("unknown_prediction")
                    # Keep a tombstone (the positions only) for one more retention, so that a
                    # message redelivered after its record expired is still known for what it
                    # is: a replay, not a new outcome to wait for and give up on again.
                    # (a finite clock here: a day past the horizon was found)
                    self._put(key, _tombstone(record, int(clock // DAY)))
                    self._index(key, clock)
                    self.stats.expired_records += 1
            del meta["days"][day_s]
            if cursor is not None and cursor[0] == day:
                del meta["next"]  # the day a bounded pass stopped in is done
            self._mark_meta()
        self._indexed = 0
        return gone

    def flush(self) -> list[Write]:
        """What changed since the last flush, to persist (decoded records stay cached)."""
        self._meta = self._chunk = None
        return self._records.flush()

    def forget(self) -> None:
        """Drop decoded records (this partition was given up to another worker)."""
        self._meta = self._chunk = None
        self._records.forget()

    # ------------------------------------------------------------------ internals

    def _join(self, prediction: PredictionEvent, outcome: OutcomeEvent) -> LabeledPrediction:
        self.stats.joined += 1
        return LabeledPrediction(prediction, outcome.label, outcome.timestamp)

    def _load_meta(self) -> dict[str, Any]:
        meta = self._meta
        if meta is not None:
            return meta
        key = self._meta_key
        meta = self._records.get(key, self.partition)
        if meta is None:
            meta = {"clock": -math.inf, "days": {}}
            self._records.put(key, meta, self.partition)
        self._meta = meta
        return meta

    def _advance(self, ts: float, clock: str = "clock") -> None:
        meta = self._load_meta()
        if ts > meta.get(clock, -math.inf):
            meta[clock] = ts
            self._mark_meta()

    def _index(self, key: str, ts: float) -> None:
        """Remember ``key`` under the day it was made, for :meth:`expire`."""
        meta = self._load_meta()
        self._indexed += 1
        day = str(int(ts // DAY))
        days = meta["days"]
        n = days.get(day, 0)
        days[day] = n + 1
        chunk = n // INDEX_CHUNK
        held = self._chunk
        if held is not None and held[1] == chunk and held[0] == day:
            held[2].append(key)  # put since the last flush: marked already
        else:
            ikey = _index_key(self.partition, int(day), chunk)
            keys = self._records.get(ikey, self.partition)
            if keys is None:
                keys = {"k": []}
            keys["k"].append(key)
            self._records.put(ikey, keys, self.partition)
            self._chunk = (day, chunk, keys["k"])
        self._mark_meta()

    def _mark_meta(self) -> None:
        self._records.mark(self._meta_key, self.partition)

    def _expiring(self, key: str) -> dict[str, Any] | None:
        """A record as expiry reads it: the cached one, else all but its prediction, which a
        tombstone keeps none of (it was decoded only to be dropped: ~0.7 KB for 20 features,
        ~21 KB for 1,000); not cached."""
        if key in self._records:
            return self._record(key)
        raw = self.store.get(key, self.partition)
        if raw is None:
            return None
        head = _record_head(raw)
        return load_json(raw) if head is None else head

    def _record(self, key: str) -> dict[str, Any] | None:
        # The partition named: a worker's table then reads that partition's RocksDB itself,
        # not through Faust's table layers (nearly every read is a new prediction's miss).
        return self._records.get(key, self.partition)

    def _put(self, key: str, record: dict[str, Any]) -> None:
        self._records.put(key, record, self.partition)

    def _reject(self, reason: str) -> None:
        self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1
