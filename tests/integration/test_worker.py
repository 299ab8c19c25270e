"""The worker as a real process on a real broker, with real RocksDB tables."""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import signal
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agents.app import WINDOW_TABLE
from agents.state_files import describe_state, read_table
from driftwatch.backtest import run_backtest
from driftwatch.simulate import DriftSpec, DriftType, SimulationConfig, generate
from runtime.settings import Settings
from runtime.topics import WORKER_TOPICS as TOPICS
from runtime.topics import ensure_topics
from schemas import PredictionEvent
from tests.integration.kafka_helpers import consume_all
from tests.integration.worker_harness import (
    FAST_DETECTION,
    WorkerProcess,
    expected_counts,
    produce_recorded,
    wait_committed,
)
from tests.unit.test_schemas import schema

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86_400.0

TRAFFIC = SimulationConfig(
    seed=11,
    tenants=("acme", "globex"),
    models=("fraud",),
    days=24,
    events_per_day=150,
    numeric_features=3,
    categorical_features=1,
    start=START,
    drifts=(DriftSpec(DriftType.MEAN_SHIFT, 18, 1.5, ("amount",), ("acme",)),),
)


def steady(**over: Any) -> list[PredictionEvent]:
    """:data:`TRAFFIC` without its drift, with ``over`` changed (days, rate, tenants): the
    fault tests' input, where only counts and state matter."""
    return list(generate(dataclasses.replace(TRAFFIC, drifts=(), **over)))


@pytest.fixture
def worker(kafka_bootstrap: str, unique_prefix: str, tmp_path: Path) -> Any:
    w = WorkerProcess(
        bootstrap=kafka_bootstrap,
        prefix=f"{unique_prefix}-",
        data_dir=tmp_path / "state",
        log_path=tmp_path / "worker.log",
    )
    ensure_topics(kafka_bootstrap, {w.topic(t): w.partitions for t in TOPICS})
    yield w
    w.stop()


def messages(events: list[PredictionEvent]) -> list[tuple[bytes | None, bytes]]:
    return [(e.stream_key.encode(), e.to_json()) for e in events]


def drift_key(d: dict[str, Any]) -> tuple[str, str, str, str]:
    return (d["tenant"], d["model"], d["feature"], d["window_start"])


def test_shift_is_detected_null_stays_quiet_and_backtest_agrees(worker: WorkerProcess) -> None:
    events = list(generate(TRAFFIC))
    worker.start()
    produce_recorded(worker.bootstrap, worker.topic("predictions"), messages(events))
    worker.wait_processed(len(events))
    records = consume_all(worker.bootstrap, worker.topic("drift-events"), min_messages=1, idle=4.0)
    live = [json.loads(r.value or b"") for r in records]

    assert live, worker.log_tail()
    for d in live:
        jsonschema.validate(d, schema("drift_event"))
        assert r_key(d) == f"{d['tenant']}:{d['model']}"
    # Only the injected drift: acme/fraud/amount, from day 18, never the null tenant globex.
    assert {(d["tenant"], d["model"], d["feature"]) for d in live} == {("acme", "fraud", "amount")}
    first = min(live, key=lambda d: d["window_start"])
    assert first["window_start"] == "2026-01-19T00:00:00.000000Z"  # day 18
    assert first["test"] == "ks" and first["p_value"] < 1e-6
    assert len({d["drift_id"] for d in live}) == 1

    # The same engine offline over the same events gives the same drift events.
    settings = Settings.from_env(environ={k: v for k, v in FAST_DETECTION.items()})
    report = run_backtest(events, settings.engine_config())
    offline = [d.to_dict() for d in report.drift_events]
    assert sorted(live, key=drift_key) == sorted(offline, key=drift_key)


def test_segment_drift_live_equals_backtest(worker: WorkerProcess) -> None:
    """Segment columns in the worker: segment features in RocksDB and their changelogs (names
    holding U+001F), the segment's DriftEvents on the topic, as the backtest finds them."""
    cfg = SimulationConfig(
        seed=12, tenants=("acme",), models=("fraud",), days=18, events_per_day=600,
        numeric_features=3, categorical_features=1, start=START,
    )  # fmt: skip
    onset = START + 16.25 * DAY
    sd = statistics.pstdev(
        v for e in generate(cfg) if isinstance(v := e.features.get("amount"), float)
    )
    events = [
        dataclasses.replace(e, features={**e.features, "amount": amount + 2 * sd})
        if e.timestamp >= onset
        and e.features.get("merchant_category") == "fuel"
        and isinstance(amount := e.features.get("amount"), float)
        else e
        for e in generate(cfg)
    ]
    worker.extra_env["DRIFTWATCH_SEGMENT_COLUMNS"] = "merchant_category"
    worker.extra_env["DRIFTWATCH_JOIN_OUTCOMES"] = "false"
    worker.start()
    produce_recorded(worker.bootstrap, worker.topic("predictions"), messages(events))
    worker.wait_processed(len(events))
    records = consume_all(worker.bootstrap, worker.topic("drift-events"), min_messages=1, idle=4.0)
    live = [json.loads(r.value or b"") for r in records]
    for d in live:
        jsonschema.validate(d, schema("drift_event"))
    found = {(d["feature"], json.dumps(d.get("segment"))) for d in live}
    assert ("amount", '{"merchant_category": "fuel"}') in found, worker.log_tail()
    assert found <= {("amount", '{"merchant_category": "fuel"}'), ("amount", "null")}

    env = {**FAST_DETECTION, "DRIFTWATCH_SEGMENT_COLUMNS": "merchant_category"}
    offline = run_backtest(events, Settings.from_env(environ=env).engine_config()).drift_events
    key = lambda d: (drift_key(d), json.dumps(d.get("segment")), d["detected_at"])  # noqa: E731
    assert sorted(live, key=key) == sorted((d.to_dict() for d in offline), key=key)


def r_key(d: dict[str, Any]) -> str:
    return f"{d['tenant']}:{d['model']}"


BAD = [
    (b"{not json", "malformed_json"),
    (b'{"event_id":"x"}', "missing_field"),
    (
        b'{"event_id":"x","tenant":"acme","model":"fraud","model_version":"1",'
        b'"timestamp":"2026-01-01T00:00:00Z","features":{"amount":NaN},"score":0.5}',
        "non_finite",
    ),
    (
        b'{"event_id":"x","tenant":"acme","model":"fraud","model_version":"1",'
        b'"timestamp":"2026-01-01T00:00:00Z","features":{"amount":1},"score":"high"}',
        "wrong_type",
    ),
    (
        b'{"event_id":"x","tenant":"acme","model":"fraud","model_version":"1",'
        b'"timestamp":"2026-01-01T00:10:00Z","features":{"amount":"text"},"score":0.5}',
        "type_mismatch",
    ),
    (b"x" * (300 * 1024), "oversized"),
    (
        b'{"event_id":"x","tenant":"acme","model":"fraud","model_version":"1",'
        b'"timestamp":"2999-01-01T00:00:00Z","features":{},"score":0.5}',
        "future_timestamp",
    ),
    (  # a name that would be a path (schemas/names.py)
        b'{"event_id":"x","tenant":"../../etc","model":"fraud","model_version":"1",'
        b'"timestamp":"2026-01-01T00:10:00Z","features":{"amount":1},"score":0.5}',
        "bad_name",
    ),
]


def state_counts(data_dir: Path) -> dict[str, dict[str, dict[str, int]]]:
    described = describe_state(read_table(data_dir, WINDOW_TABLE))
    return {stream: info["windows"] for stream, info in described.items()}


def test_bad_input_is_dead_lettered_and_no_valid_event_is_lost(worker: WorkerProcess) -> None:
    events = steady(days=3)
    msgs = messages(events)
    # Interleave the bad messages with the valid ones, on the same partition as acme:fraud.
    for i, (raw, _) in enumerate(BAD):
        msgs.insert(50 + i * 60, (b"acme:fraud", raw))
    ends = produce_recorded(worker.bootstrap, worker.topic("predictions"), msgs)
    # Fetches of 16 KiB a partition: the 300 KiB message is still fetched (alone), not stuck.
    worker.extra_env["DRIFTWATCH_MAX_FETCH_KB"] = "16"
    # Young collections every 1,000 allocations: at the default (100,000) a stream this short
    # may end before the first one.
    worker.extra_env["DRIFTWATCH_GC_THRESHOLD"] = "1000"
    worker.start()
    worker.wait_processed(len(msgs))
    wait_committed(worker, ends)
    metrics = worker.read_metrics()
    prefix = worker.topic("predictions")
    assert metrics[f'driftwatch_events_total{{result="ok",topic="{prefix}"}}'] == len(events)
    # The collector ran (young collections at least), and its time is exported by generation.
    assert metrics['driftwatch_gc_seconds_total{generation="0"}'] > 0
    assert 'driftwatch_gc_seconds_total{generation="2"}' in metrics

    letters = [
        json.loads(r.value or b"")
        for r in consume_all(worker.bootstrap, worker.topic("dead-letters"), min_messages=len(BAD))
    ]
    for letter in letters:
        jsonschema.validate(letter, schema("dead_letter"))
    assert Counter(x["reason"] for x in letters) == Counter(reason for _, reason in BAD)
    originals = {x["reason"]: base64.b64decode(x["original_b64"]) for x in letters}
    for raw, reason in BAD:
        assert originals[reason] == raw
        assert all(x["source_topic"] == prefix and x["source_offset"] >= 0 for x in letters)

    assert worker.stop() == 0
    assert state_counts(worker.data_dir) == expected_counts(events)


def test_sigkill_mid_stream_loses_and_duplicates_nothing(
    worker: WorkerProcess, tmp_path: Path
) -> None:
    events = steady(days=12, events_per_day=400)
    ends = produce_recorded(worker.bootstrap, worker.topic("predictions"), messages(events))
    # Feature state only: no outcomes here (test_outcomes kills a worker with the join on). On
    # the embedded broker every changelog record is its own batch (see the README), and the
    # join's writes would triple the time of the three restarts.
    worker.extra_env["DRIFTWATCH_JOIN_OUTCOMES"] = "false"

    # 1. Killed mid-stream, restarted on the same disk.
    worker.start()
    worker.wait_processed(len(events) // 3)
    worker.stop(signal.SIGKILL)
    worker.start()
    worker.wait_processed(len(events) // 5)
    # 2. Killed again, restarted with the local RocksDB gone: state comes back from the changelog.
    worker.stop(signal.SIGKILL)
    shutil.rmtree(worker.data_dir)
    worker.start()
    wait_committed(worker, ends, timeout=180)
    time.sleep(1.0)
    assert worker.stop() == 0
    assert state_counts(worker.data_dir) == expected_counts(events)
