"""Scrape-time collectors of agents.metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from agents.metrics import StateCollector


def test_state_gauges_are_read_at_most_once_per_max_age() -> None:
    now = [0.0]
    reads: list[float] = []
    value = [1.0]

    def rows() -> list[tuple[str, tuple[str, ...], float]]:
        reads.append(now[0])
        return [("driftwatch_model_accuracy", ("acme", "fraud", "v1"), value[0])]

    registry = CollectorRegistry()
    registry.register(StateCollector(rows, max_age=5.0, clock=lambda: now[0]))
    first = generate_latest(registry).decode()
    assert 'driftwatch_model_accuracy{model="fraud",tenant="acme",version="v1"} 1.0' in first
    value[0] = 0.5
    now[0] = 4.9
    assert generate_latest(registry).decode() == first  # reused: no table reads
    now[0] = 5.0
    assert 'version="v1"} 0.5' in generate_latest(registry).decode()
    assert reads == [0.0, 5.0]


def test_a_failed_reading_is_not_kept() -> None:
    now = [0.0]
    fail = [True]

    def rows() -> list[tuple[str, tuple[str, ...], float]]:
        if fail[0]:
            raise RuntimeError("table closed mid-rebalance")
        return [("driftwatch_model_label_rate", ("acme", "fraud", "v1"), 0.8)]

    registry = CollectorRegistry()
    registry.register(StateCollector(rows, clock=lambda: now[0]))
    assert "driftwatch_model_label_rate{" not in generate_latest(registry).decode()
    fail[0] = False
    assert 'driftwatch_model_label_rate{model="fraud",tenant="acme",version="v1"} 0.8' in (
        generate_latest(registry).decode()
    )
