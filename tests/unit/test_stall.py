"""The watchdog's stall decision over a fake clock (agents.stall), and its reporting."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP as FaustTP
from prometheus_client import CollectorRegistry

from agents import faust_compat
from agents.metrics import WorkerMetrics
from agents.stall import (
    BATCH,
    COMMIT,
    FETCH,
    LOOP,
    RECOVERY,
    STALL_EXIT_CODE,
    Offsets,
    Stall,
    StallWatch,
)
from agents.watchdog import StallHook, Watchdog

TP = FaustTP("predictions", 0)
OTHER = FaustTP("outcomes", 1)


def run(
    watch: StallWatch,
    timeline: Sequence[tuple[float, Mapping[Any, Offsets]]],
    armed: bool = True,
    busy_since: float | None = None,
) -> list[Stall | None]:
    return [watch.observe(t, armed, parts, busy_since) for t, parts in timeline]


def test_idle_topic_is_never_a_stall() -> None:
    watch = StallWatch(60, 300)
    caught_up = {TP: Offsets(end=500, read=499, committed=500)}
    assert run(watch, [(t, caught_up) for t in range(0, 3600, 5)]) == [None] * 720


def test_empty_partition_after_retention_is_not_waiting() -> None:
    """Never committed, but the log start has reached the end: nothing to do."""
    watch = StallWatch(60, 300)
    gone = {TP: Offsets(end=1000, read=None, committed=None, start=1000)}
    assert watch.observe(0, True, gone) is None
    assert watch.observe(600, True, gone) is None


def test_fetch_stall_when_nothing_is_read() -> None:
    watch = StallWatch(60, 300)
    stuck = {TP: Offsets(end=900, read=399, committed=400)}
    results = run(watch, [(0, stuck), (30, stuck), (59, stuck), (60, stuck)])
    assert results[:3] == [None, None, None]
    stall = results[3]
    assert stall is not None and (stall.kind, stall.partition, stall.seconds) == (FETCH, TP, 60)
    assert "nothing fetched" in stall.describe() and "committed 400" in stall.describe()


def test_commit_stall_when_read_but_never_committed() -> None:
    watch = StallWatch(60, 300)
    timeline = [
        (t, {TP: Offsets(end=900, read=400 + 5 * t, committed=400)}) for t in range(0, 61, 10)
    ]
    results = run(watch, timeline)
    assert results[:-1] == [None] * 6
    assert results[-1] is not None and results[-1].kind == COMMIT
    # read to the end and still nothing committed: a commit stall too
    watch = StallWatch(60, 300)
    at_end = {TP: Offsets(end=900, read=899, committed=400)}
    stall = run(watch, [(0, at_end), (61, at_end)])[-1]
    assert stall is not None and stall.kind == COMMIT and "never committed" in stall.describe()


def test_progress_restarts_the_clock() -> None:
    watch = StallWatch(60, 300)
    timeline = [(t, {TP: Offsets(end=10_000, read=None, committed=t)}) for t in range(0, 600, 50)]
    assert run(watch, timeline) == [None] * 12


def test_one_stuck_partition_among_moving_ones_is_found() -> None:
    watch = StallWatch(60, 300)
    timeline = [
        (t, {OTHER: Offsets(end=10_000, read=t, committed=t), TP: Offsets(900, 399, 400)})
        for t in range(0, 61, 20)
    ]
    stall = run(watch, timeline)[-1]
    assert stall is not None and stall.partition == TP


def test_slow_batch_holds_the_verdict_until_its_limit() -> None:
    watch = StallWatch(60, 300)
    stuck = {TP: Offsets(end=900, read=899, committed=400)}
    assert watch.observe(0, True, stuck, busy_since=0) is None
    assert watch.observe(120, True, stuck, busy_since=0) is None  # slow batch, not a stall
    stall = watch.observe(300, True, stuck, busy_since=0)
    assert stall is not None and stall.kind == BATCH and "300 s" in stall.describe()


def test_mid_restore_and_rebalance_restart_the_clocks() -> None:
    watch = StallWatch(60, 300)
    stuck = {TP: Offsets(end=900, read=399, committed=400)}
    assert watch.observe(0, True, stuck) is None
    assert watch.observe(50, False, {}) is None  # recovery or rebalance: not judged
    assert watch.observe(100, True, stuck) is None  # clocks start again when armed
    assert watch.observe(159, True, stuck) is None
    stall = watch.observe(160, True, stuck)
    assert stall is not None and stall.seconds == 60


def test_read_messages_nothing_will_process_are_a_stall_even_if_the_commit_creeps() -> None:
    """Faust can drop messages it read (a stream queue cleared on resume): nothing will process
    them, while a few others still arrive and move the commit (a failover survivor's partition
    committed 2532 -> 2626 -> 2641 in two minutes with 3419 read). Drained partitions (agent
    queue empty, no batch, no guard holding them) with read messages past the commit are a
    commit stall after ``stall_seconds`` of it, however the commit moves meanwhile."""
    watch = StallWatch(30, 300)
    creeping = [2532, 2540, 2626, 2637, 2641]
    stalls = [
        watch.observe(t, True, {TP: Offsets(end=2521, read=3419, committed=c)}, drained={TP})
        for t, c in zip((0, 10, 20, 29, 31), creeping, strict=True)
    ]
    assert stalls[:4] == [None] * 4
    stall = stalls[4]
    assert stall is not None and stall.kind == COMMIT and stall.partition == TP
    assert stall.seconds == 31 and "read but never committed" in stall.describe()


def test_a_slow_worker_with_messages_queued_or_a_batch_running_is_not_orphaned() -> None:
    watch = StallWatch(30, 300)
    behind = {TP: Offsets(end=None, read=3419, committed=2532)}
    for t in range(0, 300, 10):
        behind = {TP: Offsets(end=None, read=3419, committed=2532 + t)}  # slow, moving
        assert watch.observe(t, True, behind) is None  # messages queued: not drained
    watch = StallWatch(30, 300)
    for t in range(0, 120, 10):
        assert watch.observe(t, True, behind, busy_since=t - 1.0, drained={TP}) is None


def test_an_idle_worker_with_everything_committed_is_never_orphaned() -> None:
    watch = StallWatch(30, 300)
    done = {TP: Offsets(end=3420, read=3419, committed=3420)}
    assert all(watch.observe(t, True, done, drained={TP}) is None for t in range(0, 600, 5))


def test_orphaned_time_restarts_when_the_partition_has_work_in_hand_again() -> None:
    watch = StallWatch(30, 300)

    def at(t: float, drained: set[Any]) -> Stall | None:  # the commit creeps all along
        o = {TP: Offsets(end=None, read=3419, committed=2532 + int(t))}
        return watch.observe(t, True, o, drained=drained)

    assert at(0, {TP}) is None and at(20, {TP}) is None
    assert at(25, set()) is None  # a message queued for it again
    assert at(40, {TP}) is None and at(69, {TP}) is None
    stall = at(70, {TP})
    assert stall is not None and stall.seconds == 30


def test_a_commit_held_for_a_state_write_is_a_stall_only_once_the_write_is_overdue() -> None:
    """CI: a watchdog at an 8 s stall time ended a healthy worker whose commit waited (as it
    may, up to the write interval and the timers) for the drift agent's next state write. A
    partition held so is not judged; once its hold is no longer young (the write overdue),
    the commit's own clock, from its last move, judges it at once."""
    watch = StallWatch(8, 300)
    held = {TP: Offsets(end=1800, read=1799, committed=900)}
    assert all(watch.observe(t, True, held, held={TP}) is None for t in range(0, 12))
    stall = watch.observe(12, True, held)
    assert stall is not None and stall.kind == COMMIT and stall.seconds == 12
    # Drained (the agent has nothing queued, its acks wait above the hold): not orphaned
    # while held; the orphan clock starts when the hold stops excusing it.
    watch = StallWatch(8, 300)

    def at(t: int) -> dict[Any, Offsets]:  # the commit creeps on: no commit-clock stall
        return {TP: Offsets(end=None, read=1799, committed=900 + t)}

    for t in range(0, 20, 2):
        assert watch.observe(t, True, at(t), drained={TP}, held={TP}) is None
    assert watch.observe(20, True, at(20), drained={TP}) is None
    stall = watch.observe(28, True, at(28), drained={TP})
    assert stall is not None and stall.kind == COMMIT and stall.seconds == 8


def test_loop_stall() -> None:
    watch = StallWatch(60, 300)
    assert watch.observe(0, True, {}, loop_seen=0) is None
    assert watch.observe(59, True, {}, loop_seen=0) is None
    stall = watch.observe(61, True, {}, loop_seen=0)
    assert stall is not None and stall.kind == LOOP and "61 s" in stall.describe()


def test_markers_only_make_a_partition_idle_until_it_grows() -> None:
    watch = StallWatch(60, 300)
    markers = {TP: Offsets(end=402, read=399, committed=400)}
    assert run(watch, [(0, markers)]) == [None]
    stall = watch.observe(61, True, markers)
    assert stall is not None
    watch.idle(TP, 402)
    assert watch.observe(62, True, markers) is None
    grown = {TP: Offsets(end=403, read=399, committed=400)}
    assert watch.observe(200, True, grown) is None  # a record arrived: its clock starts now
    assert watch.observe(260, True, grown) is not None


def test_an_under_reported_end_is_unknown_and_probed_every_stall_seconds() -> None:
    """The embedded broker answers ListOffsets(latest) with 1 whatever the log holds."""
    watch = StallWatch(60, 300)
    caught_up = {TP: Offsets(end=1, read=537, committed=538)}
    assert watch.observe(0, True, caught_up) is None
    suspect = watch.observe(60, True, caught_up)
    assert suspect is not None and suspect.kind == FETCH  # nothing read past 538: the probe decides
    watch.checked(TP, 60)  # the probe found nothing past 538
    assert watch.observe(119, True, caught_up) is None
    assert watch.observe(120, True, caught_up) is not None


def test_a_partition_that_leaves_is_forgotten() -> None:
    watch = StallWatch(60, 300)
    watch.observe(0, True, {TP: Offsets(900, 399, 400)})
    watch.observe(30, True, {})
    assert watch.observe(100, True, {TP: Offsets(900, 399, 400)}) is None  # a fresh clock


# ---------------------------------------------------------------------- the edge, faked broker


class FakeRecovery:
    class completed:
        @staticmethod
        def is_set() -> bool:
            return True


class FakeApp:
    rebalancing = False

    class tables:
        recovery = FakeRecovery

    class conf:
        id = "app"

    consumer_generation_id = 3


class FakeLoop:
    def is_closed(self) -> bool:
        return False

    def call_soon_threadsafe(self, fn: Any) -> None:
        fn()


class AtTestTime(Watchdog):
    """A watchdog whose loop (FakeLoop: answers at once) answers at the time the test
    checks, not the machine's: mixed, a CI box up for ~1,000 s read the answers as 198 s old
    and saw the loop stalled."""

    def check(self, now: float | None = None) -> Stall | None:
        if now is not None:
            self.clock = lambda: now
        return super().check(now)


class Sampled(AtTestTime):
    def __init__(self, *args: Any, offsets: dict[Any, Offsets], records: int | None, **kw: Any):
        super().__init__(*args, **kw)
        self.offsets = offsets
        self.records = records

    def sample(self) -> dict[Any, Offsets]:
        return dict(self.offsets)

    def _has_records(self, stall: Stall, now: float) -> bool:
        if self.records is None and stall.partition is not None and stall.offsets is not None:
            self.watch.idle(stall.partition, stall.offsets.end or 0)
            return False
        return True


def watchdog(tmp_path: Path, records: int | None = 1) -> tuple[Sampled, list[int], list[str]]:
    exits: list[int] = []
    reasons: list[str] = []
    dog = Sampled(
        FakeApp(), {}, WorkerMetrics.create(CollectorRegistry()), 60, 300, str(tmp_path),
        reasons.append, exit=exits.append, offsets={TP: Offsets(900, 399, 400)}, records=records,
    )  # fmt: skip
    dog.loop = FakeLoop()  # type: ignore[assignment]
    return dog, exits, reasons


def test_watchdog_reports_exits_and_counts_across_restarts(tmp_path: Path) -> None:
    dog, exits, reasons = watchdog(tmp_path)
    assert dog.check(now=1000) is None
    stall = dog.check(now=1061)
    assert stall is not None and stall.kind == FETCH
    assert exits == [STALL_EXIT_CODE] and reasons == [stall.describe()]
    assert dog.metrics.stalls.labels(FETCH)._value.get() == 1
    assert dog.metrics.worker_ready._value.get() == 0
    logged = [json.loads(line) for line in (tmp_path / "stalls.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in logged] == [FETCH]
    again, _, _ = watchdog(tmp_path)  # the restarted process counts on
    assert again.metrics.stalls.labels(FETCH)._value.get() == 1


def test_watchdog_does_not_exit_for_markers(tmp_path: Path) -> None:
    dog, exits, _ = watchdog(tmp_path, records=None)
    dog.check(now=1000)
    assert dog.check(now=1061) is None and dog.check(now=1200) is None
    assert exits == []


class Probed(AtTestTime):
    """The real confirmation (``_has_records``) with the broker's probe faked."""

    def __init__(self, *args: Any, offsets: dict[Any, Offsets], **kw: Any):
        super().__init__(*args, **kw)
        self.offsets = offsets

    def sample(self) -> dict[Any, Offsets]:
        return dict(self.offsets)


def probed(tmp_path: Path, offsets: Offsets) -> tuple[Probed, list[int]]:
    exits: list[int] = []
    dog = Probed(
        FakeApp(), {}, WorkerMetrics.create(CollectorRegistry()), 30, 300, str(tmp_path),
        lambda _: None, exit=exits.append, offsets={TP: offsets},
    )  # fmt: skip
    dog.loop = FakeLoop()  # type: ignore[assignment]
    return dog, exits


def test_records_the_worker_read_past_a_stuck_commit_are_a_stall_whatever_the_probe_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI: a failover survivor read to 3419, its commit stayed at 2642, the broker said the
    log ended at 2541 and a probe from 2642 found nothing; the stall was never judged. What
    the worker read is a record (markers never reach it): no probe needed."""
    probes: list[int] = []

    def nothing_there(
        config: Any, topic: str, partition: int, offset: int, timeout: float
    ) -> int | None:
        probes.append(offset)
        return None

    monkeypatch.setattr(faust_compat.probes, "first_record_offset", nothing_there)
    dog, exits = probed(tmp_path, Offsets(end=2541, read=3419, committed=2642))
    assert dog.check(now=1000) is None
    stall = dog.check(now=1031)
    assert stall is not None and stall.kind == COMMIT and exits == [STALL_EXIT_CODE]
    assert probes == []
    # Nothing read past the commit and the end under-reported: the probe decides, and its
    # "nothing there" is believed until the next stall time.
    dog, exits = probed(tmp_path, Offsets(end=2541, read=2641, committed=2642))
    assert dog.check(now=1000) is None and dog.check(now=1031) is None
    assert probes == [2642] and exits == []
    # Faust's seek after a recovery sets the read offset to the committed one, nothing read:
    # an idle partition, not a stall (review: a worker restarted after any rebalance).
    dog, exits = probed(tmp_path, Offsets(end=2642, read=2642, committed=2642))
    assert dog.check(now=1000) is None and dog.check(now=1031) is None
    dog, exits = probed(tmp_path, Offsets(end=2541, read=2642, committed=2642))
    assert dog.check(now=1000) is None and dog.check(now=1031) is None and exits == []
    assert probes == [2642, 2642]


def test_watchdog_is_disarmed_while_recovering(tmp_path: Path) -> None:
    dog, exits, _ = watchdog(tmp_path)
    dog.app.rebalancing = True
    assert dog.check(now=1000) is None and dog.check(now=2000) is None
    assert exits == []


def test_watchdog_ends_a_worker_held_at_a_missing_message(tmp_path: Path) -> None:
    """The broker's offsets can look fine (here: everything committed) while the consumer's
    own order guard holds a partition at a message that never comes back; past the stall
    time that is a commit stall too (found in CI: a failover survivor held a partition,
    unready, for two minutes and nobody ended it)."""
    dog, exits, reasons = watchdog(tmp_path)
    dog.offsets = {TP: Offsets(900, 899, 900)}  # nothing waiting, as the broker sees it
    now = [0.0]

    async def probe(topic: str, partition: int, offset: int) -> int | None:
        return offset

    order = faust_compat.guards.SourceOrder(probe, clock=lambda: now[0])
    order.held[TP] = faust_compat.guards._Hold(800, 0.0, None, 0.0)
    before = faust_compat.guards.ORDER
    faust_compat.guards.ORDER = order
    try:
        now[0] = 30.0
        assert dog.check(now=1000) is None
        now[0] = 61.0
        stall = dog.check(now=1031)
    finally:
        faust_compat.guards.ORDER = before
    assert stall is not None and stall.kind == COMMIT and stall.partition == TP
    assert stall.seconds == 61.0 and exits == [STALL_EXIT_CODE] and reasons


def test_watchdog_says_why_waiting_work_is_not_yet_a_stall(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Work waits (a hold, or a commit unmoved for half the stall time) and no stall is judged:
    every EXPLAIN_SECONDS the log says what the watchdog sees, a running batch included (it
    holds the verdict back up to the batch time): a stuck worker is never silent."""
    dog, exits, _ = watchdog(tmp_path)
    now = [0.0]

    async def probe(topic: str, partition: int, offset: int) -> int | None:
        return offset

    order = faust_compat.guards.SourceOrder(probe, clock=lambda: now[0])
    order.held[TP] = faust_compat.guards._Hold(400, 0.0, None, 0.0)
    before, busy = faust_compat.guards.ORDER, object()
    faust_compat.guards.ORDER = order
    # The watchdog's clock is the batches' (time.monotonic), whatever its value (it is the
    # machine's uptime on some): checked at real instants from now on, as if seconds passed.
    base = time.monotonic()
    faust_compat.batches._BUSY[busy] = ("t-predictions", base - 42)
    try:
        with caplog.at_level(logging.WARNING, logger="agents.watchdog"):
            for t in (1000, 1031, 1040, 1047, 1200):
                now[0] = t - 1000.0
                assert dog.check(now=base + t - 1000) is None  # the batch holds it back
    finally:
        faust_compat.guards.ORDER = before
        del faust_compat.batches._BUSY[busy]
    said = [r.getMessage() for r in caplog.records if "no stall is judged" in r.getMessage()]
    # 1000 (a batch running for 42 s, over half the stall time), 1031, 1047 (15 s on), 1200;
    # not 1040 (15 s have not passed)
    assert len(said) == 4, said
    state = json.loads(said[1][said[1].index("{") :])
    assert state["armed"] is True and state["held"] == {f"{TP.topic}[{TP.partition}]": [400, 31.0]}
    assert state["batches_running_seconds"]["t-predictions"] >= 42
    assert state["commit_unmoved_seconds"] == {f"{TP.topic}[{TP.partition}]": 31.0}
    assert exits == []


def test_stall_hook_fires_once_per_data_dir(tmp_path: Path) -> None:
    hook = StallHook("commit:10", str(tmp_path))
    try:
        hook(None, 5)
        assert not faust_compat.guards.IGNORE_ACKS
        hook(None, 5)
        assert faust_compat.guards.IGNORE_ACKS
        faust_compat.guards.IGNORE_ACKS = False
        again = StallHook("commit:10", str(tmp_path))
        again(None, 100)
        assert not faust_compat.guards.IGNORE_ACKS
    finally:
        faust_compat.guards.IGNORE_ACKS = False
    # a partition (and records let through): lose's only, and the count only with a partition
    for wrong in ("sleep:3", "commit:3:1", "lose:3:x", "fetch:x", "lose:3::0", "lose:3:1:x"):
        with pytest.raises(ValueError):
            StallHook(wrong, str(tmp_path))
    assert StallHook("lose:3:1", str(tmp_path / "a")).partition == 1
    assert StallHook("lose:3", str(tmp_path / "b")).partition is None
    assert StallHook("lose:3:1", str(tmp_path / "a")).let_through is None  # the default 100


def test_the_lose_hook_sets_the_partition_and_the_records_let_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivery = faust_compat.eager_delivery
    for name in ("LOSE_NEXT_FETCH", "LOSE_PARTITION", "LOSE_AFTER"):
        monkeypatch.setattr(delivery, name, getattr(delivery, name))
    StallHook("lose:5:1:0", str(tmp_path / "a"))(None, 5)
    assert (delivery.LOSE_NEXT_FETCH, delivery.LOSE_PARTITION, delivery.LOSE_AFTER) == (True, 1, 0)
    monkeypatch.setattr(delivery, "LOSE_AFTER", 100)
    StallHook("lose:5:0", str(tmp_path / "b"))(None, 5)
    assert (delivery.LOSE_PARTITION, delivery.LOSE_AFTER) == (0, 100)


def test_an_outage_is_not_a_stall_and_the_clocks_restart_after_it(tmp_path: Path) -> None:
    dog, exits, _ = watchdog(tmp_path)
    real_sample = dog.sample
    down = {"now": False}

    def sample() -> dict[Any, Offsets]:
        if down["now"]:
            raise TimeoutError("KafkaError{code=_TIMED_OUT}")
        return real_sample()

    dog.sample = sample  # type: ignore[method-assign]
    assert dog.check(now=1000) is None
    assert dog.metrics.broker_reachable._value.get() == 1
    down["now"] = True
    for t in (1030, 1061, 1090):  # the commit stands still while the broker is away
        assert dog.check(now=t) is None
    assert dog.metrics.broker_reachable._value.get() == 0
    down["now"] = False
    assert dog.check(now=1095) is None  # back: judged afresh, not as 95 s without progress
    assert dog.metrics.broker_reachable._value.get() == 1
    assert dog.check(now=1154) is None
    assert dog.check(now=1156) is not None and exits == [STALL_EXIT_CODE]


def test_a_rebalance_or_recovery_that_never_ends_is_a_stall() -> None:
    watch = StallWatch(60, 300, recovery_seconds=600)
    assert watch.observe(0, False, {}, recovering=True) is None
    assert watch.observe(599, False, {}, recovering=True) is None
    stall = watch.observe(600, False, {}, recovering=True)
    assert stall is not None and stall.kind == RECOVERY and "600 s" in stall.describe()
    # one that ends restarts the count
    watch = StallWatch(60, 300, recovery_seconds=600)
    watch.observe(0, False, {}, recovering=True)
    watch.observe(500, True, {})
    assert watch.observe(700, False, {}, recovering=True) is None
    assert watch.observe(1299, False, {}, recovering=True) is None
    # not armed for another reason (the broker away): not a recovery stall
    watch = StallWatch(60, 300, recovery_seconds=600)
    assert watch.observe(0, False, {}) is None and watch.observe(5000, False, {}) is None


def test_the_clock_starts_when_work_begins_to_wait() -> None:
    """An idle partition (everything committed) for an hour, then records arrive: the first
    sample that sees them unprocessed is not an hour-long stall (it was judged one at once:
    found in the fuzz run, a worker started before its input was produced, ended 0.1 s after
    it read its first message). Waiting for ``stall_seconds`` with the commit still is."""
    watch = StallWatch(60, 300)
    idle = {TP: Offsets(end=500, read=499, committed=500)}
    arrived = {TP: Offsets(end=520, read=499, committed=500)}
    assert run(watch, [(t, idle) for t in range(0, 3600, 5)]) == [None] * 720
    assert watch.observe(3605, True, arrived) is None
    assert watch.observe(3660, True, arrived) is None
    stall = watch.observe(3665, True, arrived)
    assert stall is not None and stall.kind == "fetch" and stall.seconds == 60
    # processed and committed in time: the next arrival starts a new clock
    watch = StallWatch(60, 300)
    done = {TP: Offsets(end=520, read=519, committed=520)}
    later = {TP: Offsets(end=540, read=519, committed=520)}
    timeline = [(0.0, idle), (3605.0, arrived), (3610.0, done), (7200.0, later)]
    assert run(watch, timeline) == [None] * 4
    assert watch.observe(7255, True, later) is None
    assert watch.observe(7260, True, later) is not None


def test_a_never_committed_partition_is_judged_from_its_first_records() -> None:
    """A worker started before any input exists (committed None, empty log) and fed minutes
    later: its clock starts with the first records it sees, whatever the kind of stall."""
    watch = StallWatch(30, 300)
    empty = {TP: Offsets(end=0, read=None, committed=None)}
    assert run(watch, [(t, empty) for t in range(0, 150, 5)]) == [None] * 30
    read = {TP: Offsets(end=5303, read=1064, committed=None)}
    assert watch.observe(151, True, read) is None
    stall = watch.observe(181, True, read)
    assert stall is not None and stall.kind == "commit" and stall.seconds == 30


def test_known_work_starts_the_clock_where_the_end_is_under_reported() -> None:
    """On the embedded broker an idle, fully committed partition reads as waiting (its end
    under-reported, so unknown) and is probed every stall time; records that arrive between
    two looks are known work from the first look that sees them, and their clock starts
    there, not at the last probe (review: it judged a worker 'read but never committed for
    60 s' at the first look after its first records)."""
    watch = StallWatch(60, 300)
    idle = {TP: Offsets(end=499, read=499, committed=500)}
    for t in range(0, 180, 5):
        if watch.observe(t, True, idle) is not None:
            watch.checked(TP, t)  # the probe found nothing: look again a stall time later
    arrived = {TP: Offsets(end=510, read=505, committed=500)}
    assert watch.observe(180, True, arrived) is None
    assert watch.observe(235, True, arrived) is None
    stall = watch.observe(240, True, arrived)
    assert stall is not None and stall.kind == "commit" and stall.seconds == 60


def test_the_watchdog_excuses_a_commit_held_for_a_state_write_that_is_not_overdue(
    tmp_path: Path,
) -> None:
    """The drift agent's commit holds (``commit_cap``) younger than the grace excuse a commit
    that has not moved; a hold older than it (the writes stopped) does not, nor does a hold a
    write has caught up with."""
    dog, exits, _ = watchdog(tmp_path)
    dog.hold_grace_seconds = 24.0
    dog.offsets = {TP: Offsets(end=1800, read=1799, committed=400)}
    key = (TP.topic, TP.partition)
    try:
        faust_compat.commit_cap.hold(*key, 400)
        assert dog.held() == {key}
        assert dog.check(now=1000) is None and dog.check(now=1061) is None and exits == []
        faust_compat.commit_cap._HELD_SINCE[key] = faust_compat.commit_cap.clock() - 25.0
        assert dog.held() == set()
        stall = dog.check(now=1062)
        assert stall is not None and stall.kind == COMMIT and exits == [STALL_EXIT_CODE]
        faust_compat.commit_cap.hold(*key, 400)
        faust_compat.commit_cap.advance(TP.topic, {TP.partition: 1800})
        assert dog.held() == set()  # written: nothing excuses the commit any more
    finally:
        faust_compat.commit_cap.clear()
