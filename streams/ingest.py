"""Edge validation: raw message bytes -> a valid event, or a reason to dead-letter it."""

from __future__ import annotations

import json
import reprlib
from dataclasses import dataclass

import orjson

from schemas import InvalidEvent, OutcomeEvent, PredictionEvent
from schemas.events import (
    BATCH_SCHEMA,
    batch_events,
    check_text,
    decode_json_text,
    json_bytes,
    without_bom,
)
from streams.join import binary_label


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


# Not frozen: one is made per event validated, and a frozen dataclass's __init__ costs 6x.
@dataclass(slots=True)
class Item:
    """One event of a ``predictions`` message: valid (``event``) or not (``error``)."""

    index: int | None
    """Its index in a batch envelope; None for a message holding one event."""
    event: PredictionEvent | None
    error: InvalidEvent | None
    raw: bytes
    """The event's own bytes (re-encoded for an event inside an envelope)."""


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxdict, _SHORT_REPR.maxlist = 8, 64, 64
_SHORT_REPR.maxstring, _SHORT_REPR.maxother = 4096, 256


def _encode(item: object, event: PredictionEvent | None = None) -> bytes:
    """An event of an envelope as bytes of its own: what the join decodes again (``event``:
    the event, when valid), and what its dead letter keeps.

    orjson first. It refuses integers beyond 64 bits, which the standard library decodes when
    orjson refused something else in the envelope (a NaN in another event), and nesting
    deeper than 255: then the standard library, which writes both (before, the item's
    ``repr`` went to the join, which dead-lettered an event already counted as applied).
    Nested too deeply even for the standard library (an extra field 900 levels deep is
    allowed): a valid event goes on as its contract fields; an invalid one is kept as a
    bounded ``repr`` (before, ``repr`` itself hit the recursion limit, and the exception
    failed the whole batch, at every retry: found by the fuzz suite)."""
    try:
        return json_bytes(item)
    except (TypeError, orjson.JSONEncodeError):
        pass
    try:
        return json.dumps(item, separators=(",", ":")).encode()
    except (TypeError, ValueError, RecursionError):
        pass
    if event is not None:
        return event.to_json()
    return _SHORT_REPR.repr(item).encode("utf-8", "backslashreplace")


def _encode_refused(item: object) -> bytes:
    """A refused event of an envelope, for its dead letter: by the standard library first,
    which writes what made it refused as it was (NaN, Infinity, integers beyond 64 bits,
    unpaired surrogates, escaped), where orjson writes NaN as null.

    >>> _encode_refused({"x": float("nan"), "y": 10**20})
    b'{"x":NaN,"y":100000000000000000000}'
    """
    try:
        return json.dumps(item, separators=(",", ":")).encode()
    except (TypeError, ValueError, RecursionError):
        return _encode(item)


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
    max_batch_bytes: int = 1 << 20
    """Limit of a batch envelope (a single event's is ``max_bytes``)."""

    def validate(self, raw: bytes | None, now: float | None) -> PredictionEvent:
        if raw is None:
            raise InvalidEvent("empty", "message has no value (tombstone)")
        event = PredictionEvent.from_json(raw, self.max_bytes)
        _check_policy(event.tenant, event.timestamp, now, self.tenants, self.max_future_seconds)
        return event

    def validate_message(self, raw: bytes | None, now: float | None) -> list[Item]:
        """A ``predictions`` message -> its events, each valid or with its own reason.

        A message is one PredictionEvent, or a batch envelope of many (``schemas.events.
        batch_events``) of one tenant and model: each event inside is checked on its own, so
        a bad one is dead-lettered (with its index) and its neighbours are applied. Raises
        :class:`InvalidEvent` only for a message that is unusable as a whole.

        >>> v = PredictionValidator()
        >>> ok = {"event_id": "a", "tenant": "t", "model": "m", "model_version": "1",
        ...       "timestamp": 0, "features": {}, "score": 0.5}
        >>> raw = orjson.dumps({"schema": "driftwatch.prediction-batch/v1",
        ...                     "events": [ok, {**ok, "event_id": "b", "score": 2}]})
        >>> [(i.index, i.error.reason if i.error else i.event.event_id)
        ...  for i in v.validate_message(raw, None)]
        [(0, 'a'), (1, 'bad_value')]
        """
        if raw is None:
            raise InvalidEvent("empty", "message has no value (tombstone)")
        raw = without_bom(raw)  # the bytes the join keeps: no mark inside its JSON record
        if len(raw) > self.max_bytes:
            # Only an envelope may be larger than one event: anything else that size is
            # oversized, whatever else is wrong with it (one that does not decode at all is
            # told by its schema's name near its start: then the real reason).
            oversized = InvalidEvent("oversized", f"{len(raw)} bytes, limit {self.max_bytes}")
            try:
                data, unchecked = decode_json_text(raw, max(self.max_bytes, self.max_batch_bytes))
            except InvalidEvent as exc:
                envelope = BATCH_SCHEMA.encode() in raw[:1024]
                raise (exc if exc.reason == "oversized" or envelope else oversized) from None
            if data.get("schema") != BATCH_SCHEMA:
                raise oversized
        else:
            data, unchecked = decode_json_text(raw, self.max_bytes)
        items = batch_events(data)
        if items is None:
            if unchecked:
                check_text(data)
            event = PredictionEvent.from_dict(data)
            _check_policy(event.tenant, event.timestamp, now, self.tenants, self.max_future_seconds)
            return [Item(None, event, None, raw)]
        if unchecked:
            check_text({k: v for k, v in data.items() if k != "events"})
        out: list[Item] = []
        stream: tuple[str, str] | None = None
        for index, item in enumerate(items):
            try:
                if not isinstance(item, dict):
                    raise InvalidEvent("wrong_type", "an event must be a JSON object")
                if unchecked:  # its own text only: one bad event costs only itself
                    check_text(item)
                event = PredictionEvent.from_dict(item)
                _check_policy(
                    event.tenant, event.timestamp, now, self.tenants, self.max_future_seconds
                )
                if stream is None:
                    stream = (event.tenant, event.model)
                elif (event.tenant, event.model) != stream:
                    raise InvalidEvent(
                        "mixed_streams",
                        f"a batch holds one tenant and model ({stream[0]}/{stream[1]}), "
                        f"this event is {event.tenant}/{event.model}",
                    )
                out.append(Item(index, event, None, _encode(item, event)))
            except InvalidEvent as exc:
                out.append(Item(index, None, exc, _encode_refused(item)))
        return out


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
        # The join needs 0/1 (or a string): an integer label 7 is refused here, where the
        # outcome is counted, rather than after it was counted as applied.
        binary_label(event.label)
        return event
