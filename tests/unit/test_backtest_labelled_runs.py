"""The labelled backtest in runs (the engine fed a run's predictions at once, the join and
the performance history item by item) against the backtest as it was before, one item at a
time through all three: the same drift events in the same order, notices in the same order,
refusals, counts, performance history and stored state, with spills inside the input."""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterator
from dataclasses import replace

import pytest

from driftwatch import backtest
from driftwatch.backtest import BacktestReport, _first, _join, _Recorder, _timestamp
from driftwatch.join_keys import JoinKeys
from driftwatch.simulate import DriftSpec, DriftType, generate, generate_outcomes
from schemas import (
    DriftEvent,
    DriftKind,
    InvalidEvent,
    OutcomeEvent,
    PredictionEvent,
    parse_timestamp,
)
from streams.config import DAY, EngineConfig, PerformanceConfig
from streams.engine import DriftEngine, Observed
from streams.join import JoinConfig, OutcomeJoiner
from streams.keyed_state import MemoryStore
from streams.perf_monitor import PerformanceMonitor
from tests.unit.test_backtest_streaming import ENGINE, PERF, SIM

log = logging.getLogger(__name__)


def backtest_as_before(
    events: list[PredictionEvent],
    outcomes: list[OutcomeEvent],
    config: EngineConfig,
    perf_cfg: PerformanceConfig,
    flush_every: int,
    report: BacktestReport | None = None,
) -> BacktestReport:
    """``run_backtest`` with outcomes as it was before the runs (``88d5898``), verbatim but
    for its arguments: one item at a time through the engine, the join and the history."""
    join_keys = JoinKeys.of((e.event_id for e in events), (o.event_id for o in outcomes))
    report = BacktestReport() if report is None else report
    predictions = sorted(events, key=_timestamp)
    labels = iter(sorted(outcomes, key=_timestamp))
    timeline: Iterator[tuple[float, PredictionEvent | OutcomeEvent]] = heapq.merge(
        ((p.timestamp, p) for p in predictions), ((o.timestamp, o) for o in labels), key=_first
    )
    store = MemoryStore()
    engine = DriftEngine(config, store)
    perf_store = MemoryStore()
    join_store = MemoryStore()
    joiner = OutcomeJoiner(JoinConfig(perf_cfg.join_retention_days), join_store)
    monitor = PerformanceMonitor(perf_cfg, perf_store)
    record = _Recorder(report, None, True)
    last_day = -1
    for i, (ts, event) in enumerate(timeline, start=1):
        drifts: list[DriftEvent] = []
        try:
            if isinstance(event, PredictionEvent):
                drifts += engine.observe(event)
                report.events += 1
                report.feature_values += len(event.features)
                if join_keys is None or event.event_id in join_keys:
                    drifts += _join(joiner.on_prediction(event), monitor, report)
                else:  # it can never join: only the join's clock, which expiry reads
                    joiner.advance_clock(ts)
                drifts += monitor.observe_prediction(
                    event.tenant, event.model, event.model_version, ts, event.score
                )
            else:
                drifts += _join(joiner.on_outcome(event), monitor, report)
        except InvalidEvent as exc:
            report.rejected[exc.reason] += 1
        if drifts:
            record(drifts)
        if engine.notices or monitor.notices:
            report.notices += engine.take_notices() + monitor.take_notices()
        if ts // DAY > last_day:
            last_day = int(ts // DAY)
            for gone in joiner.expire():
                report.rejected["unknown_prediction"] += 1
                log.info("outcome %s never found its prediction", gone.outcome.event_id)
        if i % flush_every == 0:  # memory bounded; the windows kept are encoded once, last
            store.apply(engine.spill())
            join_store.apply(joiner.flush())
            perf_store.apply(monitor.flush(keep_cache=True))
    store.apply(engine.flush())
    perf_store.apply(monitor.flush(keep_cache=True))
    for tenant, model in monitor.streams():
        report.performance += monitor.history(tenant, model)
    report.engine_stats = engine.stats + monitor.stats
    report.notices += engine.take_notices() + monitor.take_notices()
    report.feature_state, report.performance_state = store, perf_store
    return report


MIXED = replace(
    SIM,
    drifts=(
        DriftSpec(DriftType.CONCEPT, 15.2, 0.6),
        DriftSpec(DriftType.MEAN_SHIFT, 16.5, 1.5, features=("amount",)),
        DriftSpec(DriftType.MEAN_SHIFT, 17.6, 1.5, features=("sentiment",)),
        DriftSpec(DriftType.MEAN_SHIFT, 19.3, 1.5, features=("velocity_1h",)),
    ),
)
"""Feature drifts starting after the concept drift's performance incidents: the engine's
notices and drift events fall between the performance history's, in the same runs."""


def labelled_input() -> tuple[list[PredictionEvent], list[OutcomeEvent]]:
    """Two models with a feature's drift and a concept drift (performance incidents), 80 %
    labelled; plus a type mismatch, a prediction sent twice (the join refuses the second),
    and outcomes for no prediction (expired)."""
    events = list(generate(MIXED))
    outcomes = list(generate_outcomes(MIXED))
    events.sort(key=lambda e: e.timestamp)
    bad = next(e for e in events[1_500:] if e.model == "fraud")
    events.insert(1_501, replace(bad, event_id="bad", features={**bad.features, "amount": "x"}))
    events.insert(3_100, events[3_050])
    outcomes += [replace(o, event_id=f"never-{o.event_id}") for o in outcomes[40:4_000:900]]
    return events, outcomes


PERF_SHORT = replace(PERF, join_retention_days=2.0)
"""Outcomes come 6-30 hours after their predictions: a short retention expires the
unmatched ones inside the input."""


@pytest.mark.parametrize("run", [1, 7, 700, 900])  # 900: runs cut short to spill
def test_the_labelled_backtest_in_runs_reports_what_one_item_at_a_time_did(
    monkeypatch: pytest.MonkeyPatch, run: int
) -> None:
    events, outcomes = labelled_input()
    monkeypatch.setattr(backtest, "FLUSH_EVERY", 1_400)
    monkeypatch.setattr(backtest, "RUN", run)
    before = backtest_as_before(events, outcomes, ENGINE, PERF_SHORT, 1_400)
    now = backtest.run_backtest(
        list(events), ENGINE, outcomes=list(outcomes), performance=PERF_SHORT
    )

    # The input meets everything: both kinds of drift, both sources of notices interleaved,
    # refusals by the engine and by the join, expired outcomes, and spills.
    kinds = {d.kind for d in before.drift_events}
    assert kinds == {DriftKind.STATISTICAL, DriftKind.PERFORMANCE}
    sources = [n.kind for n in before.notices]
    assert len(set(sources)) == 2 and len(before.notices) > 4
    assert before.rejected["type_mismatch"] == 1 and before.rejected["duplicate_prediction"] == 1
    assert before.rejected["unknown_prediction"] >= 4
    assert before.outcomes_joined > 1_000 and len(events) + len(outcomes) > 3 * 1_400

    assert [d.to_json() for d in now.drift_events] == [d.to_json() for d in before.drift_events]
    assert now.notices == before.notices
    assert now.rejected == before.rejected
    counts = ("events", "feature_values", "outcomes_joined", "drift_events_total")
    assert [getattr(now, c) for c in counts] == [getattr(before, c) for c in counts]
    assert now.performance_drift_events_total == before.performance_drift_events_total
    assert now.performance == before.performance and now.engine_stats == before.engine_stats
    assert now.feature_state is not None and before.feature_state is not None
    assert now.feature_state.data == before.feature_state.data
    assert now.performance_state is not None and before.performance_state is not None
    assert now.performance_state.data == before.performance_state.data
    if run == 700:  # inputs as iterators: the join keeps every prediction (join_keys None)
        kept = backtest.run_backtest(
            iter(sorted(events, key=_timestamp)), ENGINE, performance=PERF_SHORT,
            outcomes=iter(sorted(outcomes, key=_timestamp)), presorted=True,
        )  # fmt: skip
        assert [d.to_json() for d in kept.drift_events] == [
            d.to_json() for d in before.drift_events
        ]
        assert kept.notices == before.notices and kept.rejected == before.rejected


def test_a_bug_in_the_engine_stops_the_labelled_backtest_as_it_did(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug (not a refusal) at a prediction whose advance found drift is raised at it, as
    one item at a time raised it: the items before it reported, its own results not."""
    events, outcomes = labelled_input()
    plain = backtest_as_before(events, outcomes, ENGINE, PERF_SHORT, backtest.FLUSH_EVERY)
    found = next(d for d in plain.drift_events if d.kind is DriftKind.STATISTICAL)
    stamp = parse_timestamp(found.detected_at)
    boom = next(e.event_id for e in sorted(events, key=_timestamp) if e.timestamp == stamp)
    observe, observe_many = DriftEngine.observe, DriftEngine.observe_many

    def failing_one(self: DriftEngine, event: PredictionEvent) -> list[DriftEvent]:
        drifts = observe(self, event)  # its advance done, then the bug
        if event.event_id == boom:
            raise RuntimeError("boom")
        return drifts

    def failing_many(self: DriftEngine, batch: list[PredictionEvent]) -> Observed:
        done = observe_many(self, batch)
        done.refused += [
            (k, RuntimeError("boom")) for k, e in enumerate(batch) if e.event_id == boom
        ]
        done.refused.sort(key=lambda refusal: refusal[0])
        return done

    monkeypatch.setattr(DriftEngine, "observe", failing_one)
    before = BacktestReport()
    with pytest.raises(RuntimeError, match="boom"):
        backtest_as_before(events, outcomes, ENGINE, PERF_SHORT, 1_400, before)
    monkeypatch.setattr(DriftEngine, "observe_many", failing_many)
    monkeypatch.setattr(backtest, "RUN", 500)
    monkeypatch.setattr(backtest, "FLUSH_EVERY", 1_400)
    now = BacktestReport()
    timeline: Iterator[tuple[float, PredictionEvent | OutcomeEvent]] = heapq.merge(
        ((p.timestamp, p) for p in sorted(events, key=_timestamp)),
        ((o.timestamp, o) for o in sorted(outcomes, key=_timestamp)),
        key=_first,
    )
    with pytest.raises(RuntimeError, match="boom"):
        backtest._replay_labelled(
            timeline, DriftEngine(ENGINE, MemoryStore()),
            OutcomeJoiner(JoinConfig(PERF_SHORT.join_retention_days), MemoryStore()),
            PerformanceMonitor(PERF_SHORT, MemoryStore()), None,
            (MemoryStore(), MemoryStore(), MemoryStore()), now, _Recorder(now, None, True),
        )  # fmt: skip
    assert before.drift_events and found.drift_id not in {d.drift_id for d in before.drift_events}
    assert [d.to_json() for d in now.drift_events] == [d.to_json() for d in before.drift_events]
    assert now.notices == before.notices and now.rejected == before.rejected
    assert (now.events, now.outcomes_joined) == (before.events, before.outcomes_joined)


def test_an_item_s_engine_results_go_before_the_performance_history_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Within one prediction, the engine's drift events and notices come first, as when it
    was called first. Made to happen: at the predictions whose clock advance gave the engine
    a notice, the performance history is made to tell one and return a drift event too."""
    events, outcomes = labelled_input()
    monkeypatch.setattr(backtest, "FLUSH_EVERY", 1_400)
    monkeypatch.setattr(backtest, "RUN", 700)
    plain = backtest_as_before(events, outcomes, ENGINE, PERF_SHORT, 1_400)
    engine_told = [n for n in plain.notices if n.kind == "statistical"]
    stamps = {n.event_time for n in engine_told}
    marker_drift = next(d for d in plain.drift_events if d.kind is DriftKind.PERFORMANCE)
    observe_prediction = PerformanceMonitor.observe_prediction

    def also_telling(
        self: PerformanceMonitor, tenant: str, model: str, version: str, ts: float, score: float
    ) -> list[DriftEvent]:
        out = observe_prediction(self, tenant, model, version, ts, score)
        if ts in stamps:
            self.notices.append(replace(engine_told[0], kind="performance", change="marker"))
            out = [*out, replace(marker_drift, drift_id=f"marker-{ts}")]
        return out

    monkeypatch.setattr(PerformanceMonitor, "observe_prediction", also_telling)
    before = backtest_as_before(events, outcomes, ENGINE, PERF_SHORT, 1_400)
    now = backtest.run_backtest(
        list(events), ENGINE, outcomes=list(outcomes), performance=PERF_SHORT
    )
    changes = [n.change for n in before.notices]
    assert changes.count("marker") == len(stamps) >= 3
    assert [changes[k + 1] for k, n in enumerate(before.notices) if n in engine_told] == [
        "marker"
    ] * len(engine_told)  # each right after its engine notice: the same item
    assert now.notices == before.notices
    assert [d.to_json() for d in now.drift_events] == [d.to_json() for d in before.drift_events]
