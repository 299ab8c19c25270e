"""Failover between workers: one of two is killed, the other takes its partitions over from
the changelogs and carries on; the killed one comes back and the partitions move again.

Two workers with the same app id share 4 partitions; worker B is killed with SIGKILL while
both have work; A must own every partition and be processing within 30 s of the kill
(session timeout included); B comes back on its own disk and takes a share again. At the end
every valid event is in the feature state exactly once, the DriftEvents are the backtest's,
and every alert on the ``alerts`` topic is distinct (a repeat from at-least-once delivery has
the same id and the same content, so a receiver deduplicating by ``Idempotency-Key`` sees
each alert once).
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest

from agents.app import WINDOW_TABLE
from agents.state_files import describe_state, read_table
from driftwatch.backtest import run_backtest
from driftwatch.simulate import generate
from runtime.settings import Settings
from tests.integration.kafka_helpers import consume_all
from tests.integration.test_scale_out import (
    TRAFFIC,
    all_committed,
    days,
    detection_key,
    drift_diff,
    fold_detections,
    pair,  # noqa: F401 - the fixture: two workers, same app id, 4 partitions
    poll,
    produce,
    ready,
    rebalances,
)
from tests.integration.worker_harness import FAST_DETECTION, WorkerProcess, expected_counts

TAKEOVER_SECONDS = 30.0


@pytest.mark.timeout(600)
def test_a_killed_worker_fails_over_and_comes_back(
    pair: tuple[WorkerProcess, WorkerProcess],  # noqa: F811 - the imported fixture
) -> None:
    a, b = pair
    events = list(generate(TRAFFIC))
    ends: dict[int, int] = {}

    # 1. Both workers share the partitions.
    a.start()
    produce(a, days(events, range(0, 8)), ends)
    poll("A to commit the first days", all_committed(a, ends), [a], 120)
    before = rebalances(a)
    b.start()
    poll("B to join", lambda: ready(b) and rebalances(a) > before, [a, b], 90)
    poll("A to settle", lambda: ready(a), [a, b], 60)
    produce(a, days(events, range(8, 14)), ends)
    poll("A and B to commit", all_committed(a, ends), [a, b], 120)
    assert b.processed() > 0, "B never processed anything"

    # 2. B is killed while it has work: A takes over its partitions within the target.
    before = rebalances(a)
    produce(a, days(events, range(14, 19)), ends)
    b_done = b.processed()
    poll("B to start on the new days", lambda: b.processed() > b_done, [a, b], 60)
    b.stop(signal.SIGKILL)
    killed = time.monotonic()
    a_done = a.processed()
    poll("A to take over", lambda: rebalances(a) > before and ready(a), [a], TAKEOVER_SECONDS)
    poll("A to process again", lambda: a.processed() > a_done, [a], TAKEOVER_SECONDS)
    takeover = time.monotonic() - killed
    assert takeover <= TAKEOVER_SECONDS
    poll("A to commit everything B left", all_committed(a, ends), [a], 120)

    # 3. B comes back on its own disk: the partitions move again.
    before = rebalances(a)
    b.start()
    poll("B to rejoin", lambda: ready(b) and rebalances(a) > before, [a, b], 90)
    poll("A to settle", lambda: ready(a), [a, b], 60)
    produce(a, days(events, range(19, 24)), ends)
    poll("A and B to commit the rest", all_committed(a, ends), [a, b], 120)
    assert sum(ends.values()) == len(events)

    # DriftEvents: the backtest's, each repeat identical.
    settings = Settings.from_env(environ=dict(FAST_DETECTION))
    report = run_backtest(events, settings.engine_config())
    offline = [d.to_dict() for d in report.drift_events]
    records = consume_all(a.bootstrap, a.topic("drift-events"), min_messages=len(offline), idle=3)
    live = fold_detections(records)
    got, want = sorted(live.values(), key=detection_key), sorted(offline, key=detection_key)
    assert got == want, "live vs backtest:\n" + drift_diff(got, want)

    # Alerts: one per id, repeats identical.
    alerts: dict[str, dict[str, Any]] = {}
    for r in consume_all(a.bootstrap, a.topic("alerts"), min_messages=1, idle=3):
        alert = json.loads(r.value or b"")
        assert alerts.setdefault(alert["alert_id"], alert) == alert, "a repeated alert differs"
    assert alerts, "no alert at all"

    # Exact counts: B leaves gracefully, A takes every partition back (its copies brought up
    # to date from the changelogs) and holds every valid event once per window and feature.
    before = rebalances(a)
    assert b.stop() == 0, b.log_tail()
    poll("A to take every partition back", lambda: rebalances(a) > before and ready(a), [a], 90)
    assert a.stop() == 0, a.log_tail()
    print(f"takeover in {takeover:.1f} s; {len(records)} DriftEvents ({len(live)} distinct); "
          f"{len(alerts)} alerts")  # fmt: skip
    produced = expected_counts(events)
    state = describe_state(read_table(a.data_dir, WINDOW_TABLE))
    assert set(state) == set(produced)
    for stream, info in state.items():
        assert info["windows"] == {w: produced[stream][w] for w in info["windows"]}, stream
        assert info["events"] == sum(1 for e in events if e.stream_key == stream), stream
