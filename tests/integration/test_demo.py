"""The README's first quick-start command, as a user runs it: ``driftwatch demo`` (what
``make demo`` runs), on the embedded broker unless ``KAFKA_BOOTSTRAP_SERVERS`` is set.

It once failed for a day unseen (the performance stage fell days behind the drift agent, so
nothing was retrained before the demo stopped) because its only end-to-end run was a slow
test; this one runs in CI, with the demo's own defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.kafka_connection import SECURITY_VARIABLES


@pytest.mark.timeout(900)
def test_the_quick_start_demo_finds_retrains_and_rejects(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in SECURITY_VARIABLES}
    env["TMPDIR"] = str(tmp_path)  # its working directory (state, logs, reports) goes here
    done = subprocess.run(
        [sys.executable, "-m", "driftwatch.cli", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-3000:]
    assert "✓ every injected drift was found" in out
    assert "✗" not in out
    # the learnable concept drift retrained and promoted, the noise's challenger rejected
    assert any("RETRAIN promoted" in line and "acme/conflict" in line for line in out.splitlines())
    assert any(
        "RETRAIN challenger_rejected" in line and "globex/fraud" in line
        for line in out.splitlines()
    )
    # ... and the promoted model checked on its own traffic (once, it served none: the demo
    # had sent nearly every prediction before the promotion, and still said "validated")
    assert any(
        "RETRAIN validated " in line and "acme/conflict" in line and "of its own traffic" in line
        for line in out.splitlines()
    ), out[-4000:]
    processed = next(line for line in out.splitlines() if line.startswith("processed "))
    counts = processed.split()[1].split("/")
    assert counts[0] == counts[1], processed  # every event produced was processed
    workdirs = list(tmp_path.glob("driftwatch-demo-*"))
    assert len(workdirs) == 1 and list((workdirs[0] / "reports").glob("*.html"))
