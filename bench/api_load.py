"""API latency under ingestion, and what the API costs ingestion.

Run as ``python -m bench.api_load [--rps 200] [--events 30000]``.

One worker (the real ``driftwatch worker`` process, API on with a token, on the embedded broker
unless ``KAFKA_BOOTSTRAP_SERVERS`` is set) is given 30 days of history for 4 models, so every
endpoint has real state to read. Then, twice, the same backlog of ``--events`` new
predictions (and their outcomes) is produced and the worker's ingestion rate is measured from
its Prometheus counters (events per second from the first to the last):

1. **ingestion alone**;
2. **ingestion with API load**: an open-loop client (requests sent on a fixed schedule, not
   after the previous answer, so a slow server cannot slow the load down and hide its own
   latency) sends ``--rps`` requests a second, a mix of ``GET /v1/models``, a model's
   summary, ``/drift`` and ``/performance``, for as long as the backlog takes, and records
   each latency. Then 10 s of the same load on the idle worker, for comparison.

Targets (issue 9): p99 under 50 ms at 200 requests/s while the worker ingests at least 500
events/s, and ingestion no more than 20 % slower than alone. The client runs on the same two
cores as the worker and the broker. The public port is the worker's API front, a child
process (agents/api/front.py): the CPU seconds of both during the loaded run are reported
apart. Results go to stdout and ``bench/results/api_load.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout

from agents.api.auth import hash_token, new_token
from driftwatch.devbroker import DevBroker
from driftwatch.simulate import SimulationConfig, generate, generate_outcomes
from runtime.topics import WORKER_TOPICS as TOPICS
from runtime.topics import ensure_topics
from tests.integration.worker_harness import WorkerProcess, child_pids, produce_recorded

RESULTS = Path(__file__).resolve().parent / "results" / "api_load.json"
START = 1_767_225_600.0
DAY = 86_400.0
MODELS = [("acme", "fraud"), ("acme", "conflict"), ("globex", "fraud"), ("globex", "conflict")]


def messages(cfg: SimulationConfig) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    preds = [(p.stream_key.encode(), p.to_json()) for p in generate(cfg)]
    outs = [(o.event_id.encode(), o.to_json()) for o in generate_outcomes(cfg)]
    return preds, outs


def processed(worker: WorkerProcess) -> float:
    return float(worker.processed())


def ingest(worker: WorkerProcess, preds: list[Any], outs: list[Any]) -> tuple[float, float]:
    """Produce a backlog, then time its consumption: (events/s, seconds)."""
    before = processed(worker)
    target = before + len(preds) + len(outs)
    produce_recorded(worker.bootstrap, worker.topic("predictions"), preds)
    produce_recorded(worker.bootstrap, worker.topic("outcomes"), outs)
    first_t, first_n = None, before
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        n = processed(worker)
        now = time.perf_counter()
        if first_t is None and n > before:
            first_t, first_n = now, n
        if n >= target and first_t is not None:
            return (n - first_n) / max(now - first_t, 1e-9), now - first_t
        time.sleep(0.05)
    raise TimeoutError("the worker did not consume the backlog")


@dataclass
class Load:
    latencies: list[float]
    errors: dict[str, int]
    sent: int
    seconds: float


async def api_load(
    port: int, token: str, rps: float, seconds: float, stop: threading.Event | None = None
) -> Load:
    """Requests on a fixed schedule for ``seconds``, or until ``stop`` is set if given."""
    paths = ["/v1/models"]
    for t, m in MODELS:
        paths += [f"/v1/models/{t}/{m}", f"/v1/models/{t}/{m}/drift",
                  f"/v1/models/{t}/{m}/performance"]  # fmt: skip
    latencies: list[float] = []
    errors: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    sent = 0
    async with ClientSession(timeout=ClientTimeout(total=10)) as session:

        async def one(path: str) -> None:
            t0 = time.perf_counter()
            try:
                async with session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors[str(r.status)] = errors.get(str(r.status), 0) + 1
                        return
            except Exception as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            latencies.append(time.perf_counter() - t0)

        tasks = []
        while True:
            elapsed = time.perf_counter() - started
            if stop.is_set() if stop is not None else elapsed >= seconds:
                break
            due = sent / rps
            if elapsed < due:
                await asyncio.sleep(due - elapsed)
            tasks.append(asyncio.ensure_future(one(paths[sent % len(paths)])))
            sent += 1
        await asyncio.gather(*tasks)
    return Load(latencies, errors, sent, time.perf_counter() - started)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux /proc), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_of(worker: WorkerProcess) -> dict[str, float]:
    """CPU seconds so far of the worker process and of its children (the API front)."""
    assert worker.proc is not None
    pid = worker.proc.pid
    return {
        "worker": cpu_seconds(pid),
        "api_front": sum(cpu_seconds(c) for c in child_pids(pid)),
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="driftwatch-api-load-"))
    token = new_token()
    tokens = workdir / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [{"name": "bench", "sha256": hash_token(token),
                                              "tenants": ["*"], "scopes": ["read"]}]}))  # fmt: skip
    history = SimulationConfig(seed=3, tenants=("acme", "globex"), models=("fraud", "conflict"),
                               days=30, events_per_day=250, start=START, label_rate=0.8,
                               outcome_delay_hours=(6.0, 30.0))  # fmt: skip
    per_day = 4 * 250
    backlog_days = max(1, args.events // per_day)

    def backlog(offset_days: int, seed: int) -> SimulationConfig:
        return SimulationConfig(
            seed=seed, tenants=("acme", "globex"), models=("fraud", "conflict"),
            days=backlog_days, events_per_day=250, start=START + offset_days * DAY,
            label_rate=0.8, outcome_delay_hours=(6.0, 30.0),
        )  # fmt: skip

    with DevBroker(0, log_path=workdir / "broker.log") as broker:
        w = WorkerProcess(
            bootstrap=broker.bootstrap, prefix="bench-", data_dir=workdir / "state",
            log_path=workdir / "worker.log",
            extra_env={"DRIFTWATCH_API_AUTH": "on", "DRIFTWATCH_API_TOKENS_FILE": str(tokens),
                       "DRIFTWATCH_API_RATE_LIMIT": "100000",
                       "DRIFTWATCH_API_RATE_BURST": "100000"},
        )  # fmt: skip
        ensure_topics(broker.bootstrap, {w.topic(t): w.partitions for t in TOPICS})
        w.start()
        try:
            print("loading 30 days of history ...", file=sys.stderr)
            ingest(w, *messages(history))
            print("ingestion alone ...", file=sys.stderr)
            alone, alone_s = ingest(w, *messages(backlog(30, 11)))
            print(f"  {alone:.0f} events/s", file=sys.stderr)
            print(f"ingestion with {args.rps} requests/s ...", file=sys.stderr)
            result: dict[str, Any] = {}

            stop = threading.Event()

            def load() -> None:
                result["load"] = asyncio.run(api_load(w.api_port, token, args.rps, 0, stop))

            # Start the load first: the backlog is timed while the API is under load.
            thread = threading.Thread(target=load)
            fronts = child_pids(w.proc.pid) if w.proc is not None else []
            cpu_before = cpu_of(w)
            thread.start()
            time.sleep(1.0)
            loaded, loaded_s = ingest(w, *messages(backlog(30 + backlog_days, 12)))
            stop.set()
            thread.join()
            cpu_after = cpu_of(w)
            if w.proc is None or child_pids(w.proc.pid) != fronts:
                print("  the API front was restarted during the run", file=sys.stderr)
            idle = asyncio.run(api_load(w.api_port, token, args.rps, 10.0))
        finally:
            w.stop()
    lat: Load = result["load"]
    ms = [x * 1000 for x in lat.latencies]
    idle_ms = [x * 1000 for x in idle.latencies]
    out = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "rps_target": args.rps,
        "rps_sent": round(lat.sent / lat.seconds, 1),
        "requests": lat.sent,
        "errors": lat.errors,
        "latency_ms_under_ingestion": {
            "p50": round(pct(ms, 0.50), 2), "p95": round(pct(ms, 0.95), 2),
            "p99": round(pct(ms, 0.99), 2), "max": round(max(ms), 2),
        },
        "latency_ms_idle": {
            "p50": round(pct(idle_ms, 0.50), 2), "p99": round(pct(idle_ms, 0.99), 2),
        },
        "ingestion_events_per_second_alone": round(alone),
        "ingestion_events_per_second_with_api_load": round(loaded),
        "ingestion_slowdown": round(1 - loaded / alone, 3),
        "ingestion_seconds": [round(alone_s, 1), round(loaded_s, 1)],
        "mean_latency_ms": round(statistics.fmean(ms), 2),
        # from the start of the load to the end of the backlog (the load's own seconds)
        "cpu_seconds_with_api_load": {
            k: round(cpu_after[k] - cpu_before[k], 1) for k in cpu_before
        } | {"wall": round(lat.seconds, 1)},
    }  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api_load")
    parser.add_argument("--rps", type=float, default=200.0)
    parser.add_argument("--events", type=int, default=30_000, help="backlog predictions")
    args = parser.parse_args(argv)
    out = run(args)
    print(json.dumps(out, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
