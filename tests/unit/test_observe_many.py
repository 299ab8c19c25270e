"""``DriftEngine.observe_many`` against the engine one event at a time as it was before it
(every clock advance through ``_advance``, kinds checked per event): the same drift events
(each at its event), refusals, counters, notices and stored state, on input with everything
a run can meet."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from schemas import DriftEvent, InvalidEvent, PredictionEvent
from streams.config import DAY
from streams.engine import DriftEngine
from streams.keyed_state import MemoryStore, Position, guard
from streams.state import StreamState, stream_key
from tests.unit.test_engine import SHORT, T0, PartitionedStore, stream

Outcome = tuple[DriftEngine, PartitionedStore, list[tuple[int, str]], list[tuple[int, str]]]
"""The engine, its store, the drift events (as JSON) and refusals (reasons), by index."""
Reference = tuple[list[PredictionEvent], list["Position | None"], Outcome]
LOOKS = replace(SHORT, interim_seconds=3600.0, segment_columns="cat")


def mixed_input(seed: int) -> tuple[list[PredictionEvent], list[Position | None]]:
    """Two models' events interleaved in runs of random length, with positions on two
    partitions, a replayed stretch (duplicates), late and too-late events, a type mismatch,
    a feature first seen as null then typed, one that appears mid-stream, a stretch with its
    names in another order, and nulls."""
    rng = random.Random(seed)
    fraud = list(stream(seed, days=24, per_day=240, shift_day=19, categorical=True))
    churn = list(stream(seed + 1, days=24, per_day=60, model="churn", cat_shift_day=18,
                        categorical=True))  # fmt: skip
    for k, event in enumerate(fraud):
        if k % 97 == 5:
            event.features["x1"] = None
        if k >= 2_000:
            event.features["new"] = None if k < 2_050 else float(k % 7)
        if 4_900 <= k < 5_000:  # the same names in another order: a shape of its own
            turned = dict(reversed(event.features.items()))
            event.features.clear()
            event.features.update(turned)
    merged: list[PredictionEvent] = []
    while fraud or churn:
        source = fraud if (rng.random() < 0.8 and fraud) or not churn else churn
        take = rng.randint(1, 40)
        merged += source[:take]
        del source[:take]
    merged.sort(key=lambda e: e.timestamp)
    late = merged[3_000:3_010]
    del merged[3_000:3_010]
    merged[3_800:3_800] = late  # hours late
    old = merged[100]
    merged.insert(6_500, replace(old, event_id="too-old"))  # older than the retained history
    bad = merged[5_200]
    merged.insert(5_201, replace(bad, event_id="bad", features={**bad.features, "x0": "text"}))
    positions: list[Position | None] = [(k % 2, k) for k in range(len(merged))]
    # A crash replays a stretch with its offsets: duplicates, skipped.
    merged[6_000:6_000] = merged[5_700:5_900]
    positions[6_000:6_000] = positions[5_700:5_900]
    positions[7_000] = None  # an event without a position, inside a run
    return merged, positions


def observe_as_before(
    engine: DriftEngine, event: PredictionEvent, position: Position | None
) -> list[DriftEvent]:
    """``DriftEngine.observe`` as it was before ``observe_many`` (66f3633), verbatim but for
    ``self``: the reference shares no code with the runs but the parts both call."""
    cfg = engine.config
    skey = stream_key(event.tenant, event.model)
    stream = engine._stream(skey, event.tenant, event.model)
    kinds, untyped = engine._check_feature_kinds(stream, event)
    window = cfg.window_start(event.timestamp)
    if stream.watermark is not None and window < (
        cfg.window_start(stream.watermark) - cfg.retention_days * DAY
    ):
        raise InvalidEvent("too_late", "event is older than the retained history")
    partition = position[0] if position is not None else stream.partition
    if partition is not None:
        stream.partition = partition
    fresh = guard(stream.offsets, position)
    drifts = (
        engine._advance(stream, event.timestamp, window)
        if stream.watermark is None or event.timestamp > stream.watermark
        else []
    )
    if fresh:
        stream.events += 1
        stream.model_version = event.model_version
        if engine._looks_on:
            engine._looks.count_slot(stream, window, event.timestamp)
        seen = stream.window_events.get(window)
        first = seen is None
        stream.window_events[window] = 1 if seen is None else seen + 1
        if stream.first_window is None or window < stream.first_window:
            stream.first_window = window
        for name, kind in kinds.items():
            stream.features.setdefault(name, kind)
        if first and cfg.multivariate:
            engine._moments.start(stream, window)
        if engine._segments_on:
            engine._segments.count(stream, window, event)
        if stream.last_closed is not None and window <= stream.last_closed:
            stream.late_events += 1
            engine.stats["late_events"] += 1
        engine.stats["events"] += 1
    else:
        engine.stats["duplicates_skipped"] += 1
    engine._streams.mark(skey, stream.partition)
    pending = engine._buffer.pending.setdefault((skey, window), [])
    if untyped:
        engine._buffer.untyped.setdefault((skey, window), []).append((len(pending), untyped))
    pending.append((event, position))
    engine._buffer.values += len(event.features) or 1
    engine._buffer.events += 1
    return drifts


def one_at_a_time(events: list[PredictionEvent], positions: list[Position | None]) -> Outcome:
    store = PartitionedStore()  # a store per partition: where each record goes shows
    engine = DriftEngine(LOOKS, store)
    drifts, refused = [], []
    for k, (event, position) in enumerate(zip(events, positions, strict=True)):
        try:
            drifts += [
                (k, d.to_json().decode()) for d in observe_as_before(engine, event, position)
            ]
        except InvalidEvent as exc:
            refused.append((k, exc.reason))
        if k % 1_500 == 0:
            store.apply(engine.flush())
    store.apply(engine.flush())
    return engine, store, drifts, refused


def in_runs(events: list[PredictionEvent], positions: list[Position | None], size: int) -> Outcome:
    store = PartitionedStore()  # a store per partition: where each record goes shows
    engine = DriftEngine(LOOKS, store)
    drifts, refused = [], []
    start = 0
    while start < len(events):
        # Runs end after events 0, 1,500, ...: flushed where the reference flushes.
        flush_at = -(-start // 1_500) * 1_500  # the next multiple of 1,500 from start
        end = min(start + size, len(events), flush_at + 1)
        done = engine.observe_many(events[start:end], positions[start:end])
        drifts += [(start + k, d.to_json().decode()) for k, d in done.drifts]
        for k, exc in done.refused:
            assert isinstance(exc, InvalidEvent), exc
            refused.append((start + k, exc.reason))
        if (end - 1) % 1_500 == 0:
            store.apply(engine.flush())
        start = end
    store.apply(engine.flush())
    return engine, store, drifts, refused


@pytest.fixture(scope="module")
def reference() -> Reference:
    events, positions = mixed_input(11)
    return events, positions, one_at_a_time(events, positions)


def test_the_reference_meets_everything_the_input_holds(reference: Reference) -> None:
    """The comparison means something: drift found at looks and at closes, each kind of
    refusal, duplicates, late events, untyped nulls and segments all happened."""
    _, _, (engine, _, drifts, refused) = reference
    assert len(drifts) >= 3
    assert {reason for _, reason in refused} == {"too_late", "type_mismatch"}
    stats = engine.stats
    assert stats["duplicates_skipped"] == 200 and stats["late_events"] > 0
    assert stats["untyped_nulls"] > 0 and stats["interim_looks"] > 0
    assert stats["windows_closed"] > 0 and stats["tests"] > 0
    assert stats["multivariate_tests"] > 0 and stats["scan_tests"] > 0
    assert any('"segment":{' in d for _, d in drifts)  # a segment's drift
    assert any('"span_seconds"' in d for _, d in drifts)  # found at a look, by the scan


@pytest.mark.parametrize("size", [1, 7, 64, 1_000, 100_000])
def test_observe_many_does_what_one_at_a_time_does(reference: Reference, size: int) -> None:
    events, positions, (engine, store, drifts, refused) = reference
    got_engine, got_store, got_drifts, got_refused = in_runs(events, positions, size)
    assert got_refused == refused
    assert got_drifts == drifts
    assert got_engine.stats == engine.stats
    assert got_engine.notices == engine.notices  # taken by nobody: all of them, in order
    assert {p: part.data for p, part in got_store.parts.items()} == {
        p: part.data for p, part in store.parts.items()
    }


def test_a_run_with_one_bad_event_keeps_its_neighbours() -> None:
    """A refused event inside a run of one stream is reported by its index; the events
    around it are applied (the run's kinds are checked one by one then)."""
    events = list(stream(3, days=1, per_day=50))
    events[20] = replace(events[20], features={**events[20].features, "x1": "oops"})
    engine = DriftEngine(LOOKS, MemoryStore())
    engine.observe(events[0])  # the stream knows its shape: the run checks it in bulk
    done = engine.observe_many(events[1:])
    assert [(k, type(e).__name__, getattr(e, "reason", None)) for k, e in done.refused] == [
        (19, "InvalidEvent", "type_mismatch")
    ]
    assert engine.stats["events"] == 49


def failing_at(engine: DriftEngine, boom: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """``engine``'s clock advance raises a bug's exception at ``boom``."""
    real = engine._advance

    def advance(stream: StreamState, t: float, window: float) -> list[DriftEvent]:
        if t == boom:
            raise RuntimeError("a bug")
        return real(stream, t, window)

    monkeypatch.setattr(engine, "_advance", advance)
    monkeypatch.setattr(engine, "quiet_advances", False)


def test_a_bug_in_one_event_is_reported_by_observe_many_and_raised_by_observe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = list(stream(4, days=2, per_day=30))
    boom = events[35].timestamp
    engine = DriftEngine(LOOKS, MemoryStore())
    failing_at(engine, boom, monkeypatch)
    done = engine.observe_many(events)
    assert [(k, str(e)) for k, e in done.refused] == [(35, "a bug")]
    assert engine.stats["events"] == 59
    one = DriftEngine(LOOKS, MemoryStore())
    failing_at(one, boom, monkeypatch)
    for event in events[:35]:
        one.observe(event)
    with pytest.raises(RuntimeError, match="a bug"):
        one.observe(events[35])
    assert one.stats["events"] == 35 and boom > T0


def test_a_buffer_with_runs_of_two_shapes_is_transposed_by_each_event_s_names() -> None:
    """Runs of the same names in two orders into one window's buffer: its columns are then
    made by each event's names (a buffer keeps its shape only while every run has it)."""
    engine = DriftEngine(LOOKS, MemoryStore())

    def event(k: int, features: dict[str, float | str | None]) -> PredictionEvent:
        return PredictionEvent(f"e{k}", "acme", "fraud", "v1", T0 + k, features, 0.5)

    engine.observe(event(0, {"a": 1.0, "b": "x"}))  # (new kinds: no known shape yet)
    engine.observe(event(1, {"b": "y", "a": 2.0}))  # each order becomes a known shape
    engine.observe(event(2, {"a": 3.0, "b": "x"}))
    engine.flush()  # the buffer applied: the runs below start a new one
    done = engine.observe_many([event(k, {"a": float(k), "b": "p"}) for k in range(10, 15)])
    done2 = engine.observe_many([event(k, {"b": "q", "a": float(k)}) for k in range(20, 25)])
    assert not done.refused and not done2.refused
    engine.flush()
    a = engine.feature_window("acme", "fraud", T0, "a")
    b = engine.feature_window("acme", "fraud", T0, "b")
    assert a is not None and a.numeric is not None and b is not None and b.categorical is not None
    values = [1, 2, 3, *range(10, 15), *range(20, 25)]
    assert a.count == 13 and a.numeric.mean == pytest.approx(np.mean(values))
    assert b.categorical.counts == {"x": 2, "y": 1, "p": 5, "q": 5}


def test_the_backtest_in_runs_reports_what_runs_of_one_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``run_backtest`` without outcomes feeds the engine ``RUN`` events a call, ending runs
    where it spills: its report (refusals, counts, drift events, notices, state) is that of
    runs of one, with spills and a refused event inside runs."""
    from driftwatch import backtest

    events, _ = mixed_input(5)
    monkeypatch.setattr(backtest, "FLUSH_EVERY", 2_500)
    reports = []
    for run in (1, 700):
        monkeypatch.setattr(backtest, "RUN", run)
        reports.append(backtest.run_backtest(list(events), LOOKS, presorted=False))
    one, many = reports
    # (sorted by event time, the too-old event is in its place: only the mismatch is refused)
    assert one.rejected == many.rejected == {"type_mismatch": 1}
    assert (one.events, one.feature_values) == (many.events, many.feature_values)
    assert one.events == len(events) - 1 and one.drift_events
    assert one.feature_values == sum(len(e.features) for e in events if e.event_id != "bad")
    assert [d.to_json() for d in one.drift_events] == [d.to_json() for d in many.drift_events]
    assert one.notices == many.notices and one.engine_stats == many.engine_stats
    assert one.feature_state is not None and many.feature_state is not None
    assert one.feature_state.data == many.feature_state.data


def test_positions_must_match_the_events() -> None:
    events = list(stream(3, days=1, per_day=4))
    with pytest.raises(ValueError, match="3 positions for 4 events"):
        DriftEngine(LOOKS, MemoryStore()).observe_many(events, [(0, k) for k in range(3)])


def test_a_run_whose_stream_cannot_be_read_is_refused_whole() -> None:
    store = MemoryStore()
    store.data[stream_key("acme", "broken")] = b"not a stream record"
    engine = DriftEngine(LOOKS, store)
    good = list(stream(3, days=1, per_day=6))
    broken = [replace(e, model="broken", event_id=f"b{k}") for k, e in enumerate(good[:2])]
    done = engine.observe_many(good[:3] + broken + good[3:])
    assert [k for k, _ in done.refused] == [3, 4]
    assert engine.stats["events"] == 6
