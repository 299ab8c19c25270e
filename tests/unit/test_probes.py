"""The start lookup's two broker calls share one timeout: its thread must end before the order
guard's wait gives up on it (a thread still asking after that was a second lookup running
beside the next one). The broker side is ``tests/integration/test_head_probe.py``'s."""

from __future__ import annotations

import time
from typing import Any

import confluent_kafka
import pytest

from agents.faust_compat import guards, probes


class SlowClient:
    """A consumer whose commit lookup takes ``took`` seconds of a fake clock."""

    calls: list[tuple[str, float]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def committed(self, tps: list[Any], timeout: float) -> list[Any]:
        self.calls.append(("committed", timeout))
        CLOCK[0] += TOOK[0]
        [tp] = tps
        return [confluent_kafka.TopicPartition(tp.topic, tp.partition, 7)]

    def get_watermark_offsets(self, tp: Any, timeout: float, cached: bool) -> tuple[int, int]:
        self.calls.append(("watermarks", timeout))
        return 3, 20

    def close(self) -> None:
        self.calls.append(("close", 0.0))


CLOCK = [100.0]
TOOK = [0.0]


@pytest.fixture(autouse=True)
def slow_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(confluent_kafka, "Consumer", SlowClient)
    monkeypatch.setattr(time, "monotonic", lambda: CLOCK[0])
    SlowClient.calls = []


def test_the_watermark_call_gets_what_is_left_of_the_timeout() -> None:
    TOOK[0] = 4.0
    assert probes.group_start_offset({}, "g", "t", 0, timeout=10.0) == 7
    assert SlowClient.calls == [("committed", 10.0), ("watermarks", 6.0), ("close", 0.0)]
    assert guards.PROBE_TIMEOUT_SECONDS > 10.0, "the caller waits longer than the thread runs"


def test_a_commit_lookup_that_used_the_whole_timeout_asks_nothing_more() -> None:
    TOOK[0] = 10.0
    with pytest.raises(TimeoutError):
        probes.group_start_offset({}, "g", "t", 0, timeout=10.0)
    assert SlowClient.calls == [("committed", 10.0), ("close", 0.0)]
