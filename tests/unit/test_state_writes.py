"""The drift agent's state written every few seconds instead of after every batch
(``DRIFTWATCH_STATE_FLUSH_SECONDS``): the same state and output as writing after every batch,
and the commits held at the first message not written meanwhile."""

from __future__ import annotations

import asyncio
import json
from dataclasses import astuple, replace
from typing import Any

import pytest

from agents.faust_compat import commit_cap
from agents.processor import PredictionProcessor
from schemas import PredictionEvent
from streams.config import EngineConfig
from tests.unit.test_engine import SHORT, stream
from tests.unit.test_processor import as_events, make_processor

BATCH = 1000


@pytest.fixture(autouse=True)
def no_holds() -> Any:
    commit_cap.clear()
    yield
    commit_cap.clear()


def every_batch_and_held(
    config: EngineConfig = SHORT, interval: float = 5.0
) -> tuple[Any, Any, list[float]]:
    """(a processor writing after every batch, one writing every ``interval`` seconds of a
    clock the test moves, that clock)."""
    plain = make_processor(config)
    plain[0].source_topic = "plain"  # its writes release its own topic's holds, not these
    held = make_processor(config)
    mono = [0.0]
    held[0].state_flush_seconds = interval
    # Applied every batch too: the tables then match byte for byte (runs of another size
    # match up to rounding: test_values_applied_in_runs_...).
    held[0].apply_at_values = held[0].apply_at_events = 0
    held[0].monotonic = lambda: mono[0]
    return plain, held, mono


def table(processor: PredictionProcessor) -> dict[bytes, bytes]:
    return dict(processor.store.table)


def events() -> list[PredictionEvent]:
    """23 days with a shift on day 21: windows close, tests run, a drift is found."""
    return list(stream(seed=9, days=23, per_day=300, shift_day=21))


def batches(evs: list[PredictionEvent]) -> list[list[Any]]:
    return [as_events(evs[i : i + BATCH], start_offset=i) for i in range(0, len(evs), BATCH)]


def feed_both(
    plain: PredictionProcessor,
    held: PredictionProcessor,
    evs: list[PredictionEvent],
    mono: list[float],
) -> None:
    """Every batch of ``evs`` to both processors, a second of the held one's clock apart."""
    for batch in batches(evs):
        asyncio.run(plain.process_batch(batch))
        asyncio.run(held.process_batch(batch))
        mono[0] += 1.0


def test_held_state_is_written_at_the_interval_and_is_what_every_batch_writes() -> None:
    (plain, plain_drifts, _, plain_now, _), (held, held_drifts, _, held_now, _), mono = (
        every_batch_and_held()
    )
    evs = events()
    plain_now[0] = held_now[0] = evs[-1].timestamp
    written_at: list[int] = []
    with_drifts: list[int] = []
    for k, batch in enumerate(batches(evs)):
        before, drifts = table(held), len(held_drifts)
        asyncio.run(plain.process_batch(batch))
        asyncio.run(held.process_batch(batch))
        assert held_drifts == plain_drifts  # output is never held back
        if len(held_drifts) > drifts:
            with_drifts.append(k)
        if table(held) != before:
            written_at.append(k)
            assert table(held) == table(plain)  # a write is all of it
            applied = batch[-1].message.offset + 1
            assert commit_cap.holds("predictions") == {0: applied}  # commits may pass it all
        else:  # held: no commit past this batch's first message... or an earlier one
            first_unwritten = (written_at[-1] + 1) * BATCH
            assert commit_cap.holds("predictions") == {0: first_unwritten}
        mono[0] += 1.0  # a batch a second
    # The first batch, then once 5 s had passed, and the batch whose drift events went out
    # (the API and the incident gauges then agree with the alerts).
    assert with_drifts == [6] and written_at == [0, 5, 6]
    assert [v for _, v in held_drifts] == [v for _, v in plain_drifts]
    assert commit_cap.holds("predictions") == {0: len(evs)}


def test_what_the_last_batches_held_is_written_by_a_rebalance_or_a_stop() -> None:
    (plain, _, _, plain_now, _), (held, _, _, held_now, _), mono = every_batch_and_held()
    evs = events()[:5000]
    plain_now[0] = held_now[0] = evs[-1].timestamp
    feed_both(plain, held, evs, mono)
    assert table(held) != table(plain)  # the last four batches are held...
    asyncio.run(held.write_held())  # ...until a rebalance or a clean stop writes them
    assert table(held) == table(plain)
    assert commit_cap.holds("predictions") == {0: len(evs)}


def test_the_quiet_stream_timer_writes_what_is_held_once_the_interval_has_passed() -> None:
    """And not before: a timer writing at every tick (5 s) made an interval set longer
    than it do nothing (a wide model rewrote every open window's state that often)."""
    (plain, _, _, plain_now, _), (held, _, _, held_now, _), mono = every_batch_and_held()
    evs = events()[:2500]
    plain_now[0] = held_now[0] = evs[-1].timestamp
    feed_both(plain, held, evs, [0.0])  # the held one's own clock stands still
    assert commit_cap.holds("predictions") == {0: BATCH}
    before = table(held)
    asyncio.run(held.tick())
    assert table(held) == before and commit_cap.holds("predictions") == {0: BATCH}
    mono[0] = 4.9
    asyncio.run(held.tick())
    assert commit_cap.holds("predictions") == {0: BATCH}
    mono[0] = 5.0
    asyncio.run(held.tick())
    assert commit_cap.holds("predictions") == {0: 2500}
    assert table(held) == table(plain)


def test_held_state_is_written_by_the_check_as_soon_as_the_interval_has_passed() -> None:
    """The 1 s check, not the 5 s quiet-stream timer, bounds how long a quiet stream holds
    its commits: the interval, whatever the timer's phase (it was up to the interval and a
    tick: the watchdog's tests, at an 8 s stall time, found the re-read grown)."""
    (plain, _, _, plain_now, _), (held, _, _, held_now, _), mono = every_batch_and_held()
    evs = events()[:2500]
    plain_now[0] = held_now[0] = evs[-1].timestamp
    feed_both(plain, held, evs, [0.0])
    assert commit_cap.holds("predictions") == {0: BATCH}

    async def check() -> None:
        held.write_in_background()
        if held._write_task is not None:
            await asyncio.gather(held._write_task, return_exceptions=True)

    mono[0] = 4.9
    asyncio.run(check())
    assert held._write_task is None and commit_cap.holds("predictions") == {0: BATCH}
    mono[0] = 5.0
    asyncio.run(check())
    assert commit_cap.holds("predictions") == {0: 2500} and table(held) == table(plain)


def test_a_failed_check_write_fails_the_timer_and_the_commits_never_pass_what_it_lost() -> None:
    """What the failed write held is dropped with the decoded state: reading on and writing
    later would let the commits pass it. The timer fails instead (and the worker with it),
    as a failed tick does."""
    _, (held, _, _, held_now, _), mono = every_batch_and_held()
    evs = events()[:2500]
    held_now[0] = evs[-1].timestamp
    for batch in batches(evs):
        asyncio.run(held.process_batch(batch))
    real_write = held.store.write_all

    async def broken(writes: Any) -> None:
        raise RuntimeError("changelog away")

    async def timer_twice() -> None:
        held.write_in_background()
        assert held._write_task is not None
        await asyncio.gather(held._write_task, return_exceptions=True)
        held.store.write_all = real_write
        with pytest.raises(RuntimeError, match="changelog away"):
            held.write_in_background()

    held.store.write_all = broken
    mono[0] = 5.0
    asyncio.run(timer_twice())
    assert commit_cap.holds("predictions") == {0: BATCH}  # never past what was lost


def test_a_timer_that_finds_drift_writes_at_once() -> None:
    """The drift events go out, and the state recording them is written with them (the API
    and the incident gauges then agree with the alerts), whatever the interval."""
    _, (held, held_drifts, _, held_now, _), _ = every_batch_and_held()
    evs = list(stream(seed=9, days=22, per_day=300, shift_day=21))  # day 21 still open
    held_now[0] = evs[-1].timestamp
    for batch in batches(evs):
        asyncio.run(held.process_batch(batch))
    assert held_drifts == [] and commit_cap.holds("predictions") != {0: len(evs)}
    held_now[0] += 2 * 3600  # quiet for two hours: the timer closes day 21
    asyncio.run(held.tick())
    assert len(held_drifts) == 1
    assert commit_cap.holds("predictions") == {0: len(evs)}


def test_what_a_timer_advanced_without_writing_is_written_at_a_rebalance() -> None:
    """A quiet stream's clock moved by the timer (its window closed) before the interval
    passed: the next write has it, a rebalance's too (dropped with the decoded state, the
    close would wait for the stream's next event on its next owner)."""
    _, (held, held_drifts, _, held_now, _), _ = every_batch_and_held()
    evs = list(stream(seed=9, days=22, per_day=300))  # no shift: the close finds nothing
    held_now[0] = evs[-1].timestamp
    for batch in batches(evs):
        asyncio.run(held.process_batch(batch))
    asyncio.run(held.write_held())
    written = table(held)
    held_now[0] += 2 * 3600  # quiet for two hours: the timer closes day 21
    asyncio.run(held.tick())
    assert held_drifts == [] and table(held) == written  # not due yet
    asyncio.run(held.forget_partitions({0}))
    assert table(held) != written
    closed = [json.loads(v)["lc"] for k, v in table(held).items() if k.startswith(b'["s"')]
    assert closed == [evs[-1].timestamp // 86400 * 86400]


def test_a_rebalance_writes_what_is_held_before_it_forgets() -> None:
    (plain, _, _, _, _), (held, _, _, _, _), _ = every_batch_and_held()
    feed_both(plain, held, events()[:2500], [0.0])
    assert table(held) != table(plain)
    asyncio.run(held.forget_partitions({0}))
    assert table(held) == table(plain)
    assert commit_cap.holds("predictions") == {}
    assert len(held.engine._windows) == 0


def test_a_rebalance_whose_write_fails_forgets_everything_and_keeps_the_holds() -> None:
    """The commits stay held, so whoever reads the partitions next reads what was lost."""
    _, (held, _, _, _, _), _ = every_batch_and_held()
    for batch in batches(events()[:2500]):
        asyncio.run(held.process_batch(batch))

    async def broken(writes: Any) -> None:
        raise RuntimeError("broker away")

    held.store.write_all = broken
    asyncio.run(held.forget_partitions({1}))  # another partition: 0's state goes all the same
    assert commit_cap.holds("predictions") == {0: BATCH}
    assert len(held.engine._windows) == 0 and held.engine.unwritten() == 0


def test_a_failed_batch_keeps_the_commits_held_until_what_it_lost_is_written_again() -> None:
    """A failure drops what the batches before it held in memory: a write before those
    messages are applied again (the timer's) must not let the commits pass them."""
    (plain, _, _, plain_now, _), (held, _, _, held_now, _), _ = every_batch_and_held()
    evs = events()[:4000]
    plain_now[0] = held_now[0] = evs[-1].timestamp
    first, second, third, fourth = batches(evs)
    asyncio.run(held.process_batch(first))  # written
    asyncio.run(held.process_batch(second))  # held in memory
    assert commit_cap.holds("predictions") == {0: 1000}

    async def broken(frames: Any) -> None:
        raise RuntimeError("join-input away")

    held.forward = broken
    with pytest.raises(RuntimeError):
        asyncio.run(held.process_batch(third))
    held.forward = None
    asyncio.run(held.tick())  # writes, but the second batch's state is gone with the failure
    assert commit_cap.holds("predictions") == {0: 1000}
    for batch in (second, third, fourth):  # read again from the hold
        asyncio.run(held.process_batch(batch))
    asyncio.run(held.write_held())
    assert commit_cap.holds("predictions") == {0: 4000}
    for batch in (first, second, third, fourth):
        asyncio.run(plain.process_batch(batch))
    assert table(held) == table(plain)  # nothing lost, nothing counted twice


def test_a_full_cache_is_written_before_the_interval() -> None:
    """What is not written cannot be evicted: half the engine's cache changed is a write."""
    small = replace(SHORT, cached_windows=4)  # 3 features, one window a day: 3 a batch and day
    _, (held, _, _, held_now, _), mono = every_batch_and_held(small)
    evs = events()[:3000]
    held_now[0] = evs[-1].timestamp
    writes = 0
    for batch in batches(evs):
        before = table(held)
        asyncio.run(held.process_batch(batch))
        writes += table(held) != before
    assert writes == 3 and mono[0] == 0.0  # every batch, though no time passed


def test_without_an_interval_every_batch_writes_and_nothing_is_held() -> None:
    (plain, _, _, _, _), _, _ = every_batch_and_held()
    for batch in batches(events()[:2500]):
        before = table(plain)
        asyncio.run(plain.process_batch(batch))
        assert table(plain) != before and commit_cap.HOLDS == {}


def test_table_writes_are_counted_in_records_and_bytes() -> None:
    from prometheus_client import CollectorRegistry

    from agents.metrics import WorkerMetrics
    from agents.processor import TableStore
    from streams.keyed_state import Write

    registry = CollectorRegistry()
    store = TableStore({}, metrics=WorkerMetrics.create(registry), name="drift-state")
    asyncio.run(store.write_all([Write("a", b"12345", 0), Write("b", None, 0)]))
    asyncio.run(store.write_all([]))

    def sample(name: str) -> float | None:
        return registry.get_sample_value(name, {"table": "drift-state"})

    assert store.table == {b"a": b"12345"}
    assert sample("driftwatch_state_records_written_total") == 2  # the delete is a record too
    assert sample("driftwatch_state_bytes_written_total") == 5


def test_values_applied_in_runs_find_the_same_drifts_and_write_the_same_windows() -> None:
    """Between writes the drift agent applies its buffered values in runs of
    ``apply_at_values`` rather than per batch (a live worker's batches are small, and the bulk
    update costs per run). Everything that reads the windows applies the buffer first, so the
    drift events are the same after every batch, and the written tables hold the same keys
    and values, except the score associations' co-moments, merged in other runs: equal up to
    rounding (Chan's rule), as the live worker's and the backtest's are."""
    from streams.importance import NumericAssociation
    from streams.state import FeatureWindow

    (per_batch, batch_drifts, *_), (in_runs, run_drifts, *_), mono = every_batch_and_held()
    per_batch.state_flush_seconds = 5.0
    per_batch.monotonic = in_runs.monotonic
    per_batch.apply_at_values = per_batch.apply_at_events = 0
    in_runs.apply_at_values = 10**9  # only when something reads the windows
    evs = events()
    held_back = 0
    for batch in batches(evs):
        asyncio.run(per_batch.process_batch(batch))
        asyncio.run(in_runs.process_batch(batch))
        mono[0] += 1.0
        assert run_drifts == batch_drifts
        assert per_batch.engine.buffered() == 0
        held_back = max(held_back, in_runs.engine.buffered())
    assert batch_drifts  # the shift on day 21 was found
    assert held_back > 0  # values were held back past the end of a batch
    asyncio.run(per_batch.write_held())
    asyncio.run(in_runs.write_held())
    a, b = table(in_runs), table(per_batch)
    assert set(a) == set(b)
    rounded = 0
    for key, value in a.items():
        if value == b[key]:
            continue
        assert key.startswith(b'["w"'), key
        fa, fb = FeatureWindow.from_bytes(value), FeatureWindow.from_bytes(b[key])
        assert isinstance(fa.assoc, NumericAssociation)  # this stream's features are numbers
        assert isinstance(fb.assoc, NumericAssociation)
        for x, y in zip(astuple(fa.assoc), astuple(fb.assoc), strict=True):
            assert x == pytest.approx(y, rel=1e-12, abs=1e-12)
        fa.assoc = fb.assoc
        assert fa.to_bytes() == fb.to_bytes()
        rounded += 1
    assert rounded  # the runs did differ from the batches


def test_buffered_values_wait_for_enough_events_as_well() -> None:
    """A wide model's values reach ``apply_at_values`` within a few events, and runs of a few
    events cost the bulk update's per-run price per feature: the buffer also waits for
    ``apply_at_events`` events (a write, a look or a close still applies it at once)."""
    processor, *_ = make_processor()
    processor.state_flush_seconds = 3600.0  # no write due within the test
    processor.apply_at_values, processor.apply_at_events = 1, 3
    evs = events()[:4]
    buffered = []
    for k, event in enumerate(evs):
        asyncio.run(processor.process_batch(as_events([event], start_offset=k)))
        buffered.append(processor.engine.buffered())
    width = len(evs[0].features)
    # The first batch is written at once (a first write, its stream new); then the values
    # of two events wait, and the third event's batch applies all three.
    assert buffered == [0, width, 2 * width, 0], buffered
    processor.apply_at_events = 0
    asyncio.run(processor.process_batch(as_events(events()[4:5], start_offset=4)))
    assert processor.engine.buffered() == 0


@pytest.mark.parametrize("timer", ["timed write", "quiet-stream tick"])
def test_a_timer_s_failed_write_is_read_again_before_anything_is_applied_on_it(
    timer: str,
) -> None:
    """A timer's write that fails forgets what the batches since the last write applied, and
    no batch failed to make the machinery read them again: the next batch raises first (so
    it does), and nothing is written meanwhile. Before, that batch was applied on top, and
    the next write (here the stop's) moved the commit holds past the lost messages."""
    from agents.processor import LostState

    (plain, _, _, plain_now, _), (held, _, _, held_now, _), mono = every_batch_and_held()
    evs = events()[:3000]
    plain_now[0] = held_now[0] = evs[-1].timestamp
    first, second, third = batches(evs)
    asyncio.run(held.process_batch(first))  # written
    asyncio.run(held.process_batch(second))  # held in memory
    assert commit_cap.holds("predictions") == {0: 1000}
    write_all = held.store.write_all

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker away")

    held.store.write_all = broken
    mono[0] = 10.0  # the interval has passed: the timer writes
    with pytest.raises(ConnectionError):
        asyncio.run(held.write_if_due() if timer == "timed write" else held.tick())
    held.store.write_all = write_all
    held_now[0] += 7 * 86400  # a week of quiet: a tick would close the stream's windows
    asyncio.run(held.tick())  # the timers leave the engine alone meanwhile
    held_now[0] -= 7 * 86400
    with pytest.raises(LostState):
        asyncio.run(held.process_batch(third))
    asyncio.run(held.write_held())  # a stop now: nothing to write, the holds stay
    assert commit_cap.holds("predictions") == {0: 1000}
    for batch in (second, third):  # read again from the hold, as the batch machinery does
        asyncio.run(held.process_batch(batch))
    asyncio.run(held.write_held())
    assert commit_cap.holds("predictions") == {0: 3000}
    for batch in (first, second, third):
        asyncio.run(plain.process_batch(batch))
    assert table(held) == table(plain)  # nothing lost, nothing counted twice


def test_a_rebalance_s_write_cancelled_midway_leaves_the_holds_for_a_later_write() -> None:
    """A stop that cancels the rebalance's write while its CPU work runs: what that work
    encoded (and took off the engine's list of changes) was never written, so it is
    forgotten, and the stop's own write then moves no hold past it."""
    import time

    (plain, _, _, plain_now, _), (held, _, _, held_now, _), _ = every_batch_and_held()
    evs = events()[:2000]
    plain_now[0] = held_now[0] = evs[-1].timestamp
    first, second = batches(evs)
    flush = held.engine.flush

    def slow_flush(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)  # in the worker thread, while the rebalance is cancelled
        return flush(*args, **kwargs)

    async def run() -> None:
        await held.process_batch(first)  # written
        await held.process_batch(second)  # held in memory
        held.engine.flush = slow_flush
        revoke = asyncio.ensure_future(held.forget_partitions({1}))
        await asyncio.sleep(0.1)
        revoke.cancel()
        with pytest.raises(asyncio.CancelledError):
            await revoke
        held.engine.flush = flush
        await held.write_held()  # the stop's
        assert commit_cap.holds("predictions") == {0: 1000}
        await held.process_batch(second)  # read again from the hold
        await held.write_held()
        assert commit_cap.holds("predictions") == {0: 2000}

    asyncio.run(run())
    for batch in (first, second):
        asyncio.run(plain.process_batch(batch))
    assert table(held) == table(plain)
