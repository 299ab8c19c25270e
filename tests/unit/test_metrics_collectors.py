"""Scrape-time collectors of agents.metrics."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agents.metrics import ROCKSDB_MEMORY, GaugesCollector, RocksDBCollector, StateCollector


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


def test_a_failed_reading_is_not_kept(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    fail = [True]

    def rows() -> list[tuple[str, tuple[str, ...], float]]:
        if fail[0]:
            raise RuntimeError("table closed mid-rebalance")
        return [("driftwatch_model_label_rate", ("acme", "fraud", "v1"), 0.8)]

    registry = CollectorRegistry()
    registry.register(StateCollector(rows, clock=lambda: now[0]))
    with caplog.at_level(logging.INFO, logger="agents.metrics"):
        assert "driftwatch_model_label_rate{" not in generate_latest(registry).decode()
    assert "table closed mid-rebalance" in caplog.text  # told, not swallowed
    fail[0] = False
    assert 'driftwatch_model_label_rate{model="fraud",tenant="acme",version="v1"} 0.8' in (
        generate_latest(registry).decode()
    )


def test_rocksdb_memory_is_read_from_the_open_stores(tmp_path: Path) -> None:
    """Real stores, as Faust opens them (its options, our memory budget): what a worker's RSS
    holds outside Python is told per table and kind, and a store closed by a rebalance while
    read is skipped, not an error of the scrape."""
    from faust.stores.rocksdb import RocksDBOptions

    from agents.app import rocksdb_options

    options = RocksDBOptions(**rocksdb_options(16))  # type: ignore[arg-type]
    dbs = {p: options.open(tmp_path / f"windows-{p}.db") for p in (0, 1)}
    for p, db in dbs.items():
        for i in range(2_000):
            db[f"{p}-{i}".encode()] = b"x" * 200
    dbs[1].flush()  # to a file: its index and filter are read in
    _ = dbs[1][b"1-7"]
    closed = options.open(tmp_path / "join-0.db")
    closed.close()
    registry = CollectorRegistry()
    registry.register(RocksDBCollector(lambda: {"windows": dbs, "join": {0: closed}}))
    got = {
        (s.labels["table"], s.labels.get("kind")): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name != "driftwatch_rocksdb_disk_bytes"
    }
    disk = {
        (s.labels["table"], s.labels["kind"]): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == "driftwatch_rocksdb_disk_bytes"
    }
    # The flushed partition's file: its 2,000 values of 200 bytes (compressed or not, some).
    assert disk[("windows", "live")] > 0 and disk[("windows", "total")] >= disk[("windows", "live")]
    assert disk[("join", "live")] == disk[("join", "total")] == 0  # closed: nothing told
    assert got[("windows", None)] == 2 and got[("join", None)] == 1
    assert got[("windows", "memtables")] > 2 * 2_000 * 200 / 2  # the unflushed partition's
    assert got[("windows", "block_cache")] > 0 and got[("windows", "table_readers")] > 0
    assert all(got[("join", kind)] == 0 for kind in ROCKSDB_MEMORY)
    for db in dbs.values():
        db.close()


def test_gauges_are_read_at_scrape_time() -> None:
    queued = {"t-predictions": 3}
    registry = CollectorRegistry()
    registry.register(GaugesCollector("driftwatch_x", "doc", "topic", lambda: queued))
    assert 'driftwatch_x{topic="t-predictions"} 3.0' in generate_latest(registry).decode()
    queued["t-predictions"] = 0
    assert 'driftwatch_x{topic="t-predictions"} 0.0' in generate_latest(registry).decode()
