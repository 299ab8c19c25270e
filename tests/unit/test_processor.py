"""The worker's batch glue without a broker: dead-lettering, persistence, the quiet-stream timer.

Faust's table and topics are replaced by dicts and lists here; the real ones are exercised by
tests/integration/test_worker.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, replace
from typing import Any

import pytest
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agents.dead_letters import DeadLetters
from agents.envelopes import decode_join
from agents.metrics import WorkerMetrics
from agents.processor import BatchResult, PredictionProcessor, TableStore
from schemas import PredictionEvent
from streams.config import DAY, EngineConfig
from streams.engine import DriftEngine
from streams.ingest import PredictionValidator
from streams.state import stream_key
from tests.unit.test_engine import SHORT, T0, stream


@dataclass
class FakeMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass(eq=False)
class FakeEvent:
    message: FakeMessage
    value: bytes | None


class FakeTable(dict[bytes, bytes]):
    pass


def make_processor(
    config: EngineConfig = SHORT, idle_timeout: float = 60.0
) -> tuple[
    PredictionProcessor,
    list[tuple[bytes, bytes]],
    list[tuple[bytes, bytes]],
    list[float],
    CollectorRegistry,
]:
    drifts: list[tuple[bytes, bytes]] = []
    letters: list[tuple[bytes, bytes]] = []
    now = [T0 + 100 * DAY]
    registry = CollectorRegistry()

    async def send_drift(key: bytes, value: bytes) -> None:
        drifts.append((key, value))

    async def send_letter(key: bytes, value: bytes) -> None:
        letters.append((key, value))

    store = TableStore(FakeTable())
    metrics = WorkerMetrics.create(registry)
    processor = PredictionProcessor(
        engine=DriftEngine(config, store),
        store=store,
        validator=PredictionValidator(max_bytes=10_000),
        metrics=metrics,
        send_drift=send_drift,
        dead_letters=DeadLetters(send_letter, metrics, lambda: now[0]),
        source_topic="predictions",
        idle_timeout=idle_timeout,
        clock=lambda: now[0],
    )
    return processor, drifts, letters, now, registry


def as_events(events: list[PredictionEvent], start_offset: int = 0) -> list[Any]:
    return [
        FakeEvent(
            FakeMessage("predictions", 0, start_offset + i, e.stream_key.encode()), e.to_json()
        )
        for i, e in enumerate(events)
    ]


def test_bad_messages_are_dead_lettered_and_the_rest_applied() -> None:
    processor, _, letters, _, registry = make_processor()
    good = list(stream(seed=1, days=1, per_day=20))
    batch = as_events(good)
    batch.insert(5, FakeEvent(FakeMessage("predictions", 0, 999, b"k"), b"{oops"))
    batch.insert(9, FakeEvent(FakeMessage("predictions", 0, 1000, None), None))
    asyncio.run(processor.process_batch(batch))
    assert [json.loads(v)["reason"] for _, v in letters] == ["malformed_json", "empty"]
    assert json.loads(letters[0][1])["source_offset"] == 999
    assert (
        registry.get_sample_value(
            "driftwatch_events_total", {"topic": "predictions", "result": "ok"}
        )
        == 20
    )
    assert (
        registry.get_sample_value(
            "driftwatch_dead_letters_total", {"topic": "predictions", "reason": "malformed_json"}
        )
        == 1
    )
    state = processor.engine.stream_state("acme", "fraud")
    assert state is not None and state.events == 20


def test_a_stream_s_activity_is_its_last_applied_event() -> None:
    """What the quiet-stream timer reads: per stream, its last event the engine took (a later
    one it refused does not count), with the partition and the batch's clock."""
    from dataclasses import replace

    processor, _, letters, now, registry = make_processor()
    fraud = list(stream(seed=4, days=1, per_day=6))
    churn = [replace(e, model="churn", event_id=f"c{i}") for i, e in enumerate(fraud)]
    refused = replace(churn[-1], event_id="c-bad", timestamp=churn[-1].timestamp + 60,
                      features={"x0": "text where a number was"})  # fmt: skip
    batch = [e for pair in zip(fraud, churn, strict=True) for e in pair] + [refused]
    asyncio.run(processor.process_batch(as_events(batch)))
    assert [json.loads(v)["reason"] for _, v in letters] == ["type_mismatch"]
    activity = processor._activity
    assert list(activity) == [("acme", "fraud"), ("acme", "churn")]
    # (the wire's microseconds; the refused event came a minute later)
    assert activity["acme", "fraud"].event_time == pytest.approx(fraud[-1].timestamp, abs=1e-5)
    assert activity["acme", "churn"].event_time == pytest.approx(churn[-1].timestamp, abs=1e-5)
    assert {a.partition for a in activity.values()} == {0}
    assert {a.arrived for a in activity.values()} == {now[0]}
    for model in ("fraud", "churn"):  # each model's alerting counters made at 0, once
        labels = {"tenant": "acme", "model": model, "kind": "statistical", "severity": "HIGH"}
        assert registry.get_sample_value("driftwatch_confirmed_drifts_total", labels) == 0


def feed_until_quiet(processor: PredictionProcessor, now: list[float]) -> list[PredictionEvent]:
    """22 days with a shift on the last one, whose window is still open; the clock stops."""
    events = list(stream(seed=9, days=22, per_day=300, shift_day=21))
    now[0] = events[-1].timestamp
    for i in range(0, len(events), 1000):
        asyncio.run(processor.process_batch(as_events(events[i : i + 1000], start_offset=i)))
    return events


def test_quiet_stream_is_advanced_by_the_timer() -> None:
    processor, drifts, _, now, registry = make_processor(idle_timeout=60.0)
    events = feed_until_quiet(processor, now)
    assert drifts == []  # day 21 (the shifted one) is still open
    now[0] += 30  # not idle long enough
    asyncio.run(processor.tick())
    assert drifts == []
    now[0] += 2 * 3600  # two hours without a single event: the stream's clock moves on
    asyncio.run(processor.tick())
    assert [json.loads(v)["feature"] for _, v in drifts] == ["x0"]
    assert json.loads(drifts[0][1])["window_start"] == "2026-01-22T00:00:00.000000Z"
    assert registry.get_sample_value(
        "driftwatch_stream_watermark_seconds", {"tenant": "acme", "model": "fraud"}
    ) == pytest.approx(events[-1].timestamp, abs=1e-5)


def test_revoked_partitions_are_forgotten() -> None:
    processor, _, _, _, _ = make_processor()
    asyncio.run(processor.process_batch(as_events(list(stream(seed=2, days=1, per_day=3)))))
    assert len(processor.engine._windows) > 0  # decoded state stays cached between batches
    asyncio.run(processor.forget_partitions({0}))
    assert processor._activity == {}
    assert len(processor.engine._windows) == 0 and len(processor.engine._streams) == 0


def test_an_unexpected_error_dead_letters_one_message_and_the_batch_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    processor, _, letters, _, _ = make_processor()
    good = list(stream(seed=3, days=1, per_day=10))
    real = processor.engine._advance

    def flaky(stream: Any, event_time: float, window: float) -> Any:
        if event_time == good[4].timestamp:  # a bug, in the engine's work for one event
            raise RuntimeError("a bug")
        return real(stream, event_time, window)

    monkeypatch.setattr(processor.engine, "_advance", flaky)
    monkeypatch.setattr(processor.engine, "quiet_advances", False)
    batch = as_events(good)
    huge = good[0].to_json().replace(b'"score":0.5', b'"score":' + b"9" * 400)
    batch.insert(2, FakeEvent(FakeMessage("predictions", 0, 50, b"k"), huge))
    asyncio.run(processor.process_batch(batch))
    # Dead-lettered in the batch's order (the validator's refusal came first).
    assert [json.loads(v)["reason"] for _, v in letters] == ["non_finite", "internal_error"]
    assert json.loads(letters[1][1])["source_offset"] == 4  # good[4], at its offset
    state = processor.engine.stream_state("acme", "fraud")
    assert state is not None and state.events == 9


def test_timer_waits_while_a_batch_holds_the_engine() -> None:
    processor, drifts, _, now, _ = make_processor(idle_timeout=60.0)
    feed_until_quiet(processor, now)
    now[0] += 3 * 3600

    async def scenario() -> tuple[int, int]:
        async with processor._lock:  # a batch in flight, e.g. awaiting a drift delivery
            tick = asyncio.create_task(processor.tick())
            await asyncio.sleep(0.05)
            during = len(drifts)
        await tick
        return during, len(drifts)

    during, after = asyncio.run(scenario())
    assert during == 0 and after == 1


def test_a_background_tick_waits_for_the_batch_without_holding_up_its_timer() -> None:
    """The timer starts the tick and returns at once (no runtime for mode to call an
    overlapping timer); the tick advances the quiet stream once the batch lets go, only one
    tick waits at a time, and a tick's failure reaches the timer at its next call."""
    processor, drifts, _, now, _ = make_processor(idle_timeout=60.0)
    feed_until_quiet(processor, now)
    now[0] += 3 * 3600

    async def scenario() -> tuple[int, int, bool]:
        async with processor._lock:  # a batch in flight
            processor.tick_in_background()
            first = processor._tick_task
            processor.tick_in_background()  # the first still waits: no second one
            same = processor._tick_task is first
            await asyncio.sleep(0.05)
            during = len(drifts)
        assert first is not None
        await first
        return during, len(drifts), same

    during, after, same = asyncio.run(scenario())
    assert (during, after, same) == (0, 1, True)

    async def shutdown() -> bool:
        async with processor._lock:
            processor.tick_in_background()
            processor.cancel_tick()
            task = processor._tick_task
            assert task is not None
            await asyncio.wait([task])
            return task.cancelled()

    assert asyncio.run(shutdown())

    processor = make_processor()[0]

    async def failing() -> None:
        def broken(now: float) -> BatchResult:
            raise RuntimeError("tick failed")

        processor._compute_tick = broken  # type: ignore[method-assign]
        processor.tick_in_background()
        assert processor._tick_task is not None
        await asyncio.wait([processor._tick_task])
        processor.tick_in_background()

    with pytest.raises(RuntimeError, match="tick failed"):
        asyncio.run(failing())


def test_the_downstream_gate_is_awaited_between_a_batch_s_parts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch is applied in parts, each forwarded to the join as it is done: the worker's
    gate is awaited before every part after the first (after the part before was counted),
    so a large batch cannot run ahead of the join by all of it."""
    import agents.processor

    processor, _, _, _, registry = make_processor()
    events = as_events(list(stream(seed=3, days=1, per_day=40)))
    monkeypatch.setattr(agents.processor, "CHUNK_BYTES", 4 * len(events[0].value or b""))
    parts = agents.processor.chunks(events, agents.processor.CHUNK_BYTES)
    assert len(parts) >= 3
    counted_at_waits: list[float] = []
    allowed: list[float] = []

    async def gate(longest: float) -> float:
        ok = registry.get_sample_value(
            "driftwatch_events_total", {"topic": "predictions", "result": "ok"}
        )
        counted_at_waits.append(ok or 0.0)
        allowed.append(longest)
        return 0.0

    processor.between_parts = gate
    asyncio.run(processor.process_batch(events))
    ends = [sum(len(p) for p in parts[: k + 1]) for k in range(len(parts) - 1)]
    assert counted_at_waits == ends  # one wait per later part, each after the one before
    assert allowed == [processor.parts_wait_seconds] * len(ends)
    state = processor.engine.stream_state("acme", "fraud")
    assert state is not None and state.events == 40

    # One budget a batch: a stage that stopped holds each wait to its end, and the parts
    # share it (not a full wait each: 150 parts of a large batch would take 25 minutes).
    allowed.clear()

    async def stopped_stage(longest: float) -> float:
        allowed.append(longest)
        return longest

    processor.between_parts, processor.parts_wait_seconds = stopped_stage, 10.0
    asyncio.run(processor.process_batch(as_events(list(stream(seed=4, days=1, per_day=40)))))
    assert allowed == [10.0]  # the first wait used it all: the later parts go on at once


def test_an_envelope_applies_its_good_events_and_dead_letters_each_bad_one() -> None:
    processor, _, letters, _, registry = make_processor()
    good = list(stream(seed=2, days=1, per_day=30))
    items = [e.to_dict() for e in good]
    items.insert(3, {**items[0], "event_id": "bad", "score": 7})
    items.insert(10, {**items[0], "event_id": "other", "tenant": "globex"})
    envelope = json.dumps({"schema": "driftwatch.prediction-batch/v1", "events": items})
    message = FakeEvent(FakeMessage("predictions", 0, 41, b"acme:fraud"), envelope.encode())
    asyncio.run(processor.process_batch([message]))
    got = [json.loads(v) for _, v in letters]
    assert [(x["reason"], x["source_offset"], x["source_index"]) for x in got] == [
        ("bad_value", 41, 3),
        ("mixed_streams", 41, 10),
    ]
    assert json.loads(base64.b64decode(got[0]["original_b64"]))["event_id"] == "bad"
    state = processor.engine.stream_state("acme", "fraud")
    assert state is not None and state.events == 30
    ok = registry.get_sample_value(
        "driftwatch_events_total", {"topic": "predictions", "result": "ok"}
    )
    assert ok == 30
    # The same envelope again (a redelivery): every event is recognised, nothing counted.
    asyncio.run(processor.process_batch([message]))
    state = processor.engine.stream_state("acme", "fraud")
    assert state is not None and state.events == 30


def test_engine_work_runs_off_the_event_loop_and_table_writes_on_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Window tests must not hold up the loop (commits, other agents, the consumer); table
    writes produce changelog records, which only the loop's thread may do."""
    import threading

    processor, drifts, _, now, _ = make_processor()
    threads: dict[str, set[int]] = {"observe": set(), "write": set(), "loop": set()}
    observe, write_all = processor.engine.observe_many, processor.store.write_all

    def observing(*args: Any, **kwargs: Any) -> Any:
        threads["observe"].add(threading.get_ident())
        return observe(*args, **kwargs)

    async def writing(*args: Any, **kwargs: Any) -> None:
        threads["write"].add(threading.get_ident())
        await write_all(*args, **kwargs)

    monkeypatch.setattr(processor.engine, "observe_many", observing)
    monkeypatch.setattr(processor.store, "write_all", writing)

    events = list(stream(seed=9, days=23, per_day=300, shift_day=21))
    now[0] = events[-1].timestamp

    async def run() -> None:
        threads["loop"].add(threading.get_ident())
        for i in range(0, len(events), 1000):
            await processor.process_batch(as_events(events[i : i + 1000], start_offset=i))

    asyncio.run(run())
    assert threads["observe"] and threads["write"]
    assert threads["observe"].isdisjoint(threads["loop"])
    assert threads["write"] == threads["loop"]
    assert drifts, "the batch closed windows and found the shift"


def test_a_cancelled_batch_waits_for_its_thread_before_it_goes_on() -> None:
    """A stop or a rebalance cancels a batch while its CPU work runs in a thread: the thread
    cannot be stopped, so the cancellation waits for it (the caller then forgets the state
    the thread changed, which it must not do while the thread still writes it)."""
    import asyncio
    import threading
    import time as time_

    from agents.processor import in_thread

    done = threading.Event()

    def work() -> int:
        time_.sleep(0.3)
        done.set()
        return 1

    async def main() -> bool:
        task = asyncio.ensure_future(in_thread(work))
        await asyncio.sleep(0.05)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return done.is_set()
        raise AssertionError("not cancelled")

    assert asyncio.run(main()), "the cancellation went on while the thread still ran"
    assert asyncio.run(_plain(in_thread)) == 7


async def _plain(in_thread: object) -> int:
    return await in_thread(lambda: 7)  # type: ignore[operator,no-any-return]


def join_processor(
    config: Any,
    metrics: WorkerMetrics,
    send_labeled: Any,
    forward: Any,
    partitions: int = 1,
    send_letter: Any = None,
) -> Any:
    """A join processor on a fake table, on the loop, that dead-letters nothing (unless
    given where to send its letters)."""
    from agents.joining import JoinProcessor

    async def no_letter(key: bytes, value: bytes) -> None:
        raise AssertionError("nothing to dead-letter")

    return JoinProcessor(
        config=config,
        store=TableStore(FakeTable()),
        metrics=metrics,
        dead_letters=DeadLetters(send_letter or no_letter, metrics, lambda: T0),
        send_labeled=send_labeled,
        send_performance=forward,
        source_topic="join-input",
        predictions_topic="predictions",
        outcomes_topic="outcomes",
        partitions=partitions,
        offload=False,
    )


def test_a_join_part_that_fails_to_deliver_is_counted_once_when_it_is_read_again() -> None:
    """The join's counts follow its state: a part whose output could not be delivered is not
    written, is read again, and only then counted (before, both times)."""
    from agents.envelopes import encode_join
    from streams.join import JoinConfig
    from tests.unit.test_join import outcome, prediction

    registry = CollectorRegistry()
    metrics = WorkerMetrics.create(registry)
    labeled: list[bytes] = []
    broken = [True]

    async def send_labeled(pairs: list[tuple[bytes, bytes, float]]) -> None:
        if broken[0]:
            broken[0] = False
            raise ConnectionError("broker away")
        labeled.extend(v for _, v, _ in pairs)

    async def forward(messages: list[tuple[bytes, bytes, int]]) -> None:
        pass

    processor = join_processor(JoinConfig(), metrics, send_labeled, forward)
    p, o = prediction("e1"), outcome("e1", T0 + 60)
    value = encode_join(
        [("p", (0, 0), 0, p.to_json(), None), ("o", (0, 0), None, o.to_json(), None)]
    )
    batch = [FakeEvent(FakeMessage("join-input", 0, 0, None), value)]
    with pytest.raises(ConnectionError):
        asyncio.run(processor.process_batch(batch))
    asyncio.run(processor.process_batch(batch))  # read again: joined now
    assert len(labeled) == 1
    joins = {
        outcome: registry.get_sample_value("driftwatch_joins_total", {"result": outcome})
        for outcome in ("joined", "waiting", "replayed")
    }
    assert joins == {"joined": 1.0, "waiting": 1.0, "replayed": None}
    # Both tries' work is counted, the failed one's too: the time was spent.
    spent = {
        phase: registry.get_sample_value(
            "driftwatch_agent_seconds_total", {"agent": "join", "phase": phase}
        )
        for phase in ("compute", "deliver", "write")
    }
    assert all(v is not None and v > 0 for v in spent.values()), spent


def test_an_outcome_the_edge_accepted_is_not_refused_for_its_size_by_the_join() -> None:
    """Found by review: the join parsed an outcome again with a default limit of 1 MiB, so
    with DRIFTWATCH_MAX_MESSAGE_BYTES above it an outcome the edge had counted "ok" was then
    dead-lettered as oversized. Its size is the edge's to check."""
    from agents.envelopes import encode_join
    from streams.join import JoinConfig
    from tests.unit.test_join import outcome, prediction

    labeled: list[bytes] = []

    async def send_labeled(pairs: list[tuple[bytes, bytes, float]]) -> None:
        labeled.extend(v for _, v, _ in pairs)

    async def forward(messages: list[tuple[bytes, bytes, int]]) -> None:
        pass

    metrics = WorkerMetrics.create(CollectorRegistry())
    processor = join_processor(JoinConfig(), metrics, send_labeled, forward)
    big = {**outcome("e1", T0 + 60).to_dict(), "note": "x" * (1 << 20)}
    raw = json.dumps(big).encode()
    assert len(raw) > 1 << 20
    value = encode_join(
        [("p", (0, 0), 0, prediction("e1").to_json(), None), ("o", (0, 0), None, raw, None)]
    )
    asyncio.run(processor.process_batch([FakeEvent(FakeMessage("join-input", 0, 0, None), value)]))
    assert len(labeled) == 1
    # The same for a prediction that orjson cannot read (a NaN in an extra field: decoded
    # again by the checked path, which had its default limit too), its outcome waiting.
    p2 = {**prediction("e2").to_dict(), "note": "x" * (1 << 20), "extra": float("nan")}
    frames = [("o", (0, 1), None, outcome("e2", T0 + 60).to_json(), None),
              ("p", (0, 1), 0, json.dumps(p2).encode(), None)]  # fmt: skip
    message = FakeEvent(FakeMessage("join-input", 0, 1, None), encode_join(frames))  # type: ignore[arg-type]
    asyncio.run(processor.process_batch([message]))
    assert len(labeled) == 2


FINITE = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["p", "o"]),
            st.tuples(st.integers(0, 2**31), st.integers(0, 2**62)),
            st.none() | st.integers(0, 2**31),
            st.binary(max_size=64),
            st.none() | st.tuples(*[st.text()] * 4, *[FINITE] * 2),
        ),
        max_size=8,
    )
)
def test_join_frames_are_written_as_the_json_encoder_wrote_them(frames: list[Any]) -> None:
    # join-input messages in the topic from before (and after) are read by the same decoder:
    # the heads must hold what json.dumps wrote (the bytes may differ: orjson writes UTF-8
    # where json.dumps escapes), and decode back to the frames. A head without a
    # prediction's "a" (an outcome's, or one an older worker wrote) is read too.
    from agents.envelopes import decode_join, encode_join

    def head(kind: str, origin: Any, home: Any, raw: bytes, about: Any) -> dict[str, Any]:
        out = {"k": kind, "o": list(origin), "h": home, "n": len(raw)}
        return out if about is None else {**out, "a": list(about)}

    before = b"".join(
        json.dumps(head(*frame), separators=(",", ":")).encode() + b"\n" + frame[3]
        for frame in frames
    )
    now = encode_join(frames)
    heads, pos = [], 0
    while pos < len(now):  # each head as the standard library reads it
        end = now.index(b"\n", pos)
        heads.append(json.loads(now[pos:end]))
        pos = end + 1 + heads[-1]["n"]
    assert heads == [head(*frame) for frame in frames]
    assert decode_join(now) == frames
    assert decode_join(before) == frames
    with pytest.raises(ValueError, match="unknown join-input kind"):
        encode_join([("x", (0, 0), None, b"", None)])  # type: ignore[list-item]
    # A timestamp or score that is not finite (never one of a valid prediction) is left out
    # of the head rather than written as JSON no decoder reads: the join decodes the bytes.
    odd = ("e", "t", "m", "v", float("nan"), 0.5)
    assert decode_join(encode_join([("p", (0, 1), 0, b"{}", odd)])) == [
        ("p", (0, 1), 0, b"{}", None)
    ]
    # orjson refuses a lone surrogate (never in a validated id), and no decoder of ours reads
    # one: the head goes without the prediction's facts, and the join decodes its bytes.
    lone = ("e\ud800", "t", "m", "v", 1.0, 0.5)
    encoded = encode_join([("p", (0, 1), 0, b"{}", lone), ("o", (0, 2), None, b"[]", None)])
    assert encoded.startswith(b'{"k":"p","o":[0,1],"h":0,"n":2}\n{}')
    assert decode_join(encoded) == [("p", (0, 1), 0, b"{}", None), ("o", (0, 2), None, b"[]", None)]


def test_the_join_cache_budget_is_shared_by_the_partitions_a_worker_holds() -> None:
    """A worker's DRIFTWATCH_JOIN_CACHE_MB is for all its join partitions together: taking
    over more partitions does not multiply the decoded records it keeps."""
    from streams.join import DECODED_PER_STORED, JoinConfig

    async def nothing(*_: Any) -> None:
        pass

    metrics = WorkerMetrics.create(CollectorRegistry())
    processor = join_processor(JoinConfig(cache_mb=30.0), metrics, nothing, nothing, 3)

    def budgets() -> list[int]:
        return [processor.joiner(p)._records.max_bytes for p in sorted(processor._joiners)]

    processor.joiner(0)
    assert budgets() == [30 * 2**20 // DECODED_PER_STORED]
    processor.joiner(1), processor.joiner(2)
    assert budgets() == [10 * 2**20 // DECODED_PER_STORED] * 3
    asyncio.run(processor.forget([0, 2]))
    assert budgets() == [30 * 2**20 // DECODED_PER_STORED]


@pytest.mark.parametrize("marks", [None, {0: 3}, {0: 2}, {1: 0}])
def test_a_join_partition_read_past_its_drain_mark_ends_its_stall_grace(
    marks: dict[int, int] | None,
) -> None:
    """The worker's drain check (agents.outcome_drain) gives each join partition the end
    offset it had when no outcome was on its way: a partition read past it expires by the
    predictions' clock at once; one short of it, or not named, waits out the grace."""
    from agents.envelopes import JoinFrame, encode_join
    from streams.join import JoinConfig
    from tests.unit.test_join import prediction

    async def nothing(*_: Any) -> None:
        pass

    metrics = WorkerMetrics.create(CollectorRegistry())
    config = JoinConfig(retention_days=5, stall_grace_seconds=600)
    processor = join_processor(config, metrics, nothing, nothing)
    processor.outcome_marks = marks

    def message(offset: int, *event_ids_days: tuple[str, int]) -> FakeEvent:
        frames: list[JoinFrame] = [
            ("p", (0, offset * 10 + i), 0, prediction(e, T0 + d * DAY).to_json(), None)
            for i, (e, d) in enumerate(event_ids_days)
        ]
        return FakeEvent(FakeMessage("join-input", 0, offset, None), encode_join(frames))

    asyncio.run(processor.process_batch([message(0, ("p0", 0), ("p1", 25))]))
    asyncio.run(processor.process_batch([message(1, ("p2", 26))]))
    expired = processor.joiner(0).stats.expired_records
    assert expired == (1 if marks == {0: 2} else 0)
    counted = metrics.join_expired._value.get()
    assert counted == expired


def test_a_join_message_it_cannot_read_is_dead_lettered_and_its_neighbours_joined() -> None:
    """join-input is our own topic, but a message written by a broken producer, or a frame
    the join fails on, must not stop the join or lose the others: the message as
    ``bad_envelope``, the frame as ``internal_error``, each with its source; a skipped offset
    is logged, not fatal."""
    from agents.envelopes import JoinFrame, encode_join
    from streams.join import JoinConfig
    from tests.unit.test_join import outcome, prediction

    metrics = WorkerMetrics.create(CollectorRegistry())
    letters: list[dict[str, Any]] = []
    labeled: list[bytes] = []

    async def send_letter(key: bytes, value: bytes) -> None:
        letters.append(json.loads(value))

    async def send_labeled(pairs: list[tuple[bytes, bytes, float]]) -> None:
        labeled.extend(v for _, v, _ in pairs)

    async def nothing(*_: Any) -> None:
        pass

    processor = join_processor(JoinConfig(), metrics, send_labeled, nothing, 1, send_letter)
    good: list[JoinFrame] = [
        ("p", (0, 0), 0, prediction("e1").to_json(), None),
        ("p", (0, 1), 0, b"[not a prediction]", None),  # trusted, and not JSON
        ("p", (0, 2), 0, b'{"event_id": "e2"}', None),  # nor a prediction: a bug's bytes
        ("o", (3, 7), None, outcome("e1", 1_767_225_660.0).to_json(), None),
    ]
    batch = [
        FakeEvent(FakeMessage("join-input", 0, 0, None), b"\x00 not a join message"),
        FakeEvent(FakeMessage("join-input", 0, 2, None), encode_join(good)),  # 1 skipped
    ]
    asyncio.run(processor.process_batch(batch))
    assert [(d["reason"], d["source_topic"], d["source_offset"]) for d in letters] == [
        ("bad_envelope", "join-input", 0),
        ("malformed_json", "predictions", 0),
        ("internal_error", "predictions", 0),
    ]
    assert [json.loads(v)["event_id"] for v in labeled] == ["e1"]


def test_a_stream_whose_record_cannot_be_read_dead_letters_its_events_and_the_batch_goes_on() -> (
    None
):
    """The engine takes a stretch's events in runs of one stream; a run whose stream record
    cannot be decoded is refused event by event (``internal_error``), the rest applied."""
    processor, _, letters, _, _ = make_processor()
    good = list(stream(seed=3, days=1, per_day=10))
    broken = [replace(e, model="broken", event_id=f"b{i}") for i, e in enumerate(good[:3])]
    processor.store.table[stream_key("acme", "broken").encode()] = b"not a stream record"
    asyncio.run(processor.process_batch(as_events(good[:5] + broken + good[5:])))
    assert [json.loads(v)["reason"] for _, v in letters] == ["internal_error"] * 3
    assert [json.loads(v)["source_offset"] for _, v in letters] == [5, 6, 7]
    state = processor.engine.stream_state("acme", "fraud")
    assert state is not None and state.events == 10


def phase_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The clock ``driftwatch_agent_seconds_total`` is timed by, made a fake that moves only
    when the test moves ``[0]``."""
    import types

    import agents.metrics

    now = [0.0]
    fake_time = types.SimpleNamespace(**{**vars(time), "perf_counter": lambda: now[0]})
    monkeypatch.setattr(agents.metrics, "time", fake_time)
    return now


def test_each_phase_of_a_batch_is_counted_as_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """``driftwatch_agent_seconds_total``: the engine's work counts as compute, waiting for the
    forward's delivery as deliver, the table write as write - each its own time only. The
    phases' clock is a fake that moves only inside those three steps, by a different amount
    in each, so each phase must read exactly its own."""
    now = phase_clock(monkeypatch)
    processor, _, _, _, registry = make_processor()
    observe, write_all = processor.engine.observe_many, processor.store.write_all
    forwarded: list[Any] = []

    def observing(*args: Any, **kwargs: Any) -> Any:
        now[0] += 4.0
        return observe(*args, **kwargs)

    async def forward(messages: list[tuple[bytes, bytes, int]]) -> None:
        now[0] += 2.0
        forwarded.extend(messages)

    async def writing(*args: Any, **kwargs: Any) -> None:
        now[0] += 1.0
        await write_all(*args, **kwargs)

    processor.engine.observe_many = observing  # type: ignore[method-assign]
    processor.store.write_all = writing  # type: ignore[method-assign]
    processor.forward = forward
    asyncio.run(processor.process_batch(as_events(list(stream(seed=3, days=1, per_day=20)))))
    assert forwarded, "the batch forwarded its predictions to the join"

    def spent(agent: str, phase: str) -> float | None:
        return registry.get_sample_value(
            "driftwatch_agent_seconds_total", {"agent": agent, "phase": phase}
        )

    assert [spent("drift", p) for p in ("compute", "deliver", "write")] == [4.0, 2.0, 1.0]
    # every agent's phases exist from the start, at 0 until its first batch
    assert spent("join", "write") == spent("outcomes", "deliver") == 0.0
    assert spent("outcomes", "write") is None


def test_the_outcome_router_counts_validation_as_compute_and_its_sends_as_deliver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The router's validation is compute, its dead letters and forward are deliver (the
    dead letters now sent after the loop, not in it): timed by a fake clock that moves only
    in those steps."""
    from agents.joining import OutcomeRouter
    from streams.ingest import OutcomeValidator

    now = phase_clock(monkeypatch)
    letters: list[bytes] = []
    forwarded: list[tuple[bytes, bytes, int]] = []

    async def send(key: bytes, value: bytes) -> None:
        now[0] += 1.0
        letters.append(value)

    async def forward(messages: list[tuple[bytes, bytes, int]]) -> None:
        now[0] += 2.0
        forwarded.extend(messages)

    class TimedValidator(OutcomeValidator):
        def validate(self, raw: bytes | None, now_s: float | None) -> Any:
            now[0] += 0.25
            return super().validate(raw, now_s)

    registry = CollectorRegistry()
    metrics = WorkerMetrics.create(registry)
    router = OutcomeRouter(TimedValidator(max_future_seconds=None), metrics,
                           DeadLetters(send, metrics), forward, "outcomes", 2)  # fmt: skip
    good = {"event_id": "e", "tenant": "acme", "model": "fraud", "timestamp": 0, "label": 1}
    values = [json.dumps(good).encode(), b"{oops", json.dumps({**good, "event_id": "f"}).encode()]
    events = [FakeEvent(FakeMessage("outcomes", 0, i, b"e"), v) for i, v in enumerate(values)]
    asyncio.run(router.process_batch(events))
    assert [json.loads(x)["reason"] for x in letters] == ["malformed_json"]
    assert sum(len(decode_join(v)) for _, v, _ in forwarded) == 2
    spent = [
        registry.get_sample_value(
            "driftwatch_agent_seconds_total", {"agent": "outcomes", "phase": phase}
        )
        for phase in ("compute", "deliver")
    ]
    assert spent == [0.75, 3.0]
