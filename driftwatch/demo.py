"""``driftwatch demo``: broker, worker and a 90-day simulation with injected drift."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.app import DEAD_LETTERS, DRIFT_EVENTS, PREDICTIONS, TOPICS
from driftwatch.devbroker import DevBroker, ensure_topics, free_port
from driftwatch.kafka_io import (
    make_producer,
    poll_json,
    prediction_messages,
    produce_messages,
    tail_consumer,
)
from driftwatch.settings import Settings
from driftwatch.simulate import (
    DriftSpec,
    DriftType,
    SimulationConfig,
    feature_names,
    generate,
    resolve_start,
)
from schemas import parse_timestamp

DAY = 86_400.0

# Messages a careless producer sends; the worker must dead-letter them and keep going.
BAD_MESSAGES: list[bytes] = [
    b"{not json",
    b'{"event_id": "x", "tenant": "acme"}',
    b'{"event_id":"x","tenant":"acme","model":"fraud","model_version":"1",'
    b'"timestamp":"2026-01-01T00:00:00Z","features":{"amount":NaN},"score":0.5}',
    b'{"event_id":"x","tenant":"acme","model":"fraud","model_version":"1",'
    b'"timestamp":"2026-01-01T00:00:00Z","features":{"amount":"12"},"score":"high"}',
    b"[1, 2, 3]",
    b"x" * (300 * 1024),
]


def _out(line: str = "") -> None:
    print(line, flush=True)


@dataclass
class DemoState:
    start: float
    drifts: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def day(self, ts: str) -> float:
        return (parse_timestamp(ts) - self.start) / DAY


def _scrape(port: int) -> dict[str, float]:
    """Sum Prometheus samples by metric name + labels (no client library needed to read)."""
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def _processed(metrics: dict[str, float]) -> int:
    return int(sum(v for k, v in metrics.items() if k.startswith("driftwatch_events_total{")))


def _describe(state: DemoState, d: dict[str, Any]) -> str:
    badge = "CONFIRMED" if d["confirmed"] else "detected "
    look = "hourly look" if d.get("partial") else "end of day "
    return (
        f"  day {state.day(d['detected_at']):6.2f} {look} {badge} {d['severity']:<8} "
        f"{d['tenant']}/{d['model']} feature={d['feature']:<20} {d['test']} "
        f"stat={d['statistic']:.3f} p={d['p_value'] or 0:.1e} "
        f"persist={d.get('persistence', 1)} id={d['drift_id'][:8]}"
    )


def _tail(
    bootstrap: str,
    topic: str,
    partitions: int,
    sink: list[dict[str, Any]],
    state: DemoState,
    stop: threading.Event,
    echo: bool,
) -> None:
    consumer = tail_consumer(bootstrap, topic, partitions)
    try:
        while not stop.is_set():
            for record in poll_json(consumer, timeout=0.5):
                with state.lock:
                    sink.append(record)
                if echo and (record.get("persistence", 1) == 1 or record.get("persistence") == 7):
                    _out(_describe(state, record))
    finally:
        consumer.close()


def _demo_traffic(days: int, rate: int, drift_day: int) -> SimulationConfig:
    return SimulationConfig(
        seed=7,
        tenants=("acme", "globex"),
        models=("fraud", "conflict"),
        days=days,
        events_per_day=rate,
        drifts=(
            DriftSpec(DriftType.MEAN_SHIFT, drift_day, 1.0, ("amount",), ("acme",), ("fraud",)),
            DriftSpec(DriftType.CATEGORY_MIX, drift_day + 5, 0.4, (), ("globex",), ("conflict",)),
        ),
    )


def _bad_messages() -> Iterator[tuple[bytes | None, bytes]]:
    for raw in BAD_MESSAGES:
        yield b"acme:fraud", raw


def run_demo(settings: Settings, days: int = 90, rate: int = 600, drift_day: int = 60) -> int:
    run_id = uuid.uuid4().hex[:6]
    cfg = _demo_traffic(days, rate, drift_day)
    start = resolve_start(cfg)
    cfg = SimulationConfig(**{**cfg.__dict__, "start": start})
    state = DemoState(start=start)
    workdir = Path(tempfile.mkdtemp(prefix=f"driftwatch-demo-{run_id}-"))
    total = days * rate * len(cfg.streams)
    with ExitStack() as stack:
        bootstrap = settings.bootstrap_servers
        if bootstrap is None:
            broker = stack.enter_context(DevBroker(0, log_path=workdir / "broker.log"))
            bootstrap = broker.bootstrap
            _out(f"● embedded Kafka-compatible broker (Tansu) on {bootstrap}")
        else:
            _out(f"● using Kafka at {bootstrap}")
        prefix = f"demo-{run_id}-"
        partitions = 2
        metrics_port = free_port()
        ensure_topics(bootstrap, {prefix + t: partitions for t in TOPICS})
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "DRIFTWATCH_APP_ID": f"driftwatch-demo-{run_id}",
            "DRIFTWATCH_TOPIC_PREFIX": prefix,
            "DRIFTWATCH_PARTITIONS": str(partitions),
            "DRIFTWATCH_DATA_DIR": str(workdir / "state"),
            "DRIFTWATCH_METRICS_PORT": str(metrics_port),
            "DRIFTWATCH_SESSION_TIMEOUT": "6",
            "DRIFTWATCH_HEARTBEAT_INTERVAL": "1",
            "DRIFTWATCH_MAX_FUTURE_SECONDS": str(2 * DAY),
            "DRIFTWATCH_RECOVERY_CONSISTENCY_CHECK": str(settings.bootstrap_servers is not None),
        }
        worker_log = (workdir / "worker.log").open("wb")
        stack.callback(worker_log.close)
        worker = subprocess.Popen(
            [sys.executable, "-m", "driftwatch.cli", "worker"],
            env=env,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
        )
        stack.callback(_stop_process, worker)
        _out(f"● worker started (pid {worker.pid}); log: {workdir / 'worker.log'}")
        _out(f"● metrics: http://127.0.0.1:{metrics_port}/metrics")

        stop = threading.Event()
        tails: list[threading.Thread] = []

        def stop_tails() -> None:
            stop.set()
            for t in tails:
                t.join(timeout=5)

        stack.callback(stop_tails)
        for topic, sink, echo in (
            (DRIFT_EVENTS, state.drifts, True),
            (DEAD_LETTERS, state.dead_letters, False),
        ):
            t = threading.Thread(
                target=_tail,
                args=(bootstrap, prefix + topic, partitions, sink, state, stop, echo),
                daemon=True,
            )
            t.start()
            tails.append(t)

        numeric, _ = feature_names(cfg, "fraud")
        _, categorical = feature_names(cfg, "conflict")
        _out(
            f"● simulating {days} days x {rate} events/day for "
            f"{', '.join(f'{t}/{m}' for t, m in cfg.streams)} "
            f"({len(numeric)} numeric + {len(categorical)} categorical features each)"
        )
        _out(
            f"  injected: acme/fraud amount +1.0 sigma from day {drift_day}; "
            f"globex/conflict {categorical[0] if categorical else 'category'} mix change "
            f"from day {drift_day + 5}"
        )
        _out("● drift events as they arrive (first detection and confirmation of each incident):")
        producer = make_producer(bootstrap)
        started = time.monotonic()
        produced = produce_messages(
            producer, prefix + PREDICTIONS, prediction_messages(generate(cfg))
        )
        produced += produce_messages(producer, prefix + PREDICTIONS, _bad_messages())
        _out(
            f"● produced {produced} messages ({len(BAD_MESSAGES)} of them deliberately bad) "
            f"in {time.monotonic() - started:.1f}s; waiting for the worker"
        )

        deadline = time.monotonic() + max(300.0, total / 500)
        last_report = 0.0
        processed = 0
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                _out(f"✗ worker exited with code {worker.returncode}; see {workdir / 'worker.log'}")
                return 1
            processed = _processed(_scrape(metrics_port))
            if processed >= produced:
                break
            if time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                _out(
                    f"  … worker processed {processed}/{produced} "
                    f"({processed / max(time.monotonic() - started, 1e-9):.0f} msg/s)"
                )
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        time.sleep(2.0)  # last drift events in flight
        stop_tails()
        del producer
        return _summary(state, cfg, produced, processed, elapsed, drift_day)
    return 1


def _summary(
    state: DemoState,
    cfg: SimulationConfig,
    produced: int,
    processed: int,
    elapsed: float,
    drift_day: int,
) -> int:
    with state.lock:
        drifts = list(state.drifts)
        letters = list(state.dead_letters)
    incidents: dict[str, dict[str, Any]] = {}
    for d in drifts:
        inc = incidents.setdefault(d["drift_id"], {"first": d, "last": d, "n": 0})
        inc["n"] += 1
        inc["last"] = d
    _out()
    _out("═" * 100)
    _out(
        f"processed {processed}/{produced} messages in {elapsed:.1f}s "
        f"({processed / max(elapsed, 1e-9):.0f} msg/s end to end)"
    )
    _out(
        f"dead letters: {len(letters)} "
        f"({', '.join(sorted({str(x['reason']) for x in letters})) or 'none'})"
    )
    _out(f"drift events: {len(drifts)} in {len(incidents)} incident(s)")
    expected = {("acme", "fraud", "amount"): drift_day}
    _, categorical = feature_names(cfg, "conflict")
    if categorical:
        expected[("globex", "conflict", categorical[0])] = drift_day + 5
    found: set[tuple[str, str, str]] = set()
    for inc in incidents.values():
        first, last = inc["first"], inc["last"]
        key = (first["tenant"], first["model"], first["feature"])
        injected = expected.get(key)
        verdict = "injected" if injected is not None else "not injected (false alarm)"
        if injected is not None:
            found.add(key)
        found_day = state.day(first["detected_at"])
        when = (
            f"found {(found_day - injected) * 24:.1f} h after the injected onset (day {injected})"
            if injected is not None
            else f"found on day {found_day:.2f}"
        )
        _out(
            f"  {first['tenant']}/{first['model']} {first['feature']:<14} {when}, "
            f"{inc['n']} detections, severity {last['severity']}, "
            f"{'confirmed' if last['confirmed'] else 'unconfirmed'} — {verdict}"
        )
    missing = set(expected) - found
    if processed < produced:
        _out(f"✗ the worker did not finish in time ({processed}/{produced})")
        return 1
    if missing:
        _out(f"✗ injected drift not found: {sorted(missing)}")
        return 1
    if not letters:
        _out("✗ the bad messages did not reach the dead-letter topic")
        return 1
    _out("✓ every injected drift was found; bad input was dead-lettered; the worker kept going")
    return 0


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
