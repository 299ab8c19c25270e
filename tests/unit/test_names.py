"""One rule for names (schemas/names.py), and every entry point refusing what breaks it.

Tenant, model and version names become table keys, metric labels, Kafka keys and registry
directories; feature names become keys inside a model. Each entry point (predictions, events
inside envelopes, outcomes, retrain-control, the API, the command line, the registry) refuses
an unsafe one with its own dead-letter reason, ``bad_name``, and applies the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import unicodedata
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agents.dead_letters import DeadLetters
from agents.envelopes import decode_join
from agents.joining import OutcomeRouter
from agents.metrics import WorkerMetrics
from driftwatch import argtypes
from driftwatch.cli import build_parser
from driftwatch.simulate import _CATEGORICAL_TEMPLATES, _NUMERIC_TEMPLATES
from retrain.registry import ModelRegistry
from schemas import InvalidEvent
from schemas.names import (
    NAME_JSON_PATTERN,
    NAME_PATTERN,
    UnsafeName,
    feature_name_problem,
    name_problem,
    validate_feature_name,
    validate_name,
)
from streams.ingest import OutcomeValidator, PredictionValidator
from tests.unit.test_processor import FakeEvent, FakeMessage, make_processor
from tests.unit.test_schemas import valid_prediction

PROPERTY = settings(
    derandomize=True, max_examples=2000, database=None, deadline=None,
    suppress_health_check=list(HealthCheck),
)  # fmt: skip

SAFE = ["acme", "globex", "fraud", "conflict", "v1", "r12", "2026.01", "a_b-c.d", "_x", "9",
        "a" * 128, "v1.", "A-Z_09"]  # fmt: skip
UNSAFE = {
    "": "empty",
    "\x00": "NUL",
    "../../etc": "a path out",
    "a/b": "a path separator",
    "a\\b": "a Windows path separator",
    "..": "the parent directory",
    ".": "the directory itself",
    ".hidden": "a leading dot (temporary registry entries)",
    "-rf": "a leading dash (an option to a shell command)",
    "a..b": "'..' inside",
    "a" * 129: "very long",
    "ácme": "a Unicode letter (one spelling per name: no normalisation, no look-alikes)",
    "名前": "non-Latin letters",
    "a b": "a space",
    "a:b": "the key separator",
    "a\nb": "a newline",
    "acme\x7f": "DEL",
    "acme\u202e": "a bidirectional override",
    "\ud800": "an unpaired surrogate",
}


@pytest.mark.parametrize("name", SAFE)
def test_safe_names_are_accepted(name: str) -> None:
    assert name_problem(name) is None and validate_name(name) == name


@pytest.mark.parametrize("name", list(UNSAFE), ids=list(UNSAFE.values()))
def test_unsafe_names_are_refused(name: str) -> None:
    assert name_problem(name) is not None
    with pytest.raises(UnsafeName) as exc:
        validate_name(name, "tenant")
    assert isinstance(exc.value, ValueError)  # the registry's callers catch ValueError
    assert exc.value.too_long_or_empty == (not name or len(name) > 128)


def test_non_strings_are_refused() -> None:
    for value in (None, 5, b"acme", ["acme"]):
        with pytest.raises(UnsafeName):
            validate_name(value)


@PROPERTY
@given(st.text(max_size=140))
def test_an_accepted_name_is_one_plain_path_component_and_key_part(name: str) -> None:
    if name_problem(name) is not None:
        return
    assert name.isascii() and name.isprintable() and ":" not in name and " " not in name
    root = PurePosixPath("/registry")
    assert (root / name).parent == root and (root / name).name == name  # one component
    assert name not in (".", "..") and not name.startswith((".", "-"))
    tenant, model = f"{name}:{name}".split(":", 1)
    assert tenant == model == name  # tenant:model keys split back unambiguously


@PROPERTY
@given(st.from_regex(NAME_PATTERN, fullmatch=True))
def test_the_rule_refuses_nothing_but_dot_dot_within_its_alphabet(name: str) -> None:
    """Not over-eager: every string of the documented alphabet and length is accepted,
    unless it contains ``..``."""
    assert (name_problem(name) is None) == (".." not in name)


@pytest.mark.parametrize("schema_name", ["prediction_event", "outcome_event"])
def test_the_published_json_schemas_state_the_same_rule(schema_name: str) -> None:
    """schemas/v1 tells producers the rule; jsonschema agrees with the code on every case."""
    import jsonschema

    from tests.unit.test_schemas import schema

    document = schema(schema_name)
    assert document["properties"]["tenant"]["pattern"] == NAME_JSON_PATTERN
    valid = {"event_id": "e", "tenant": "acme", "model": "m", "model_version": "1",
             "timestamp": 0, "features": {}, "score": 0.5, "label": 1}  # fmt: skip
    for name in [*SAFE, *UNSAFE]:
        errors = list(jsonschema.Draft202012Validator(document).iter_errors(
            {**valid, "tenant": name}))  # fmt: skip
        assert (not errors) == (name_problem(name) is None), name


def test_the_registry_uses_the_same_rule(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    for name in UNSAFE:
        with pytest.raises(ValueError):
            registry.active(name, "fraud")
        with pytest.raises(ValueError):
            registry.register_external("acme", "fraud", name)
    assert not (tmp_path / "reg").exists() or list((tmp_path / "reg").rglob("*")) == []
    assert registry.register_external("acme", "fraud", "2026.01").version == "2026.01"


# --- feature names ---------------------------------------------------------------------------

CURRENT_FEATURES = sorted(
    {n for t in _NUMERIC_TEMPLATES.values() for n, _, _ in t}
    | {n for t in _CATEGORICAL_TEMPLATES.values() for n, _ in t}
    | {f"num_{i:02d}" for i in range(100)}
    | {f"cat_{i:02d}" for i in range(100)}
    | {"amount", "channel", "age", "x", "a", "f0", "f19"}  # the contract's and the tests'
)
FEATURES_ALLOWED = ["Größe (m²)", "clicks/session", "a b", "../x", "名前", "a" * 128,
                    "\U0001f469\u200d\U0001f4bb", "tab\u00a0nbsp", "\ue000private"]  # fmt: skip
FEATURES_REFUSED = {
    "": "empty",
    "a" * 129: "very long",
    "amount\x00": "NUL",
    "a\nb": "a newline",
    "a\tb": "a tab",
    "\x85": "NEL (C1 control)",
    "\u202eevil": "a bidirectional override",
    "zero\u200bwidth": "a zero-width space",
    "\ufeffbom": "a byte-order mark",
    "a\u2028b": "a line separator",
    "a\u2029b": "a paragraph separator",
    "\ud800": "an unpaired surrogate",
    "amount#missing": "the engine's key of amount's missing-rate incident",
    "__multivariate__": "the engine's key of the multivariate incident",
}


@pytest.mark.parametrize("name", CURRENT_FEATURES + FEATURES_ALLOWED)
def test_feature_names_in_use_and_plain_unicode_stay_valid(name: str) -> None:
    assert feature_name_problem(name) is None and validate_feature_name(name) == name


@pytest.mark.parametrize("name", list(FEATURES_REFUSED), ids=list(FEATURES_REFUSED.values()))
def test_feature_names_that_cannot_be_shown_faithfully_are_refused(name: str) -> None:
    assert feature_name_problem(name) is not None
    with pytest.raises(UnsafeName):
        validate_feature_name(name)


@PROPERTY
@given(st.text(max_size=140))
def test_an_accepted_feature_name_is_printable_unicode_text(name: str) -> None:
    if feature_name_problem(name) is not None:
        return
    name.encode("utf-8")  # never an unpaired surrogate
    categories = {unicodedata.category(c) for c in name if c not in "\u200c\u200d"}
    assert not categories & {"Cc", "Cs", "Cf", "Zl", "Zp"}
    assert 1 <= len(name) <= 128


# --- every entry point -----------------------------------------------------------------------

BAD_NAMES = {"\x00": "NUL", "../../etc": "path", "a/b": "slash", "ácme": "unicode"}


@pytest.mark.parametrize("field", ["tenant", "model", "model_version"])
@pytest.mark.parametrize("bad", list(BAD_NAMES), ids=list(BAD_NAMES.values()))
def test_predictions_and_outcomes_with_unsafe_names_are_bad_name(field: str, bad: str) -> None:
    raw = json.dumps(valid_prediction(**{field: bad})).encode()
    with pytest.raises(InvalidEvent) as exc:
        PredictionValidator().validate(raw, None)
    assert exc.value.reason == "bad_name"
    if field != "model_version":
        outcome = {"event_id": "e", "tenant": "acme", "model": "fraud", "timestamp": 0, "label": 1}
        with pytest.raises(InvalidEvent) as exc:
            OutcomeValidator().validate(json.dumps({**outcome, field: bad}).encode(), None)
        assert exc.value.reason == "bad_name"


def test_empty_and_overlong_names_keep_their_old_reason() -> None:
    """``bad_value`` for a name that is empty or too long, as before the rule (a producer's
    dashboards may count it): ``bad_name`` is only what is new."""
    for bad in ("", "a" * 129):
        for raw in (valid_prediction(tenant=bad), valid_prediction(features={bad: 1.0})):
            with pytest.raises(InvalidEvent) as exc:
                PredictionValidator().validate(json.dumps(raw).encode(), None)
            assert exc.value.reason == "bad_value"


@pytest.mark.parametrize("bad", list(FEATURES_REFUSED)[2:], ids=list(FEATURES_REFUSED.values())[2:])
def test_a_feature_name_with_control_characters_is_bad_name(bad: str) -> None:
    raw = json.dumps(valid_prediction(features={"amount": 1.0, bad: 2.0}))
    with pytest.raises(InvalidEvent) as exc:
        # json.dumps escapes the surrogate; decoding it is refused first (malformed_json)
        PredictionValidator().validate(raw.encode(), None)
    assert exc.value.reason == ("malformed_json" if bad == "\ud800" else "bad_name")


def test_an_envelope_dead_letters_the_event_with_an_unsafe_name_and_applies_the_rest() -> None:
    processor, _, letters, _, registry = make_processor()
    items = [valid_prediction(event_id=f"e{i}", timestamp=1_767_225_600 + i) for i in range(6)]
    items[2] = {**items[2], "model_version": "../../etc"}
    items[4] = {**items[4], "features": {"amount\x00": 1.0}}
    envelope = json.dumps({"schema": "driftwatch.prediction-batch/v1", "events": items})
    single = json.dumps(valid_prediction(event_id="s", tenant="\x00")).encode()
    batch = [
        FakeEvent(FakeMessage("predictions", 0, 41, b"acme:fraud"), envelope.encode()),
        FakeEvent(FakeMessage("predictions", 0, 42, b"acme:fraud"), single),
    ]
    asyncio.run(processor.process_batch(batch))
    got = [json.loads(v) for _, v in letters]
    assert [(x["reason"], x["source_offset"], x.get("source_index")) for x in got] == [
        ("bad_name", 41, 2),
        ("bad_name", 41, 4),
        ("bad_name", 42, None),
    ]
    assert base64.b64decode(got[2]["original_b64"]) == single
    sample = registry.get_sample_value
    assert sample("driftwatch_events_total", {"topic": "predictions", "result": "ok"}) == 4
    assert (
        sample("driftwatch_dead_letters_total", {"topic": "predictions", "reason": "bad_name"}) == 3
    )
    assert processor.engine.stream_state("\x00", "fraud") is None  # nothing was stored for it


def route(values: list[bytes]) -> tuple[list[str], int]:
    """Outcomes through the worker's router: (dead-letter reasons, outcomes forwarded)."""
    letters: list[bytes] = []
    forwarded: list[Any] = []

    async def send(key: bytes, value: bytes) -> None:
        letters.append(value)

    async def forward(messages: list[tuple[bytes, bytes, int]]) -> None:
        forwarded.extend(decode_join(v) for _, v, _ in messages)

    metrics = WorkerMetrics.create(CollectorRegistry())
    router = OutcomeRouter(OutcomeValidator(max_future_seconds=None), metrics,
                           DeadLetters(send, metrics), forward, "outcomes", 2)  # fmt: skip
    events = [FakeEvent(FakeMessage("outcomes", 0, i, b"e"), v) for i, v in enumerate(values)]
    asyncio.run(router.process_batch(events))
    return [json.loads(x)["reason"] for x in letters], sum(len(f) for f in forwarded)


def test_outcomes_with_unsafe_names_are_dead_lettered_by_the_router() -> None:
    good = {"event_id": "e", "tenant": "acme", "model": "fraud", "timestamp": 0, "label": 1}
    values = [good, {**good, "tenant": "../../etc"}, {**good, "model": "a/b"}]
    assert route([json.dumps(v).encode() for v in values]) == (["bad_name", "bad_name"], 1)


def test_command_line_names_follow_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    refused = [
        ["rollback", "--tenant", "../../etc", "--model", "fraud"],
        ["rollback", "--tenant", "acme", "--model", "fraud", "--to", "a/b"],
        ["flags", "--auto-retrain", "on", "--tenant", "acme\x00"],
        ["models", "--tenant", "ácme"],
        ["approve", "../x"],
        ["reject", "a b"],
        ["simulate", "--tenants", "acme,../etc"],
        ["simulate", "--models", "fraud,"],
        ["token", "--name", "n", "--tenants", "acme,a:b"],
        ["report", "--predictions", "p", "--out", "o", "--model", "a/b"],
        ["inspect", "--stream", "acme"],
        ["inspect", "--stream", "acme:../x"],
    ]
    for argv in refused:
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(argv)
        assert exc.value.code == 2, argv
        assert "bad name" in capsys.readouterr().err or argv[0] == "inspect"
    accepted = parser.parse_args(["rollback", "--tenant", "acme", "--model", "fraud", "--to", "v1"])
    assert (accepted.tenant, accepted.model, accepted.to) == ("acme", "fraud", "v1")
    assert parser.parse_args(["token", "--name", "n", "--tenants", "*"]).tenants == "*"
    with pytest.raises(argparse.ArgumentTypeError):
        argtypes.stream("a:b:c")


def test_names_passed_once_are_passed_from_memory_and_others_still_checked() -> None:
    """The memo of safe names only short-cuts what passed; an unsafe name is refused every
    time, and the memo stays bounded."""
    from schemas import names

    assert validate_name("acme-memo", "tenant") == "acme-memo"
    assert "acme-memo" in names._SAFE_NAMES
    for _ in range(2):
        with pytest.raises(UnsafeName):
            validate_name("../acme", "tenant")
    assert "../acme" not in names._SAFE_NAMES
    for i in range(names._SAFE_NAMES_KEPT + 5):
        validate_name(f"t{i}", "tenant")
    assert len(names._SAFE_NAMES) <= names._SAFE_NAMES_KEPT


def test_flags_for_a_tenant_outside_the_allow_list_are_refused_before_any_broker_work(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo would record a flag no tenant ever reads (and leave the real one on)."""
    from driftwatch import cli

    monkeypatch.setenv("DRIFTWATCH_TENANTS", "acme,globex")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")  # never reached
    assert cli.main(["flags", "--auto-retrain", "off", "--tenant", "acmee"]) == 2
    err = capsys.readouterr().err
    assert "no tenant 'acmee' in DRIFTWATCH_TENANTS (acme, globex)" in err


def test_a_feature_named_like_an_incident_key_is_refused_and_raises_no_drift() -> None:
    """Found by review: a feature "amount#missing" (stable, N(0,1)) beside "amount" (half
    missing from day 62) had its KS results filed under amount's missing-rate incident, which
    then reported 18 confirmed KS drifts of a feature that never moved (incidents are per
    model: the two need not share an event, and alone such a feature was shown as "amount").
    Such names are refused at the edge, with the event (bad_name); "amount" alone still finds
    its missing-rate drift."""
    from driftwatch.backtest import run_backtest
    from schemas import PredictionEvent
    from streams.config import EngineConfig

    rng = random.Random(3)
    refused: Counter[str] = Counter()
    accepted = []
    for day in range(70):
        for k in range(300):
            x: float | None = None if day >= 62 and rng.random() < 0.5 else rng.gauss(0, 1)
            features = {"amount": x, "amount#missing": rng.gauss(0, 1)}
            data = {
                "event_id": f"e{day}-{k}", "tenant": "t", "model": "m", "model_version": "1",
                "timestamp": 1_767_225_600.0 + day * 86_400 + k * 200, "score": 0.5,
                "features": features,
            }  # fmt: skip
            try:
                PredictionEvent.from_dict(data)
            except InvalidEvent as exc:
                refused[exc.reason] += 1
                del features["amount#missing"]
                accepted.append(PredictionEvent.from_dict(data))
    assert refused == {"bad_name": 70 * 300}
    drifts = run_backtest(accepted, EngineConfig()).drift_events
    assert {(d.feature, d.test) for d in drifts if d.confirmed} == {("amount", "missing_rate")}
