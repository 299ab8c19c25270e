"""The start lookup's broker calls end by one deadline, set when the lookup is asked for: its
thread must end before the order guard's wait gives up on it (a thread still asking after
that was a second lookup running beside the next one). The broker side is
``tests/integration/test_head_probe.py``'s."""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace as NS
from typing import Any

import confluent_kafka
import pytest

from agents.faust_compat import guards, probes


class FakeClient:
    """A consumer whose commit lookup takes ``took`` seconds of the fake clock."""

    def __init__(self, clock: list[float], took: float, calls: list[tuple[str, float]]) -> None:
        self.clock, self.took, self.calls = clock, took, calls

    def committed(self, tps: list[Any], timeout: float) -> list[Any]:
        self.calls.append(("committed", timeout))
        self.clock[0] += self.took
        [tp] = tps
        return [confluent_kafka.TopicPartition(tp.topic, tp.partition, 7)]

    def get_watermark_offsets(self, tp: Any, timeout: float, cached: bool) -> tuple[int, int]:
        self.calls.append(("watermarks", timeout))
        return 3, 20

    def close(self) -> None:
        self.calls.append(("close", 0.0))


def fake(monkeypatch: pytest.MonkeyPatch, took: float) -> tuple[list[float], list[Any]]:
    """The probes' clock and client made fake (theirs only: not the process's clock)."""
    clock, calls = [100.0], []  # type: ignore[var-annotated]
    monkeypatch.setattr("agents.faust_compat.probes.time", NS(monotonic=lambda: clock[0]))
    monkeypatch.setattr(confluent_kafka, "Consumer", lambda config: FakeClient(clock, took, calls))
    return clock, calls


def test_the_watermark_call_gets_what_is_left_of_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, calls = fake(monkeypatch, took=4.0)
    assert probes.group_start_offset({}, "g", "t", 0, timeout=10.0) == 7  # max(commit, start)
    assert calls == [("committed", 10.0), ("watermarks", 6.0), ("close", 0.0)]


def test_a_commit_lookup_that_used_the_whole_timeout_asks_nothing_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, calls = fake(monkeypatch, took=10.0)
    with pytest.raises(TimeoutError):
        probes.group_start_offset({}, "g", "t", 0, timeout=10.0)
    assert calls == [("committed", 10.0), ("close", 0.0)]


def test_the_deadline_counts_from_the_ask_not_from_when_a_thread_is_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lookup waits in the compute's thread pool first: that time is part of its 10 s,
    and one queued past them makes no client at all."""
    clock, calls = fake(monkeypatch, took=1.0)

    async def queued(func: Any, *args: Any) -> Any:
        clock[0] += 3.0  # the pool's threads busy for 3 s
        return func(*args)

    monkeypatch.setattr(asyncio, "to_thread", queued)
    lookup = probes.kafka_start_lookup({}, "g")

    async def ask() -> int:
        return await lookup("t", 0)

    assert asyncio.run(ask()) == 7
    assert calls == [("committed", 7.0), ("watermarks", 6.0), ("close", 0.0)]
    calls.clear()

    async def stuck(func: Any, *args: Any) -> Any:
        clock[0] += 11.0
        return func(*args)

    monkeypatch.setattr(asyncio, "to_thread", stuck)
    with pytest.raises(TimeoutError):
        asyncio.run(ask())
    assert calls == []


def test_the_guard_waits_longer_than_the_lookup_runs() -> None:
    default = inspect.signature(probes.kafka_start_lookup).parameters["timeout"].default
    assert default < guards.PROBE_TIMEOUT_SECONDS
