"""Joining outcomes to their predictions, and the per-window performance history they feed.

Pure logic over a :class:`~streams.engine.StateStore` (a Faust table in a worker, a dict in a
backtest), like the drift engine. State lives under keys of one ``event_id`` (the prediction
and what became of it) and of one (tenant, model, model_version, window) (its
:class:`~streams.performance.PerformanceSummary`), so a worker co-partitions predictions
re-keyed by ``event_id`` with ``outcomes`` (keyed by ``event_id`` on the wire).

Labels arrive late, partially, twice, or before their prediction:

- a prediction is kept for ``retention_days`` of event time, then an outcome for it is
  ``expired`` (a prediction older than that is never joined);
- an outcome for a prediction not seen yet waits (``pending``) until it arrives, up to the
  same retention;
- a second outcome for the same prediction is a ``duplicate_outcome`` and never counted twice;
- a second prediction with the same ``event_id`` is a ``duplicate_prediction``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from schemas import InvalidEvent, OutcomeEvent, PredictionEvent, parse_timestamp
from streams.config import DAY
from streams.engine import StateStore, Write
from streams.performance import PerformanceSummary

POSITIVE_LABELS = frozenset({"1", "true", "yes", "positive", "fraud", "conflict"})


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


@dataclass(frozen=True, slots=True)
class JoinConfig:
    window_seconds: float = DAY
    retention_days: float = 30.0

    def window_start(self, ts: float) -> float:
        return (ts // self.window_seconds) * self.window_seconds


@dataclass(frozen=True, slots=True)
class LabeledPrediction:
    """One joined pair: the training row for retraining (topic ``labeled-predictions``)."""

    prediction: PredictionEvent
    label: int | str
    outcome_timestamp: float

    def to_dict(self) -> dict[str, Any]:
        out = self.prediction.to_dict()
        out["prediction_timestamp"] = out.pop("timestamp")
        out["label"] = self.label
        out["outcome_timestamp"] = OutcomeEvent(
            self.prediction.event_id, "", "", self.outcome_timestamp, self.label
        ).to_dict()["timestamp"]
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()


@dataclass
class JoinStats:
    joined: int = 0
    pending: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


def prediction_key(event_id: str) -> str:
    return json.dumps(["p", event_id])


def performance_key(tenant: str, model: str, version: str, window: float) -> str:
    return json.dumps(["perf", tenant, model, version, int(window)])


class OutcomeJoiner:
    """Joins outcomes to predictions by ``event_id`` and keeps the performance history.

    >>> from streams.engine import MemoryStore
    >>> store = MemoryStore()
    >>> j = OutcomeJoiner(JoinConfig(), store)
    >>> p = PredictionEvent("e1", "acme", "fraud", "v1", 0.0, {"x": 1.0}, 0.9)
    >>> j.on_prediction(p) is None
    True
    >>> j.on_outcome(OutcomeEvent("e1", "acme", "fraud", 3600.0, 1)).label
    1
    >>> j.on_outcome(OutcomeEvent("e1", "acme", "fraud", 7200.0, 1))
    Traceback (most recent call last):
    ...
    schemas.events.InvalidEvent: duplicate_outcome: event e1 already has an outcome
    """

    def __init__(self, config: JoinConfig, store: StateStore) -> None:
        self.config = config
        self.store = store
        self.stats = JoinStats()
        self._records: dict[str, dict[str, Any] | None] = {}
        self._perf: dict[str, PerformanceSummary] = {}
        self._dirty: set[str] = set()
        self._deleted: set[str] = set()

    # ------------------------------------------------------------------ events

    def on_prediction(self, event: PredictionEvent) -> LabeledPrediction | None:
        """Record a prediction; return the joined pair if its outcome was already waiting."""
        key = prediction_key(event.event_id)
        record = self._record(key)
        if record is not None and "prediction" in record:
            self._reject("duplicate_prediction")
            raise InvalidEvent(
                "duplicate_prediction", f"event {event.event_id} was predicted before"
            )
        summary = self._summary(event)
        summary.add_prediction(event.score)
        pending = None if record is None else record.get("outcome")
        record = {"prediction": event.to_dict(), "outcome": pending}
        self._put(key, record)
        if pending is None:
            return None
        self.stats.pending -= 1
        outcome = OutcomeEvent.from_dict(pending)
        if outcome.timestamp - event.timestamp > self.config.retention_days * DAY:
            self._reject("expired")
            return None
        return self._join(event, record, outcome)

    def on_outcome(self, event: OutcomeEvent) -> LabeledPrediction | None:
        """Join an outcome; None when it waits for its prediction. Raises :class:`InvalidEvent`
        for a duplicate, or for a prediction older than the retention."""
        binary_label(event.label)  # reject unusable labels before touching state
        key = prediction_key(event.event_id)
        record = self._record(key)
        if record is not None and record.get("outcome") is not None:
            self._reject("duplicate_outcome")
            raise InvalidEvent(
                "duplicate_outcome", f"event {event.event_id} already has an outcome"
            )
        if record is None or "prediction" not in record:
            self._put(key, {"outcome": event.to_dict()})
            self.stats.pending += 1
            return None
        prediction = PredictionEvent.from_dict(record["prediction"])
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
        self._put(key, record)
        return self._join(prediction, record, event)

    def expire(self, key: str, now: float) -> bool:
        """Delete ``key`` if it is a prediction record older than the retention at ``now``
        (event time); the worker sweeps its table with this now and then."""
        record = self._record(key) if key.startswith('["p"') else None
        if record is None:
            return False
        ts_field = (record.get("prediction") or record.get("outcome") or {}).get("timestamp")
        if ts_field is None:
            return False
        if now - parse_timestamp(ts_field) <= self.config.retention_days * DAY:
            return False
        self._records[key] = None
        self._dirty.add(key)
        self._deleted.add(key)
        return True

    def performance(
        self, tenant: str, model: str, version: str, window: float
    ) -> PerformanceSummary | None:
        key = performance_key(tenant, model, version, window)
        if key in self._perf:
            return self._perf[key]
        raw = self.store.get(key)
        return None if raw is None else PerformanceSummary.from_bytes(raw)

    def flush(self) -> list[Write]:
        writes = []
        for key in sorted(self._dirty):
            if key in self._deleted:
                writes.append(Write(key, None, None))
            elif key in self._perf:
                writes.append(Write(key, self._perf[key].to_bytes(), None))
            else:
                record = self._records.get(key)
                value = None if record is None else json.dumps(record).encode()
                writes.append(Write(key, value, None))
        self._dirty.clear()
        self._deleted.clear()
        self._records.clear()
        self._perf.clear()
        return writes

    # ------------------------------------------------------------------ internals

    def _join(
        self, prediction: PredictionEvent, record: dict[str, Any], outcome: OutcomeEvent
    ) -> LabeledPrediction:
        self._summary(prediction).add_label(prediction.score, binary_label(outcome.label))
        self.stats.joined += 1
        return LabeledPrediction(prediction, outcome.label, outcome.timestamp)

    def _summary(self, event: PredictionEvent) -> PerformanceSummary:
        window = self.config.window_start(event.timestamp)
        key = performance_key(event.tenant, event.model, event.model_version, window)
        summary = self._perf.get(key)
        if summary is None:
            raw = self.store.get(key)
            summary = PerformanceSummary() if raw is None else PerformanceSummary.from_bytes(raw)
            self._perf[key] = summary
        self._dirty.add(key)
        return summary

    def _record(self, key: str) -> dict[str, Any] | None:
        if key in self._records:
            return self._records[key]
        raw = self.store.get(key)
        record: dict[str, Any] | None = None if raw is None else json.loads(raw)
        self._records[key] = record
        return record

    def _put(self, key: str, record: dict[str, Any]) -> None:
        self._records[key] = record
        self._dirty.add(key)
        self._deleted.discard(key)

    def _reject(self, reason: str) -> None:
        self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1
