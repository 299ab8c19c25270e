"""End-to-end consumption throughput: raw aiokafka vs a no-op Faust agent vs the driftwatch worker.

Run as ``python -m bench.throughput [--events N] [--features F] [--partitions P] [--repeat K]
[--batch B] [--workers W] [--live [--live-rate R]] [--outcomes]``.

``--outcomes`` gives the driftwatch worker one outcome per prediction too (an hour after it,
its label drawn from the score), so the join, the prediction log and the performance monitor
run as they do in production; the worker's rate then counts predictions and outcomes, messages
a second like the others' (the issue's target reads "join on"; without outcomes the join only
stores predictions). The worker's progress is its inputs less those the join has not recorded
yet (``driftwatch_joins_total``: every prediction and outcome the join has recorded), so
this is the rate of the whole pipeline, not of its first stage: the later stages keep pace
with the drift agent (``DRIFTWATCH_DOWNSTREAM_BACKLOG``), but before the thirtieth round's
fix of that gate a join could be 180,000 predictions behind when the drift agent reached N.

``--batch B`` sends the predictions in envelopes of B (``driftwatch.prediction-batch/v1``, one
tenant/model each) to every contender; rates stay in predictions per second (the raw consumer
counts an envelope's events, the no-op agent B per message). ``--workers W`` runs W driftwatch
workers with the same app id (scale-out; progress and CPU summed over them).

Without ``--live`` the data is sparse (~50 predictions a stream and hour), so every prediction
pays a fiftieth of an hourly look. ``--live`` measures a live, dense stream instead: 14 days
of 50 predictions a stream and day (enough for every feature's baseline), then all N
predictions in one day, with the same drift from its noon; the driftwatch worker is timed
from the first reading past the history. At N = 150,000 a stream gets ~1,560 predictions an
hour, and a look's cost is spread over them.

A day squeezed into a few minutes of processing is a worker catching up on a backlog: every
hourly look and window close comes ~1,000 (150,000 single events) to ~15,000 (12,000 wide ones)
times as often per prediction as it would for a live model of 2,000 predictions a second.
``--live-rate R`` gives the live part the event times of a model serving R predictions a
second (the same values, squeezed into N / R seconds): what a worker keeping up with R a
second pays per prediction. At R = 2,000 the timed part is seconds of event time, so it holds
no look or close; their cost at that rate is a look's cost spread over an hour of traffic.

The same N simulated prediction events (``driftwatch.simulate``: 2 tenants x 2 models, 30 days,
so daily windows close and the drift tests run) are produced up front into one topic per
contender, so every contender measures consumption only. (Each topic gets 1000 more events
than are timed, so the N-th event is never in a final partial batch that ``take_events``
holds back for its ``within`` timeout.) Then, one after the other on the same broker (the
embedded Tansu dev broker unless ``KAFKA_BOOTSTRAP_SERVERS`` is set):

* **raw aiokafka**: a group-less consumer assigned to every partition from the beginning,
  ``getmany(max_records=1000)``, ``json.loads`` of every value (the least any consumer must
  do);
* **no-op Faust agent** (``bench.noop_agent``, a subprocess): ``take_events(1000, 0.5)``
  batches, counted and dropped;
* **driftwatch worker** (``python -m driftwatch.cli worker``, a subprocess): the real thing,
  with its RocksDB table, validation, engine, changelog and drift-event output, and the
  integration tests' short detection history (``worker_harness.FAST_DETECTION``).

Every contender is timed from its first processed event to the first observation at or past
the N-th (consumer start-up and group joins are excluded): the raw consumer with
``perf_counter`` around its own loop, the two workers by polling their Prometheus event
counters (every 0.1 s near the start and the N-th event, up to 2 s apart between, so that
scraping costs a worker ~1 % rather than ~8 %). The rate is (events after the first
observation) / (time after the first observation). Results are printed as a table and
written to ``bench/results/throughput.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from itertools import islice
from pathlib import Path
from typing import Any

from agents.metrics import AGENT_PHASES
from driftwatch.devbroker import DevBroker, free_port
from driftwatch.simulate import SimulationConfig, generate, parse_drift
from runtime.settings import Settings
from runtime.topics import ensure_topics
from schemas.events import OutcomeEvent, PredictionEvent
from tests.integration.worker_harness import FAST_DETECTION as _HARNESS_DETECTION

RESULTS = Path(__file__).resolve().parent / "results" / "throughput.json"

TENANTS = ("acme", "globex")
MODELS = ("fraud", "conflict")
DAYS = 30
# --live: a dense day after a sparse history that gives every feature its baseline.
HISTORY_DAYS = 14
HISTORY_PER_STREAM_DAY = 50
START = 1_735_689_600.0  # 2025-01-01T00:00:00Z: fixed, so the data is byte-identical per run
POLL_SECONDS = 0.1
MAX_POLL_SECONDS = 2.0
BATCH = 1000  # take_events batch size of both Faust contenders, and the raw consumer's batch
# Every topic gets N + PAD events and each contender is timed to the N-th, so the N-th event
# never sits in a final partial batch that take_events holds back for `within` seconds.
PAD = BATCH

# Detection history short enough for 30 days of data to run real tests: the integration
# tests' settings (baseline = days 14..7 before the window), so the bench follows them.
FAST_DETECTION: dict[str, str] = dict(_HARNESS_DETECTION)

RAW = "raw aiokafka"
NOOP = "no-op Faust agent"
DRIFTWATCH = "driftwatch worker"


# --------------------------------------------------------------------------- data


def split_features(features: int) -> tuple[int, int]:
    """(numeric, categorical): one in five features is categorical (20 -> 16 + 4)."""
    if features < 1:
        raise ValueError("--features must be >= 1")
    categorical = features // 5
    return features - categorical, categorical


def simulation_config(events: int, features: int) -> SimulationConfig:
    """4 streams x 30 days with enough events per day to total ``events``; one mild drift."""
    numeric, categorical = split_features(features)
    streams = len(TENANTS) * len(MODELS)
    return SimulationConfig(
        seed=7,
        tenants=TENANTS,
        models=MODELS,
        days=DAYS,
        events_per_day=max(1, math.ceil(events / (streams * DAYS))),
        numeric_features=numeric,
        categorical_features=categorical,
        start=START,
        drifts=(parse_drift("mean_shift:day=20:magnitude=1:tenants=acme"),),
    )


def live_simulation_configs(
    events: int, features: int
) -> tuple[SimulationConfig, SimulationConfig]:
    """(history, live day) for ``--live``: :data:`HISTORY_DAYS` days at
    :data:`HISTORY_PER_STREAM_DAY` predictions a stream and day (enough for every feature's
    baseline), then one day holding ``events``, with the same mild drift from its noon.

    >>> history, live = live_simulation_configs(100_000, 20)
    >>> history.days, history.events_per_day, live.days, live.events_per_day
    (14, 50, 1, 25000)
    >>> live.start - history.start == history.days * 86400
    True
    """
    numeric, categorical = split_features(features)
    streams = len(TENANTS) * len(MODELS)
    history = SimulationConfig(
        seed=7,
        tenants=TENANTS,
        models=MODELS,
        days=HISTORY_DAYS,
        events_per_day=HISTORY_PER_STREAM_DAY,
        numeric_features=numeric,
        categorical_features=categorical,
        start=START,
    )
    live = replace(
        history,
        days=1,
        events_per_day=max(1, math.ceil(events / streams)),
        start=START + HISTORY_DAYS * 86_400,
        drifts=(parse_drift("mean_shift:day=0.5:magnitude=1:tenants=acme"),),
    )
    return history, live


def bench_events(
    events: int, features: int, live: bool = False, live_rate: float | None = None
) -> tuple[list[PredictionEvent], int]:
    """The first ``events`` timed predictions and how many history predictions come first
    (0 unless ``live``). ``live_rate``: the live part's event times squeezed into
    ``events / live_rate`` seconds from the day's start (see :func:`at_rate`)."""
    if live_rate is not None and not live:
        raise ValueError("live_rate needs live")
    if not live:
        chosen = list(islice(generate(simulation_config(events, features)), events))
        history: list[PredictionEvent] = []
    else:
        history_cfg, live_cfg = live_simulation_configs(events, features)
        history = list(generate(history_cfg))
        # The live day's ids restart at day 000: suffixed, so none repeats a history id.
        chosen = [
            replace(e, event_id=f"{e.event_id}-live") for e in islice(generate(live_cfg), events)
        ]
    if len(chosen) < events:
        raise RuntimeError(f"the simulation produced only {len(chosen)} of {events} events")
    if live_rate is not None:
        chosen = at_rate(chosen, START + HISTORY_DAYS * 86_400, live_rate)
    return history + chosen, len(history)


def at_rate(events: list[PredictionEvent], start: float, rate: float) -> list[PredictionEvent]:
    """``events`` (one day's, from ``start``) with their event times squeezed, in order, into
    ``len(events) / rate`` seconds from ``start``: the event-time density of a model serving
    ``rate`` predictions a second (all streams together), so a worker pays for hourly looks
    and window closes as often per prediction as it would at that rate in production. The
    values are the same; a drift keeps its place in the sequence.

    >>> from schemas.events import PredictionEvent as P
    >>> day = [P(str(i), "t", "m", "1", 1000.0 + 86_400 * i / 4, {}, 0.5) for i in range(4)]
    >>> [e.timestamp - 1000.0 for e in at_rate(day, 1000.0, 2.0)]
    [0.0, 0.5, 1.0, 1.5]
    """
    if rate <= 0:
        raise ValueError("rate must be > 0")
    squeeze = min(1.0, len(events) / rate / 86_400)
    return [replace(e, timestamp=start + (e.timestamp - start) * squeeze) for e in events]


def bench_messages(
    events: int, features: int, batch: int = 1, live: bool = False, live_rate: float | None = None
) -> list[tuple[bytes, bytes]]:
    """The (key, JSON value) messages of :func:`bench_events`: one each, or envelopes of up
    to ``batch`` per tenant/model."""
    from driftwatch.kafka_io import prediction_messages

    return list(prediction_messages(bench_events(events, features, live, live_rate)[0], batch))


def outcome_messages_for(
    events: list[PredictionEvent], seed: int = 11
) -> list[tuple[bytes, bytes]]:
    """One outcome per prediction, an hour after it, its label drawn from the score (a
    calibrated model), in the predictions' order.

    >>> e = PredictionEvent("e1", "acme", "fraud", "v1", 1000.0, {"x": 1.0}, 0.9)
    >>> key, value = outcome_messages_for([e])[0]
    >>> key, OutcomeEvent.from_json(value).timestamp
    (b'e1', 4600.0)
    """
    rng = random.Random(seed)
    return [
        (
            e.event_id.encode(),
            OutcomeEvent(
                e.event_id, e.tenant, e.model, e.timestamp + 3600.0, int(rng.random() < e.score)
            ).to_json(),
        )
        for e in events
    ]


def produce_all(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    from driftwatch.kafka_io import make_producer, produce_messages

    produce_messages(make_producer(bootstrap), topic, messages)


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    """Events processed between the first observation and the first one at or past the N-th
    event, and the time taken."""

    events: int
    seconds: float
    cpu_seconds: float
    """CPU time of the consuming process over the same span (about ``seconds`` if CPU-bound)."""
    peak_rss_mb: float = math.nan
    """Peak resident memory of the worker process(es) at the end (Linux ``VmHWM``; summed)."""
    stage_lead: int = 0
    """The largest lead of a driftwatch worker's input counter over its join's, seen at a poll:
    how far the join was behind the drift agent, in frames (predictions, and outcomes with
    ``--outcomes``)."""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else math.inf


@dataclass
class Result:
    contender: str
    runs: list[Timing] = field(default_factory=list)

    @property
    def median(self) -> Timing:
        """The run with the median rate (the lower middle one for an even count)."""
        ordered = sorted(self.runs, key=lambda t: t.rate)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def median_rate(self) -> float:
        return statistics.median(t.rate for t in self.runs)


# --------------------------------------------------------------------------- raw aiokafka


async def _consume_raw(bootstrap: str, topic: str, partitions: int, n: int) -> Timing:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        loads = json.loads
        seen = 0
        first_at: float | None = None
        first_cpu = 0.0
        first_count = 0
        while seen < n:
            batches = await consumer.getmany(timeout_ms=500, max_records=BATCH)
            for records in batches.values():
                for record in records:
                    value = loads(record.value)
                    # an envelope carries many predictions: count them, as the worker does
                    seen += len(value["events"]) if "events" in value else 1
            if first_at is None and seen:
                first_at, first_count = time.perf_counter(), seen
                first_cpu = time.process_time()
        end, end_cpu = time.perf_counter(), time.process_time()
    finally:
        await consumer.stop()
    assert first_at is not None
    return Timing(seen - first_count, end - first_at, end_cpu - first_cpu)


def run_raw(bootstrap: str, topic: str, partitions: int, n: int, timeout: float) -> Timing:
    try:
        return asyncio.run(asyncio.wait_for(_consume_raw(bootstrap, topic, partitions, n), timeout))
    except TimeoutError:
        raise RuntimeError(f"raw consumer did not read {n} events in {timeout:.0f}s") from None


# --------------------------------------------------------------------------- subprocess workers

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(port: int) -> list[tuple[str, dict[str, str], float]] | None:
    """Samples of a Prometheus endpoint, or None if it does not answer (yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    out: list[tuple[str, dict[str, str], float]] = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None or line.startswith("#"):
            continue
        out.append((m[1], dict(_LABEL.findall(m[2] or "")), float(m[3])))
    return out


def metric_sum(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(
        v
        for n, lab, v in samples
        if n == name and all(lab.get(k) == want for k, want in labels.items())
    )


@dataclass
class WorkerProc:
    """A worker subprocess whose progress is one Prometheus counter (summed over labels), less
    what a second one has not caught up with (:func:`progress`)."""

    name: str
    module: list[str]
    env: dict[str, str]
    metrics_port: int
    counter: str
    log_path: Path
    also: str | None = None
    """A second counter that must catch up with the first's accepted inputs (the join's
    frames: a driftwatch worker's progress is its whole pipeline's, not its first stage's)."""
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProc:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *self.module],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def samples(self) -> list[tuple[str, dict[str, str], float]] | None:
        return scrape(self.metrics_port)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the worker process so far (Linux /proc)."""
        assert self.proc is not None
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return math.nan
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        """Peak resident set size so far, MiB (Linux /proc)."""
        assert self.proc is not None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return math.nan

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}; log:\n{self.log_tail()}"
            )

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def time_events(self, n: int, timeout: float, skip: int = 0) -> tuple[Timing, list[Any]]:
        """Poll the counter: the events and time from the first reading over ``skip`` (a
        history not timed) to the first reading >= n. Polls come every ``POLL_SECONDS``
        near either end and up to ``MAX_POLL_SECONDS`` apart between (when the rate so far
        says ``n`` is far): a scrape of the driftwatch worker's whole exposition costs it
        ~8 ms, and ten a second took ~8 % of its CPU, which a Prometheus scraping every 15 s
        never does. Both ends are readings, so the interval between does not change the
        rate."""
        deadline = time.monotonic() + timeout
        first: tuple[float, int, float] | None = None
        count = lead = 0
        while True:
            self.check_alive()
            before = time.perf_counter()
            samples = self.samples()
            after = time.perf_counter()
            at = (before + after) / 2
            count, behind = progress(samples, self.counter, self.also)
            lead = max(lead, behind)
            if count > skip and first is None:
                first = (at, count, self.cpu_seconds())
            if count >= n:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} processed {count}/{n} events in {timeout:.0f}s; log:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(max(0.0, poll_delay(first, at, count, n) - (time.perf_counter() - before)))
        assert first is not None and samples is not None
        if first[1] >= n:
            raise RuntimeError(
                f"{self.name} processed all {n} events between two polls; use more --events"
            )
        timing = Timing(count - first[1], at - first[0], self.cpu_seconds() - first[2])
        peak = self.peak_rss_mb()
        return Timing(**{**timing.__dict__, "peak_rss_mb": peak, "stage_lead": lead}), samples


def progress(
    samples: list[tuple[str, dict[str, str], float]] | None, counter: str, also: str | None
) -> tuple[int, int]:
    """(progress, how far ``also`` is behind): ``counter`` summed over its labels; with
    ``also``, less the inputs taken (``result="ok"``) that ``also`` has not counted yet (its
    ``replayed`` left out: a redelivery is no progress). Dead-lettered inputs, which never
    reach the join, count as done.

    >>> s = [("a_total", {"result": "ok"}, 10.0), ("a_total", {"result": "dead_letter"}, 2.0),
    ...      ("j_total", {"result": "waiting"}, 7.0), ("j_total", {"result": "replayed"}, 3.0)]
    >>> progress(s, "a_total", None), progress(s, "a_total", "j_total"), progress(None, "a", None)
    ((12, 0), (9, 3), (0, 0))
    """
    if samples is None:
        return 0, 0
    count = int(metric_sum(samples, counter))
    if also is None:
        return count, 0
    taken = int(metric_sum(samples, counter, result="ok"))
    recorded = int(metric_sum(samples, also) - metric_sum(samples, also, result="replayed"))
    behind = max(0, taken - recorded)
    return count - behind, behind


def poll_delay(first: tuple[float, int, float] | None, at: float, count: int, n: int) -> float:
    """Seconds to the next poll: ``POLL_SECONDS`` until the rate is known, then a quarter of
    the time the rate so far says the rest takes, capped, and ``POLL_SECONDS`` again over the
    last ``MAX_POLL_SECONDS`` of work and two ``PAD``: the n-th event is seen within a poll of
    ``POLL_SECONDS`` of it (past the last event a contender idles, which a reading must not
    include) unless the rate jumps to four times its average.

    >>> poll_delay(None, 5.0, 0, 1000), poll_delay((0.0, 100, 0.0), 10.0, 1100, 100_000)
    (0.1, 2.0)
    >>> poll_delay((0.0, 100, 0.0), 10.0, 99_900, 100_000)
    0.1
    """
    if first is None or count <= first[1] or at <= first[0]:
        return POLL_SECONDS
    rate = (count - first[1]) / (at - first[0])
    remaining = n - count
    if remaining <= rate * MAX_POLL_SECONDS + 2 * PAD:
        return POLL_SECONDS  # the last stretch: a rate twice the average must not overrun it
    return min(MAX_POLL_SECONDS, max(POLL_SECONDS, 0.25 * remaining / rate))


def noop_worker(
    bootstrap: str, topic: str, app_id: str, partitions: int, workdir: Path, per_message: int = 1
) -> WorkerProc:
    port = free_port()
    env = {
        **os.environ,
        "BENCH_PER_MESSAGE": str(per_message),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "BENCH_TOPIC": topic,
        "BENCH_APP_ID": app_id,
        "BENCH_DATA_DIR": str(workdir / app_id),
        "BENCH_PARTITIONS": str(partitions),
        "BENCH_METRICS_PORT": str(port),
        "BENCH_BATCH_SIZE": str(BATCH),
        "BENCH_BATCH_WITHIN": "0.5",
        "BENCH_SESSION_TIMEOUT": "6",
        "BENCH_HEARTBEAT_INTERVAL": "1",
    }
    return WorkerProc(
        NOOP,
        ["bench.noop_agent"],
        env,
        port,
        "bench_noop_events_total",
        workdir / f"{app_id}.log",
    )


def driftwatch_worker(
    bootstrap: str, prefix: str, app_id: str, partitions: int, workdir: Path, features: int = 20
) -> WorkerProc:
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DRIFTWATCH_APP_ID": app_id,
        "DRIFTWATCH_TOPIC_PREFIX": prefix,
        "DRIFTWATCH_PARTITIONS": str(partitions),
        "DRIFTWATCH_DATA_DIR": str(workdir / app_id),
        "DRIFTWATCH_METRICS_PORT": str(port),
        "DRIFTWATCH_API_PORT": str(free_port()),
        "DRIFTWATCH_API_BIND": "127.0.0.1",
        "DRIFTWATCH_API_AUTH": "off",
        "DRIFTWATCH_SESSION_TIMEOUT": "6",
        "DRIFTWATCH_HEARTBEAT_INTERVAL": "1",
        "DRIFTWATCH_MAX_FUTURE_SECONDS": str(10_000 * 86400),
        "DRIFTWATCH_BATCH_SIZE": str(BATCH),
        "DRIFTWATCH_BATCH_WITHIN": "0.5",
        # A wide model (--features 1000) needs the per-stream feature limit raised.
        "DRIFTWATCH_MAX_FEATURES_PER_STREAM": str(max(500, features)),
        **FAST_DETECTION,
    }
    joins = Settings.from_env(env).join_outcomes  # the join gets every prediction then
    return WorkerProc(
        DRIFTWATCH,
        ["driftwatch.cli", "worker"],
        env,
        port,
        "driftwatch_events_total",
        workdir / f"{app_id}.log",
        also="driftwatch_joins_total" if joins else None,
    )


@dataclass
class WorkerGroup(WorkerProc):
    """Several workers with one app id (scale-out): progress and CPU summed over them."""

    members: list[WorkerProc] = field(default_factory=list)

    def start(self) -> WorkerGroup:
        for m in self.members:
            m.start()
        return self

    def samples(self) -> list[tuple[str, dict[str, str], float]] | None:
        out: list[tuple[str, dict[str, str], float]] = []
        for m in self.members:
            out += m.samples() or []
        return out or None

    def cpu_seconds(self) -> float:
        return sum(m.cpu_seconds() for m in self.members)

    def peak_rss_mb(self) -> float:
        return sum(m.peak_rss_mb() for m in self.members)

    def check_alive(self) -> None:
        for m in self.members:
            m.check_alive()

    def stop(self, timeout: float = 30.0) -> None:
        for m in self.members:
            m.stop(timeout)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(m.log_tail(lines) for m in self.members)


def driftwatch_workers(
    bootstrap: str,
    prefix: str,
    app_id: str,
    partitions: int,
    workdir: Path,
    workers: int,
    features: int = 20,
) -> WorkerProc:
    if workers == 1:
        return driftwatch_worker(bootstrap, prefix, app_id, partitions, workdir, features)
    members = [
        driftwatch_worker(bootstrap, prefix, app_id, partitions, workdir / f"w{k}", features)
        for k in range(workers)
    ]
    for m in members:
        m.log_path.parent.mkdir(parents=True, exist_ok=True)
    first = members[0]
    return WorkerGroup(
        f"{DRIFTWATCH} x{workers}", first.module, first.env, first.metrics_port, first.counter,
        first.log_path, also=first.also, members=members,
    )  # fmt: skip


def run_worker(
    worker: WorkerProc, n: int, timeout: float, skip: int = 0
) -> tuple[Timing, list[Any]]:
    worker.start()
    try:
        return worker.time_events(n, timeout, skip)
    finally:
        worker.stop()


# --------------------------------------------------------------------------- report


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("faust-streaming", "aiokafka", "rocksdict"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "?"
    return {
        "nproc": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),  # other load on the box skews the figures
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        **versions,
    }


def _ratio(a: float, b: float | None) -> float | None:
    return None if b is None or b <= 0 else a / b


def rows(results: list[Result], features: int) -> list[dict[str, Any]]:
    by_name = {r.contender: r.median_rate for r in results}
    raw, noop = by_name.get(RAW), by_name.get(NOOP)
    out = []
    for r in results:
        med = r.median
        rate = r.median_rate
        vs_raw, vs_noop = _ratio(rate, raw), _ratio(rate, noop)
        out.append(
            {
                "contender": r.contender,
                "events": med.events,
                "seconds": round(med.seconds, 3),
                "events_per_s": round(rate),
                # an outcome carries no features: half of a +outcomes worker's events do
                "feature_values_per_s": round(
                    rate * features / (2 if r.contender.endswith("+outcomes") else 1)
                ),
                "cpu_share": round(med.cpu_seconds / med.seconds, 2) if med.seconds else None,
                "vs_raw_aiokafka": None if vs_raw is None else round(vs_raw, 4),
                "vs_noop_faust": None if vs_noop is None else round(vs_noop, 4),
                "runs_events_per_s": [round(t.rate) for t in r.runs],
                "peak_rss_mb": None if math.isnan(med.peak_rss_mb) else round(med.peak_rss_mb),
                "runs_stage_lead": [t.stage_lead for t in r.runs],
            }
        )
    return out


def format_table(table: list[dict[str, Any]]) -> str:
    def ratio(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}x"

    def cpu(x: float | None) -> str:
        return "-" if x is None or math.isnan(x) else f"{100 * x:.0f}%"

    header = (
        f"{'contender':<20} {'events':>8} {'seconds':>8} {'events/s':>10} "
        f"{'feature-values/s':>17} {'vs raw':>8} {'vs no-op':>9} {'cpu':>5} {'peak RSS':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in table:  # cpu: the consumer process's CPU time / wall time while timed
        lines.append(
            f"{r['contender']:<20} {r['events']:>8,} {r['seconds']:>8.2f} "
            f"{r['events_per_s']:>10,} {r['feature_values_per_s']:>17,} "
            f"{ratio(r['vs_raw_aiokafka']):>8} {ratio(r['vs_noop_faust']):>9} "
            f"{cpu(r['cpu_share']):>5} "
            f"{'-' if r['peak_rss_mb'] is None else str(r['peak_rss_mb']) + ' MiB':>9}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _timed(what: str, fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    _log(f"{what}: {seconds:.1f}s")
    return out, seconds


@contextlib.contextmanager
def bench_broker(workdir: Path) -> Iterator[tuple[str, str]]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external, "external"
        return
    with DevBroker(log_path=workdir / "broker.log") as broker:
        yield broker.bootstrap, "tansu (embedded dev broker)"


def run(args: argparse.Namespace) -> dict[str, Any]:
    n, features, partitions, repeat = args.events, args.features, args.partitions, args.repeat
    numeric, categorical = split_features(features)
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    raw_topic, noop_topic = f"{run_id}-raw-predictions", f"{run_id}-noop-predictions"
    # Each run of the driftwatch worker gets topics of its own: its inputs and also the
    # internal topics it writes and reads (join-input, performance-input). Shared between
    # runs, a run's join read every earlier run's join-input too, and the worker's rate fell
    # run after run (7,619, 5,510, 3,953/s with --repeat 3) while the others' did not.
    dw_prefixes = [f"{run_id}-dw{k}-" for k in range(repeat)]
    dw_prefix = dw_prefixes[0]
    dw_topic = f"{dw_prefix}predictions"

    batch, workers, live = args.batch, args.workers, args.live
    from driftwatch.kafka_io import prediction_messages

    (events, history), gen_s = _timed(
        f"generated {n + PAD:,} events"
        + (
            f" after a {HISTORY_DAYS}-day history ({HISTORY_PER_STREAM_DAY} a stream a day)"
            if live
            else ""
        ),
        lambda: bench_events(n + PAD, features, live, args.live_rate),
    )
    messages = list(prediction_messages(events, batch))
    outcomes = outcome_messages_for(events) if args.outcomes else []
    del events
    # --outcomes: the worker reads an outcome per prediction as well, and is timed over both.
    per_event = 2 if outcomes else 1
    # --live: every contender reads the history too; the driftwatch worker is timed from
    # the first reading past it (the others' rates do not depend on the data's density).
    # 500 predictions/s of 20 features at the least (a wide model's events take longer).
    timeout = 120.0 + (history + n) * max(features, 20) / 10_000
    avg_bytes = sum(len(v) for _, v in messages) / len(messages)
    dw_name = DRIFTWATCH if workers == 1 else f"{DRIFTWATCH} x{workers}"
    dw_name += " +outcomes" if outcomes else ""
    # With envelopes a no-op agent has a few messages to count, not predictions: the target
    # there is the raw consumer (which decodes every envelope), so the no-op is not run.
    with_noop = batch == 1
    results = [Result(RAW), Result(NOOP), Result(dw_name)]
    engine: dict[str, float] = {}
    phases: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="driftwatch-bench-") as tmp:
        workdir = Path(tmp)
        with bench_broker(workdir) as (bootstrap, broker_kind):
            _log(f"broker {bootstrap} ({broker_kind})")
            topics = (raw_topic, noop_topic, dw_topic) if with_noop else (raw_topic, dw_topic)
            ensure_topics(bootstrap, {t: partitions for t in topics})
            produce_s = 0.0
            for topic in topics:
                started = time.perf_counter()
                produce_all(bootstrap, topic, messages)
                took = time.perf_counter() - started
                produce_s += took
                _log(f"produced {len(messages):,} messages to {topic}: {took:.1f}s")

            def produce_inputs(prefix: str) -> None:
                """The worker's inputs under ``prefix``: predictions (but the first run's,
                produced with the others' above) and outcomes."""
                if prefix != dw_prefix:
                    ensure_topics(bootstrap, {f"{prefix}predictions": partitions})
                    produce_all(bootstrap, f"{prefix}predictions", messages)
                    _log(f"produced {len(messages):,} messages to {prefix}predictions")
                if outcomes:
                    ensure_topics(bootstrap, {f"{prefix}outcomes": partitions})
                    produce_all(bootstrap, f"{prefix}outcomes", outcomes)
                    _log(f"produced {len(outcomes):,} outcomes to {prefix}outcomes")

            produce_inputs(dw_prefix)
            for k in range(repeat):
                tag = f"run {k + 1}/{repeat}"
                if k:  # untimed, as the first run's, and before every contender as that was
                    produce_inputs(dw_prefixes[k])
                t = run_raw(bootstrap, raw_topic, partitions, history + n, timeout)
                results[0].runs.append(t)
                _log(f"{tag} {RAW}: {t.events:,} events in {t.seconds:.2f}s = {t.rate:,.0f}/s")

                if with_noop:
                    t, _ = run_worker(
                        noop_worker(
                            bootstrap, noop_topic, f"{run_id}-noop-{k}", partitions, workdir, batch
                        ),
                        history + n,
                        timeout,
                    )
                    results[1].runs.append(t)
                    _log(f"{tag} {NOOP}: {t.events:,} events in {t.seconds:.2f}s = {t.rate:,.0f}/s")

                t, samples = run_worker(
                    driftwatch_workers(
                        bootstrap,
                        dw_prefixes[k],
                        f"{run_id}-dw-{k}",
                        partitions,
                        workdir,
                        workers,
                        features,
                    ),
                    per_event * (history + n),
                    per_event * timeout,
                    skip=per_event * history,
                )
                results[2].runs.append(t)
                _log(f"{tag} {dw_name}: {t.events:,} events in {t.seconds:.2f}s = {t.rate:,.0f}/s")
                engine = {
                    what: metric_sum(samples, "driftwatch_engine_total", what=what)
                    for what in (
                        "windows_closed",
                        "interim_looks",
                        "tests",
                        "drift_events",
                        "incidents_opened",
                    )
                }
                engine["dead_letters"] = metric_sum(
                    samples, "driftwatch_events_total", result="dead_letter"
                )
                engine["joined"] = metric_sum(samples, "driftwatch_joins_total", result="joined")
                # every prediction and outcome the join recorded (the timed progress's lesser)
                engine["join_frames"] = metric_sum(samples, "driftwatch_joins_total")
                engine["performance_labels"] = metric_sum(
                    samples, "driftwatch_engine_total", what="performance_labels"
                )
                for name in ("drift-state", "join-state"):  # over the whole run, history too
                    engine[f"state_bytes_{name}"] = metric_sum(
                        samples, "driftwatch_state_bytes_written_total", table=name
                    )
                phases = {
                    f"{agent} {phase}": round(
                        metric_sum(
                            samples, "driftwatch_agent_seconds_total", agent=agent, phase=phase
                        ),
                        2,
                    )
                    for agent, agent_phases in AGENT_PHASES.items()
                    for phase in agent_phases
                }
                engine["backpressure_wait_seconds"] = sum(
                    metric_sum(samples, "driftwatch_backpressure_wait_seconds_total", topic=t)
                    for t in (f"{dw_prefixes[k]}predictions", f"{dw_prefixes[k]}outcomes")
                )

    table = rows([r for r in results if r.runs], features)
    return {
        "benchmark": "bench.throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {
            "events": n,
            "produced_per_topic": n + PAD + history,
            "features": features,
            "numeric_features": numeric,
            "categorical_features": categorical,
            "partitions": partitions,
            "repeat": repeat,
            "streams": len(TENANTS) * len(MODELS),
            "days": HISTORY_DAYS + 1 if live else DAYS,
            "live": live,
            "live_rate": args.live_rate,
            "outcomes": per_event == 2,
            "history_events": history,
            "avg_message_bytes": round(avg_bytes),
            "predictions_per_message": batch,
            "driftwatch_workers": workers,
            "broker": broker_kind,
            "worker_malloc_arenas": Settings.from_env().malloc_arenas,
            "batch": "take_events(1000, within=0.5)",
            "timing": "first processed event -> N-th; workers polled every 0.1-2 s",
            "worker_gc_threshold": Settings.from_env().gc_threshold,
        },
        "generate_seconds": round(gen_s, 2),
        "produce_seconds_per_topic": round(produce_s / len(topics), 2),
        "results": table,
        "driftwatch_engine_last_run": {k: int(v) for k, v in engine.items()},
        # Where the last run's worker spent its time (driftwatch_agent_seconds_total, over the
        # whole run, its history part too; one worker's, or the sum of several).
        "driftwatch_agent_seconds_last_run": phases,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.throughput", description=__doc__.split("\n")[0]
    )
    p.add_argument("--events", type=int, default=100_000, help="events per contender (100000)")
    p.add_argument(
        "--features", type=int, default=20, help="features per event, 1/5 categorical (20)"
    )
    p.add_argument("--partitions", type=int, default=2, help="partitions per topic (2)")
    p.add_argument("--repeat", type=int, default=1, help="runs per contender; median taken (1)")
    p.add_argument(
        "--batch", type=int, default=1, help="predictions per message: >1 sends envelopes (1)"
    )
    p.add_argument("--workers", type=int, default=1, help="driftwatch workers with one app id (1)")
    p.add_argument(
        "--live",
        action="store_true",
        help=f"a live, dense stream: {HISTORY_DAYS} sparse days first (baselines; the "
        "worker is not timed over them), then the N events in one day",
    )
    p.add_argument(
        "--live-rate",
        type=float,
        default=None,
        help="with --live: the live part's event times as a model serving this many "
        "predictions a second would have them (all streams together; default: N in one day)",
    )
    p.add_argument(
        "--outcomes",
        action="store_true",
        help="the driftwatch worker also reads an outcome per prediction (the join and the "
        "performance monitor run); its rate counts both",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results ({RESULTS})")
    args = p.parse_args(argv)
    if args.events < 2000 or args.partitions < 1 or args.repeat < 1:
        p.error("need --events >= 2000, --partitions >= 1, --repeat >= 1")
    if args.live_rate is not None and (not args.live or args.live_rate <= 0):
        p.error("--live-rate needs --live and a rate > 0")
    if not 1 <= args.batch <= 10_000 or args.workers < 1:
        p.error("need 1 <= --batch <= 10000 and --workers >= 1")
    split_features(args.features)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print(format_table(report["results"]))
    eng = report["driftwatch_engine_last_run"]
    print(
        f"\n{args.events:,} events x {args.features} features, {args.partitions} partitions, "
        f"{args.batch} per message, {args.workers} driftwatch worker(s), "
        + (
            (
                f"the live part at {args.live_rate:,.0f} predictions/s of event time"
                if args.live_rate
                else "one live day"
            )
            + f" after {report['config']['history_events']:,} history events, "
            if args.live
            else ""
        )
        + f"median of {args.repeat}; driftwatch closed {eng.get('windows_closed', 0)} windows "
        f"(+{eng.get('interim_looks', 0)} interim looks), "
        f"ran {eng.get('tests', 0)} tests, emitted {eng.get('drift_events', 0)} drift events, "
        f"dead-lettered {eng.get('dead_letters', 0)}; wrote "
        f"{eng.get('state_bytes_drift-state', 0) / 2**20:,.0f} MiB of window state and "
        f"{eng.get('state_bytes_join-state', 0) / 2**20:,.0f} MiB of join state"
        + (
            f"; joined {eng.get('joined', 0):,} outcomes, applied "
            f"{eng.get('performance_labels', 0):,} labels, the drift agent and router waited "
            f"{eng.get('backpressure_wait_seconds', 0)} s for the later stages"
            if args.outcomes
            else ""
        )
    )
    spent = report["driftwatch_agent_seconds_last_run"]
    if any(spent.values()):
        print(
            "the driftwatch worker's agents, seconds over the whole run (history too; they run "
            "at once): " + ", ".join(f"{k} {v:,.2f}" for k, v in spent.items() if v)
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
