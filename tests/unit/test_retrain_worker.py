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
    # a good control message is applied: the global flag is on now
    on = Msg("t-retrain-control", b'{"auto_retrain": true}', k=b"flag:global")
    _handle(service, on, settings, producer, counters)  # type: ignore[arg-type]
    assert service.state.global_flag is True and len(producer.sent) == len(bad)
