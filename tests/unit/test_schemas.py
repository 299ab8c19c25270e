"""The Python models agree with the published JSON Schemas, and bad input gets a reason."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import (
    DeadLetter,
    DriftEvent,
    DriftKind,
    InvalidEvent,
    OutcomeEvent,
    PredictionEvent,
    Severity,
    format_timestamp,
    parse_timestamp,
)
from schemas.events import checked_timestamp
from streams.ingest import PredictionValidator

T0 = 1_767_225_600.0
DAY = 86_400.0


def schema(name: str) -> dict[str, Any]:
    text = resources.files("schemas").joinpath("v1", f"{name}.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def valid_prediction(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event_id": "e-1",
        "tenant": "acme",
        "model": "fraud",
        "model_version": "2026.01",
        "timestamp": "2026-01-01T00:00:00.000000Z",
        "features": {"amount": 12.5, "channel": "web", "age": None},
        "score": 0.91,
        "prediction": 1,
    }
    data.update(overrides)
    return data


def drift_event() -> DriftEvent:
    return DriftEvent(
        drift_id="d1",
        kind=DriftKind.STATISTICAL,
        tenant="acme",
        model="fraud",
        model_version="v1",
        feature="amount",
        test="ks",
        statistic=0.4,
        p_value=1e-30,
        effect_size=0.4,
        window_start=T0,
        window_end=T0 + DAY,
        baseline_start=T0 - 60 * DAY,
        baseline_end=T0 - 30 * DAY,
        severity=Severity.CRITICAL,
        confirmed=False,
        detected_at=T0 + DAY + 3600,
    )


def test_prediction_roundtrip_matches_schema() -> None:
    event = PredictionEvent.from_dict(valid_prediction())
    jsonschema.validate(event.to_dict(), schema("prediction_event"))
    assert PredictionEvent.from_dict(event.to_dict()) == event
    assert event.stream_key == "acme:fraud"


def test_extra_fields_tolerated_and_epoch_seconds_accepted() -> None:
    event = PredictionEvent.from_dict(valid_prediction(timestamp=1767225600, extra={"x": 1}))
    assert event.timestamp == 1767225600.0
    jsonschema.validate(valid_prediction(extra=1), schema("prediction_event"))


def test_outcome_roundtrip_matches_schema() -> None:
    data = {
        "event_id": "e-1",
        "tenant": "acme",
        "model": "fraud",
        "timestamp": "2026-01-02T00:00:00+00:00",
        "label": 1,
    }
    event = OutcomeEvent.from_dict(data)
    jsonschema.validate(event.to_dict(), schema("outcome_event"))
    assert OutcomeEvent.from_dict(event.to_dict()) == event


def test_drift_event_has_every_contract_field() -> None:
    data = drift_event().to_dict()
    jsonschema.validate(data, schema("drift_event"))
    assert set(schema("drift_event")["required"]) <= set(data)
    assert DriftEvent.from_dict(json.loads(drift_event().to_json())) == drift_event()


def test_dead_letter_matches_schema() -> None:
    letter = DeadLetter("predictions", 1, 42, "malformed_json", "boom", b"\xff{", 0.0, b"k")
    jsonschema.validate(letter.to_dict(), schema("dead_letter"))
    big = DeadLetter("predictions", 0, 1, "oversized", "", b"x" * 600_000, 0.0)
    assert big.to_dict()["original_size"] == 600_000 and big.to_dict()["truncated"]
    assert not letter.to_dict()["truncated"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (b"[1,2]", "wrong_type"),
        (json.dumps(valid_prediction(score="high")).encode(), "wrong_type"),
        (json.dumps(valid_prediction(score=1.5)).encode(), "bad_value"),
        (json.dumps(valid_prediction(score=True)).encode(), "wrong_type"),
        (json.dumps(valid_prediction(features={"a": float("nan")})).encode(), "non_finite"),
        (json.dumps(valid_prediction(features={"a": float("inf")})).encode(), "non_finite"),
        (json.dumps(valid_prediction(features={"a": [1]})).encode(), "wrong_type"),
        (json.dumps(valid_prediction(features={"a": True})).encode(), "wrong_type"),
        (json.dumps(valid_prediction(features=[1])).encode(), "wrong_type"),
        (json.dumps(valid_prediction(timestamp="yesterday")).encode(), "bad_timestamp"),
        (json.dumps(valid_prediction(timestamp="2026-01-01T00:00:00")).encode(), "bad_timestamp"),
        (json.dumps(valid_prediction(tenant=5)).encode(), "wrong_type"),
        (json.dumps(valid_prediction(tenant="")).encode(), "bad_value"),
        (
            json.dumps({k: v for k, v in valid_prediction().items() if k != "event_id"}).encode(),
            "missing_field",
        ),
        (b"[" * 100_000, "malformed_json"),
        (json.dumps(valid_prediction(features={"a": 10**400})).encode(), "non_finite"),
        (json.dumps(valid_prediction(score=10**400)).encode(), "non_finite"),
        (json.dumps(valid_prediction(timestamp=10**400)).encode(), "non_finite"),
        (b'{"score": ' + b"1" * 5000 + b"}", "malformed_json"),
        (b" " * 300_000, "oversized"),
    ],
)
def test_bad_input_has_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as exc:
        PredictionValidator(max_bytes=256 * 1024).validate(raw, now=None)
    assert exc.value.reason == reason


def test_policy_checks() -> None:
    raw = json.dumps(valid_prediction(timestamp=1_000_000.0)).encode()
    v = PredictionValidator(tenants=frozenset({"globex"}))
    with pytest.raises(InvalidEvent, match="unknown_tenant"):
        v.validate(raw, now=None)
    v = PredictionValidator(max_future_seconds=60)
    with pytest.raises(InvalidEvent, match="future_timestamp"):
        v.validate(raw, now=1_000_000.0 - 3600)
    assert v.validate(raw, now=1_000_000.0).tenant == "acme"
    with pytest.raises(InvalidEvent, match="empty"):
        v.validate(None, now=None)


def test_timestamp_forms() -> None:
    assert parse_timestamp("2026-01-01T01:00:00+01:00") == parse_timestamp("2026-01-01T00:00:00Z")
    with pytest.raises(InvalidEvent):
        parse_timestamp(float("nan"))
    with pytest.raises(InvalidEvent):
        parse_timestamp(True)


def test_retrain_and_model_events_match_their_schemas_and_round_trip() -> None:
    from schemas import ModelAction, ModelEvent, RetrainEvent, RetrainStatus

    r = RetrainEvent("req-1", "acme", "fraud", "d1", RetrainStatus.AWAITING_APPROVAL,
                     "needs approval", T0, T0 + 5, "v1", 0, {"sev": "CRITICAL"})  # fmt: skip
    jsonschema.validate(json.loads(r.to_json()), schema("retrain_event"))
    assert RetrainEvent.from_dict(json.loads(r.to_json())) == r
    m = ModelEvent(ModelAction.ROLLED_BACK, "acme", "fraud", "v1", "r2", "post-deploy check",
                   T0 + 9, T0, "req-1", {"pr_auc": 0.61})  # fmt: skip
    jsonschema.validate(json.loads(m.to_json()), schema("model_event"))
    assert ModelEvent.from_dict(json.loads(m.to_json())) == m
    with pytest.raises(InvalidEvent):
        RetrainEvent.from_dict({"request_id": "x"})


def test_batch_envelope_matches_its_schema_and_each_event_is_judged_alone() -> None:
    import jsonschema
    from referencing import Registry, Resource

    envelope = {
        "schema": "driftwatch.prediction-batch/v1",
        "events": [
            valid_prediction(event_id="a"),
            valid_prediction(event_id="b", score=1.5),  # bad
            valid_prediction(event_id="c", model="other"),  # another stream
            "not an object",
            valid_prediction(event_id="d"),
        ],
    }
    registry = Registry().with_resource(
        "prediction_event.json", Resource.from_contents(schema("prediction_event"))
    )
    validator = jsonschema.Draft202012Validator(schema("prediction_batch"), registry=registry)
    ok = {**envelope, "events": [valid_prediction(event_id=x) for x in "ab"]}
    validator.validate(ok)
    assert not validator.is_valid({**envelope, "events": []})
    items = PredictionValidator().validate_message(json.dumps(envelope).encode(), None)
    got = [(i.index, i.event.event_id if i.event else i.error.reason) for i in items]  # type: ignore[union-attr]
    assert got == [(0, "a"), (1, "bad_value"), (2, "mixed_streams"), (3, "wrong_type"), (4, "d")]
    assert json.loads(items[1].raw)["event_id"] == "b"  # the bad event's own bytes
    with pytest.raises(InvalidEvent, match="too_many_events"):
        PredictionValidator(max_bytes=1 << 30).validate_message(
            json.dumps({"schema": "driftwatch.prediction-batch/v1",
                        "events": [valid_prediction()] * 10_001}).encode(), None)  # fmt: skip
    with pytest.raises(InvalidEvent, match="bad_value"):
        PredictionValidator().validate_message(b'{"schema": "other/v9", "events": []}', None)
    # NaN inside an envelope: decoded by the standard library, reported as non-finite
    raw = b'{"schema":"driftwatch.prediction-batch/v1","events":[' + json.dumps(
        valid_prediction()).encode()[:-1] + b',"score":NaN}]}'  # fmt: skip
    assert PredictionValidator().validate_message(raw, None)[0].error.reason == "non_finite"  # type: ignore[union-attr]


def test_envelopes_have_their_own_size_limit() -> None:
    """An envelope of 500 wide predictions is larger than any single event may be."""
    wide = valid_prediction(features={f"f{i}": 1234.5678 + i for i in range(20)})
    envelope = json.dumps(
        {"schema": "driftwatch.prediction-batch/v1",
         "events": [{**wide, "event_id": f"e{i}"} for i in range(500)]}
    ).encode()  # fmt: skip
    validator = PredictionValidator(max_bytes=64 * 1024, max_batch_bytes=1 << 20)
    assert len(envelope) > validator.max_bytes
    assert all(i.error is None for i in validator.validate_message(envelope, None))
    single = json.dumps({**wide, "pad": "x" * validator.max_bytes}).encode()
    with pytest.raises(InvalidEvent, match="oversized"):
        validator.validate_message(single, None)
    with pytest.raises(InvalidEvent, match="oversized"):  # not JSON either: still oversized
        validator.validate_message(b"{" * (validator.max_bytes + 1), None)
    with pytest.raises(InvalidEvent, match="oversized"):
        PredictionValidator(
            max_bytes=64 * 1024, max_batch_bytes=len(envelope) - 1
        ).validate_message(envelope, None)


@settings(max_examples=3_000, deadline=None)
@given(
    st.one_of(
        st.floats(min_value=0, max_value=32_503_679_999.0),
        # halfway microseconds, where the rounding rule shows
        st.integers(0, 32_503_679_998).map(lambda s: s + 0.5e-6),
        st.integers(0, 32_503_679_998).map(lambda s: s + 0.9999995),
        st.integers(0, 32_503_679_998).map(lambda s: s + 0.0000025),
    )
)
def test_format_timestamp_writes_what_datetime_writes(ts: float) -> None:
    """The fast path splits seconds as ``datetime.fromtimestamp`` does (half to even)."""
    expected = datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="microseconds")[:-6] + "Z"
    assert format_timestamp(ts) == expected
    assert parse_timestamp(format_timestamp(ts)) == pytest.approx(ts, abs=1e-6)


def _reference_parse(value: str) -> float | str:
    """The checked path alone (parse_timestamp's before its fast path): its result, or the
    reason it refused."""
    try:
        return checked_timestamp(value)
    except InvalidEvent as exc:
        return exc.reason


def _parsed(value: Any) -> float | str:
    try:
        return parse_timestamp(value)
    except InvalidEvent as exc:
        return exc.reason


_TIMESTAMP_TEXTS = [
    "2026-01-01T00:00:00Z", "2026-01-01T00:00:00.123456Z", "2026-01-01T00:00:00.1234567Z",
    "2026-01-01T00:00:00,5Z", "2026-01-01T00:00:00z", " 2026-01-01T00:00:00Z ",
    "2026-01-01T00:00:00Z\n", "2026-01-01T00:00:00", "2026-01-01T00:00:00 ", "2026-01-01Z",
    "2026-01-01", "2026-01-01T00Z", "2026-01-01T00:00Z", "2026-01-01 00:00:00Z",
    "20260101T000000Z", "2026-W01-1T00:00:00Z", "2026-01-01T00:00:00+01:00Z",
    "2026-01-01T01:00:00+01:00", "2026-01-01T00:00:00-00:00", "1970-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999999Z", "1970-01-01T00:59:59+01:00", "2999-12-31T23:59:59.999999Z",
    "2999-12-31T23:59:59-01:00", "3000-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
    "2026-02-30T00:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T00:00:60Z", "", "Z", "z",
    "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00+23:59", "2026-01-01T00:00:00.000000+00:00",
    "\u0662\u0660\u0662\u0666-01-01T00:00:00Z",  # Arabic-Indic digits
]  # fmt: skip


@pytest.mark.parametrize("text", _TIMESTAMP_TEXTS)
def test_timestamp_text_parses_as_before_its_fast_path(text: str) -> None:
    """The fast path (``fromisoformat`` of the text as it is) gives each text the instant, or
    the reason, the checked path gave: a zone-less time is still refused (``fromisoformat``
    reads it as local time), and so is one past the year 3000."""
    assert _parsed(text) == _reference_parse(text)


_YEAR_1960, _YEAR_3010 = datetime(1960, 1, 1), datetime(3010, 1, 1)  # around the range


@settings(max_examples=2_000, deadline=None)
@given(
    st.one_of(
        st.datetimes(_YEAR_1960, _YEAR_3010, timezones=st.timezones()).map(lambda d: d.isoformat()),
        st.datetimes(_YEAR_1960, _YEAR_3010).map(lambda d: d.isoformat() + "Z"),
        st.datetimes(_YEAR_1960, _YEAR_3010).map(
            lambda d: d.isoformat(sep=" ", timespec="milliseconds") + "z"
        ),
        st.text(alphabet="0123456789-:T.Zz+ W,", max_size=32),
    )
)
def test_any_timestamp_text_parses_as_before_its_fast_path(text: str) -> None:
    assert _parsed(text) == _reference_parse(text)


_ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.text(min_size=255, max_size=258),
    st.sampled_from(["acme", "fraud", "v1", "a/b", "", "2026-01-01T00:00:00Z", "yesterday"]),
    st.sampled_from([-1.0, 0.0, 0.5, 1.5e9, 3.3e10, math.inf, math.nan]),
    st.sampled_from([1.7e308, -1.7e308]),
    st.lists(st.integers(), max_size=2),
)
_FEATURE_NAMES = ("amount", "country", "velocity")
_FIELDS = ("event_id", "tenant", "model", "model_version", "timestamp", "score", "prediction")


@settings(max_examples=400, deadline=None)
@given(
    changes=st.dictionaries(st.sampled_from(_FIELDS), _ODD_VALUES, max_size=3),
    dropped=st.sets(st.sampled_from(_FIELDS), max_size=2),
    features=st.dictionaries(
        st.sampled_from([*_FEATURE_NAMES, "odd/name", "n\x00"]),
        _ODD_VALUES,
        max_size=4,
    ),
)
def test_the_usual_event_path_takes_only_what_the_checked_path_makes_the_same(
    changes: dict[str, Any], dropped: set[str], features: dict[str, Any]
) -> None:
    """``from_dict``'s one-pass path for the usual event (``usual_event``) either declines
    or makes exactly the event the field-by-field checks make; what it declines, they
    decide (reasons included)."""
    from schemas.events import usual_event

    base = valid_prediction(timestamp=1_767_225_600.25, prediction=1)
    # The valid feature names known, as after a stream's first events.
    PredictionEvent.checked_from_dict({**base, "features": dict.fromkeys(_FEATURE_NAMES, 1.0)})
    data = {**base, **changes, "features": features}
    for name in dropped:
        data.pop(name, None)
    try:
        checked: PredictionEvent | InvalidEvent = PredictionEvent.checked_from_dict(data)
    except InvalidEvent as exc:
        checked = exc
    fast = usual_event(PredictionEvent, data)  # names the checks passed are known now
    if fast is not None:  # repr too: 1 == 1.0, but an integer is stored as a float
        assert fast == checked and repr(fast) == repr(checked)
    if isinstance(checked, InvalidEvent):
        with pytest.raises(InvalidEvent) as raised:
            PredictionEvent.from_dict(data)
        assert str(raised.value) == str(checked)
    else:
        assert PredictionEvent.from_dict(data) == checked


class _Float(float):
    """A float subclass: it may compare or format differently, so the fast path declines."""


class _Str(str):
    """A str subclass, likewise."""


class _Dict(dict[str, Any]):
    """A dict subclass whose lookups say something other than what it holds."""

    def get(self, key: str, default: Any = None) -> Any:
        return 0.5 if key == "score" else super().get(key, default)


_BAD_VALUES: dict[str, tuple[Any, ...]] = {
    "score": (1, 0, True, 1.5, -0.1, math.nan, math.inf, "0.5", None, _Float(0.5)),
    "timestamp": (-1.0, 3.3e10, math.inf, math.nan, 5, True, "soon", None, _Float(1e9),
                  _Str("2026-01-01T00:00:00Z")),
    "event_id": ("", "x" * 257, 7, None),
    "tenant": ("a/b", "", 3, None, _Str("acme")),
    "model": ("a/b", "", 3, None),
    "model_version": ("a/b", "", 3, None),
    "prediction": (True, 1.0, "x" * 257, [1]),
    "features": (
        None, [], {"amount": 3}, {"amount": True}, {"amount": math.inf}, {"amount": "x" * 257},
        {"n\x00": 1.0}, {"amount": [1.0]}, {f"f{k}": 1.0 for k in range(1001)},
        {"amount": _Float(1.0)}, {"amount": _Str("DE")}, _Dict(amount=1.0),
        {"amount": 1.0, "country": "DE", "velocity": math.nan},
        {"amount": 1.7e308, "country": "x" * 257, "velocity": 1.7e308},
        {"amount": 1.7e308, "country": None, "velocity": math.inf},
        {"amount": None, "country": "DE", "velocity": 2},
    ),
}  # fmt: skip
_BAD_ONES = [(field, value) for field, values in _BAD_VALUES.items() for value in values]


@pytest.mark.parametrize(("field", "value"), _BAD_ONES)
def test_what_the_usual_event_path_declines(field: str, value: Any) -> None:
    """Each field the usual way but one: the fast path declines (so the checks decide),
    however the checks decide it (an integer score, say, is valid: stored as a float)."""
    from schemas.events import usual_event

    # All the names the cases use are known, so that each declines for its value alone.
    base = valid_prediction(
        timestamp=1_767_225_600.25, features={"amount": 1.0, "country": "DE", "velocity": 2.0}
    )
    assert usual_event(PredictionEvent, PredictionEvent.checked_from_dict(base).to_dict())
    assert usual_event(PredictionEvent, {**base, field: value}) is None


def test_the_usual_event_path_is_taken() -> None:
    """The usual event (float score and features, names seen before) is the fast path's:
    it keeps the decoded features dict instead of building another."""
    from schemas.events import usual_event

    data = valid_prediction(timestamp="2026-01-01T00:00:00Z")
    data["features"] = {"amount": 12.5, "country": "DE", "velocity": None}
    PredictionEvent.checked_from_dict(data)  # the names become known
    event = usual_event(PredictionEvent, data)
    assert event is not None and event.features is data["features"]
    assert event == PredictionEvent.checked_from_dict(data)
    assert usual_event(PredictionEvent, {**data, "score": 1}) is None  # an integer score
    assert usual_event(PredictionEvent, {**data, "features": {"amount": 3}}) is None
    # Finite values, however large.
    huge = {"amount": 1.7e308, "country": "DE", "velocity": 1.7e308}
    event = usual_event(PredictionEvent, {**data, "features": huge})
    assert event is not None and event.features is huge


def test_the_usual_event_path_takes_a_wide_event() -> None:
    """A model of 1,000 features, numbers, categories and nulls: the fast path's, and the
    same event as the checks make; one bad value among them and it declines."""
    from schemas.events import usual_event

    features: dict[str, Any] = {
        f"w{k:04d}": ("c" * (k % 257) if k % 5 == 0 else None if k % 7 == 0 else k / 3.0)
        for k in range(1000)
    }
    data = {**valid_prediction(timestamp=1_767_225_600.25), "features": features}
    checked = PredictionEvent.checked_from_dict(data)
    event = usual_event(PredictionEvent, data)
    assert event is not None and event == checked and event.features is features
    for bad in (math.nan, -math.inf, 3, True, "c" * 257, [1.0]):
        spoiled = {**features, "w0999": bad}
        assert usual_event(PredictionEvent, {**data, "features": spoiled}) is None


def test_the_usual_event_path_takes_only_plain_dicts() -> None:
    """A dict subclass may answer lookups with what it does not hold (here a valid score
    over a string): the fast path declines it rather than trust its answers."""
    from schemas.events import usual_event

    data = valid_prediction(timestamp=1_767_225_600.25, features={"amount": 1.0})
    PredictionEvent.checked_from_dict(data)
    assert usual_event(PredictionEvent, dict(data)) is not None
    odd = _Dict({**data, "score": "high"})
    assert usual_event(PredictionEvent, odd) is None


def test_the_usual_event_path_keeps_the_feature_limit_for_known_names() -> None:
    """More than MAX_FEATURES features is refused even when every name is known already
    (the names become known over two valid events), so the limit is the fast path's too."""
    from schemas.events import MAX_FEATURES, usual_event

    names = [f"wide_{k}" for k in range(MAX_FEATURES + 1)]
    base = valid_prediction(timestamp=1_767_225_600.25)
    PredictionEvent.checked_from_dict({**base, "features": dict.fromkeys(names[:-1], 1.0)})
    PredictionEvent.checked_from_dict({**base, "features": {names[-1]: 1.0}})
    assert usual_event(PredictionEvent, {**base, "features": dict.fromkeys(names[:-1], 1.0)})
    too_many = {**base, "features": dict.fromkeys(names, 1.0)}
    assert usual_event(PredictionEvent, too_many) is None
    with pytest.raises(InvalidEvent, match="too_many_features"):
        PredictionEvent.from_dict(too_many)
