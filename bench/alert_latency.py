"""From a DriftEvent to its alert at a webhook: how long people wait.

Run as ``python -m bench.alert_latency``.

A real worker (embedded broker unless ``KAFKA_BOOTSTRAP_SERVERS`` is set) with a webhook
(a local HTTP endpoint that records arrival times) gets 22 days of traffic for three models
with an abrupt shift on one of them, one simulated day at a time. For every alert of an
incident being opened or confirmed, the latency is the webhook's arrival time minus the broker
timestamp of the DriftEvent that made the change (the first DriftEvent of that incident, or
the first one marked confirmed). Target (issue 9): under 2 s. Results go to stdout and
``bench/results/alert_latency.json``.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from driftwatch.devbroker import DevBroker
from runtime.topics import WORKER_TOPICS as TOPICS
from runtime.topics import ensure_topics
from tests.integration.kafka_helpers import consume_all
from tests.integration.test_operating import PIPELINE, Receiver, produce_days, traffic
from tests.integration.worker_harness import WorkerProcess, wait_drained

RESULTS = Path(__file__).resolve().parent / "results" / "alert_latency.json"


def run() -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="driftwatch-alert-latency-"))
    predictions, outcomes = traffic()
    with DevBroker(0, log_path=workdir / "broker.log") as broker, Receiver() as hook:
        w = WorkerProcess(
            bootstrap=broker.bootstrap, prefix="bench-", data_dir=workdir / "state",
            log_path=workdir / "worker.log",
            extra_env={"DRIFTWATCH_ALERT_WEBHOOK_URL": hook.url,
                       "DRIFTWATCH_CONFIRM_WINDOWS": "2"},
        )  # fmt: skip
        ensure_topics(broker.bootstrap, {w.topic(t): w.partitions for t in TOPICS})
        w.start()
        try:
            produce_days(w, predictions, outcomes, range(0, 23))
            wait_drained(w, PIPELINE, timeout=300)
            drifts = consume_all(broker.bootstrap, w.topic("drift-events"), min_messages=1)
        finally:
            w.stop()
        posts = list(hook.posts)
    first: dict[str, float] = {}
    confirmed: dict[str, float] = {}
    for r in drifts:
        d = json.loads(r.value or b"{}")
        ts = (r.timestamp_ms or 0) / 1000
        first[d["drift_id"]] = min(first.get(d["drift_id"], ts), ts)
        if d["confirmed"]:
            confirmed[d["drift_id"]] = min(confirmed.get(d["drift_id"], ts), ts)
    latencies: dict[str, list[float]] = {"opened": [], "confirmed": []}
    for at, _, body in posts:
        alert = json.loads(body)["alert"]
        incident = alert.get("incident") or {}
        source = {"opened": first, "confirmed": confirmed}.get(alert["change"])
        if source is None or incident.get("drift_id") not in source:
            continue
        latencies[alert["change"]].append(at - source[incident["drift_id"]])
    every = latencies["opened"] + latencies["confirmed"]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "alerts_received": len(posts),
        "measured": {k: len(v) for k, v in latencies.items()},
        "latency_seconds": {
            "median": round(statistics.median(every), 3) if every else None,
            "max": round(max(every), 3) if every else None,
        },
        "target_seconds": 2.0,
    }


def main(argv: list[str] | None = None) -> int:
    out = run()
    print(json.dumps(out, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    return 0 if out["latency_seconds"]["max"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
