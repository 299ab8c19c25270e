"""Topic checks at start-up, against a real broker: a ``predictions`` topic whose partition
count differs from the worker's tables stops the worker with a message that says so, and
with ``DRIFTWATCH_CREATE_TOPICS=false`` nothing is created, only checked."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.kafka_connection import SECURITY_VARIABLES
from runtime.topics import existing_topics


def _worker(
    kafka_bootstrap: str, prefix: str, tmp_path: Path, **env: str
) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "driftwatch.cli", "worker"],
        env={
            **{k: v for k, v in os.environ.items() if k not in SECURITY_VARIABLES},
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "DRIFTWATCH_TOPIC_PREFIX": prefix,
            "DRIFTWATCH_APP_ID": f"{prefix}app",
            "DRIFTWATCH_DATA_DIR": str(tmp_path / "state"),
            "DRIFTWATCH_METRICS_PORT": "0",
            "DRIFTWATCH_API_PORT": "0",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stderr, time.monotonic() - started


@pytest.mark.timeout(90)
def test_worker_refuses_predictions_partitioned_unlike_its_tables(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    from runtime.topics import ensure_topics

    prefix = f"{unique_prefix}-"
    ensure_topics(kafka_bootstrap, {f"{prefix}predictions": 3})
    code, stderr, elapsed = _worker(kafka_bootstrap, prefix, tmp_path, DRIFTWATCH_PARTITIONS="2")
    last = stderr.strip().splitlines()[-1]
    assert code == 1, stderr
    assert "Traceback" not in stderr
    assert last.startswith("driftwatch: partition counts differ from DRIFTWATCH_PARTITIONS=2: "
                           f"'{prefix}predictions' has 3."), last  # fmt: skip
    assert "set DRIFTWATCH_PARTITIONS to the count of the existing 'predictions' topic" in last
    assert elapsed < 20, elapsed


@pytest.mark.timeout(90)
def test_with_creation_off_the_worker_only_checks(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    prefix = f"{unique_prefix}-"
    code, stderr, _ = _worker(
        kafka_bootstrap,
        prefix,
        tmp_path,
        DRIFTWATCH_PARTITIONS="2",
        DRIFTWATCH_CREATE_TOPICS="false",
    )
    last = stderr.strip().splitlines()[-1]
    assert code == 1, stderr
    assert last.startswith(
        "driftwatch: missing topics (DRIFTWATCH_CREATE_TOPICS=false: create them, or turn "
        f"creation on): {prefix}predictions, {prefix}outcomes, "
    ), last
    assert f"{prefix}app-drift-state-changelog" in last
    found = existing_topics(
        kafka_bootstrap, [f"{prefix}predictions", f"{prefix}app-drift-state-changelog"]
    )
    assert set(found.values()) == {None}, "a topic was created with creation off"
