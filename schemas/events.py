"""Wire contracts v1: typed models for the JSON messages on the driftwatch topics.

The JSON Schema files in ``schemas/v1/`` are the published contract; these classes are the
Python side of it, and ``tests/unit/test_schemas.py`` checks the two agree. Parsing is strict
about what the contract requires and tolerant of extra fields, so producers can add fields
without breaking the monitor.

Timestamps are carried as float epoch seconds (UTC) inside the process and written as
RFC 3339 strings on the wire.
"""

from __future__ import annotations

import base64
import functools
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

import orjson

from schemas.names import (
    UnsafeName,
    is_known_safe_name,
    validate_feature_name,
    validate_name,
)

SCHEMA_VERSION = 1

FeatureValue = float | str | None

# Limits that keep one hostile message from costing unbounded memory or time.
MAX_ID_LEN = 256
MAX_FEATURES = 1000
MAX_CATEGORY_LEN = 256


class InvalidEvent(ValueError):
    """An input message that does not satisfy the contract; ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class DriftKind(StrEnum):
    STATISTICAL = "statistical"
    PERFORMANCE = "performance"


class Severity(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"

    @property
    def rank(self) -> int:
        return _SEVERITY_ORDER.index(self)


_SEVERITY_ORDER = [Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL]


def format_timestamp(ts: float) -> str:
    """Epoch seconds -> RFC 3339 with microseconds and a ``Z`` zone.

    >>> format_timestamp(0)
    '1970-01-01T00:00:00.000000Z'
    """
    # datetime.fromtimestamp's own split (microseconds rounded half to even, carried into
    # the seconds), with the date part remembered per day: half the cost of making a
    # datetime per event (every forwarded prediction is written with its timestamp), and the
    # same text for every timestamp parse_timestamp accepts (years 1970-2999).
    frac, whole = math.modf(ts)
    micro = round(frac * 1e6)
    if micro >= 1_000_000:
        micro -= 1_000_000
        whole += 1.0
    elif micro < 0:
        micro += 1_000_000
        whole -= 1.0
    day, second = divmod(int(whole), 86_400)
    hour, second = divmod(second, 3_600)
    minute, second = divmod(second, 60)
    return f"{_date_of_day(day)}T{hour:02d}:{minute:02d}:{second:02d}.{micro:06d}Z"


@functools.lru_cache(maxsize=1024)
def _date_of_day(day: int) -> str:
    """``YYYY-MM-DD`` of a day since the epoch (UTC)."""
    return (_EPOCH + timedelta(days=day)).date().isoformat()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_timestamp(value: Any, name: str = "timestamp") -> float:
    """RFC 3339 string (with a zone) or epoch seconds -> float epoch seconds.

    >>> parse_timestamp("2026-01-01T00:00:00Z")
    1767225600.0
    >>> parse_timestamp(1767225600)
    1767225600.0
    """
    if value.__class__ is str:
        # The usual text first, as it is: Python 3.11's ``fromisoformat`` reads a ``Z`` zone
        # itself, to the same instant as ``+00:00``, in a quarter of the checks' time below
        # (0.32 against 1.25 us; an event's validation is ~6 us). Anything else - a zone-less
        # time, surrounding spaces, a lower-case ``z``, out of range - takes those checks
        # (checked_timestamp), which accept and refuse what they did, with the same reasons.
        try:
            parsed = _fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                ts = parsed.timestamp()
                if 0 <= ts < _MAX_TIMESTAMP:
                    return ts
    return checked_timestamp(value, name)


def checked_timestamp(value: Any, name: str = "timestamp") -> float:
    """:func:`parse_timestamp` check by check (its way for anything but the usual text), with
    the reason for a refusal: a text stripped, a ``Z`` or ``z`` zone read as ``+00:00``.

    >>> checked_timestamp(" 2026-01-01T00:00:00z ")
    1767225600.0
    """
    if isinstance(value, bool):
        raise InvalidEvent("wrong_type", f"{name} must be a string or a number, not a boolean")
    if isinstance(value, int | float):
        ts = _as_float(value, name)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidEvent("bad_timestamp", f"{name} is not RFC 3339: {value[:64]!r}") from None
        if parsed.tzinfo is None:
            raise InvalidEvent("bad_timestamp", f"{name} has no time zone: {value[:64]!r}")
        ts = parsed.timestamp()
    else:
        raise InvalidEvent("wrong_type", f"{name} must be a string or a number")
    if not math.isfinite(ts) or not 0 <= ts < _MAX_TIMESTAMP:
        raise InvalidEvent("bad_timestamp", f"{name} out of range: {value!r}")
    return ts


_MAX_TIMESTAMP = 32503680000.0  # the year 3000
_fromisoformat = datetime.fromisoformat


def _as_float(value: int | float, name: str) -> float:
    """A JSON number as a float; an integer too large for a float is not a usable value."""
    try:
        return float(value)
    except OverflowError:
        raise InvalidEvent("non_finite", f"{name} is too large for a float") from None


def _require_str(data: dict[str, Any], name: str, max_len: int) -> str:
    value = data.get(name)
    if value is None:
        raise InvalidEvent("missing_field", f"{name} is required")
    if not isinstance(value, str):
        raise InvalidEvent("wrong_type", f"{name} must be a string")
    if not value or len(value) > max_len:
        raise InvalidEvent("bad_value", f"{name} must have 1..{max_len} characters")
    return value


def _require_name(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None:
        raise InvalidEvent("missing_field", f"{name} is required")
    return check_name(value, name)


def check_name(value: Any, what: str) -> str:
    """A tenant, model or version name from a message (``schemas.names``), or the reason to
    refuse it: ``bad_name`` for characters outside the rule; an empty or over-long name stays
    ``bad_value``, the reason it had before the rule existed."""
    if not isinstance(value, str):
        raise InvalidEvent("wrong_type", f"{what} must be a string")
    try:
        return validate_name(value, what)
    except UnsafeName as exc:
        raise _name_error(exc) from None


def _name_error(exc: UnsafeName) -> InvalidEvent:
    return InvalidEvent("bad_value" if exc.too_long_or_empty else "bad_name", str(exc))


def _optional_label(data: dict[str, Any], name: str) -> int | str | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidEvent("wrong_type", f"{name} must be an integer or a string")
    if isinstance(value, int) and not -(1 << 63) <= value < 1 << 64:
        # What orjson reads as a float (refused above): the same verdict when the standard
        # library decoded the message instead (another field orjson refused).
        raise InvalidEvent("wrong_type", f"{name} must be an integer of at most 64 bits")
    if isinstance(value, str) and len(value) > MAX_CATEGORY_LEN:
        raise InvalidEvent("bad_value", f"{name} is longer than {MAX_CATEGORY_LEN} characters")
    return value


_VALID_FEATURE_NAMES: set[str] = set()
"""Feature names already found valid: a model sends the same few names in every event, so
each is checked once per process (bounded: past the bound, names are checked every time)."""
_VALID_NAMES_KEPT = 100_000


def _parse_features(raw: Any) -> dict[str, FeatureValue]:
    if raw is None:
        raise InvalidEvent("missing_field", "features is required")
    if not isinstance(raw, dict):
        raise InvalidEvent("wrong_type", "features must be an object")
    if len(raw) > MAX_FEATURES:
        raise InvalidEvent("too_many_features", f"{len(raw)} features, limit {MAX_FEATURES}")
    features: dict[str, FeatureValue] = {}
    known = _VALID_FEATURE_NAMES
    for name, value in raw.items():
        if name not in known:
            try:
                validate_feature_name(name)
            except UnsafeName as exc:
                raise _name_error(exc) from None
            if len(known) < _VALID_NAMES_KEPT:
                known.add(name)
        if value.__class__ is float:  # the usual, first: a finite JSON float is itself
            if value - value != 0.0:  # NaN or an infinity (a JSON decoder may allow them)
                raise InvalidEvent("non_finite", f"feature {name!r} is {value!r}")
            features[name] = value
        elif value is None or isinstance(value, str):
            if isinstance(value, str) and len(value) > MAX_CATEGORY_LEN:
                raise InvalidEvent("bad_value", f"feature {name!r} value is too long")
            features[name] = value
        elif isinstance(value, bool):
            raise InvalidEvent("wrong_type", f"feature {name!r} is a boolean; send 0/1 or a string")
        elif isinstance(value, int | float):
            number = _as_float(value, f"feature {name!r}")
            if not math.isfinite(number):
                raise InvalidEvent("non_finite", f"feature {name!r} is {value!r}")
            features[name] = number
        else:
            raise InvalidEvent("wrong_type", f"feature {name!r} must be a number, a string or null")
    return features


def usual_event(cls: type[PredictionEvent], data: dict[str, Any]) -> PredictionEvent | None:
    """:meth:`PredictionEvent.from_dict` of the usual event - names already seen valid, a
    float score, float/string/null features under names already seen valid - checked in one
    pass with no call per field (validation was a fifth of a worker's time on a dense
    stream); None for anything else, which the field-by-field checks then take, reasons and
    all. It accepts nothing they refuse and makes the same event: the features dict is the
    decoded one itself when every value is already what they would store. Only plain dicts,
    floats and strings are taken: a subclass may answer differently from what it holds."""
    if data.__class__ is not dict:
        return None
    score = data.get("score")
    if score.__class__ is not float or not 0.0 <= score <= 1.0:  # NaN fails the range
        return None
    event_id = data.get("event_id")
    tenant = data.get("tenant")
    model = data.get("model")
    version = data.get("model_version")
    if (
        event_id.__class__ is not str
        or not 0 < len(event_id) <= MAX_ID_LEN
        or tenant.__class__ is not str
        or model.__class__ is not str
        or version.__class__ is not str
        or not (is_known_safe_name(tenant) and is_known_safe_name(model))
        or not is_known_safe_name(version)
    ):
        return None
    raw = data.get("features")
    if raw.__class__ is not dict or len(raw) > MAX_FEATURES:
        return None
    known = _VALID_FEATURE_NAMES
    for name, value in raw.items():
        if name not in known:
            return None
        if value.__class__ is float:
            if value - value != 0.0:  # NaN or an infinity
                return None
        elif value.__class__ is str:
            if len(value) > MAX_CATEGORY_LEN:
                return None
        elif value is not None:
            return None  # an integer (stored as a float), a boolean, anything else
    prediction = data.get("prediction")
    if prediction is not None and not (
        (prediction.__class__ is int and -(1 << 63) <= prediction < 1 << 64)
        or (prediction.__class__ is str and len(prediction) <= MAX_CATEGORY_LEN)
    ):
        return None
    ts = data.get("timestamp")
    if ts.__class__ is float:
        if not 0 <= ts < _MAX_TIMESTAMP:  # NaN and infinities fail too
            return None
    elif ts.__class__ is str:
        try:
            ts = parse_timestamp(ts)
        except InvalidEvent:
            return None
    else:
        return None
    return cls(event_id, tenant, model, version, ts, raw, score, prediction)


def json_bytes(obj: Any) -> bytes:
    """``orjson.dumps(obj)``, in a bytes object of its own length, for output that is kept.

    orjson 3.12 and later return their whole working buffer, whatever the length of the JSON:
    a join record of 374 bytes held 8,154 (a labelled backtest of 1.5M predictions, whose join
    keeps every record for its retention, peaked at 6.75 GB of RSS instead of 1.04 GB). The
    copy costs a fraction of a microsecond. Raises what orjson raises.

    >>> json_bytes({"a": [1, 2.5, None]})
    b'{"a":[1,2.5,null]}'
    """
    return bytes(memoryview(orjson.dumps(obj)))


def decode_json_object(raw: bytes, max_bytes: int) -> dict[str, Any]:
    """Bytes off the wire -> a JSON object, or :class:`InvalidEvent` with a reason code.

    orjson first (a third of the standard library's time); what it refuses - NaN and Infinity
    literals, deep nesting, and malformed JSON - is decoded again by the standard library, so
    the reason given stays as precise (``non_finite``, ...). orjson 3.13 reads an integer
    beyond 64 bits as a float (it does not refuse it): no contract field can hold one (a
    feature becomes a float anyway; such a label or timestamp is refused either way, with
    ``wrong_type`` rather than ``bad_value``). Checking the bytes for such numbers first cost
    more than the decoding (3x on a 1,000-feature event), so it is not done.

    >>> decode_json_object(b'{"x": 100000000000000000000}', 100)
    {'x': 1e+20}
    >>> import codecs
    >>> decode_json_object(codecs.BOM_UTF8 + b'{"x": 1}', 100)  # a UTF-8 mark: ignored
    {'x': 1}
    >>> try:
    ...     decode_json_object('{"x": 1}'.encode("utf-16"), 100)
    ... except InvalidEvent as exc:
    ...     print(exc.reason)
    malformed_json
    """
    data, unchecked = decode_json_text(raw, max_bytes)
    if unchecked:
        check_text(data)
    return data


def decode_json_text(raw: bytes, max_bytes: int) -> tuple[dict[str, Any], bool]:
    """:func:`decode_json_object` but for the check of its text, and whether that is still
    to do: True where the standard library decoded it (orjson refuses unpaired surrogates),
    for a caller that checks each event of an envelope on its own (:func:`check_text`)."""
    raw = without_bom(raw)  # first: its size is the same as the predictions' path counts it
    if len(raw) > max_bytes:
        raise InvalidEvent("oversized", f"{len(raw)} bytes, limit {max_bytes}")
    try:
        data = orjson.loads(raw)
        if isinstance(data, dict):
            return data, False
    except orjson.JSONDecodeError:
        pass
    try:
        # UTF-8 only, as the contract says: from bytes the standard library would also take
        # UTF-16/32 and a byte-order mark, and the join, which keeps a prediction's bytes as
        # they came inside its JSON record, then stored a record that no longer decoded.
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, and ints > 4300 digits
        raise InvalidEvent("malformed_json", str(exc)[:200]) from None
    except RecursionError:
        raise InvalidEvent("malformed_json", "nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidEvent("wrong_type", "message must be a JSON object")
    return data, True


def without_bom(raw: bytes) -> bytes:
    """``raw`` without a leading UTF-8 byte-order mark, which RFC 8259 lets a parser ignore
    (a producer should not send one; some tools do). A caller that passes the bytes on (the
    join keeps a prediction's inside its JSON record) passes these.

    >>> without_bom(b"\\xef\\xbb\\xbf{}"), without_bom(b"{}")
    (b'{}', b'{}')
    """
    return raw[3:] if raw[:3] == b"\xef\xbb\xbf" else raw


def check_text(data: Any) -> None:
    """Raise ``malformed_json`` if a string of ``data`` holds an unpaired surrogate (see
    :func:`_lone_surrogate`): for the whole message (:func:`decode_json_object`), or for each
    event of an envelope on its own, so that one event's text costs only that event."""
    where = _lone_surrogate(data)
    if where is not None:
        raise InvalidEvent("malformed_json", f"unpaired surrogate {where}: not Unicode text")


def _lone_surrogate(data: Any) -> str | None:
    """Where a string of ``data`` holds an unpaired surrogate (``"\\ud800"``, or one encoded
    in the bytes), or None. The standard library decodes them; orjson, as RFC 7493 asks,
    does not. Let through, such a string fails later wherever it is encoded as UTF-8 (a Kafka
    key, a hash for the join partition, an HTML page, a metric label), so it is refused here,
    on the rare path where orjson already refused the message. Iterative: the structure may
    be as deep as the standard library's decoder allows."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            texts: Any = (item,)
        elif isinstance(item, dict):
            texts = item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                return f"U+{ord(text[exc.start]):04X} in {text[:32]!r}"
    return None


@dataclass(frozen=True, slots=True)
class PredictionEvent:
    event_id: str
    tenant: str
    model: str
    model_version: str
    timestamp: float
    features: dict[str, FeatureValue]
    score: float
    prediction: int | str | None = None

    @property
    def stream_key(self) -> str:
        """Kafka message key, ``tenant:model``: one model's events stay in order."""
        return f"{self.tenant}:{self.model}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PredictionEvent:
        """Validate a decoded JSON object against the v1 contract.

        >>> PredictionEvent.from_dict({"event_id": "e1", "tenant": "t", "model": "fraud",
        ...     "model_version": "1", "timestamp": 0, "features": {"x": 1}, "score": 0.5}).features
        {'x': 1.0}
        """
        event = usual_event(cls, data)
        return event if event is not None else cls.checked_from_dict(data)

    @classmethod
    def checked_from_dict(cls, data: dict[str, Any]) -> PredictionEvent:
        """:meth:`from_dict` field by field, with the reason for the first field refused
        (from_dict's way for anything but the usual event)."""
        score = data.get("score")
        if score is None:
            raise InvalidEvent("missing_field", "score is required")
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise InvalidEvent("wrong_type", "score must be a number")
        if not math.isfinite(_as_float(score, "score")):
            raise InvalidEvent("non_finite", f"score is {str(score)[:40]}")
        if not 0.0 <= score <= 1.0:
            raise InvalidEvent("bad_value", f"score {score!r} is outside [0, 1]")
        if "timestamp" not in data:
            raise InvalidEvent("missing_field", "timestamp is required")
        return cls(
            event_id=_require_str(data, "event_id", MAX_ID_LEN),
            tenant=_require_name(data, "tenant"),
            model=_require_name(data, "model"),
            model_version=_require_name(data, "model_version"),
            timestamp=parse_timestamp(data["timestamp"]),
            features=_parse_features(data.get("features")),
            score=float(score),
            prediction=_optional_label(data, "prediction"),
        )

    @classmethod
    def from_json(cls, raw: bytes, max_bytes: int = 1 << 20) -> PredictionEvent:
        return cls.from_dict(decode_json_object(raw, max_bytes))

    @classmethod
    def from_trusted_json(cls, raw: bytes) -> PredictionEvent:
        """The event :meth:`from_json` makes of bytes it has already accepted once (the
        join's input, forwarded by this worker's own validation): the same normalisation
        (timestamps to epoch seconds, integer features and score to floats) without checking
        every field again, which cost the join a third of its time. Anything orjson cannot
        decode takes the checked path.

        >>> raw = b'{"event_id":"e","tenant":"t","model":"m","model_version":"1",' \\
        ...       b'"timestamp":"2026-01-01T00:00:00Z","features":{"x":1,"c":"a"},"score":1}'
        >>> PredictionEvent.from_trusted_json(raw) == PredictionEvent.from_json(raw)
        True
        """
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError:
            # Accepted once, its size checked then: no limit again here (a default that a
            # larger DRIFTWATCH_MAX_MESSAGE_BYTES passes refused it at the join: by review).
            return cls.from_json(raw, len(raw))
        return cls.from_trusted_dict(d)

    @classmethod
    def from_trusted_dict(cls, d: dict[str, Any]) -> PredictionEvent:
        """:meth:`from_trusted_json` of an already decoded object: one :meth:`from_dict`
        accepted before, or :meth:`to_dict` wrote (the join's stored predictions, decoded
        again when their outcome comes). Its features dict is used as it is unless an
        integer needs making a float.

        >>> e = PredictionEvent.from_dict({"event_id": "e", "tenant": "t", "model": "m",
        ...     "model_version": "1", "timestamp": 1.5, "features": {"x": 2}, "score": 1})
        >>> PredictionEvent.from_trusted_dict(e.to_dict()) == e
        True
        """
        ts = d["timestamp"]
        features = d["features"]
        for value in features.values():
            if value.__class__ is int:
                features = {k: float(v) if v.__class__ is int else v for k, v in features.items()}
                break
        return cls(
            d["event_id"],
            d["tenant"],
            d["model"],
            d["model_version"],
            ts if ts.__class__ is float else parse_timestamp(ts),
            features,
            float(d["score"]),
            d.get("prediction"),
        )

    def to_dict(self, *, epoch_timestamp: bool = False) -> dict[str, Any]:
        """``epoch_timestamp``: the timestamp as epoch seconds, not RFC 3339 text (exact, and
        neither formatted nor parsed again: the join's records, which
        :meth:`from_trusted_dict` reads either way)."""
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "tenant": self.tenant,
            "model": self.model,
            "model_version": self.model_version,
            "timestamp": self.timestamp if epoch_timestamp else format_timestamp(self.timestamp),
            "features": self.features,
            "score": self.score,
        }
        if self.prediction is not None:
            out["prediction"] = self.prediction
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class OutcomeEvent:
    event_id: str
    tenant: str
    model: str
    timestamp: float
    label: int | str

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutcomeEvent:
        if "timestamp" not in data:
            raise InvalidEvent("missing_field", "timestamp is required")
        label = _optional_label(data, "label")
        if label is None:
            raise InvalidEvent("missing_field", "label is required")
        return cls(
            event_id=_require_str(data, "event_id", MAX_ID_LEN),
            tenant=_require_name(data, "tenant"),
            model=_require_name(data, "model"),
            timestamp=parse_timestamp(data["timestamp"]),
            label=label,
        )

    @classmethod
    def from_json(cls, raw: bytes, max_bytes: int = 1 << 20) -> OutcomeEvent:
        return cls.from_dict(decode_json_object(raw, max_bytes))

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "tenant": self.tenant,
            "model": self.model,
            "timestamp": format_timestamp(self.timestamp),
            "label": self.label,
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()


INCIDENT_SEVERITY: Final = "incident_severity"
"""Key in a DriftEvent's ``extra``: its incident's most severe level so far."""


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """One detection of a drift incident; the same ``drift_id`` while the incident is open."""

    drift_id: str
    kind: DriftKind
    tenant: str
    model: str
    model_version: str
    feature: str | None
    test: str
    statistic: float
    p_value: float | None
    effect_size: float | None
    window_start: float
    window_end: float
    baseline_start: float
    baseline_end: float
    severity: Severity
    confirmed: bool
    detected_at: float
    persistence: int = 1
    window_count: int = 0
    baseline_count: int = 0
    drifting_share: float = 0.0
    partial: bool = False
    """Found by an interim look at the still-open window (``window_end`` = when it looked)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stream_key(self) -> str:
        return f"{self.tenant}:{self.model}"

    @property
    def incident_severity(self) -> Severity:
        """The most severe its incident has been (``extra["incident_severity"]``), at least
        this detection's own: a confirming detection can be milder than what it confirms (a
        span look's HIGH confirming an incident escalated to CRITICAL).

        >>> d = DriftEvent("d", DriftKind.STATISTICAL, "t", "m", "v1", "x", "ks", 0.3, 1e-9,
        ...                0.3, 0.0, 1.0, 0.0, 1.0, Severity.HIGH, True, 1.0,
        ...                extra={INCIDENT_SEVERITY: "CRITICAL"})
        >>> from dataclasses import replace
        >>> d.incident_severity, replace(d, extra={}).incident_severity
        (<Severity.CRITICAL: 'CRITICAL'>, <Severity.HIGH: 'HIGH'>)
        """
        try:
            worst = Severity(self.extra.get(INCIDENT_SEVERITY, self.severity))
        except ValueError:
            return self.severity
        return worst if worst.rank > self.severity.rank else self.severity

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "drift_id": self.drift_id,
            "kind": self.kind.value,
            "tenant": self.tenant,
            "model": self.model,
            "model_version": self.model_version,
            "feature": self.feature,
            "test": self.test,
            "statistic": _finite_or_none(self.statistic) or 0.0,
            "p_value": _finite_or_none(self.p_value),
            "effect_size": _finite_or_none(self.effect_size),
            "window_start": format_timestamp(self.window_start),
            "window_end": format_timestamp(self.window_end),
            "baseline_start": format_timestamp(self.baseline_start),
            "baseline_end": format_timestamp(self.baseline_end),
            "severity": self.severity.value,
            "confirmed": self.confirmed,
            "detected_at": format_timestamp(self.detected_at),
            "persistence": self.persistence,
            "window_count": self.window_count,
            "baseline_count": self.baseline_count,
            "drifting_share": round(self.drifting_share, 6),
            "partial": self.partial,
        }
        out.update(_finite_values(self.extra))
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftEvent:
        known = set(cls.__dataclass_fields__) - {"extra"} | {"schema_version"}
        try:
            return cls(
                drift_id=str(data["drift_id"]),
                kind=DriftKind(data["kind"]),
                tenant=str(data["tenant"]),
                model=str(data["model"]),
                model_version=str(data["model_version"]),
                feature=data["feature"],
                test=str(data["test"]),
                statistic=float(data["statistic"]),
                p_value=None if data["p_value"] is None else float(data["p_value"]),
                effect_size=None if data["effect_size"] is None else float(data["effect_size"]),
                window_start=parse_timestamp(data["window_start"]),
                window_end=parse_timestamp(data["window_end"]),
                baseline_start=parse_timestamp(data["baseline_start"]),
                baseline_end=parse_timestamp(data["baseline_end"]),
                severity=Severity(data["severity"]),
                confirmed=bool(data["confirmed"]),
                detected_at=parse_timestamp(data["detected_at"]),
                persistence=int(data.get("persistence", 1)),
                window_count=int(data.get("window_count", 0)),
                baseline_count=int(data.get("baseline_count", 0)),
                drifting_share=float(data.get("drifting_share", 0.0)),
                partial=bool(data.get("partial", False)),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidEvent("bad_drift_event", str(exc)) from None


def _finite_values(value: Any) -> Any:
    """``value`` with every non-finite float (in dicts and lists too) as None: a DriftEvent's
    extras are JSON for any reader, and a NaN (a Wasserstein distance over an infinite
    spread, at values of 1e300) was written as a ``NaN`` literal, which strict decoders
    refuse (found by review).

    >>> _finite_values({"a": float("nan"), "b": [1.0, float("inf")], "c": "x"})
    {'a': None, 'b': [1.0, None], 'c': 'x'}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_values(v) for v in value]
    return value


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An unusable input message, kept whole so it can be inspected and replayed."""

    source_topic: str
    source_partition: int
    source_offset: int
    reason: str
    detail: str
    original: bytes
    received_at: float
    source_key: bytes | None = None
    source_index: int | None = None
    """For an event inside a batch envelope: its index in ``events`` (``original`` is then that
    event, re-encoded; the envelope's other events were applied)."""
    max_original_bytes: int = 512 * 1024
    """Kept whole up to this size (base64 must still fit a default 1 MB Kafka message)."""

    def to_dict(self) -> dict[str, Any]:
        kept = self.original[: self.max_original_bytes]
        return {
            "schema_version": SCHEMA_VERSION,
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "source_key_b64": None if self.source_key is None else _b64(self.source_key),
            "reason": self.reason,
            "detail": self.detail,
            "original_b64": _b64(kept),
            "original_size": len(self.original),
            "truncated": len(self.original) > len(kept),
            "received_at": format_timestamp(self.received_at),
        } | ({} if self.source_index is None else {"source_index": self.source_index})

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()


BATCH_SCHEMA = "driftwatch.prediction-batch/v1"
MAX_BATCH_EVENTS = 10_000
POSITION_STRIDE = 1 << 16
"""A prediction's position in its partition: ``offset * POSITION_STRIDE + index`` (index 0 for
a message holding one event), so events of one envelope are told apart and stay in order."""


def batch_events(data: dict[str, Any]) -> list[Any] | None:
    """The ``events`` of a batch envelope (``{"schema": BATCH_SCHEMA, "events": [...]}``), or
    None when ``data`` is a single PredictionEvent. Raises for a malformed envelope.

    >>> batch_events({"schema": BATCH_SCHEMA, "events": [{"event_id": "a"}]})
    [{'event_id': 'a'}]
    >>> batch_events({"event_id": "a"}) is None
    True
    >>> batch_events({"event_id": "a", "schema": "acme/v3"}) is None  # its own extra field
    True
    """
    schema = data.get("schema")
    if schema is None or (schema != BATCH_SCHEMA and "events" not in data):
        return None  # a PredictionEvent (an extra field "schema" of its own is allowed)
    if schema != BATCH_SCHEMA:
        raise InvalidEvent("bad_value", f"unknown schema {str(schema)[:64]!r}")
    events = data.get("events")
    if not isinstance(events, list):
        raise InvalidEvent("wrong_type", "events must be a list")
    if not events:
        raise InvalidEvent("bad_value", "events is empty")
    if len(events) > MAX_BATCH_EVENTS:
        raise InvalidEvent("too_many_events", f"{len(events)} events, limit {MAX_BATCH_EVENTS}")
    return events


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
