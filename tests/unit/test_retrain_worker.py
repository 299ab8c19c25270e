"""The retrain worker's message handling: bad input is dead-lettered and counted, never fatal."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from retrain.registry import ModelRegistry
from retrain.service import RetrainConfig, RetrainService
from retrain.worker import _handle
from runtime.settings import Settings
from schemas import RetrainEvent


@dataclass
class Msg:
    t: str
    v: bytes | None
    k: bytes | None = None
    p: int = 0
    o: int = 7

    def topic(self) -> str:
        return self.t

    def value(self) -> bytes | None:
        return self.v

    def key(self) -> bytes | None:
        return self.k

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def produce(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append((topic, value))

    def flush(self, timeout: float) -> int:
        return 0


class Out:
    def __init__(self) -> None:
        self.events: list[RetrainEvent] = []

    def retrain_event(self, event: RetrainEvent) -> None:
        self.events.append(event)

    def model_event(self, event: Any) -> None:
        raise AssertionError("no model events here")

    def alert(self, alert: Any) -> None:
        raise AssertionError("no alerts here")


class NoData:
    def rows(self, tenant: str, model: str, start: float, end: float) -> list[dict[str, Any]]:
        return []


def test_bad_messages_are_dead_lettered_and_good_ones_handled(tmp_path: Path) -> None:
    settings = Settings.from_env(environ={"DRIFTWATCH_TOPIC_PREFIX": "t-"})
    out = Out()
    service = RetrainService(RetrainConfig(), ModelRegistry(tmp_path), out, NoData())
    registry = CollectorRegistry()
    counters = {
        "messages": Counter("m", "m", ["topic", "result"], registry=registry),
        "dead_letters": Counter("d", "d", ["topic", "reason"], registry=registry),
    }
    producer = Producer()
    bad = [
        Msg("t-drift-events", b"{not json"),
        Msg("t-drift-events", b"[1, 2]"),
        Msg("t-drift-events", b'{"drift_id": "x"}'),
        Msg("t-labeled-predictions", b"\xff\xfe"),
        Msg("t-retrain-control", b"{}", k=None),
    ]
    for m in bad:
        _handle(service, m, settings, producer, counters)  # type: ignore[arg-type]
    assert [t for t, _ in producer.sent] == ["t-dead-letters"] * len(bad)
    letters = [json.loads(v) for _, v in producer.sent]
    assert all(x["source_offset"] == 7 and x["reason"] for x in letters)
    assert (
        registry.get_sample_value("m_total", {"topic": "t-drift-events", "result": "dead_letter"})
        == 3
    )
    assert (
        registry.get_sample_value(
            "d_total", {"topic": "t-retrain-control", "reason": "missing_field"}
        )
        == 1
    )
    # a good control message is applied: the global flag is on now
    on = Msg("t-retrain-control", b'{"auto_retrain": true}', k=b"flag:global")
    _handle(service, on, settings, producer, counters)  # type: ignore[arg-type]
    assert service.state.global_flag is True and len(producer.sent) == len(bad)


def _handled(tmp_path: Path, messages: list[Msg]) -> tuple[RetrainService, list[dict[str, Any]]]:
    settings = Settings.from_env(environ={"DRIFTWATCH_TOPIC_PREFIX": "t-"})
    service = RetrainService(RetrainConfig(), ModelRegistry(tmp_path), Out(), NoData())
    registry = CollectorRegistry()
    counters = {
        "messages": Counter("m", "m", ["topic", "result"], registry=registry),
        "dead_letters": Counter("d", "d", ["topic", "reason"], registry=registry),
    }
    producer = Producer()
    for m in messages:
        _handle(service, m, settings, producer, counters)  # type: ignore[arg-type]
    return service, [json.loads(v) for _, v in producer.sent]


def test_json_nested_too_deeply_is_dead_lettered_not_fatal(tmp_path: Path) -> None:
    """``json.loads`` raises RecursionError (not a ValueError) on deep nesting: it escaped
    ``_handle`` and stopped the retrain worker, on every topic it reads (found by the fuzz
    suite, tests/integration/test_fuzz.py)."""
    deep = b"[" * 20_000 + b"]" * 20_000  # within the control topic's 64 KiB
    deep_object = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    _, letters = _handled(
        tmp_path,
        [
            Msg("t-drift-events", deep, k=b"acme:fraud"),
            Msg("t-labeled-predictions", deep_object, k=b"acme:fraud"),
            Msg("t-retrain-control", deep, k=b"flag:global"),
            Msg("t-retrain-control", deep_object, k=b"flag:global"),
        ],
    )
    assert [x["source_topic"] for x in letters] == [
        "t-drift-events", "t-labeled-predictions", "t-retrain-control", "t-retrain-control"
    ]  # fmt: skip
    assert [x["reason"] for x in letters][2:] == ["malformed_json", "malformed_json"]


def test_control_messages_with_unsafe_names_or_wrong_types_are_dead_lettered(
    tmp_path: Path,
) -> None:
    """Names in retrain-control keys and values follow schemas.names: a tenant ``../etc``
    asked to be rolled back is refused at the edge with ``bad_name`` (before, it was folded
    into the state and failed in the registry); a flag ``"false"`` is not read as on."""
    bad = [
        (b"flag:tenant:../etc", b'{"auto_retrain": true}', "bad_name"),
        (b"flag:tenant:acme\x00", b'{"auto_retrain": true}', "bad_name"),
        (b"flag:tenant:acme", b'{"auto_retrain": "false"}', "wrong_type"),
        (b"approval:../../x", b'{"decision": "approve"}', "bad_name"),
        (b"approval:r1", b'{"decision": "maybe"}', "bad_value"),
        (b"retrain:r1", b'{"action": "retrain", "tenant": "a/b", "model": "m"}', "bad_name"),
        (b"retrain:r1", b'{"action": "retrain", "tenant": "acme"}', "missing_field"),
        (
            b"rollback:r2",
            b'{"action": "rollback", "tenant": "acme", "model": "fraud", "to": "../v1"}',
            "bad_name",
        ),
        (b"rollback:r2", b'{"action": "rollback", "tenant": "acme", "model": 7}', "wrong_type"),
        (b"something:else", b"{}", "bad_value"),
        (b"\xff\xfe", b"{}", "bad_value"),
        (b"flag:global", b'{"auto_retrain": true, "by": ["x"]}', "wrong_type"),
    ]
    msgs = [Msg("t-retrain-control", v, k=k, o=i) for i, (k, v, _) in enumerate(bad)]
    service, letters = _handled(tmp_path, msgs)
    assert [(x["source_offset"], x["reason"]) for x in letters] == [
        (i, reason) for i, (_, _, reason) in enumerate(bad)
    ]
    assert not service.state.tenant_flags and not service.state.decisions
    assert not service.state.manual and service.state.global_flag is None
    # ... and the good ones are applied: a tombstone, a flag, an approval
    good = [
        Msg("t-retrain-control", b'{"auto_retrain": true}', k=b"flag:tenant:acme"),
        Msg("t-retrain-control", b'{"decision": "reject", "by": "ops"}', k=b"approval:r1"),
        Msg("t-retrain-control", None, k=b"flag:tenant:globex"),
    ]
    service, letters = _handled(tmp_path, good)
    assert letters == []
    # a tombstone clears the tenant's flag, as compaction will have (it read as off, then
    # as absent once compacted away)
    assert service.state.tenant_flags == {"acme": True}
    assert service.state.decisions == {"r1": "reject"}
