"""Outcome joins on seeded traffic with late, missing, duplicated and replayed labels."""

from __future__ import annotations

import contextlib
import heapq
import json
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

from driftwatch.simulate import SimulationConfig, generate, generate_outcomes
from schemas import InvalidEvent, OutcomeEvent, PredictionEvent
from streams.config import DAY, PerformanceConfig
from streams.join import (
    DECODED_PER_STORED,
    ForwardedPrediction,
    JoinConfig,
    LabeledPrediction,
    OutcomeJoiner,
    _encode_record,
    _record_head,
    binary_label,
    prediction_key,
)
from streams.keyed_state import MemoryStore, load_json
from streams.perf_monitor import PerformanceMonitor

T0 = 1_767_225_600.0


def prediction(event_id: str, ts: float = T0, score: float = 0.8) -> PredictionEvent:
    return PredictionEvent(event_id, "acme", "fraud", "v1", ts, {"x": 1.0}, score)


def outcome(event_id: str, ts: float, label: int | str = 1, tenant: str = "acme") -> OutcomeEvent:
    return OutcomeEvent(event_id, tenant, "fraud", ts, label)


def test_outcome_before_prediction_waits_and_joins() -> None:
    j = OutcomeJoiner(JoinConfig(), MemoryStore())
    assert j.on_outcome(outcome("e1", T0 + 10)).joined is None
    assert j.stats.pending == 1
    result = j.on_prediction(prediction("e1"), home=3)
    joined = result.joined
    assert isinstance(joined, LabeledPrediction) and joined.label == 1 and result.home == 3
    assert j.stats.pending == 0 and j.stats.joined == 1
    row = joined.to_dict()
    assert row["prediction_timestamp"] < row["outcome_timestamp"] and row["score"] == 0.8


def test_duplicates_expired_and_mismatched_are_rejected_and_never_joined_twice() -> None:
    j = OutcomeJoiner(JoinConfig(retention_days=30), MemoryStore())
    j.on_prediction(prediction("e1"))
    assert j.on_outcome(outcome("e1", T0 + DAY, 1)).joined is not None
    for bad, reason in (
        (lambda: j.on_outcome(outcome("e1", T0 + 2 * DAY, 0)), "duplicate_outcome"),
        (lambda: j.on_prediction(prediction("e1")), "duplicate_prediction"),
    ):
        with pytest.raises(InvalidEvent) as exc:
            bad()
        assert exc.value.reason == reason
    j.on_prediction(prediction("e2"))
    with pytest.raises(InvalidEvent, match="expired"):
        j.on_outcome(outcome("e2", T0 + 31 * DAY))
    j.on_prediction(prediction("e3"))
    with pytest.raises(InvalidEvent, match="mismatched_outcome"):
        j.on_outcome(outcome("e3", T0 + DAY, tenant="globex"))
    with pytest.raises(InvalidEvent, match="bad_value"):
        j.on_outcome(outcome("e3", T0 + DAY, label=7))
    assert j.stats.joined == 1
    assert j.stats.rejected == {
        "duplicate_outcome": 1,
        "duplicate_prediction": 1,
        "expired": 1,
        "mismatched_outcome": 1,
    }


def test_a_replayed_message_is_ignored_not_rejected() -> None:
    """At-least-once: the same source message again (same origin) is a no-op, while a
    different message with the same event_id is a duplicate."""
    store = MemoryStore()
    j = OutcomeJoiner(JoinConfig(), store)
    assert j.on_prediction(prediction("e1"), origin=(2, 10), home=2).new
    assert j.on_outcome(outcome("e1", T0 + 5), origin=(1, 7)).joined is not None
    store.apply(j.flush())
    again = OutcomeJoiner(JoinConfig(), store)
    assert not again.on_prediction(prediction("e1"), origin=(2, 10)).new
    replay = again.on_outcome(outcome("e1", T0 + 5), origin=(1, 7))
    assert not replay.new and replay.joined is None and replay.home == 2
    with pytest.raises(InvalidEvent, match="duplicate_outcome"):
        again.on_outcome(outcome("e1", T0 + 5), origin=(1, 8))
    assert again.stats.replayed == 2 and again.stats.joined == 0


def test_state_survives_a_flush_and_a_new_joiner() -> None:
    store = MemoryStore()
    j = OutcomeJoiner(JoinConfig(), store)
    j.on_prediction(prediction("e1"))
    j.on_outcome(outcome("e2", T0 + 5))
    store.apply(j.flush())
    again = OutcomeJoiner(JoinConfig(), store)
    assert again.on_outcome(outcome("e1", T0 + 60)).joined is not None
    assert again.on_prediction(prediction("e2")).joined is not None
    with pytest.raises(InvalidEvent, match="duplicate_outcome"):
        again.on_outcome(outcome("e1", T0 + 70))


def test_a_stored_prediction_keeps_its_timestamp_exact_and_older_records_read_the_same() -> None:
    """A record keeps a decoded prediction's timestamp as epoch seconds (not formatted on the
    way in, nor parsed on the way out); a record written as earlier versions wrote it, with
    RFC 3339 text, joins to the same pair."""
    ts = T0 + 0.123456  # microseconds: what the text form keeps
    store = MemoryStore()
    j = OutcomeJoiner(JoinConfig(), store)
    j.on_prediction(prediction("e1", ts))
    store.apply(j.flush())
    (key,) = [k for k in store.data if k.startswith('["p"')]
    assert load_json(store.data[key])["prediction"]["timestamp"] == ts
    old = load_json(store.data[key])
    old["prediction"] = prediction("e1", ts).to_dict()  # as written before
    assert isinstance(old["prediction"]["timestamp"], str)
    pairs = []
    for raw in (store.data[key], json.dumps(old).encode()):
        store.data[key] = raw
        pair = OutcomeJoiner(JoinConfig(), store).on_outcome(outcome("e1", T0 + 60)).joined
        assert pair is not None
        pairs.append(pair)
    assert pairs[0] == pairs[1] and pairs[0].prediction == prediction("e1", ts)
    assert pairs[0].to_json() == pairs[1].to_json()
    # Finer than a microsecond (a numeric timestamp on the wire): joined as it came, as a
    # forwarded prediction (the worker's) always was; the text form rounded it.
    fine = T0 - 2e-7
    p = prediction("e2", fine)
    raw = json.dumps(p.to_dict() | {"timestamp": fine}).encode()
    about = ForwardedPrediction("e2", p.tenant, p.model, p.model_version, fine, p.score, raw)
    times = []
    for event in (p, about):
        store = MemoryStore()
        first = OutcomeJoiner(JoinConfig(), store)
        first.on_prediction(event)
        store.apply(first.flush())
        j = OutcomeJoiner(JoinConfig(), store)
        joined = j.on_outcome(outcome("e2", T0 + 60)).joined
        assert joined is not None
        times.append(joined.prediction.timestamp)
    assert times == [fine, fine]


def test_expiry_deletes_old_records_and_gives_up_on_orphan_outcomes() -> None:
    store = MemoryStore()
    j = OutcomeJoiner(JoinConfig(retention_days=30), store, partition=1)
    j.on_prediction(prediction("old", T0))
    j.on_outcome(outcome("orphan", T0 + 3600), origin=(0, 42))
    j.on_prediction(prediction("new", T0 + 20 * DAY))
    store.apply(j.flush())
    assert j.expire() == []  # nothing is 30 days old yet
    j.on_prediction(prediction("later", T0 + 32 * DAY))
    assert j.expire() == []  # outcomes lag: their side's clock holds expiry back
    j.on_outcome(outcome("new", T0 + 32 * DAY))
    gone = j.expire()
    store.apply(j.flush())
    assert [(g.outcome.event_id, g.origin) for g in gone] == [("orphan", (0, 42))]
    live = sorted(k for k, v in store.data.items() if k.startswith('["p"') and b"tomb" not in v)
    assert live == ['["p", "later"]', '["p", "new"]']
    assert j.stats.rejected == {"unknown_prediction": 1} and j.stats.pending == 0
    # the index of the expired day went with it
    assert not [k for k in store.data if k.startswith(f'["x", 1, {int(T0 // DAY)}')]
    # the expired records left small tombstones: the orphan redelivered is a replay, not a
    # new outcome to wait for (and give up on) again; a new outcome for "old" is too late
    assert len(store.data['["p", "old"]']) < 150
    again = OutcomeJoiner(JoinConfig(retention_days=30), store, partition=1)
    assert not again.on_outcome(outcome("orphan", T0 + 3600), origin=(0, 42)).new
    with pytest.raises(InvalidEvent, match="expired"):
        again.on_outcome(outcome("old", T0 + 33 * DAY), origin=(0, 99))
    # ...and go one retention later
    again.on_prediction(prediction("much-later", T0 + 70 * DAY))
    again.on_outcome(outcome("much-later", T0 + 70 * DAY))
    again.expire()
    store.apply(again.flush())
    assert '["p", "old"]' not in store.data and '["p", "orphan"]' not in store.data


def test_a_key_indexed_twice_leaves_a_tombstone_that_knows_its_replays() -> None:
    """A replayed prediction is indexed again (its first index entry may not have been
    saved), so a key can be in its day's index twice. Expiry made it a tombstone at the first
    entry and deleted that tombstone at the second, in one pass: the changelog got only the
    delete, and the joined outcome redelivered after it (a re-read after a crash or a
    rebalance) was taken for a new one and given up as ``unknown_prediction`` (found by the
    join kill loop with rebalances)."""
    store = MemoryStore()
    j = OutcomeJoiner(JoinConfig(retention_days=5), store, partition=1)
    j.on_prediction(prediction("k", T0), origin=(1, 10))
    store.apply(j.flush())
    again = OutcomeJoiner(JoinConfig(retention_days=5), store, partition=1)
    assert not again.on_prediction(prediction("k", T0), origin=(1, 10)).new  # indexed again
    assert again.on_outcome(outcome("k", T0 + DAY), origin=(0, 7)).joined is not None
    again.on_prediction(prediction("later", T0 + 7 * DAY))
    again.on_outcome(outcome("later", T0 + 7 * DAY))
    assert again.expire() == []
    store.apply(again.flush())
    assert b"tomb" in store.data['["p", "k"]']
    replay = OutcomeJoiner(JoinConfig(retention_days=5), store, partition=1)
    assert not replay.on_outcome(outcome("k", T0 + DAY), origin=(0, 7)).new
    assert replay.stats.rejected == {}
    # The tombstone goes one retention later, at its own index entry.
    replay.on_prediction(prediction("much-later", T0 + 14 * DAY))
    replay.on_outcome(outcome("much-later", T0 + 14 * DAY))
    replay.expire()
    store.apply(replay.flush())
    assert '["p", "k"]' not in store.data


def test_a_bounded_expiry_spreads_a_stalled_backlog_over_passes_to_the_same_end() -> None:
    """Outcomes stopped while a backlog was read: when the stall grace passes, all that the
    backlog put in the join is due at once. A worker's pass (``bounded``) expires about
    ``expire_per_pass`` records (plus three per record indexed since its last pass) and goes
    on from there at the next: each write stays the size of a batch's work (one pass of 1.1M
    records a partition blocked the event loop for a minute and grew RSS by a gigabyte), and
    the passes end where one unbounded pass does, with the same outcomes given up."""
    config = JoinConfig(retention_days=1, expire_per_pass=500)
    stores = {"bounded": MemoryStore(), "whole": MemoryStore()}
    joiners = {name: OutcomeJoiner(config, store, partition=0) for name, store in stores.items()}
    given_up: dict[str, list[Any]] = {"bounded": [], "whole": []}
    for name, j in joiners.items():
        for day in range(12):
            for i in range(600):
                j.on_prediction(prediction(f"d{day}-{i}", T0 + day * DAY + i * 60), (0, i))
            if day < 3:  # outcomes of predictions never seen: given up when they expire
                j.on_outcome(outcome(f"lost{day}", T0 + day * DAY + 30), origin=(1, day))
            # Within the grace (wall clock 0) only what the outcomes' clock allows expires.
            given_up[name] += j.expire(0.0, bounded=name == "bounded")
            stores[name].apply(j.flush())
    assert joiners["whole"].stats.expired_records < 3 * 600  # up to the outcomes' day 2
    whole = joiners["whole"]
    gone_whole = given_up["whole"] + whole.expire(10_000.0)  # the grace (600 s) is over
    stores["whole"].apply(whole.flush())
    expired_whole = whole.stats.expired_records
    assert expired_whole >= 7 * 600  # days 0-6 fall behind 3 retentions of the predictions
    bounded = joiners["bounded"]
    gone = given_up["bounded"]
    per_pass: list[int] = []
    while True:
        before = bounded.stats.expired_records
        gone += bounded.expire(10_000.0, bounded=True)
        stores["bounded"].apply(bounded.flush())
        per_pass.append(bounded.stats.expired_records - before)
        if per_pass[-1] == 0:
            break
    assert len(per_pass) > 4 and max(per_pass) <= 500 + 1_000  # a chunk is done whole
    assert [(g.outcome.event_id, g.origin) for g in gone] == [
        (g.outcome.event_id, g.origin) for g in gone_whole
    ] and len(gone) == 3
    assert bounded.stats.expired_records == expired_whole
    assert stores["bounded"].data == stores["whole"].data  # no cursor left in the meta
    # A prediction past the retention whose record a pass has not reached yet is refused
    # all the same: the join compares timestamps.
    late = OutcomeJoiner(config, MemoryStore(), partition=0)
    late.on_prediction(prediction("p", T0))
    with pytest.raises(InvalidEvent, match="expired"):
        late.on_outcome(outcome("p", T0 + 2 * DAY))


def test_expiry_before_any_prediction_expires_nothing() -> None:
    """A partition that has seen outcomes only has no clock yet (-inf): nothing expires, and
    nothing fails (a tombstone's day was worked out from that clock and crashed the join)."""
    j = OutcomeJoiner(JoinConfig(retention_days=5), MemoryStore(), partition=0)
    assert j.expire() == []
    j.on_outcome(outcome("early", T0), origin=(0, 1))
    assert j.expire() == [] and j.stats.pending == 1


def test_performance_history_of_joined_pairs_matches_sklearn() -> None:
    """Late (2-60 h), partial (80 %) labels through the joiner into the monitor: every
    metric of every window agrees with scikit-learn on the same joined rows."""
    cfg = SimulationConfig(
        seed=5,
        tenants=("acme",),
        models=("fraud",),
        days=6,
        events_per_day=800,
        start=T0,
        label_rate=0.8,
        outcome_delay_hours=(2.0, 60.0),
    )
    predictions = list(generate(cfg))
    outcomes = list(generate_outcomes(cfg))
    join_store, perf_store = MemoryStore(), MemoryStore()
    j = OutcomeJoiner(JoinConfig(), join_store)
    mon = PerformanceMonitor(PerformanceConfig(), perf_store)
    merged = heapq.merge(
        ((p.timestamp, 0, p) for p in predictions), ((o.timestamp, 1, o) for o in outcomes)
    )
    rows: list[LabeledPrediction] = []
    for i, (_, _, event) in enumerate(merged):
        if isinstance(event, PredictionEvent):
            got = j.on_prediction(event).joined
            mon.observe_prediction("acme", "fraud", "v1", event.timestamp, event.score, (0, i))
        else:
            assert isinstance(event, OutcomeEvent)
            got = j.on_outcome(event).joined
        if got is not None:
            rows.append(got)
            p = got.prediction
            label = binary_label(got.label)
            mon.observe_label(
                "acme", "fraud", "v1", p.timestamp, p.score, label, got.outcome_timestamp, (0, i)
            )
        if i % 997 == 0:
            join_store.apply(j.flush())
            perf_store.apply(mon.flush())
    join_store.apply(j.flush())
    perf_store.apply(mon.flush())
    assert len(rows) == len(outcomes) and j.stats.pending == 0
    assert len(rows) == pytest.approx(0.8 * len(predictions), rel=0.05)
    history = PerformanceMonitor(PerformanceConfig(), perf_store).history("acme", "fraud")
    assert len(history) == cfg.days
    for day, row in enumerate(history):
        window = T0 + day * DAY
        day_rows = [r for r in rows if window <= r.prediction.timestamp < window + DAY]
        y = np.array([binary_label(r.label) for r in day_rows])
        s = np.array([r.prediction.score for r in day_rows])
        assert row["predictions"] == sum(window <= p.timestamp < window + DAY for p in predictions)
        assert row["labelled"] == len(day_rows)
        assert row["label_rate"] == pytest.approx(len(day_rows) / row["predictions"])
        assert row["accuracy"] == pytest.approx(accuracy_score(y, s >= 0.5))
        win = mon.window("acme", "fraud", window)
        assert win is not None
        summary = win.versions["v1"]
        auc_bound, ap_bound = summary.roc_auc_error_bound(), summary.pr_auc_error_bound()
        assert auc_bound is not None and ap_bound is not None
        assert abs(row["roc_auc"] - roc_auc_score(y, s)) <= auc_bound + 1e-12
        assert abs(row["pr_auc"] - average_precision_score(y, s)) <= ap_bound + 1e-12


def test_a_waiting_outcome_for_another_stream_is_given_up_when_its_prediction_comes() -> None:
    j = OutcomeJoiner(JoinConfig(), MemoryStore())
    j.on_outcome(outcome("e1", T0 + 5, tenant="globex"), origin=(0, 3))
    result = j.on_prediction(prediction("e1"))
    assert result.joined is None and result.dropped is not None
    assert result.dropped.outcome.tenant == "globex" and result.dropped.origin == (0, 3)
    assert j.on_outcome(outcome("e1", T0 + 9)).joined is not None  # the slot stayed open
    assert j.stats.rejected == {"mismatched_outcome": 1} and j.stats.pending == 0


def test_expiry_waits_for_the_slower_side_but_not_forever() -> None:
    """Outcomes lagging behind predictions (a backlog, a restart) must not expire what they
    are about to match; if outcomes stop altogether, state is still bounded."""
    store = MemoryStore()
    j = OutcomeJoiner(JoinConfig(retention_days=5), store)
    j.on_prediction(prediction("p0", T0))
    j.on_outcome(outcome("x", T0 + 3600))
    j.on_prediction(prediction("p1", T0 + 12 * DAY))  # predictions race 12 days ahead
    assert j.expire() == []
    store.apply(j.flush())
    assert '["p", "p0"]' in store.data
    assert j.on_outcome(outcome("p0", T0 + 2 * DAY)).joined is not None  # still matched
    j.on_prediction(prediction("p2", T0 + 21 * DAY))  # outcomes silent for 3 retentions
    j.expire()
    store.apply(j.flush())
    assert b"tomb" in store.data['["p", "p0"]']  # expired: a tombstone now


def test_a_worker_waits_out_a_grace_of_wall_time_before_calling_outcomes_stopped() -> None:
    """Event time cannot tell outcomes that stopped from outcomes on their way: after a
    restart with a backlog, a partition's predictions can be weeks of event time ahead before
    its first outcome is routed in. A worker (``now`` given) expires by the predictions alone
    only once no outcome has come for ``stall_grace_seconds``; an outcome starts it again."""
    store = MemoryStore()
    j = OutcomeJoiner(JoinConfig(retention_days=5, stall_grace_seconds=60), store)
    j.on_prediction(prediction("p0", T0))
    j.on_prediction(prediction("p1", T0 + 25 * DAY))  # no outcome yet, 5 retentions ahead
    assert j.expire(now=1000.0) == [] and j.expire(now=1059.0) == []
    store.apply(j.flush())
    assert b"tomb" not in store.data['["p", "p0"]']
    assert j.on_outcome(outcome("p0", T0 + DAY)).joined is not None  # it came: still joined
    j.on_prediction(prediction("p2", T0 + 30 * DAY))
    j.expire(now=1100.0)  # the outcome started the grace again (the outcomes' clock: day 1)
    store.apply(j.flush())
    assert b"tomb" not in store.data['["p", "p0"]']
    j.expire(now=1161.0)  # a minute with no outcome: stopped, bounded as a backtest is
    store.apply(j.flush())
    assert b"tomb" in store.data['["p", "p0"]']
    assert b"tomb" not in store.data['["p", "p1"]']  # 3 retentions behind day 30: kept


def test_the_grace_ends_once_no_outcome_is_on_its_way_until_one_comes() -> None:
    """A worker that found no outcome on its way (``drained``: all routed, and the partition
    read past them) need not wait out the grace: a label-less stream kept ten minutes of
    predictions, and the worker's memory rose by their later expiry. Not in a pass that an
    outcome reached; and an outcome brings the grace back."""
    store = MemoryStore()
    j = OutcomeJoiner(JoinConfig(retention_days=5, stall_grace_seconds=600), store)
    j.on_prediction(prediction("p0", T0))
    j.on_prediction(prediction("p1", T0 + 25 * DAY))
    j.expire(now=1000.0, drained=True)  # the first pass starts the clock: nothing known yet
    j.on_outcome(outcome("p0", T0 + 60))  # the outcomes' clock stays at day 0
    j.expire(now=1001.0, drained=True)  # an outcome in this pass: not stopped
    store.apply(j.flush())
    assert b"tomb" not in store.data['["p", "p0"]']
    j.expire(now=1002.0)  # no word from the broker: the grace, not yet passed
    store.apply(j.flush())
    assert b"tomb" not in store.data['["p", "p0"]']
    j.expire(now=1003.0, drained=True)  # none since, none on its way: stopped, 598 s early
    store.apply(j.flush())
    assert b"tomb" in store.data['["p", "p0"]']
    assert b"tomb" not in store.data['["p", "p1"]']  # 3 retentions behind day 25: kept
    j.on_prediction(prediction("p2", T0 + 26 * DAY))
    j.on_prediction(prediction("p3", T0 + 50 * DAY))
    j.expire(now=1004.0)  # still stopped without a new word: nothing came
    store.apply(j.flush())
    assert b"tomb" in store.data['["p", "p2"]']
    j.on_outcome(outcome("q", T0 + DAY))  # one came (waiting for its prediction): the grace
    j.on_prediction(prediction("p4", T0 + 51 * DAY))
    j.on_prediction(prediction("p5", T0 + 75 * DAY))
    j.expire(now=1005.0)
    j.expire(now=1006.0)
    store.apply(j.flush())
    assert b"tomb" not in store.data['["p", "p4"]']
    j.expire(now=1007.0, drained=True)  # and a new word ends it again
    store.apply(j.flush())
    assert b"tomb" in store.data['["p", "p4"]']


# ---------------------------------------------------------------- the join's fast paths

_names = st.text(alphabet=st.characters(min_codepoint=ord("a"), max_codepoint=ord("z")),
                 min_size=1, max_size=12)  # fmt: skip
_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=20),
    st.none(),
)
_timestamps = st.one_of(
    st.floats(min_value=0, max_value=32503679999, allow_nan=False),
    st.integers(min_value=0, max_value=32503679999),
    st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(2999, 12, 30), timezones=st.just(UTC)
    ).map(lambda d: d.isoformat().replace("+00:00", "Z")),
)


@settings(max_examples=300, deadline=None)
@given(
    event_id=st.text(min_size=1, max_size=40),
    features=st.dictionaries(_names, _values, max_size=8),
    timestamp=_timestamps,
    score=st.one_of(st.floats(min_value=0, max_value=1), st.sampled_from([0, 1])),
    label=st.one_of(
        st.none(), st.integers(min_value=-(2**70), max_value=2**70), st.text(max_size=5)
    ),
)
def test_trusted_decoding_makes_the_event_the_checked_decoding_makes(
    event_id: str, features: dict[str, Any], timestamp: Any, score: float, label: Any
) -> None:
    """The join decodes forwarded predictions without checking them again: for every event
    the checked path accepts, both must make the same event (ints to floats, timestamps to
    epoch seconds, labels as they are)."""
    data: dict[str, Any] = {
        "event_id": event_id, "tenant": "acme", "model": "fraud", "model_version": "1",
        "timestamp": timestamp, "features": features, "score": score,
    }  # fmt: skip
    if label is not None:
        data["prediction"] = label
    raw = json.dumps(data).encode()
    try:
        checked = PredictionEvent.from_json(raw)
    except InvalidEvent:
        return  # never forwarded to the join
    trusted = PredictionEvent.from_trusted_json(raw)
    assert trusted == checked
    assert [type(v) for v in trusted.features.values()] == [
        type(v) for v in checked.features.values()
    ]
    # The join stores it with to_dict and decodes it again when its outcome comes.
    stored = load_json(_encode_record({"prediction": checked.to_dict()}))["prediction"]
    again, recheck = PredictionEvent.from_trusted_dict(stored), PredictionEvent.from_dict(stored)
    assert again == recheck  # (both the stored timestamp: to the microsecond)
    assert [type(v) for v in again.features.values()] == [
        type(v) for v in recheck.features.values()
    ]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_prediction_keys_are_the_keys_earlier_versions_wrote(event_id: str) -> None:
    assert prediction_key(event_id) == json.dumps(["p", event_id])


@pytest.mark.parametrize(
    "record",
    [
        {"clock": -math.inf, "days": {}},
        {"clock": 3.5, "oclock": -math.inf, "days": {"19000": 3}},
        {"outcome": {"event_id": "e", "label": 2**80}, "oo": [0, 1]},
        {"prediction": {"event_id": "é\u2028", "features": {"x": 1e300}}, "po": [1, 2]},
        {"k": ['["p", "a"]']},
    ],
)
def test_join_records_round_trip_through_their_encoding(record: dict[str, Any]) -> None:
    assert load_json(_encode_record(record)) == record


def _retained_bytes_each(make: Any, n: int = 200) -> tuple[float, int]:
    """Bytes the allocator holds per object for ``n`` kept results of ``make()``, and the
    length of one (tracemalloc sees the allocation, not the object's logical length)."""
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [make() for _ in range(n)]
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return retained / n, len(kept[0])


@pytest.mark.parametrize("what", ["join record", "labeled pair", "envelope item"])
def test_kept_json_holds_its_own_length_not_orjsons_buffer(what: str) -> None:
    # orjson 3.12+ hands back its whole working buffer (>= 4 KiB, 8 KiB here for 500 bytes);
    # kept by the thousand (join state, forwarded envelope items) that was ~20x the memory.
    from streams.ingest import _encode
    from streams.join import LabeledPrediction, _encode_record

    event = PredictionEvent(
        "e-1", "acme", "fraud", "v1", 0.0, {f"f{i}": i * 1.25 for i in range(20)}, 0.9
    )
    make = {
        "join record": lambda: _encode_record({"prediction": event.to_dict(), "home": 0}),
        "labeled pair": lambda: LabeledPrediction(event, 1, 3600.0).to_json(),
        "envelope item": lambda: _encode(event.to_dict(), event),
    }[what]
    each, length = _retained_bytes_each(make)
    assert 300 < length < 1000
    assert each < 1.5 * length + 64, (each, length)


def test_a_write_cut_short_by_a_crash_leaves_the_records_and_clocks_of_a_whole_one() -> None:
    """A worker killed mid-write leaves a prefix of the write's records in the changelog,
    and the batch is read again. Whatever the prefix, every record and both clocks end as the
    uninterrupted write left them (expiry runs on the clocks). The meta record, which holds the
    clocks, goes last; before replayed events moved them too, a prefix that kept their records
    but not the meta left the clocks behind. (The index may list a replayed key twice, which
    expiry handles: ``test_a_key_indexed_twice_leaves_a_tombstone_that_knows_its_replays``.)"""
    rng = np.random.default_rng(3)
    events: list[tuple[str, float, str]] = []
    for day in range(12):
        for i in range(20):
            ts = T0 + day * DAY + i * 4000
            events.append(("p", ts, f"e{day}-{i}"))
            lag = float(rng.choice([0.1, 1.0, 3.0, 4.9, 5.0, 5.5])) * DAY
            events.append(("o", ts + lag, f"e{day}-{i}"))
    events.sort(key=lambda e: e[1])
    positions = {e: (0, k) for k, e in enumerate(events)}
    config = JoinConfig(retention_days=5)

    def applied(store: MemoryStore, batch: list[tuple[str, float, str]]) -> list[Any]:
        joiner = OutcomeJoiner(config, store, partition=0)  # a restart: the store is the truth
        for event in batch:
            kind, ts, event_id = event
            with contextlib.suppress(InvalidEvent):
                if kind == "p":
                    joiner.on_prediction(prediction(event_id, ts), origin=positions[event])
                else:
                    joiner.on_outcome(outcome(event_id, ts), origin=positions[event])
        joiner.expire()
        return joiner.flush()

    def records_and_clocks(store: MemoryStore) -> tuple[dict[str, bytes], float, float]:
        meta = load_json(store.data['["xm", 0]'])
        records = {k: v for k, v in store.data.items() if k.startswith('["p"')}
        return records, meta["clock"], meta["oclock"]

    head, tail = events[: len(events) * 3 // 4], events[len(events) * 3 // 4 :]
    base = MemoryStore()
    base.apply(applied(base, head))
    writes = applied(MemoryStore.copy_of(base), tail)
    assert writes[-1].key == '["xm", 0]' and any(w.value is None for w in writes)
    whole = MemoryStore.copy_of(base)
    whole.apply(writes)
    for cut in range(len(writes) + 1):
        crashed = MemoryStore.copy_of(base)
        crashed.apply(writes[:cut])
        crashed.apply(applied(MemoryStore.copy_of(crashed), tail))
        assert records_and_clocks(crashed) == records_and_clocks(whole), f"cut after {cut}"


def test_a_small_record_cache_joins_the_same_and_stays_within_its_bytes() -> None:
    """The decoded records kept between batches are bounded by their size (a wide model's
    would otherwise take gigabytes); what a bounded cache forgets is read back from the
    store, so the joins, rejections and stored state are those of an unbounded one."""
    cfg = SimulationConfig(
        seed=9, tenants=("acme",), models=("fraud",), days=3, events_per_day=600, start=T0,
        numeric_features=40, categorical_features=10, label_rate=0.7,
        outcome_delay_hours=(0.5, 30.0),
    )  # fmt: skip
    merged = sorted(
        [(p.timestamp, 0, p) for p in generate(cfg)]
        + [(o.timestamp, 1, o) for o in generate_outcomes(cfg)],
        key=lambda x: (x[0], x[1]),
    )
    runs = []
    for mb in (64.0, 0.25):
        store = MemoryStore()
        j = OutcomeJoiner(JoinConfig(cache_mb=mb), store)
        joined, peak = [], 0
        for i, (_, _, event) in enumerate(merged):
            got = (
                j.on_prediction(event, origin=(0, i))
                if isinstance(event, PredictionEvent)
                else j.on_outcome(event, origin=(0, i))
            )
            if got.joined is not None:
                joined.append((got.joined.prediction.event_id, got.joined.label))
            if i % 50 == 49:
                store.apply(j.flush())
                peak = max(peak, j._records.stored_bytes)
        store.apply(j.flush())
        runs.append((joined, dict(store.data), peak, len(j._records)))
    (joined, data, big_peak, big_len), (small_joined, small_data, small_peak, small_len) = runs
    assert len(joined) > 1000
    assert small_joined == joined and small_data == data
    budget = int(0.25 * (1 << 20) / DECODED_PER_STORED)
    assert small_peak <= budget < big_peak  # the bound held, and it was needed
    assert small_len < big_len


def test_a_joiner_that_keeps_nothing_between_flushes_stores_what_one_that_keeps_all_does() -> None:
    """The partition's meta record and the index chunk being filled are held between
    flushes (read on every event). A flush may drop them from the cache (a small one drops
    them at once), and an expiry pass may delete a held chunk's day: what the joiner then
    writes must be what a joiner that never drops anything writes, flush by flush apart."""
    cfg = SimulationConfig(
        seed=4, tenants=("acme",), models=("fraud",), days=9, events_per_day=300, start=T0,
        numeric_features=3, categorical_features=1, label_rate=0.5,
        outcome_delay_hours=(0.5, 40.0),
    )  # fmt: skip
    merged: list[tuple[float, int, PredictionEvent | OutcomeEvent]] = sorted(
        [(p.timestamp, 0, p) for p in generate(cfg)]
        + [(o.timestamp, 1, o) for o in generate_outcomes(cfg)],
        key=lambda x: (x[0], x[1]),
    )
    # A late prediction into each day just expired, indexed in the pass's flush interval.
    late: list[tuple[float, int, PredictionEvent | OutcomeEvent]] = [
        (T0 + d * DAY + 0.5 * DAY, 2, prediction(f"late{d}", T0 + (d - 3) * DAY + 7.0))
        for d in range(4, 9)
    ]
    merged = sorted(merged + late, key=lambda x: (x[0], x[1]))
    runs = []
    for records, every in ((1, 1), (1 << 20, 997)):
        store = MemoryStore()
        j = OutcomeJoiner(JoinConfig(retention_days=2, cached_records=records), store)
        joined, gone, flushes = [], [], 0
        for i, (_, kind, event) in enumerate(merged):
            if kind == 2:  # the pass first, in the same interval as the late prediction
                gone += [g.outcome.event_id for g in j.expire()]
            got = (
                j.on_prediction(event, origin=(0, i))
                if isinstance(event, PredictionEvent)
                else j.on_outcome(event, origin=(0, i))
            )
            if got.joined is not None:
                joined.append(got.joined.prediction.event_id)
            if i % every == every - 1:
                store.apply(j.flush())
                flushes += 1
        gone += [g.outcome.event_id for g in j.expire()]
        store.apply(j.flush())
        runs.append((joined, gone, dict(store.data), j.stats.expired_records, flushes))
    (joined, gone, data, expired, _), (big_joined, big_gone, big_data, big_expired, few) = runs
    assert len(joined) > 500 and expired > 1000 and few < len(merged) / 900
    assert (joined, gone, data, expired) == (big_joined, big_gone, big_data, big_expired)
    # every late prediction was indexed, so it expired (a tombstone, or gone after it)
    lates = [data.get(prediction_key(f"late{d}")) for d in range(4, 9)]
    assert all(v is None or b"tomb" in v for v in lates) and None in lates


def test_expiry_reads_a_record_but_its_prediction_and_older_records_whole() -> None:
    """A record's prediction is its last field, so that expiry reads what a tombstone keeps
    (positions, home, whether an outcome came) without decoding the prediction. Records
    written before, with the prediction first, are decoded whole, as is one whose features
    hold a ``prediction`` key and one whose outcome an earlier version added after the
    prediction. Either way, from the store, the tombstones and the outcomes given up are
    those of a joiner that had every record decoded already."""
    store = MemoryStore()
    j = OutcomeJoiner(JoinConfig(retention_days=2), store)
    named: list[tuple[str, dict[str, float | str | None]]] = [
        ("new", {"x": 1.0}), ("old", {"x": 2.0}), ("odd", {"x": 3.0, "prediction": 0.5}),
        ("mixed", {"x": 4.0}),
    ]  # fmt: skip
    for k, (eid, features) in enumerate(named):
        p = PredictionEvent(eid, "acme", "fraud", "v1", T0 + k, features, 0.3)
        j.on_prediction(p, origin=(0, 10 + k), home=1)
        j.on_outcome(outcome(eid, T0 + 60 + k), origin=(1, 20 + k))
    j.on_prediction(prediction("alone", T0 + 5), origin=(0, 19), home=0)
    j.on_outcome(outcome("orphan", T0 + 90), origin=(1, 24))
    store.apply(j.flush())
    new = load_json(store.data[prediction_key("new")])
    assert list(new)[-1] == "prediction" and new["oo"] == [1, 20]
    assert _record_head(store.data[prediction_key("alone")]) == {
        "home": 0, "po": [0, 19], "prediction": None
    }  # fmt: skip
    cold = MemoryStore()
    cold.data = dict(store.data)
    for eid in ("old", "odd", "mixed"):  # as an earlier version wrote them (compact JSON)
        record = load_json(cold.data[prediction_key(eid)])
        if eid == "mixed":  # written without its outcome, which an earlier version added
            earlier = {k: record[k] for k in ("home", "po", "prediction", "outcome", "oo")}
        else:
            earlier = {"prediction": record.pop("prediction"), **record}
        cold.data[prediction_key(eid)] = json.dumps(earlier, separators=(",", ":")).encode()
        assert _record_head(cold.data[prediction_key(eid)]) is None
    assert b',"prediction":' in cold.data[prediction_key("odd")]  # nested: no decode
    results = []
    for s, joiner in ((store, j), (cold, OutcomeJoiner(JoinConfig(retention_days=2), cold))):
        joiner.on_prediction(prediction("later", T0 + 5 * DAY), origin=(0, 30))
        joiner.on_outcome(outcome("later", T0 + 5 * DAY), origin=(1, 31))
        gone = [g.outcome.event_id for g in joiner.expire()]
        s.apply(joiner.flush())
        tombs = {k: load_json(v) for k, v in s.data.items() if b'"tomb"' in v}
        results.append((gone, tombs, joiner.stats.expired_records))
    assert results[0] == results[1]
    gone, tombs, expired = results[1]
    assert gone == ["orphan"] and expired == 6
    assert tombs[prediction_key("odd")] == {
        "tomb": True, "day": int((T0 + 5 * DAY) // DAY), "po": [0, 12], "oo": [1, 22],
        "home": 1, "had_outcome": True, "had_prediction": True,
    }  # fmt: skip
    assert tombs[prediction_key("alone")]["had_outcome"] is False
    assert tombs[prediction_key("mixed")]["oo"] == [1, 23]


def read_again(store: MemoryStore, j: OutcomeJoiner) -> OutcomeJoiner:
    """The state written, then a new joiner on it (a restart that re-reads what the consumer
    had not committed)."""
    store.apply(j.flush())
    return OutcomeJoiner(j.config, store)


def test_a_waiting_outcome_its_late_prediction_puts_past_the_retention_is_given_up_once() -> None:
    """Found by review: a prediction read after its outcome (out of order) but made more than
    the retention before it took the waiting outcome into its record, and the outcome was
    counted neither joined nor given up: lost without a dead letter. It is given up as
    ``expired`` (what it would be had it come after the prediction), once."""
    store = MemoryStore()
    j = OutcomeJoiner(JoinConfig(retention_days=30), store)
    assert j.on_outcome(outcome("e1", T0 + 40 * DAY), origin=(0, 1)).joined is None
    result = j.on_prediction(prediction("e1"), origin=(0, 5))
    assert result.joined is None and result.dropped is not None
    assert (result.dropped.reason, result.dropped.origin) == ("expired", (0, 1))
    assert j.stats.pending == 0 and j.stats.rejected == {"expired": 1}
    again = read_again(store, j)
    assert again.on_outcome(outcome("e1", T0 + 40 * DAY), origin=(0, 1)).new is False
    replay = again.on_prediction(prediction("e1"), origin=(0, 5))
    assert replay.new is False and replay.dropped is None  # given up once
    with pytest.raises(InvalidEvent, match="duplicate_outcome"):
        again.on_outcome(outcome("e1", T0 + 41 * DAY), origin=(0, 9))


def test_an_outcome_given_up_for_another_stream_is_known_when_read_again() -> None:
    """Found by review: a waiting outcome of another tenant given up when its prediction came
    was refused again (a second dead letter) when re-read after a restart, and again after
    its record expired. Its origin is kept with the record and its tombstone."""
    store = MemoryStore()
    j = OutcomeJoiner(JoinConfig(retention_days=30), store)
    j.on_outcome(outcome("e1", T0 + 5, tenant="globex"), origin=(0, 3))
    dropped = j.on_prediction(prediction("e1"), origin=(0, 7)).dropped
    assert dropped is not None and dropped.reason == "mismatched_outcome"
    again = read_again(store, j)
    assert again.on_outcome(outcome("e1", T0 + 5, tenant="globex"), origin=(0, 3)).new is False
    assert again.on_prediction(prediction("e1"), origin=(0, 7)).new is False
    # the slot stays open for the prediction's own outcome
    assert again.on_outcome(outcome("e1", T0 + 6), origin=(0, 4)).joined is not None
    for k in range(3):  # the clocks move on; e1 expires to a tombstone
        again.on_prediction(prediction(f"x{k}", T0 + 40 * DAY))
        again.on_outcome(outcome(f"x{k}", T0 + 40 * DAY))
    assert again.expire() == []
    later = read_again(store, again)
    assert "tomb" in load_json(store.data[prediction_key("e1")])
    assert later.on_outcome(outcome("e1", T0 + 5, tenant="globex"), origin=(0, 3)).new is False


def test_an_outcome_refused_while_another_waited_is_refused_again_not_joined() -> None:
    """Found by review: with another tenant's outcome waiting, the right one was refused as a
    duplicate; the prediction then gave up the waiting one and opened the slot, and a re-read
    of the batch joined the outcome already dead-lettered. The re-read repeats the refusal."""
    store = MemoryStore()
    j = OutcomeJoiner(JoinConfig(), store)
    j.on_outcome(outcome("e1", T0 + 5, tenant="globex"), origin=(3, 17))
    with pytest.raises(InvalidEvent, match="duplicate_outcome"):
        j.on_outcome(outcome("e1", T0 + 6), origin=(3, 18))
    assert j.on_prediction(prediction("e1"), origin=(0, 5)).dropped is not None
    again = read_again(store, j)
    for message in (
        lambda: again.on_outcome(outcome("e1", T0 + 5, tenant="globex"), origin=(3, 17)),
        lambda: again.on_outcome(outcome("e1", T0 + 6), origin=(3, 18)),
        lambda: again.on_prediction(prediction("e1"), origin=(0, 5)),
    ):
        result = message()
        assert result.new is False and result.joined is None and result.dropped is None
    assert again.stats.joined == 0


def test_a_tombstone_whose_index_entry_a_crash_cut_off_still_goes() -> None:
    """Found by review: an expiry pass's writes (the tombstone, then the index chunks, then the
    partition's meta, in key order) cut after the tombstone left it indexed only at the entry
    it was made from, which skips it (a tombstone goes at its own entry): it stayed for good.
    Met at an older entry, it is indexed again under its own day."""
    cfg = JoinConfig(retention_days=5)
    base = MemoryStore()
    j = OutcomeJoiner(cfg, base)
    j.on_prediction(prediction("old", T0), origin=(0, 1))
    base.apply(j.flush())
    j = OutcomeJoiner(cfg, MemoryStore.copy_of(base))
    j.on_prediction(prediction("now", T0 + 7 * DAY), origin=(0, 2))
    j.on_outcome(outcome("now", T0 + 7 * DAY), origin=(1, 1))
    j.expire()
    writes = j.flush()
    records = [w for w in writes if w.key.startswith('["p"')]
    assert writes[: len(records)] == records and len(writes) > len(records)
    store = MemoryStore.copy_of(base)
    store.apply(records)  # the tombstone written; its index entry and the meta never were
    assert b"tomb" in store.data[prediction_key("old")]
    for day in (7, 20, 30, 40):  # the batch read again, then later traffic
        later = OutcomeJoiner(cfg, store)
        key = f"p{day}" if day > 7 else "now"
        later.on_prediction(prediction(key, T0 + day * DAY), origin=(0, 2 if day == 7 else day))
        later.on_outcome(outcome(key, T0 + day * DAY), origin=(1, 1 if day == 7 else day))
        later.expire()
        store.apply(later.flush())
    assert prediction_key("old") not in store.data


def test_a_prediction_that_comes_after_its_outcome_was_given_up_is_new_not_a_duplicate() -> None:
    """Found by review: an outcome given up (no prediction within the retention) left a
    tombstone, and its prediction, coming for the first time after that, was refused as
    ``duplicate_prediction`` ("was predicted before": false), and so missing from the
    performance history. It is new, with nothing left to join; a second one is a duplicate."""
    store = MemoryStore()
    j = OutcomeJoiner(JoinConfig(retention_days=5), store)
    j.on_outcome(outcome("e1", T0), origin=(1, 1))
    j.on_prediction(prediction("x", T0 + 7 * DAY), origin=(0, 1))
    j.on_outcome(outcome("x", T0 + 7 * DAY), origin=(1, 2))
    assert [g.outcome.event_id for g in j.expire()] == ["e1"]
    again = read_again(store, j)
    first = again.on_prediction(prediction("e1", T0 + 7 * DAY), origin=(0, 2), home=3)
    assert first.new and first.joined is None and first.home == 3
    assert again.stats.rejected == {}
    later = read_again(store, again)
    assert later.on_prediction(prediction("e1", T0 + 7 * DAY), origin=(0, 2)).new is False
    with pytest.raises(InvalidEvent) as exc:
        later.on_prediction(prediction("e1", T0 + 7 * DAY), origin=(0, 9))
    assert exc.value.reason == "duplicate_prediction"
    with pytest.raises(InvalidEvent) as exc:  # its outcome was given up: not joined now
        later.on_outcome(outcome("e1", T0 + 8 * DAY), origin=(1, 5))
    assert exc.value.reason == "duplicate_outcome"
    # A tombstone an earlier version wrote says nothing of a prediction: one without its
    # origin had none (a worker's predictions always come with one).
    store.apply(later.flush())
    old = load_json(store.data[prediction_key("e1")])
    old.pop("had_prediction")
    old["po"] = old["home"] = None
    store.data[prediction_key("e1")] = json.dumps(old).encode()
    assert read_again(store, later).on_prediction(prediction("e1"), origin=(0, 3)).new
