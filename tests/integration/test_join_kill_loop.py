"""The outcome join under repeated SIGKILLs: no valid outcome lost, none joined twice.

A join-heavy stream (nine in ten predictions labelled, labels 1-3 days late, some outcomes
before their predictions) goes through a worker that is killed with SIGKILL at random points,
restarting alternately on its own disk and with its RocksDB deleted (state rebuilt from the
changelogs). At the end every outcome must have been joined to its prediction (the prediction
log holds each event_id), the performance history must count each prediction and each label
exactly once, and the only dead letter is the outcome that really has no prediction.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agents.app import PERFORMANCE_TABLE
from agents.state_files import describe_performance, read_table
from driftwatch.simulate import SimulationConfig, generate, generate_outcomes
from runtime.topics import WORKER_TOPICS as TOPICS
from runtime.topics import ensure_topics
from schemas import OutcomeEvent, parse_timestamp
from tests.integration.kafka_helpers import consume_all
from tests.integration.worker_harness import WorkerProcess, produce_recorded, wait_drained

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86_400.0
PIPELINE = ["predictions", "outcomes", "join-input", "performance-input"]


def traffic(days: int) -> SimulationConfig:
    return SimulationConfig(
        seed=77,
        tenants=("acme",),
        models=("fraud",),
        days=days,
        events_per_day=400,
        numeric_features=2,
        categorical_features=1,
        start=START,
        label_rate=0.9,
        outcome_delay_hours=(24.0, 72.0),
    )


def run_kill_loop(
    worker: WorkerProcess, days: int, kills: int, seed: int, peer: WorkerProcess | None = None
) -> None:
    """With a ``peer`` (same app id, own disk), half the kills hit the peer instead, after it
    joined the group: each join and death is a rebalance for the worker carrying on."""
    cfg = traffic(days)
    rng = random.Random(seed)
    predictions = list(generate(cfg))
    outcomes = list(generate_outcomes(cfg))
    by_id = {p.event_id: p for p in predictions}
    ghost = OutcomeEvent("ghost-1", "acme", "fraud", START + DAY, 1)
    # A third of the first days' outcomes come before any prediction (pending in the join).
    early = [o for o in outcomes if o.timestamp < START + 3 * DAY][::3]
    early_ids = {o.event_id for o in early}
    produce_recorded(
        worker.bootstrap,
        worker.topic("outcomes"),
        [(o.event_id.encode(), o.to_json()) for o in [*early, ghost]],
    )
    kill_days = sorted(rng.sample(range(1, days + 2), kills))
    worker.start()
    killed = 0
    for day in range(days + 3):
        lo, hi = START + day * DAY, START + (day + 1) * DAY
        todays = [p for p in predictions if lo <= p.timestamp < hi]
        known = [o for o in outcomes if lo <= o.timestamp < hi and o.event_id not in early_ids]
        if todays:
            produce_recorded(
                worker.bootstrap,
                worker.topic("predictions"),
                [(p.stream_key.encode(), p.to_json()) for p in todays],
            )
        if known:
            produce_recorded(
                worker.bootstrap,
                worker.topic("outcomes"),
                [(o.event_id.encode(), o.to_json()) for o in known],
            )
        if day in kill_days:
            # A random point: before, during or after the worker's recovery and its batches.
            killed += 1
            if peer is not None and killed % 2 == 1:
                peer.start()
                time.sleep(rng.uniform(4.0, 12.0))
                peer.stop(signal.SIGKILL)
                continue
            time.sleep(rng.uniform(0.0, 6.0))
            worker.stop(signal.SIGKILL)
            if killed % 4 in (0, 1):
                shutil.rmtree(worker.data_dir, ignore_errors=True)  # restore from changelogs
            worker.start()
    wait_drained(worker, PIPELINE, timeout=300)

    # 1. Every outcome joined: the log has each labelled event_id (at least once: the log is
    #    delivered before the state that records it, so a crash in between repeats a pair).
    labelled = {o.event_id for o in outcomes}
    rows = [
        json.loads(r.value or b"")
        for r in consume_all(
            worker.bootstrap, worker.topic("labeled-predictions"), min_messages=len(labelled)
        )
    ]
    logged = {r["event_id"] for r in rows}
    missing = labelled - logged
    if missing:
        _print_history(worker, sorted(missing)[0])
    assert not missing, f"{len(missing)} outcomes never joined, e.g. {sorted(missing)[:5]}"
    assert logged == labelled
    for r in rows:
        assert r["score"] == by_id[r["event_id"]].score

    # 2. Dead letters: only the outcome that has no prediction (distinct source messages).
    letters = [
        json.loads(r.value or b"")
        for r in consume_all(worker.bootstrap, worker.topic("dead-letters"), min_messages=1)
    ]
    distinct = {(x["source_partition"], x["source_offset"], x["reason"]): x for x in letters}
    reasons = Counter(x["reason"] for x in distinct.values())
    if reasons != Counter(["unknown_prediction"]):
        lost = next(x["detail"].split()[2] for x in distinct.values() if "ghost" not in x["detail"])
        print(f"history of {lost} in the join-state changelog:")
        for r in consume_all(
            worker.bootstrap, f"{worker.prefix}app-join-state-changelog", min_messages=1
        ):
            if r.key and lost.encode() in r.key:
                print(r.partition, r.offset, r.timestamp_ms, (r.value or b"")[:300])
    assert reasons == Counter(["unknown_prediction"]), [
        (x["reason"], x["detail"]) for x in distinct.values()
    ]

    # 3. The performance history counted every prediction and label exactly once.
    assert worker.stop() == 0
    state = describe_performance(read_table(worker.data_dir, PERFORMANCE_TABLE))
    history = state["acme:fraud"]["history"]
    assert history
    labelled_by_window: Counter[int] = Counter(
        int((by_id[o.event_id].timestamp - START) // DAY) for o in outcomes
    )
    predicted_by_window: Counter[int] = Counter(
        int((p.timestamp - START) // DAY) for p in predictions
    )
    for h in history:
        day = int((parse_timestamp(h["window_start"]) - START) // DAY)
        assert (h["predictions"], h["labelled"]) == (
            predicted_by_window[day],
            labelled_by_window[day],
        ), day


def _print_history(worker: WorkerProcess, event_id: str) -> None:
    """Where an event went: its join-state records and the join-input messages holding it."""
    print(f"history of {event_id} in the join-state changelog:")
    for r in consume_all(
        worker.bootstrap, f"{worker.prefix}app-join-state-changelog", min_messages=1
    ):
        if r.key and event_id.encode() in r.key:
            print(" ", r.partition, r.offset, r.timestamp_ms, (r.value or b"")[:200])
    print(f"join-input messages holding {event_id}:")
    for r in consume_all(worker.bootstrap, worker.topic("join-input"), min_messages=1):
        if r.value and event_id.encode() in r.value:
            print(" ", r.partition, r.offset, r.timestamp_ms, len(r.value))


@pytest.fixture
def worker(kafka_bootstrap: str, unique_prefix: str, tmp_path: Path) -> Any:
    w = WorkerProcess(
        bootstrap=kafka_bootstrap,
        prefix=f"{unique_prefix}-",
        data_dir=tmp_path / "state",
        log_path=tmp_path / "worker.log",
        extra_env={"DRIFTWATCH_JOIN_RETENTION_DAYS": "5", "DRIFTWATCH_TENANTS": "acme"},
    )
    ensure_topics(kafka_bootstrap, {w.topic(t): w.partitions for t in TOPICS})
    yield w
    w.stop()


def test_join_survives_sigkills(worker: WorkerProcess) -> None:
    run_kill_loop(worker, days=12, kills=4, seed=1)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_join_survives_ten_sigkills(worker: WorkerProcess) -> None:
    run_kill_loop(worker, days=24, kills=10, seed=2)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_join_survives_sigkills_and_rebalances(worker: WorkerProcess, tmp_path: Path) -> None:
    peer = WorkerProcess(
        bootstrap=worker.bootstrap,
        prefix=worker.prefix,
        data_dir=tmp_path / "peer-state",
        log_path=tmp_path / "peer.log",
        extra_env=worker.extra_env,
    )
    try:
        run_kill_loop(worker, days=24, kills=10, seed=3, peer=peer)
    finally:
        peer.stop()
