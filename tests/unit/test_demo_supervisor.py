"""The demo restarts a process that ended itself on a stall, as a supervisor would."""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from driftwatch import demo
from driftwatch.simulate import feature_names


class Scripted(demo.Supervised):
    """Runs short Python scripts instead of driftwatch commands."""

    def start(self, name: str, command: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-c", command])
        self.stack.callback(proc.kill)
        self[name], self.commands[name] = proc, command
        return proc


def wait(proc: subprocess.Popen[bytes]) -> None:
    proc.wait(timeout=30)


def test_stall_exit_is_restarted_other_exits_fail(tmp_path: Path) -> None:
    with ExitStack() as stack:
        procs = Scripted(tmp_path, {}, stack)
        first = procs.start("worker", "import sys; sys.exit(75)")
        wait(first)
        assert procs.failed() is None
        assert procs["worker"] is not first  # started again
        wait(procs["worker"])
        procs.start("retrain", "import sys; sys.exit(3)")
        wait(procs["retrain"])
        time.sleep(0.1)
        failure = procs.failed()
        assert failure == "retrain exited with code 3"


def test_the_later_stages_lag_is_every_topic_s_but_the_producers_inputs() -> None:
    metrics = {
        'driftwatch_consumer_lag_messages{partition="0",topic="d-predictions"}': 900.0,
        'driftwatch_consumer_lag_messages{partition="1",topic="d-outcomes"}': 50.0,
        'driftwatch_consumer_lag_messages{partition="0",topic="d-join-input"}': 30.0,
        'driftwatch_consumer_lag_messages{partition="1",topic="d-performance-input"}': 12.0,
        'driftwatch_events_total{topic="d-join-input"}': 7.0,  # not a lag
    }
    assert demo._later_lag(metrics, ("d-predictions", "d-outcomes")) == 42.0


def summary(retrain: list[dict[str, object]]) -> tuple[int, str]:
    """The demo's verdict on a run that found every drift, with ``retrain`` as its events."""
    import io
    from contextlib import redirect_stdout

    cfg = demo._demo_traffic(70, 500, 50)
    state = demo.DemoState(start=0.0)
    _, categorical = feature_names(cfg, "conflict")
    for tenant, model, feature in (
        ("acme", "fraud", "amount"), ("globex", "conflict", categorical[0]),
        ("acme", "conflict", None), ("globex", "fraud", None),
    ):  # fmt: skip
        state.drifts.append({
            "drift_id": f"{tenant}-{model}", "tenant": tenant, "model": model,
            "feature": feature, "test": "t", "detected_at": "1970-02-22T00:00:00Z",
            "severity": "high", "confirmed": True,
        })  # fmt: skip
    state.dead_letters.append({"reason": "invalid_json"})
    state.retrain.extend(retrain)
    out = io.StringIO()
    with redirect_stdout(out):
        code = demo._summary(state, cfg, 10, 10, 1.0, 50)
    return code, out.getvalue()


def step(model: str, status: str, **details: object) -> dict[str, object]:
    tenant = "acme" if model == "conflict" else "globex"
    return {"tenant": tenant, "model": model, "request_id": model, "status": status,
            "details": details}  # fmt: skip


def test_the_demo_claims_a_validated_model_only_when_its_check_saw_its_own_traffic() -> None:
    rejected = step("fraud", "challenger_rejected")
    code, out = summary([step("conflict", "promoted"), rejected])
    assert code == 1 and "did not pass a post-deploy check on its own traffic" in out
    code, out = summary([
        step("conflict", "promoted"), rejected,
        step("conflict", "validated", inconclusive=True),  # "r1 served no traffic to check"
    ])  # fmt: skip
    assert code == 1 and "did not pass a post-deploy check" in out and "✓" not in out
    code, out = summary([step("conflict", "promoted"), rejected, step("conflict", "validated")])
    assert code == 0 and "✓ every injected drift was found" in out and "✗" not in out


def test_an_inconclusive_check_is_shown_as_one() -> None:
    state = demo.DemoState(start=0.0)
    r = {"tenant": "acme", "model": "conflict", "status": "validated",
         "event_time": "1970-01-02T00:00:00Z", "reason": "r1 served no traffic to check",
         "details": {"inconclusive": True}}  # fmt: skip
    line = demo._describe_retrain(state, r)
    assert line is not None and "RETRAIN validated (inconclusive) acme/conflict: r1 served" in line


def test_the_demo_waits_for_the_retrain_worker_to_read_what_it_has_seen() -> None:
    """Read from the retrain worker's own counter, over HTTP, as the demo scrapes it."""
    from prometheus_client import CollectorRegistry, Counter, start_http_server

    from driftwatch.devbroker import free_port

    registry = CollectorRegistry()
    handled = Counter("driftwatch_retrain_messages", "", ["topic", "result"], registry=registry)
    port = free_port()
    server, thread = start_http_server(port, registry=registry)
    try:
        state = demo.DemoState(start=0.0)
        state.drifts.extend({"drift_id": str(i)} for i in range(3))
        topic = "d-drift-events"
        assert not demo._read_by_retrain((port, topic), state)
        handled.labels(topic, "ok").inc(2)
        handled.labels("d-labeled-predictions", "ok").inc(5)  # another topic: not counted
        assert not demo._read_by_retrain((port, topic), state)
        handled.labels(topic, "dead_letter").inc()  # read, if refused
        assert demo._read_by_retrain((port, topic), state)
    finally:
        server.shutdown()
        thread.join()


def test_after_the_stream_the_demo_waits_for_the_promoted_versions_verdicts(
    tmp_path: Path,
) -> None:
    """While the retrain worker still reads labelled rows; not once it has read them all
    (a version promoted at the stream's end never gets a verdict) or has died."""
    from prometheus_client import CollectorRegistry, Counter, start_http_server

    from driftwatch.devbroker import free_port

    registry = CollectorRegistry()
    read = Counter("driftwatch_retrain_messages", "", ["topic", "result"], registry=registry)
    port = free_port()
    server, thread = start_http_server(port, registry=registry)
    try:
        with ExitStack() as stack:
            procs = Scripted(tmp_path, {}, stack)
            state = demo.DemoState(start=0.0)
            state.retrain.append(step("conflict", "promoted") | {"request_id": "r"})
            labelled = (port, "d-labeled-predictions")
            started = time.monotonic()
            demo._await_verdicts(procs, state, labelled, deadline=30, quiet=0.6)
            waited = time.monotonic() - started
            assert 0.6 <= waited < 5, "read to the end: no verdict is coming"
            started = time.monotonic()
            demo._await_verdicts(procs, state, labelled, deadline=0.6, quiet=30)
            assert time.monotonic() - started >= 0.6  # still reading: up to the deadline
            state.retrain.append(step("conflict", "validated") | {"request_id": "r"})
            assert demo._awaiting_verdict(state) == []
            read.labels("d-labeled-predictions", "ok").inc()
            started = time.monotonic()
            demo._await_verdicts(procs, state, labelled, deadline=30)
            assert time.monotonic() - started < 1.0
    finally:
        server.shutdown()
        thread.join()


def test_the_producer_waits_for_a_promotion_s_switch_as_for_a_training() -> None:
    """A promotion read on ``retrain-events`` before its switch on ``model-events`` (two
    tails) holds the producer until the switch is read too: else the old model served on,
    and the new one's post-deploy check found it served nothing."""
    state = demo.DemoState(start=0.0)
    state.retrain.append({"request_id": "r", "status": "training"})
    assert state.training()
    state.retrain.append({"request_id": "r", "status": "promoted"})
    assert state.training()  # promoted, its switch not read yet
    state.models.append({"request_id": "other", "version": "x"})
    assert state.training()
    state.models.append({"request_id": "r", "version": "r1"})
    assert not state.training()  # the producer applies it before its next day
    state.retrain.append({"request_id": "r", "status": "validated"})
    assert not state.training()
