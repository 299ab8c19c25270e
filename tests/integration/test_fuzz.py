"""Fuzzed input through live workers, accounted for (issue 11, item 5).

Messages generated up front by hypothesis (``tests/fuzz.py``: arbitrary bytes, broken and
deeply nested JSON, huge strings and numbers, Unicode edge cases, duplicate keys, 10,000-
feature events, a wrong type in every field, unsafe names, malformed envelopes), with
known-valid events in between, go through ``driftwatch worker`` (``predictions``, the batch
envelopes on it, ``outcomes``) and ``driftwatch retrain-worker`` (``retrain-control``)
running as processes on the real broker. Then:

- the process never stopped, and stops cleanly (exit 0) when asked;
- every message is accounted for, per topic: the units produced (messages, or events of an
  accepted envelope) = what the worker counts as applied + what came back on
  ``dead-letters``, each unit once (:func:`tests.fuzz.account`), no ``internal_error``; the
  worker's dead-letter counters agree with the topic, reason by reason;
- the known-valid events are all in the worker's state (exact per-window counts) and their
  outcomes are joined or given up with a reason;
- peak memory (VmHWM) stays under a bound.

``test_fuzzed_input_is_accounted_for`` sends 1,000 generated messages per input (CI);
``test_fuzzed_input_at_scale`` 10,000 (``make bench``).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer

from agents.app import WINDOW_TABLE
from agents.state_files import describe_state, read_table
from bench.retrain_e2e import TOPICS as RETRAIN_TOPICS
from bench.retrain_e2e import RetrainWorker
from driftwatch.devbroker import free_port
from runtime.topics import WORKER_TOPICS, ensure_topics
from schemas import PredictionEvent
from tests import fuzz
from tests.integration.kafka_helpers import consume_all
from tests.integration.worker_harness import (
    WorkerProcess,
    committed_offsets,
    expected_counts,
    scrape_metrics,
    wait_drained,
)

FUZZ_ENV = {
    # Small limits, so "oversized" is reached by messages a Kafka producer still accepts,
    # and 10,000-feature events (~100 KB) are refused for their features, not their size.
    "DRIFTWATCH_MAX_MESSAGE_BYTES": str(128 * 1024),
    "DRIFTWATCH_MAX_BATCH_BYTES": str(256 * 1024),
}
WORKER_RSS_LIMIT_MB = 1024
"""Peak RSS of the worker over a fuzz run (about 380 MiB in bench.throughput's steady state;
hostile input adds decoded envelopes of up to 256 KiB, 10,000-feature events and the state
of a few thousand random streams). Measured: see docs/testing.md."""
RETRAIN_RSS_LIMIT_MB = 512


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process, MiB (Linux ``/proc``)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def produce_tracked(
    bootstrap: str, topic: str, messages: list[fuzz.Message]
) -> list[fuzz.Produced]:
    """Produce in order; every message with the partition and offset the broker gave it."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all",
         "message.timeout.ms": 120_000}
    )  # fmt: skip
    out: list[fuzz.Produced | None] = [None] * len(messages)
    errors: list[str] = []

    def report(i: int, value: bytes | None) -> Any:
        def done(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                out[i] = fuzz.Produced(msg.partition(), msg.offset(), value)

        return done

    for i, (key, value) in enumerate(messages):
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=report(i, value))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0, "not all messages delivered"
    assert not errors, errors[:3]
    assert all(p is not None for p in out)
    return [p for p in out if p is not None]


def ends(produced: list[fuzz.Produced]) -> dict[int, int]:
    out: dict[int, int] = {}
    for p in produced:
        out[p.partition] = max(out.get(p.partition, 0), p.offset + 1)
    return out


def series(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.items():
        metric, _, rest = key.partition("{")
        if metric != name:
            continue
        have = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if "=" in part)
        if all(have.get(k) == json.dumps(v) for k, v in labels.items()):
            total += value
    return total


def reasons_counted(samples: dict[str, float], topic: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for key, value in samples.items():
        if key.startswith("driftwatch_dead_letters_total{") and f'topic="{topic}"' in key:
            reason = key.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] += int(value)
    return +out


def read_letters(bootstrap: str, topic: str, at_least: int) -> list[fuzz.Letter]:
    records = consume_all(bootstrap, topic, min_messages=at_least, timeout=180, idle=3.0)
    return [fuzz.Letter.from_json(r.value or b"") for r in records]


def wait_for(what: str, check: Any, alive: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive()
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Report:
    """What a run printed, for docs/testing.md."""

    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)
        print(line, file=sys.stderr)


# --- the feature-drift worker: predictions, envelopes, outcomes -------------------------------


def fuzz_worker(bootstrap: str, prefix: str, tmp_path: Path, n: int) -> Report:
    report = Report()
    started = time.monotonic()
    tmp_path.mkdir(parents=True, exist_ok=True)
    worker = WorkerProcess(
        bootstrap=bootstrap, prefix=f"{prefix}-", data_dir=tmp_path / "state",
        log_path=tmp_path / "worker.log", extra_env=dict(FUZZ_ENV),
    )  # fmt: skip
    ensure_topics(bootstrap, {worker.topic(t): worker.partitions for t in WORKER_TOPICS})
    worker.start()  # it starts while the messages are generated
    try:
        t = time.monotonic()
        singles = [m for _, m in fuzz.generate_mix(fuzz.predictions, n, 1)]
        envelopes = fuzz.generate(fuzz.envelopes, n, 2)
        outcomes = [m for _, m in fuzz.generate_mix(fuzz.outcomes, n, 3)]
        generated = time.monotonic() - t
        assert not fuzz.missing_families(singles, envelopes)
        ledger = [fuzz.ledger_prediction(i) for i in range(max(50, n // 10))]
        ledger_out = [fuzz.ledger_outcome(i) for i in range(len(ledger))]
        key = f"{fuzz.LEDGER}:fraud".encode()
        valid: list[fuzz.Message] = [(key, json.dumps(e).encode()) for e in ledger]
        predictions = fuzz.interleave(fuzz.interleave(singles, envelopes), valid)
        valid = [(e["event_id"].encode(), json.dumps(e).encode()) for e in ledger_out]
        outcome_msgs = fuzz.interleave(outcomes, valid)
        sizes = [len(v or b"") for _, v in predictions + outcome_msgs]
        report.add(
            f"generated {n} single predictions, {n} envelopes, {n} outcomes in "
            f"{generated:.1f} s; with the ledger's {len(ledger)} predictions and outcomes: "
            f"{len(predictions)} + {len(outcome_msgs)} messages, {sum(sizes) / 1e6:.1f} MB"
        )
        produced_p = produce_tracked(bootstrap, worker.topic("predictions"), predictions)
        produced_o = produce_tracked(bootstrap, worker.topic("outcomes"), outcome_msgs)
        del predictions, outcome_msgs, singles, envelopes, outcomes

        def committed() -> bool:
            for name, produced in (("predictions", produced_p), ("outcomes", produced_o)):
                have = committed_offsets(bootstrap, f"{prefix}-app", worker.topic(name), 2)
                if any(have.get(p, -1) < end for p, end in ends(produced).items()):
                    return False
            return True

        wait_for("the input to be committed", committed, worker.assert_alive, 900)
        wait_drained(worker, ["join-input", "performance-input"], timeout=300)
        samples = worker.read_metrics()
        current, peak = rss_mb(worker.proc.pid)  # type: ignore[union-attr]
        processed = time.monotonic() - t
        total_letters = int(series(samples, "driftwatch_dead_letters_total"))
        letters = read_letters(bootstrap, worker.topic("dead-letters"), total_letters)
        assert len(letters) == total_letters, (len(letters), total_letters)

        problems: list[str] = []
        for name, produced in (("predictions", produced_p), ("outcomes", produced_o)):
            topic = worker.topic(name)
            applied = int(series(samples, "driftwatch_events_total", topic=topic, result="ok"))
            books = fuzz.account(topic, produced, letters, applied)
            report.add(books.summary())
            problems += books.problems[:20]
            # the counters agree with the topic, reason by reason, and count each unit once
            mine = Counter(x.reason for x in letters if x.topic == topic)
            assert reasons_counted(samples, topic) == mine, (reasons_counted(samples, topic), mine)
            edge = sum(v for r, v in mine.items() if r not in fuzz.JOIN_REASONS)
            counted = series(samples, "driftwatch_events_total", topic=topic, result="dead_letter")
            assert counted == edge, (counted, edge)
        report.add(
            f"worker RSS {current:.0f} MiB now, {peak:.0f} MiB peak; produced, applied and "
            f"verified in {processed:.0f} s ({time.monotonic() - started:.0f} s in all)"
        )
        assert not problems, "\n".join(problems)
        assert peak < WORKER_RSS_LIMIT_MB, f"peak RSS {peak:.0f} MiB"

        # The known-valid events: every one in the state, and every outcome accounted for.
        joined = [r for r in consume_all(bootstrap, worker.topic("labeled-predictions"),
                                         idle=2.0) if r.key == key]  # fmt: skip
        ledger_positions = {
            (p.partition, p.offset)
            for p in produced_o
            if p.value is not None and p.value.startswith(b'{"event_id": "ledger-')
        }
        given_up = [x for x in letters if x.topic == worker.topic("outcomes")
                    and (x.partition, x.offset) in ledger_positions]  # fmt: skip
        report.add(
            f"ledger: {len(ledger)} predictions; outcomes {len(joined)} joined + "
            f"{len(given_up)} given up by the join ({dict(Counter(x.reason for x in given_up))})"
        )
        assert len(joined) + len(given_up) == len(ledger_out)
        assert {x.reason for x in given_up} <= fuzz.JOIN_REASONS
        # Never stopped: not even a watchdog exit the harness restarted it after (issue 11's
        # target is 0 worker exits under fuzzed input).
        assert not worker.restarts, f"the worker exited for a stall: {worker.restarts}"
        assert worker.stop() == 0, worker.log_tail()
        state = describe_state(read_table(worker.data_dir, WINDOW_TABLE))
        want = expected_counts([PredictionEvent.from_dict(e) for e in ledger])
        assert state[f"{fuzz.LEDGER}:fraud"]["windows"] == want[f"{fuzz.LEDGER}:fraud"]
        return report
    except BaseException:
        print(worker.log_tail(80), file=sys.stderr)
        raise
    finally:
        worker.stop(signal.SIGKILL if worker.proc and worker.proc.poll() is None else 15)


# --- the retrain worker: retrain-control -------------------------------------------------------


def fuzz_retrain_worker(bootstrap: str, prefix: str, tmp_path: Path, n: int) -> Report:
    report = Report()
    started = time.monotonic()
    p = f"{prefix}-"
    ensure_topics(bootstrap, {p + t: 2 for t in RETRAIN_TOPICS})
    port = free_port()
    worker = RetrainWorker(
        bootstrap, p, tmp_path / "retrain", extra_env={"DRIFTWATCH_RETRAIN_METRICS_PORT": str(port)}
    ).start()
    topic = p + "retrain-control"

    def alive() -> None:
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            raise AssertionError(f"retrain worker exited: {worker.log_tail()}")

    try:
        t = time.monotonic()
        controls = fuzz.generate(fuzz.controls, n, 4)
        report.add(f"generated {n} retrain-control messages in {time.monotonic() - t:.1f} s")
        produced = produce_tracked(bootstrap, topic, controls)

        def handled() -> bool:
            try:
                samples = scrape_metrics(port)
            except OSError:
                return False
            return series(samples, "driftwatch_retrain_messages_total", topic=topic) >= n

        wait_for("retrain-control to be handled", handled, alive, 900)
        time.sleep(1.0)  # nothing more should come
        samples = scrape_metrics(port)
        current, peak = rss_mb(worker.proc.pid)  # type: ignore[union-attr]
        applied = int(series(samples, "driftwatch_retrain_messages_total", topic=topic,
                             result="ok"))  # fmt: skip
        counted = int(series(samples, "driftwatch_retrain_messages_total", topic=topic))
        total = int(series(samples, "driftwatch_dead_letters_total"))
        letters = read_letters(bootstrap, p + "dead-letters", total)
        books = fuzz.account(topic, produced, letters, applied)
        report.add(books.summary())
        report.add(
            f"retrain worker RSS {current:.0f} MiB now, {peak:.0f} MiB peak; "
            f"{time.monotonic() - started:.0f} s in all"
        )
        assert counted == n, (counted, n)  # each message handled once
        assert not books.problems, "\n".join(books.problems[:20])
        mine = Counter(x.reason for x in letters if x.topic == topic)
        assert reasons_counted(samples, topic) == mine
        assert peak < RETRAIN_RSS_LIMIT_MB, f"peak RSS {peak:.0f} MiB"
        alive()
        worker.stop()
        assert worker.proc is not None and worker.proc.returncode == 0, worker.log_tail()
        return report
    except BaseException:
        print(worker.log_tail(80), file=sys.stderr)
        raise
    finally:
        worker.stop(9)


def test_fuzzed_input_is_accounted_for(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    fuzz_worker(kafka_bootstrap, unique_prefix, tmp_path, 1_000)


def test_fuzzed_control_messages_are_accounted_for(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    fuzz_retrain_worker(kafka_bootstrap, unique_prefix, tmp_path, 1_000)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_fuzzed_input_at_scale(kafka_bootstrap: str, unique_prefix: str, tmp_path: Path) -> None:
    fuzz_worker(kafka_bootstrap, unique_prefix, tmp_path / "worker", 10_000)
    fuzz_retrain_worker(kafka_bootstrap, unique_prefix + "r", tmp_path / "retrain", 10_000)
