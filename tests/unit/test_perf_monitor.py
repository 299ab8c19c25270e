"""Performance drift on seeded streams: null quiet, concept drift found, floor, replay,
label-free estimates, incidents."""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np
import pytest

from agents.alerts import incident_alert
from schemas import DriftEvent, Severity
from streams.config import DAY, EngineConfig, PerformanceConfig
from streams.keyed_state import MemoryStore
from streams.perf_findings import Finding
from streams.perf_monitor import PerformanceMonitor
from streams.perf_state import PerfStream, PerfWindow, perf_stream_key

T0 = 1_767_225_600.0


class Stream:
    """A seeded fraud-like model: 10 % positives, scores Beta(3, 2) for positives and
    Beta(1, 5) for negatives (PR-AUC about 0.79, accuracy 0.94); a ``flip`` share of labels
    is inverted (concept drift: features and scores unchanged)."""

    def __init__(
        self, seed: int, per_day: int = 1_000, config: PerformanceConfig | None = None
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.per_day = per_day
        self.store = MemoryStore()
        self.mon = PerformanceMonitor(config or PerformanceConfig(), self.store)
        self.events: list[DriftEvent] = []
        self.position = 0
        self.pending: list[tuple[float, float, float, int, str]] = []

    def day(
        self,
        d: int,
        flip: float = 0.0,
        label_rate: float = 1.0,
        delay_days: tuple[float, float] = (1.0, 3.0),
        version: str = "v1",
        score_shift: float = 0.0,
    ) -> None:
        n, rng = self.per_day, self.rng
        ts = np.sort(T0 + d * DAY + rng.random(n) * DAY)
        y = (rng.random(n) < 0.1).astype(int)
        s = np.where(y == 1, rng.beta(3, 2, n), rng.beta(1, 5, n))
        s = np.clip(s + score_shift * (1 - s), 0, 1)
        y = np.where(rng.random(n) < flip, 1 - y, y)
        labelled = rng.random(n) < label_rate
        delay = rng.uniform(*delay_days, n) * DAY
        for i in range(n):
            self._due(ts[i])
            self.position += 1
            self.events += self.mon.observe_prediction(
                "acme", "fraud", version, float(ts[i]), float(s[i]), (0, self.position)
            )
            if labelled[i]:
                heapq.heappush(
                    self.pending,
                    (float(ts[i] + delay[i]), float(ts[i]), float(s[i]), int(y[i]), version),
                )
        self.store.apply(self.mon.flush())

    def _due(self, now: float) -> None:
        while self.pending and self.pending[0][0] <= now:
            at, ts, s, y, version = heapq.heappop(self.pending)
            self.position += 1
            self.events += self.mon.observe_label(
                "acme", "fraud", version, ts, s, y, at, (0, self.position)
            )

    def advance(self, now: float) -> None:
        """Every label due by ``now``, then the clock moved there (final looks)."""
        self._due(now)
        self.events += self.mon.advance("acme", "fraud", now)
        self.store.apply(self.mon.flush())

    def performance(self) -> list[DriftEvent]:
        return [e for e in self.events if not e.extra.get("estimated")]


def test_null_stream_raises_no_performance_drift() -> None:
    s = Stream(seed=1)
    for d in range(75):
        s.day(d)
    assert s.events == []
    looks = s.mon.stats["looks"]
    assert looks > 2 * 40  # it did test: several looks per window once baselines existed


def test_concept_drift_is_found_within_48h_and_confirmed_after_7_windows() -> None:
    s = Stream(seed=2)
    for d in range(75):
        s.day(d, flip=0.5 if d >= 62 else 0.0)
    perf = s.performance()
    assert perf, "concept drift not detected"
    first = min(perf, key=lambda e: e.detected_at)
    onset = T0 + 62 * DAY
    assert first.window_start >= onset
    assert first.detected_at - onset <= 48 * 3600
    assert {e.test for e in perf} >= {"accuracy_drop", "pr_auc_drop"}
    assert len({e.drift_id for e in perf if e.test == "accuracy_drop"}) == 1  # one incident
    # the looks' incident (the sequential test's and the span test's are their own)
    confirmed = [e for e in perf if e.confirmed and e.test in ("accuracy_drop", "pr_auc_drop")]
    assert confirmed and min(e.window_start for e in confirmed) == onset + 6 * DAY
    assert all(e.severity.rank >= Severity.MEDIUM.rank for e in perf)
    # each carries its incident's worst so far (what the retrain policy's approval reads)
    assert all(e.extra.get("incident_severity") in {s.value for s in Severity} for e in perf)
    assert all(e.incident_severity.rank >= e.severity.rank for e in perf)


def test_a_model_always_below_its_objective_is_one_breach_not_daily_drift() -> None:
    """A model whose PR-AUC was always about 0.53 against an objective of 0.70: one breach
    incident (opened, confirmed once it persists), told in notices; no DriftEvent at all, so
    nothing to retrain on. Without an objective (the default) nothing at all."""
    config = PerformanceConfig(objectives="acme:fraud pr_auc>=0.7; other:* accuracy>=0.99")
    s = Stream(seed=3, config=config)
    for d in range(12):
        s.day(d, flip=0.08)  # a poor model from the start, and it never changes
    s.advance(T0 + 22 * DAY)
    notices = [n for n in s.mon.take_notices() if n.kind == "objective"]
    assert not s.events, [e.test for e in s.events]
    assert len({n.drift_id for n in notices}) == 1  # one incident, whatever the windows
    changes = [n.change for n in notices]
    assert changes[0] == "opened" and "confirmed" in changes and "resolved" not in changes
    assert all(n.test == "pr_auc_objective" and n.severity == "CRITICAL" for n in notices)
    assert notices[0].extra["objective"] == 0.7 and notices[0].extra["value"] < 0.7
    assert s.mon.stats["objective_breaches"] >= 7
    alert = incident_alert(notices[0], now=0.0)  # what people get: a breach, not a drift
    assert "below its objective" in alert.title and "drift" not in alert.title
    assert "against an objective of 0.7: not drift" in alert.text
    assert alert.incident is not None and alert.incident["kind"] == "objective"
    default = Stream(seed=3)
    for d in range(12):
        default.day(d, flip=0.08)
    assert not default.events and not default.mon.take_notices()


def test_notices_are_told_after_notices_were_taken() -> None:
    """The worker takes the notices after every batch: what the incidents tell afterwards
    must still reach it (the incident side tells into the monitor's own list; replacing the
    list on a take left it telling into the one already taken, and no breach after the first
    batch became an alert)."""
    config = PerformanceConfig(objectives="acme:fraud pr_auc>=0.7")
    s = Stream(seed=3, config=config)
    taken = []
    for d in range(12):
        s.day(d, flip=0.08)
        taken += [n for n in s.mon.take_notices() if n.kind == "objective"]
    s.advance(T0 + 22 * DAY)
    taken += [n for n in s.mon.take_notices() if n.kind == "objective"]
    changes = [n.change for n in taken]
    assert changes[0] == "opened" and "confirmed" in changes, changes
    assert s.mon.stats["objective_incidents_confirmed"] == changes.count("confirmed") == 1


def test_objective_breach_resolves_when_the_model_is_back_above() -> None:
    """Breached while labels are noisy, resolved by clean windows once they are not; the
    most specific rule wins over a wildcard one and over DRIFTWATCH_PR_AUC_FLOOR."""
    config = PerformanceConfig(objectives="*:* accuracy>=0.99; acme:fraud accuracy>=0.9",
                               pr_auc_floor=0.1)  # fmt: skip
    assert [(o.metric, o.floor) for o in config.objectives_for("acme", "fraud")] == [
        ("accuracy", 0.9), ("pr_auc", 0.1)]  # fmt: skip
    s = Stream(seed=4, config=config)
    for d in range(4):
        s.day(d, flip=0.15)  # accuracy about 0.82
    for d in range(4, 12):
        s.day(d)  # about 0.94
    s.advance(T0 + 22 * DAY)
    notices = [n for n in s.mon.take_notices() if n.kind == "objective"]
    assert notices[0].change == "opened" and notices[-1].change == "resolved"
    assert {n.test for n in notices} == {"accuracy_objective"}
    assert not [e for e in s.events if "objective" in e.test]


def test_a_breach_of_an_objective_no_longer_set_is_resolved() -> None:
    """The rule removed (a restart with new settings): the open breach resolves at the next
    final looks instead of staying open (and paging) for good."""
    s = Stream(seed=3, config=PerformanceConfig(objectives="*:* pr_auc>=0.7"))
    for d in range(6):
        s.day(d, flip=0.08)
    opened = [n for n in s.mon.take_notices() if n.kind == "objective"]
    assert opened and opened[0].change == "opened"
    s.mon = PerformanceMonitor(PerformanceConfig(), s.store)  # restarted without the rule
    for d in range(6, 12):
        s.day(d, flip=0.08)
    s.advance(T0 + 22 * DAY)
    later = [n for n in s.mon.take_notices() if n.kind == "objective"]
    assert [n.change for n in later] == ["resolved"]
    assert later[0].drift_id == opened[0].drift_id


def test_replayed_positions_change_nothing() -> None:
    store = MemoryStore()
    mon = PerformanceMonitor(PerformanceConfig(), store)
    mon.observe_prediction("acme", "fraud", "v1", T0, 0.9, (0, 1))
    mon.observe_label("acme", "fraud", "v1", T0, 0.9, 1, T0 + DAY, (0, 2))
    store.apply(mon.flush())
    before = dict(store.data)
    again = PerformanceMonitor(PerformanceConfig(), store)
    again.observe_prediction("acme", "fraud", "v1", T0, 0.9, (0, 1))
    again.observe_label("acme", "fraud", "v1", T0, 0.9, 1, T0 + DAY, (0, 2))
    store.apply(again.flush())
    assert store.data == before
    win = again.window("acme", "fraud", T0)
    assert win is not None and win.versions["v1"].labelled == 1


def test_estimates_warn_before_labels_on_covariate_shift_and_stay_quiet_otherwise() -> None:
    s = Stream(seed=4)
    for d in range(70):
        # From day 64 scores crowd toward 0.5 (the model is unsure) and labels are slow.
        shifted = d >= 64
        s.day(
            d,
            score_shift=0.25 if shifted else 0.0,
            delay_days=(5.0, 6.0) if shifted else (1.0, 3.0),
        )
    estimated = [e for e in s.events if e.extra.get("estimated")]
    assert estimated, "no label-free warning"
    first = min(estimated, key=lambda e: e.detected_at)
    assert first.window_start == T0 + 64 * DAY
    assert first.detected_at < T0 + 66 * DAY  # the window's labels are 5+ days away
    assert first.test.startswith("estimated_") and first.severity.rank <= Severity.MEDIUM.rank
    assert first.extra["label_rate"] < 0.5
    assert not [e for e in estimated if e.window_start < T0 + 64 * DAY]


def test_a_new_model_version_is_judged_on_its_own() -> None:
    s = Stream(seed=5)
    for d in range(66):
        bad = d >= 62
        s.day(d, version="v2" if bad else "v1", flip=0.4 if bad else 0.0)
    perf = s.performance()
    assert perf and {e.model_version for e in perf} == {"v2"}


@pytest.mark.parametrize("label_rate", [1.0, 0.3])
def test_state_round_trips(label_rate: float) -> None:
    s = Stream(seed=6, per_day=300)
    for d in range(40):
        s.day(d, label_rate=label_rate)
    for key, raw in s.store.data.items():
        if key.startswith('["pw"'):
            assert PerfWindow.from_bytes(raw).to_bytes() == raw
        else:
            assert PerfStream.from_bytes(raw).to_bytes() == raw


def test_an_incident_counts_each_window_once_even_if_a_crash_lost_the_windows_record() -> None:
    """The stream (incidents) and the window (what it raised) are separate keys: replaying a
    look whose window record was lost must not add persistence twice."""
    mon = PerformanceMonitor(PerformanceConfig(), MemoryStore())
    stream = mon._stream("acme", "fraud")
    finding = Finding("accuracy_drop", -5.0, 1e-9, 0.2, Severity.HIGH, {})
    from streams.performance import PerformanceSummary

    for window in (T0, T0 + DAY, T0 + DAY):  # the second window judged again after a crash
        fresh = PerfWindow()  # its "raised" list was never saved
        events = mon._incidents.drift(
            stream, fresh, "realised:v1", "v1", window, [finding], window + DAY, T0, T0,
            PerformanceSummary(), 0, partial=False,
        )  # fmt: skip
    incident = stream.incidents.open["realised:v1"]
    assert incident.persistence == 2 and events[0].persistence == 2
    assert PerfStream.from_bytes(stream.to_bytes()).incidents.counted == stream.incidents.counted


def test_an_entry_for_an_expired_window_does_not_bring_it_back() -> None:
    """A replay after a restart (its offset guard went with the window) or a label weeks late:
    re-creating the window left it in the history for good, since the clock, already past,
    never expired it again (found by the 90-day kill loop)."""
    store = MemoryStore()
    mon = PerformanceMonitor(
        PerformanceConfig(
            engine=EngineConfig(
                retention_days=16.0, baseline_start_days=14.0, baseline_end_days=7.0
            )
        ),
        store,
    )
    for day in range(60):
        for i in range(20):
            mon.observe_prediction(
                "acme", "fraud", "v1", T0 + day * DAY + i * 60, 0.3, (0, day * 20 + i)
            )
    store.apply(mon.flush())
    kept = [row["window_start"] for row in mon.history("acme", "fraud")]
    assert len(kept) < 60  # the oldest windows expired
    mon.observe_prediction("acme", "fraud", "v1", T0 + 60, 0.3, (0, 1))  # replayed: day 0
    mon.observe_label("acme", "fraud", "v1", T0 + 120, 0.3, 1, T0 + 59 * DAY, (1, 5))
    store.apply(mon.flush())
    assert [row["window_start"] for row in mon.history("acme", "fraud")] == kept
    assert mon.stats["expired_window_entries"] == 2


_SPAN_DRIFT = dict(days=30, drifting=range(24, 30), horizon=7.0, objectives="")
"""The span test finds the drift that starts at day 24 in the last write."""
_LOOKS_AND_CLEANS = dict(
    days=34,
    drifting=range(14, 28),
    horizon=1.0,
    objectives="acme:fraud accuracy>=0.6",
    span_windows=0,
    resolve_windows=2,
    min_labels=30,
    min_baseline_windows=1,
)
"""Label-count looks, final looks and an objective: a drift from day 14 to 27, which the
last write finds in its last days and whose incidents its clean final looks resolve."""


def _cut_short_writes(
    days: int = 30,
    drifting: range = range(24, 30),
    horizon: float = 7.0,
    objectives: str = "",
    span_windows: int = 7,
    resolve_windows: int = 3,
    min_labels: int = 100,
    min_baseline_windows: int = 3,
) -> tuple[MemoryStore, MemoryStore, list[MemoryStore]]:
    """(the state before the write, after it whole, after each prefix and the batch read
    again): a worker killed mid-write leaves a prefix of the write's records in the
    changelog (what a restore brings back), and the batch is read again."""
    from streams.keyed_state import Write

    config = PerformanceConfig(
        engine=EngineConfig(
            retention_days=16.0, baseline_start_days=14.0, baseline_end_days=7.0,
            resolve_windows=resolve_windows, min_baseline_windows=min_baseline_windows,
        ),
        label_horizon_days=horizon, objectives=objectives, span_windows=span_windows,
        min_labels=min_labels,
    )  # fmt: skip
    rng = np.random.default_rng(12)
    entries: list[tuple[str, float, float, int, float]] = []
    for day in range(days):
        for i in range(40):
            ts = T0 + day * DAY + i * 2000.0
            score = float(rng.random())
            entries.append(("p", ts, score, 0, ts))
            label = int(rng.random() < (1 - score if day in drifting else score))
            entries.append(("l", ts, score, label, ts + DAY))
    entries.sort(key=lambda e: e[4])
    positions = {e: (0, k) for k, e in enumerate(entries)}
    head, tail = entries[: len(entries) * 4 // 5], entries[len(entries) * 4 // 5 :]

    def applied(
        store: MemoryStore, batch: list[tuple[str, float, float, int, float]]
    ) -> list[Write]:
        mon = PerformanceMonitor(config, store)  # a restart: the store is the truth
        for entry in batch:
            kind, ts, score, label, at = entry
            if kind == "p":
                mon.observe_prediction("acme", "fraud", "v1", ts, score, positions[entry])
            else:
                mon.observe_label("acme", "fraud", "v1", ts, score, label, at, positions[entry])
        return mon.flush()

    base = MemoryStore()
    base.apply(applied(base, head))
    writes = applied(MemoryStore.copy_of(base), tail)
    assert any(w.value is None for w in writes), "no window expired in the write"
    kinds = ["put" if w.value is not None else "delete" for w in writes]
    last = max(k for k, w in enumerate(writes) if w.key.startswith('["ps"'))
    assert "delete" not in kinds[:last] and "put" not in kinds[last + 1 :], "puts, stream, deletes"
    whole = MemoryStore.copy_of(base)
    whole.apply(writes)
    crashed = []
    for cut in range(len(writes) + 1):
        store = MemoryStore.copy_of(base)
        store.apply(writes[:cut])
        store.apply(applied(MemoryStore.copy_of(store), tail))
        crashed.append(store)
    return base, whole, crashed


def test_a_write_cut_short_by_a_crash_leaves_the_windows_of_a_whole_one() -> None:
    """Whatever the prefix, every window (the performance history, its looks, expiry) ends as
    the uninterrupted write left it. With the stream's record first, a prefix could hold the
    stream (its clock past expiries and looks) without its windows' changes: windows never
    expired, looks never made."""
    _, whole, crashed = _cut_short_writes()
    for cut, store in enumerate(crashed):
        windows = {k: v for k, v in store.data.items() if not k.startswith('["ps"')}
        want = {k: v for k, v in whole.data.items() if not k.startswith('["ps"')}
        assert windows == want, f"cut after {cut} records"


def _told_in_the_last_write(store: MemoryStore) -> list[list[object]]:
    """What the windows told the incident book in the stream's last write."""
    stream = PerfStream.from_bytes(store.data[perf_stream_key("acme", "fraud")])
    return [
        told
        for key, raw in store.data.items()
        if key.startswith('["pw"')
        for told in PerfWindow.from_bytes(raw).told
        if told[0] == stream.writes
    ]


@pytest.mark.parametrize("scenario", [_SPAN_DRIFT, _LOOKS_AND_CLEANS], ids=["span", "looks"])
def test_a_write_cut_short_by_a_crash_leaves_the_incidents_of_a_whole_one(
    scenario: dict[str, Any],
) -> None:
    """A prefix can keep a window's record (which remembers the looks it had and the
    incidents it raised, so they are not made again) without its stream's, whose incident
    book then lacks them: the window tells the book again what that write held
    (``PerfIncidents.retell``), and every store ends as the uninterrupted write left it."""
    _, whole, crashed = _cut_short_writes(**scenario)
    told = _told_in_the_last_write(whole)
    assert any(len(t) == 4 for t in told) and (  # the write found drift ...
        scenario is _SPAN_DRIFT or any(len(t) == 2 for t in told)  # ... and judged clean
    ), told
    for cut, store in enumerate(crashed):
        assert store.data == whole.data, f"cut after {cut} records"


def test_the_window_held_for_the_next_prediction_never_outlives_what_it_stands_for() -> None:
    """The window the last prediction went to is held for the next ones (nearly every one
    goes there). A flush renumbers windows and may drop them from the cache (with no cache,
    at once), a forget drops them all, and old windows expire: a monitor that keeps no
    window between flushes, using the held one, must find, tell and store what one that
    keeps every window and never holds one does (the same flushes)."""
    rng = np.random.default_rng(12)
    entries: list[tuple[float, int, float, float, int]] = []
    for d in range(24):
        ts = np.sort(T0 + d * DAY + rng.random(150) * DAY)
        y = (rng.random(150) < 0.3).astype(int)
        flip = 0.45 if d >= 16 else 0.0  # concept drift from day 16
        y_seen = np.where(rng.random(150) < flip, 1 - y, y)
        s = np.where(y == 1, rng.beta(3, 2, 150), rng.beta(1, 5, 150))
        for k in range(150):
            row = (float(ts[k]), float(s[k]), int(y_seen[k]))
            entries.append((row[0], 0, *row))
            entries.append((row[0] + 3 * 3600.0, 1, *row))
    entries.sort()
    runs = []
    for cached, hold in ((0, True), (8192, False)):
        store = MemoryStore()
        engine = EngineConfig(
            cached_windows=cached, baseline_start_days=8, baseline_end_days=1,
            seasonal_period_days=0, retention_days=10,
        )  # fmt: skip
        cfg = PerformanceConfig(engine=engine, label_horizon_days=2)
        mon = PerformanceMonitor(cfg, store)
        events: list[DriftEvent] = []
        held = 0
        for i, (at, kind, made, score, label) in enumerate(entries):
            if kind == 0:
                if not hold:
                    mon._hot = None  # the reference: every prediction finds its window
                held += mon._hot is not None
                events += mon.observe_prediction("acme", "fraud", "v1", at, score, (0, i))
            else:
                events += mon.observe_label("acme", "fraud", "v1", made, score, label, at, (1, i))
            if i % 97 == 96:
                store.apply(mon.flush())
            if i % 1000 == 999:
                mon.forget()
        store.apply(mon.flush())
        runs.append(([e.to_json() for e in events], dict(store.data), mon.stats, held))
    (events_a, data_a, stats_a, held_a), (events_b, data_b, stats_b, held_b) = runs
    assert held_a > 3000 and held_b == 0  # the held window was used, and only there
    assert any(b"accuracy_drop" in e for e in events_a)  # the work happened
    assert stats_a["expired_window_entries"] == 0 and len(data_a) < 24  # windows expired
    assert (events_a, data_a, stats_a) == (events_b, data_b, stats_b)
