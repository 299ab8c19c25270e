"""``driftwatch demo``: broker, worker and a 90-day simulation with injected drift."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agents.stall import STALL_EXIT_CODE
from driftwatch.devbroker import DevBroker, free_port
from driftwatch.kafka_io import (
    make_producer,
    outcome_messages,
    poll_json,
    prediction_messages,
    produce_messages,
    tail_consumer,
)
from driftwatch.simulate import (
    DriftSpec,
    DriftType,
    SimulationConfig,
    feature_names,
    generate,
    generate_outcomes,
    resolve_start,
)
from runtime.kafka_connection import (
    SECURITY_VARIABLES,
    KafkaTarget,
    check_connection,
    confluent_config,
    security,
)
from runtime.settings import Settings
from runtime.topics import (
    DEAD_LETTERS,
    DRIFT_EVENTS,
    LABELED_PREDICTIONS,
    MODEL_EVENTS,
    OUTCOMES,
    PREDICTIONS,
    RETRAIN_EVENTS,
    RETRAIN_TOPICS,
    WORKER_TOPICS,
    ensure_topics,
)
from schemas import OutcomeEvent, PredictionEvent, parse_timestamp

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
    retrain: list[dict[str, Any]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    served: int = 0
    """model-events already applied to the simulated serving."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def training(self) -> bool:
        """Is a model training right now (a request whose last step is ``training``), or
        promoted and not yet serving? The promotion comes on ``retrain-events`` and the
        switch on ``model-events``, read by two tails: when the first came days of traffic
        earlier, the producer went on with the old model, and the new one's post-deploy
        check ended "served no traffic to check" (one demo run in four)."""
        with self.lock:
            last: dict[str, str] = {}
            promoted: set[str] = set()
            for r in self.retrain:
                last[r["request_id"]] = r["status"]
                if r["status"] == "promoted":
                    promoted.add(r["request_id"])
            switched = {m.get("request_id") for m in self.models}  # applied before the next day
        return (
            "training" in last.values() or "approved" in last.values() or bool(promoted - switched)
        )

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


_LAG = "driftwatch_consumer_lag_messages{"
_TOPIC_LABEL = re.compile(r'topic="([^"]*)"')


def _awaiting_verdict(state: DemoState) -> list[str]:
    """Requests whose version was promoted and whose post-deploy check has not ended."""
    with state.lock:
        last: dict[str, str] = {}
        for r in state.retrain:
            last[r["request_id"]] = r["status"]
    return [rid for rid, status in last.items() if status == "promoted"]


def _await_verdicts(
    procs: Supervised,
    state: DemoState,
    labelled: tuple[int, str],
    deadline: float,
    quiet: float = 3.0,
) -> None:
    """After the stream: the retrain worker's post-deploy verdicts come from labelled rows
    (``labelled``: its metrics port and that topic) it may still be reading. Waits for every
    promoted version's, while the retrain worker runs and reads (a version promoted near the
    stream's end gets none: no row is left to end its check), at most ``deadline`` s; the
    summary says what is missing."""
    until = time.monotonic() + deadline
    last, since = -1.0, time.monotonic()
    while _awaiting_verdict(state) and time.monotonic() < until and procs.failed() is None:
        read = _retrain_read(*labelled)
        if read != last:
            last, since = read, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return  # read to the end: nothing more will come
        time.sleep(0.5)


def _read_by_retrain(retrain: tuple[int, str], state: DemoState) -> bool:
    """Has the retrain worker (``retrain``: its metrics port, the drift-events topic) read
    at least as many drift events as the demo's own tail has?"""
    with state.lock:
        seen = len(state.drifts)
    return _retrain_read(*retrain) >= seen


def _retrain_read(port: int, topic: str) -> float:
    """Messages of ``topic`` the retrain worker (metrics on ``port``) has handled."""
    label = f'topic="{topic}"'
    return sum(
        v
        for k, v in _scrape(port).items()
        if k.startswith("driftwatch_retrain_messages_total{") and label in k
    )


def _later_lag(metrics: dict[str, float], inputs: Collection[str]) -> float:
    """Messages the worker's later stages (the join, the performance monitor) have yet to
    process: the lag on every topic it reads but the producers' ``inputs``."""
    total = 0.0
    for key, value in metrics.items():
        if key.startswith(_LAG):
            topic = _TOPIC_LABEL.search(key)
            if topic is not None and topic.group(1) not in inputs:
                total += value
    return total


def _describe(state: DemoState, d: dict[str, Any]) -> str | None:
    if d.get("persistence", 1) not in (1, 7):
        return None  # first detection and confirmation of each incident only
    badge = "CONFIRMED" if d["confirmed"] else "detected "
    look = "hourly look" if d.get("partial") else "end of day "
    what = f"feature={d['feature']:<20}" if d["feature"] else f"performance {d['model_version']:<8}"
    if d["kind"] == "performance":
        look = "estimate   " if d.get("estimated") else "labels     "
    p = f" p={d['p_value']:.1e}" if d.get("p_value") is not None else ""
    return (
        f"  day {state.day(d['detected_at']):6.2f} {look} {badge} {d['severity']:<8} "
        f"{d['tenant']}/{d['model']} {what} {d['test']} "
        f"stat={d['statistic']:.3f}{p} persist={d.get('persistence', 1)} id={d['drift_id'][:8]}"
    )


def _tail(
    bootstrap: KafkaTarget,
    topic: str,
    partitions: int,
    sink: list[dict[str, Any]],
    state: DemoState,
    stop: threading.Event,
    echo: Callable[[DemoState, dict[str, Any]], str | None] | None,
) -> None:
    consumer = tail_consumer(bootstrap, topic, partitions)
    try:
        while not stop.is_set():
            for record in poll_json(consumer, timeout=0.5):
                with state.lock:
                    sink.append(record)
                line = None if echo is None else echo(state, record)
                if line is not None:
                    _out(line)
    finally:
        consumer.close()


def _demo_traffic(days: int, rate: int, drift_day: int) -> SimulationConfig:
    return SimulationConfig(
        seed=7,
        tenants=("acme", "globex"),
        models=("fraud", "conflict"),
        days=days,
        events_per_day=rate,
        label_rate=0.8,
        outcome_delay_hours=(24.0, 72.0),
        drifts=(
            # feature drift, reported (retraining here acts on performance drift only)
            DriftSpec(DriftType.MEAN_SHIFT, drift_day, 1.0, ("amount",), ("acme",), ("fraud",)),
            DriftSpec(DriftType.CATEGORY_MIX, drift_day + 5, 0.4, (), ("globex",), ("conflict",)),
            # labels follow a new rule a retrained model can learn: retrain -> promote
            DriftSpec(DriftType.RELATION, drift_day, 1.0, (), ("acme",), ("conflict",)),
            # labels turn to noise for 40 % of traffic: the challenger must be rejected
            DriftSpec(DriftType.CONCEPT, drift_day, 0.4, (), ("globex",), ("fraud",)),
        ),
    )


def _bad_messages() -> Iterator[tuple[bytes | None, bytes]]:
    for raw in BAD_MESSAGES:
        yield b"acme:fraud", raw


def _by_day(
    cfg: SimulationConfig,
) -> Iterator[tuple[int, list[PredictionEvent], list[OutcomeEvent]]]:
    """Each day's predictions and the outcomes that became known that day."""
    start = resolve_start(cfg)
    outcomes = generate_outcomes(cfg)
    pending: OutcomeEvent | None = None
    day_events: list[PredictionEvent] = []
    day = 0
    for event in generate(cfg):
        d = int((event.timestamp - start) // DAY)
        if d != day:
            known, pending = _outcomes_until(outcomes, pending, start + (day + 1) * DAY)
            yield day, day_events, known
            day, day_events = d, []
        day_events.append(event)
    known, pending = _outcomes_until(outcomes, pending, start + (day + 1) * DAY)
    yield day, day_events, known
    rest = [] if pending is None else [pending]
    yield day + 1, [], rest + list(outcomes)


def _outcomes_until(
    outcomes: Iterator[OutcomeEvent], pending: OutcomeEvent | None, until: float
) -> tuple[list[OutcomeEvent], OutcomeEvent | None]:
    out: list[OutcomeEvent] = []
    item = pending if pending is not None else next(outcomes, None)
    while item is not None and item.timestamp < until:
        out.append(item)
        item = next(outcomes, None)
    return out, item


class Serving:
    """Plays the serving system: after a promotion (or rollback) on ``model-events``, the
    stream's next predictions come from the active registry version, loaded checksum-verified."""

    def __init__(self, registry_dir: Path) -> None:
        self.registry_dir = registry_dir
        self.models: dict[tuple[str, str], tuple[str, Any]] = {}

    def switch(self, event: dict[str, Any]) -> None:
        from retrain.registry import ModelRegistry, RegistryError

        key = (str(event["tenant"]), str(event["model"]))
        try:
            model = ModelRegistry(self.registry_dir).load(key[0], key[1], str(event["version"]))
        except RegistryError:
            self.models.pop(key, None)  # an external version: the original model serves again
            return
        self.models[key] = (str(event["version"]), model)

    def score(self, events: list[PredictionEvent]) -> list[PredictionEvent]:
        by_stream: dict[tuple[str, str], list[int]] = {}
        for i, e in enumerate(events):
            if (e.tenant, e.model) in self.models:
                by_stream.setdefault((e.tenant, e.model), []).append(i)
        out = list(events)
        for key, idx in by_stream.items():
            version, model = self.models[key]
            scores = model.predict([events[i].features for i in idx])
            for i, score in zip(idx, scores, strict=True):
                s = round(float(score), 6)
                out[i] = replace(
                    events[i], score=s, model_version=version, prediction=int(s >= 0.5)
                )
        return out


def _demo_token(workdir: Path) -> tuple[Path, str]:
    """A read/write token for every tenant, for this demo's API (only its hash on disk)."""
    from agents.api.auth import hash_token, new_token

    token = new_token()
    path = workdir / "api-tokens.json"
    entry = {"name": "demo", "sha256": hash_token(token), "tenants": ["*"],
             "scopes": ["read", "write"]}  # fmt: skip
    path.write_text(json.dumps({"tokens": [entry]}))
    (workdir / "api-token").write_text(token + "\n")
    return path, token


def _api_get(port: int, token: str, path: str) -> bytes:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        body: bytes = resp.read()
        return body


def _operating_surface(workdir: Path, api_port: int, token: str) -> list[str]:
    """What a person looks at after the run: the API's models, the alerts and a report per
    model (saved next to the logs)."""
    lines: list[str] = []
    try:
        models = json.loads(_api_get(api_port, token, "/v1/models"))["models"]
        alerts = json.loads(_api_get(api_port, token, "/v1/alerts?limit=1000"))["alerts"]
        reports = workdir / "reports"
        reports.mkdir(exist_ok=True)
        for m in models:
            html = _api_get(api_port, token, f"/v1/models/{m['tenant']}/{m['model']}/report")
            target = reports / f"{m['tenant']}-{m['model']}.html"
            target.write_bytes(html)
            counts = ", ".join(f"{n} {s}" for s, n in m["open_incidents"].items() if n) or "none"
            lines.append(
                f"  {m['tenant']}/{m['model']:<9} active {m['active_version']:<4} open incidents: "
                f"{counts:<28} report: {target}"
            )
        kinds: dict[str, int] = {}
        for a in alerts:
            kinds[f"{a['kind']} {a['change']}"] = kinds.get(f"{a['kind']} {a['change']}", 0) + 1
        lines.append(
            f"  alerts: {len(alerts)} ("
            + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
            + ")"
        )
    except (OSError, ValueError, KeyError) as exc:
        lines.append(f"  (the API did not answer: {exc})")
    return lines


def run_demo(
    settings: Settings, days: int = 70, rate: int = 500, drift_day: int = 50, batch: int = 1
) -> int:
    """The whole loop; ``batch`` > 1 sends predictions in envelopes of up to that many."""
    run_id = uuid.uuid4().hex[:6]
    cfg = _demo_traffic(days, rate, drift_day)
    # End four days ago (resolve_start's three for the outcomes up to 3 days late, and one
    # more), so that even the last outcomes are not from the future: the worker would
    # rightly refuse them.
    start = resolve_start(cfg) - DAY
    cfg = SimulationConfig(**{**cfg.__dict__, "start": start})
    state = DemoState(start=start)
    workdir = Path(tempfile.mkdtemp(prefix=f"driftwatch-demo-{run_id}-"))
    with ExitStack() as stack:
        bootstrap = settings.bootstrap_servers
        kafka: KafkaTarget
        child_env = dict(os.environ)
        if bootstrap is None:
            broker = stack.enter_context(DevBroker(0, log_path=workdir / "broker.log"))
            bootstrap = kafka = broker.bootstrap
            # The embedded broker is plaintext whatever the environment says.
            child_env = {k: v for k, v in child_env.items() if k not in SECURITY_VARIABLES}
            _out(f"● embedded Kafka-compatible broker (Tansu) on {bootstrap}")
        else:
            kafka = confluent_config(settings)
            check_connection(kafka, timeout=settings.kafka_connect_timeout)
            _out(f"● using Kafka at {bootstrap} ({security(settings).describe()})")
        prefix = f"demo-{run_id}-"
        partitions = 2
        metrics_port = free_port()
        retrain_port = free_port()
        api_port = free_port()
        tokens_file, api_token = _demo_token(workdir)
        ensure_topics(
            kafka,
            {prefix + t: partitions for t in (*WORKER_TOPICS, *RETRAIN_TOPICS)},
            replication=settings.replication,
        )
        env = {
            **child_env,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "DRIFTWATCH_APP_ID": f"driftwatch-demo-{run_id}",
            "DRIFTWATCH_TOPIC_PREFIX": prefix,
            "DRIFTWATCH_PARTITIONS": str(partitions),
            "DRIFTWATCH_DATA_DIR": str(workdir / "state"),
            "DRIFTWATCH_METRICS_PORT": str(metrics_port),
            "DRIFTWATCH_METRICS_BIND": "127.0.0.1",  # a demo shows nothing to the network
            "DRIFTWATCH_API_PORT": str(api_port),
            "DRIFTWATCH_API_BIND": "127.0.0.1",
            "DRIFTWATCH_API_ADVERTISED_URL": f"http://127.0.0.1:{api_port}",
            "DRIFTWATCH_API_TOKENS_FILE": str(tokens_file),
            "DRIFTWATCH_SESSION_TIMEOUT": "6",
            "DRIFTWATCH_HEARTBEAT_INTERVAL": "1",
            "DRIFTWATCH_MAX_FUTURE_SECONDS": str(2 * DAY),
            "DRIFTWATCH_RECOVERY_CONSISTENCY_CHECK": str(settings.bootstrap_servers is not None),
            # The embedded broker reports a partition's end as its last batch's first offset:
            # a restore from a changelog would stop there without this (see README).
            "DRIFTWATCH_CHANGELOG_LAST_RECORD_ALONE": str(settings.bootstrap_servers is None),
            # the retrain worker: on, performance drift only, recent data only
            "DRIFTWATCH_REGISTRY_DIR": str(workdir / "registry"),
            "DRIFTWATCH_RETRAIN_METRICS_PORT": str(retrain_port),
            "DRIFTWATCH_AUTO_RETRAIN": "true",
            "DRIFTWATCH_RETRAIN_KINDS": "performance",
            "DRIFTWATCH_TRAINING_DAYS": "6",
            "DRIFTWATCH_RETRAIN_MIN_NEW_LABELS": "500",
        }
        procs = Supervised(workdir, env, stack)
        for name, command in (("worker", "worker"), ("retrain", "retrain-worker")):
            proc = procs.start(name, command)
            _out(f"● {command} started (pid {proc.pid}); log: {workdir / f'{name}.log'}")
        _out(f"● metrics: http://127.0.0.1:{metrics_port}/metrics")
        _out(
            f"● API: http://127.0.0.1:{api_port}/v1/models (Authorization: Bearer <token in "
            f"{workdir / 'api-token'}>; OpenAPI at /v1/openapi.json)"
        )

        stop = threading.Event()
        tails: list[threading.Thread] = []

        def stop_tails() -> None:
            stop.set()
            for t in tails:
                t.join(timeout=5)

        serving = Serving(workdir / "registry")
        stack.callback(stop_tails)
        for topic, sink, echo in (
            (DRIFT_EVENTS, state.drifts, _describe),
            (DEAD_LETTERS, state.dead_letters, None),
            (RETRAIN_EVENTS, state.retrain, _describe_retrain),
            (MODEL_EVENTS, state.models, _describe_model),
        ):
            t = threading.Thread(
                target=_tail,
                args=(kafka, prefix + topic, partitions, sink, state, stop, echo),
                daemon=True,
            )
            t.start()
            tails.append(t)

        _out(
            f"● simulating {days} days x {rate} predictions/day for "
            f"{', '.join(f'{t}/{m}' for t, m in cfg.streams)}, with outcomes 1-3 days later"
        )
        _out(
            f"  injected from day {drift_day}: acme/fraud amount +1 sd (feature drift); "
            f"acme/conflict labels follow a new rule (learnable concept drift); globex/fraud "
            f"40 % of labels noise (unlearnable); globex/conflict category mix from day "
            f"{drift_day + 5}"
        )
        _out("● events as they arrive (first detection and confirmation of each incident):")
        producer = make_producer(kafka)
        started = time.monotonic()
        produced = 0
        day_size = rate * len(cfg.streams) * 2
        for day, predictions, outcomes in _by_day(cfg):
            with state.lock:
                for event in state.models[state.served :]:
                    serving.switch(event)
                state.served = len(state.models)
            scored = list(serving.score(predictions))
            produce_messages(producer, prefix + PREDICTIONS, prediction_messages(scored, batch))
            produced += len(scored)  # predictions, whatever the messages that carry them
            produced += produce_messages(producer, prefix + OUTCOMES, outcome_messages(outcomes))
            if day == drift_day:
                produced += produce_messages(producer, prefix + PREDICTIONS, _bad_messages())
            # Serve like production: a promotion applies to the traffic after it, so stay
            # within about a day of the worker, its later stages included (performance drift,
            # which starts a retraining, is found there), and wait while a model trains.
            if not _keep_pace(
                procs, metrics_port, produced - day_size, state, deadline=300,
                later=(day_size, (prefix + PREDICTIONS, prefix + OUTCOMES)),
                retrain=(retrain_port, prefix + DRIFT_EVENTS),
            ):  # fmt: skip
                return 1
        _out(f"● produced {produced} predictions and outcomes; waiting for the worker to finish")
        if not _keep_pace(procs, metrics_port, produced, state, deadline=300):
            return 1
        if not _settle(procs, metrics_port, state, deadline=300):
            return 1
        elapsed = time.monotonic() - started
        _await_verdicts(procs, state, (retrain_port, prefix + LABELED_PREDICTIONS), deadline=120)
        time.sleep(1.0)  # the last drift events on their way to the tails
        stop_tails()
        del producer
        processed = _processed(_scrape(metrics_port))
        surface = _operating_surface(workdir, api_port, api_token)
        return _summary(state, cfg, produced, processed, elapsed, drift_day, surface)
    return 1


class Supervised(dict[str, "subprocess.Popen[bytes]"]):
    """The demo's processes, restarted like a supervisor would when one ends itself on a stall
    (exit code 75, agents.watchdog); any other exit is a failure."""

    def __init__(self, workdir: Path, env: dict[str, str], stack: ExitStack) -> None:
        super().__init__()
        self.workdir, self.env, self.stack = workdir, env, stack
        self.commands: dict[str, str] = {}

    def start(self, name: str, command: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        self.stack.callback(log.close)
        proc = subprocess.Popen(
            [sys.executable, "-m", "driftwatch.cli", command],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.stack.callback(_stop_process, proc)
        self[name], self.commands[name] = proc, command
        return proc

    def failed(self) -> str | None:
        """None while every process runs (after restarting any that stalled), else why not."""
        for name, proc in list(self.items()):
            code = proc.poll()
            if code == STALL_EXIT_CODE:
                _out(f"● {name} found itself stalled and exited (75); restarting it")
                self.start(name, self.commands[name])
            elif code is not None:
                return f"{name} exited with code {code}"
        return None


def _keep_pace(
    procs: Supervised,
    metrics_port: int,
    target: int,
    state: DemoState,
    deadline: float,
    later: tuple[float, Collection[str]] | None = None,
    retrain: tuple[int, str] | None = None,
) -> bool:
    """Wait until the worker has processed ``target`` input events, no model trains and,
    with ``later`` (a bound and the input topics), its later stages are at most that many
    messages behind, and with ``retrain`` (its metrics port and the drift-events topic), the
    retrain worker has read every drift event the demo has: when either fell days behind, a
    retrained model was promoted after nearly every prediction was sent, and served too
    little of the traffic its post-deploy check needs ("served no traffic to check")."""
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        failure = procs.failed()
        if failure is not None:
            _out(f"✗ {failure}")
            return False
        metrics = _scrape(metrics_port)
        if (
            _processed(metrics) >= target
            and not state.training()
            and (later is None or _later_lag(metrics, later[1]) <= later[0])
            and (retrain is None or _read_by_retrain(retrain, state))
        ):
            return True
        time.sleep(0.2)
    metrics = _scrape(metrics_port)
    processed = _processed(metrics)
    lag = 0.0 if later is None else _later_lag(metrics, later[1])
    waiting = [
        f"the worker processed {processed} of {target} input events" if processed < target
        else "",
        "a model trains" if state.training() else "",
        f"its later stages are {lag:.0f} messages behind"
        if later is not None and lag > later[0] else "",
        "the retrain worker has not read every drift event"
        if retrain is not None and not _read_by_retrain(retrain, state) else "",
    ]  # fmt: skip
    _out(f"✗ the workers did not keep up ({'; '.join(w for w in waiting if w)})")
    return False


def _later_stages(metrics: dict[str, float]) -> float:
    """Progress of the join and the performance monitor (any change: they are working)."""
    return sum(
        v
        for k, v in metrics.items()
        if k.startswith(("driftwatch_joins_total{", 'driftwatch_engine_total{what="performance_'))
    )


def _settle(
    procs: Supervised, metrics_port: int, state: DemoState, deadline: float, quiet: float = 3.0
) -> bool:
    """After the inputs are processed: until the later stages have caught up too (no
    unprocessed message on any topic the worker reads, their counters still for ``quiet``
    seconds, no model training). Predictions processed are not the end of the work: the join
    and the performance monitor read topics of their own."""
    until = time.monotonic() + deadline
    last, since = -1.0, time.monotonic()
    while time.monotonic() < until:
        failure = procs.failed()
        if failure is not None:
            _out(f"✗ {failure}")
            return False
        metrics = _scrape(metrics_port)
        progress = _later_stages(metrics)
        lag = sum(v for k, v in metrics.items() if k.startswith("driftwatch_consumer_lag_"))
        if progress != last or lag > 0 or state.training():
            last, since = progress, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return True
        time.sleep(0.5)
    _out("✗ the join and the performance monitor did not catch up")
    return False


def _describe_retrain(state: DemoState, r: dict[str, Any]) -> str | None:
    if r["status"] in ("ignored", "waiting"):
        return None
    figures = ""
    details = r.get("details") or {}
    if "challenger" in details:
        figures = (
            f" (challenger PR-AUC {details['challenger'].get('pr_auc', 0):.3f}, champion "
            f"{details['champion'].get('pr_auc', 0):.3f} on the same holdout)"
        )
    status = r["status"] + (" (inconclusive)" if details.get("inconclusive") else "")
    return (
        f"  day {state.day(r['event_time']):6.2f} RETRAIN {status:<19} "
        f"{r['tenant']}/{r['model']}: {r['reason']}{figures}"
    )


def _describe_model(state: DemoState, m: dict[str, Any]) -> str:
    return (
        f"  day {state.day(m['event_time']):6.2f} MODEL   {m['action']:<19} "
        f"{m['tenant']}/{m['model']}: {m['previous_version']} -> {m['version']} ({m['reason']})"
    )


def _summary(
    state: DemoState,
    cfg: SimulationConfig,
    produced: int,
    processed: int,
    elapsed: float,
    drift_day: int,
    surface: list[str] | None = None,
) -> int:
    with state.lock:
        drifts = list(state.drifts)
        letters = list(state.dead_letters)
        retrain = list(state.retrain)
        models = list(state.models)
    incidents: dict[str, dict[str, Any]] = {}
    for d in drifts:
        inc = incidents.setdefault(d["drift_id"], {"first": d, "last": d, "n": 0})
        inc["n"] += 1
        inc["last"] = d
    _out()
    _out("═" * 100)
    _out(
        f"processed {processed}/{produced} events (predictions, outcomes) in {elapsed:.1f}s "
        f"({processed / max(elapsed, 1e-9):.0f} events/s end to end)"
    )
    _out(
        f"dead letters: {len(letters)} "
        f"({', '.join(sorted({str(x['reason']) for x in letters})) or 'none'})"
    )
    _out(f"drift events: {len(drifts)} in {len(incidents)} incident(s)")
    _, categorical = feature_names(cfg, "conflict")
    expected: dict[tuple[str, str, str], int] = {("acme", "fraud", "amount"): drift_day}
    if categorical:
        expected[("globex", "conflict", categorical[0])] = drift_day + 5
    # concept drift has no feature to find: it shows as performance drift
    expected[("acme", "conflict", "performance")] = drift_day
    expected[("globex", "fraud", "performance")] = drift_day
    found: set[tuple[str, str, str]] = set()
    for inc in sorted(incidents.values(), key=lambda i: i["first"]["detected_at"]):
        first, last = inc["first"], inc["last"]
        what = first["feature"] or (
            "performance" if not first.get("estimated") else "performance (estimate)"
        )
        key = (first["tenant"], first["model"], what)
        injected = expected.get(key)
        if injected is not None:
            found.add(key)
        found_day = state.day(first["detected_at"])
        when = (
            f"{(found_day - injected) * 24:5.1f} h after the injected onset"
            if injected is not None
            else f"on day {found_day:.2f}"
        )
        _out(
            f"  {first['tenant'] + '/' + first['model']:<16} {what:<24} {first['test']:<24} found "
            f"{when}, {inc['n']} detections, {last['severity']}, "
            f"{'confirmed' if last['confirmed'] else 'unconfirmed'}"
        )
    _out("retraining (performance drift only in this demo; auto-retrain on):")
    outcome: dict[tuple[str, str], list[str]] = {}
    for r in retrain:
        if r["status"] not in ("ignored", "waiting"):
            inconclusive = (r.get("details") or {}).get("inconclusive")
            step = r["status"] + (" (inconclusive)" if inconclusive else "")
            outcome.setdefault((r["tenant"], r["model"]), []).append(step)
    for (tenant, model), steps in sorted(outcome.items()):
        _out(f"  {tenant}/{model}: {' -> '.join(steps)}")
    for m in models:
        _out(f"  model-events: {m['tenant']}/{m['model']} {m['action']} {m['version']}")
    if surface:
        _out("where to look (API, alerts, one report per model):")
        for line in surface:
            _out(line)
    missing = set(expected) - found
    ok = True
    if processed < produced:
        _out(f"✗ the worker did not finish in time ({processed}/{produced})")
        ok = False
    if missing:
        _out(f"✗ injected drift not found: {sorted(missing)}")
        ok = False
    if not letters:
        _out("✗ the bad messages did not reach the dead-letter topic")
        ok = False
    if "promoted" not in outcome.get(("acme", "conflict"), []):
        _out("✗ acme/conflict (a learnable concept drift) was not retrained and promoted")
        ok = False
    elif not any(
        (r["tenant"], r["model"]) == ("acme", "conflict")
        and r["status"] == "validated"
        and not (r.get("details") or {}).get("inconclusive")
        for r in retrain
    ):
        _out("✗ acme/conflict's promoted model did not pass a post-deploy check on its own traffic")
        ok = False
    if "challenger_rejected" not in outcome.get(("globex", "fraud"), []):
        _out("✗ globex/fraud (labels turned to noise) was not rejected at the gate")
        ok = False
    if any(m["tenant"] == "globex" and m["model"] == "fraud" for m in models):
        _out("✗ a challenger trained on noise reached production")
        ok = False
    if ok:
        _out(
            "✓ every injected drift was found; the learnable one was retrained, validated and "
            "promoted, the unlearnable one's challenger rejected; bad input was dead-lettered"
        )
    return 0 if ok else 1


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
