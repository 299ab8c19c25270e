"""Stored state: bounded size, exact round trips, order-independent sub-day samples."""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import recent_slots
from streams.categorical_summary import CategoricalSummary
from streams.incidents import Incident, IncidentBook
from streams.recent_slots import (
    RECENT_SLOTS,
    SLOT_SAMPLE,
    FirstSample,
    Picks,
    RecentSlots,
    event_hash,
    slot_runs,
)
from streams.slot_series import SlotSpan
from streams.state import FeatureWindow, StreamState, window_key


def full_window(n: int, seed: int = 0) -> FeatureWindow:
    rng = np.random.default_rng(seed)
    fw = FeatureWindow.new("numeric", recent=True)
    values = rng.lognormal(3, 1, n)
    for i, v in enumerate(values):
        fw.apply(
            float(v) if i % 97 else None, (3, i), slot=i * RECENT_SLOTS // n, h=event_hash(f"e{i}")
        )
    return fw


def test_feature_window_stays_under_48_kib_at_any_volume() -> None:
    for n in (100, 6_208, 10_000, 300_000):  # 6,208: the longest tail (4,095 values)
        fw = full_window(n)
        raw = fw.to_bytes()
        assert len(raw) < 48 * 1024, (n, len(raw))
        if n == 6_208:
            assert fw.numeric is not None and fw.numeric.has_tail and len(raw) > 47 * 1024
        back = FeatureWindow.from_bytes(raw)
        assert back.count == fw.count and back.missing == fw.missing
        assert back.offsets == {3: n - 1}
        assert back.recent is not None and fw.recent is not None
        assert back.recent.samples == fw.recent.samples and back.recent.ids == fw.recent.ids
        assert back.to_bytes() == raw
    closed = full_window(10_000)
    count, missing, p = closed.count, closed.missing, np.linspace(0, 200, 9)
    assert closed.numeric is not None and closed.numeric.has_tail
    cdf, error = closed.numeric.cdf(p), closed.numeric.cdf_error
    assert closed.close() and closed.recent is None  # samples dropped
    assert not closed.numeric.has_tail  # the tail folded into the buckets
    assert len(closed.to_bytes()) < 10 * 1024  # the buckets alone
    assert (closed.count, closed.missing) == (count, missing)
    assert np.all(np.abs(closed.numeric.cdf(p) - cdf) <= closed.numeric.cdf_error + error)
    exact = full_window(2_000)  # a window that never left exact mode keeps its values
    assert exact.close() and exact.numeric is not None and exact.numeric.is_exact
    assert len(exact.to_bytes()) < 17 * 1024


def test_recent_sample_does_not_depend_on_arrival_order() -> None:
    items = [(f"e{i}", float(i)) for i in range(1_000)]
    a, b = RecentSlots(), RecentSlots()
    for eid, v in items:
        a.add(5, event_hash(eid), v)
    rng = np.random.default_rng(1)
    for j in rng.permutation(len(items)):
        eid, v = items[j]
        b.add(5, event_hash(eid), v)
    assert sorted(a.samples[5 % RECENT_SLOTS]) == sorted(b.samples[5 % RECENT_SLOTS])
    assert len(a.span(5, 1) or []) == SLOT_SAMPLE
    # The sample is uniform: its mean is close to the population's.
    assert abs(np.mean([float(v) for v in a.span(5, 1) or []]) - 499.5) < 80  # type: ignore[arg-type]
    # Spans need every slot they cover; slots without traffic count as empty.
    assert a.span(5, 2) == a.span(5, 1)
    assert a.span(7, 4) == a.span(5, 1)
    a.add(5 + RECENT_SLOTS, 1, 0.0)  # the ring moved on: slot 5 is gone
    assert a.span(5, 1) is None


def test_categorical_window_round_trip() -> None:
    fw = FeatureWindow.new("categorical", recent=True)
    for i in range(500):
        fw.apply(["a", "b", None][i % 3], None, slot=i // 100, h=event_hash(str(i)))
    back = FeatureWindow.from_bytes(fw.to_bytes())
    assert back.categorical is not None and back.categorical.counts == {"a": 167, "b": 167}
    assert back.recent is not None and back.recent.span(4, 5) == fw.recent.span(4, 5)  # type: ignore[union-attr]


def test_stream_state_and_incidents_round_trip() -> None:
    s = StreamState(
        "t",
        "m",
        partition=1,
        watermark=5.0,
        last_closed=0.0,
        first_window=0.0,
        model_version="v",
        features={"x": "numeric"},
        window_events={0.0: 3},
        events=3,
        late_events=1,
        offsets={1: 9},
        interim_window=0.0,
        interim_look=2,
    )
    assert StreamState.from_bytes(s.to_bytes()) == s
    book = IncidentBook(
        open={"x": Incident("id", 0.0, 3, 1, False, "HIGH")}, last_window={"x": 0.0}
    )
    s.incidents = book
    assert StreamState.from_bytes(s.to_bytes()).incidents == book


def test_recent_slots_encoding_cache_gives_the_bytes_of_a_fresh_encoding() -> None:
    """A flush re-encodes only the ring entries that changed; the bytes must be those of
    encoding every entry afresh, after each kind of change (add, add_many, a new slot)."""
    rng = np.random.default_rng(9)
    for numeric in (True, False):
        cached = RecentSlots()
        for step in range(40):
            slot = step // 3
            values: list[float | str | None] = [
                None if k % 11 == 0 else (float(v) if numeric else f"c{int(v * 9)}")
                for k, v in enumerate(rng.random(int(rng.integers(1, 90))))
            ]
            hashes = [int(h) for h in rng.integers(0, 2**32, len(values))]
            if step % 2:
                cached.add_many([slot] * len(values), hashes, values)
            else:
                for h, v in zip(hashes, values, strict=True):
                    cached.add(slot, h, v)
            raw = cached.to_bytes(numeric)  # fills the cache; the next step changes an entry
            fresh = RecentSlots(ids=list(cached.ids), samples=[list(s) for s in cached.samples])
            assert raw == fresh.to_bytes(numeric), (numeric, step)
            assert RecentSlots.from_bytes(raw, numeric).samples == cached.samples


def test_categorical_spans_counted_per_entry_are_the_spans_counted_afresh() -> None:
    """A categorical span's summary is built from each ring entry's cached count: it must be
    the summary of the span's values added in order, after every kind of change, with nulls,
    a literal ``OTHER`` and more categories than a summary keeps unfolded (those fall back
    to the values)."""
    rng = np.random.default_rng(11)
    fw = FeatureWindow.new("categorical", recent=True)
    assert fw.recent is not None
    other, fallbacks, tallied = CategoricalSummary.OTHER, 0, 0
    for step in range(60):
        slot = step // 4
        width = 300 if step % 13 == 7 else 6  # some entries with 300 categories: folds
        values: list[float | str | None] = [
            None if k % 7 == 0 else (other if step % 17 == 9 and k == 3 else f"c{int(v)}")
            for k, v in enumerate(rng.integers(0, width, int(rng.integers(1, 90))))
        ]
        hashes = [int(h) for h in rng.integers(0, 2**32, len(values))]
        way = step % 4
        if way == 0:  # one at a time
            for h, v in zip(hashes, values, strict=True):
                fw.recent.add(slot, h, v)
        elif way == 1:  # a batch of one slot, its first sample worked out once
            first = FirstSample.of(hashes)
            fw.recent.add_many([slot] * len(values), hashes, values, first)
        else:  # a batch over several slots, some of them late (older entries change)
            spread = [max(0, slot - int(d)) for d in rng.integers(0, 3, len(values))]
            runs = slot_runs(spread, hashes) if way == 2 else None
            fw.recent.add_many(spread, hashes, values, runs=runs)
        if step % 5 == 4:  # stored and read back: the caches start empty
            fw.recent = RecentSlots.from_bytes(fw.recent.to_bytes(False), False)
        for slots in (1, 2, 4, 8):
            got = fw.span_summary(slot, slots)
            span = fw.recent.span(slot, slots)
            if span is None:
                assert got is None
                continue
            want = CategoricalSummary()
            want.add_values(span)  # type: ignore[arg-type]
            assert isinstance(got, CategoricalSummary)
            assert got.to_bytes() == want.to_bytes(), (step, slots)
            assert (got.count, got.missing) == (want.count, want.missing)
            assert list(got.counts.items()) == list(want.counts.items())  # order too
            probe = CategoricalSummary()
            counted = fw.recent.span_tally(slot, slots)
            assert counted is not None
            if probe.add_tally(*counted):  # type: ignore[arg-type]
                tallied += 1
            else:
                fallbacks += 1
    assert tallied > 100 and fallbacks > 5, (tallied, fallbacks)


def test_recent_add_many_leaves_what_adding_one_at_a_time_leaves() -> None:
    """Batches of any shape (one slot, several, slots older than their ring entry, hash
    ties, a full sample that nothing new gets into) keep the samples, and the arrays and
    bytes derived from them, of adding each value alone."""
    rng = np.random.default_rng(21)
    fresh_entries = full_entries = full_runs = 0
    for numeric, ordered in ((True, False), (False, False), (True, True), (False, True)):
        one, many = RecentSlots(), RecentSlots()
        for step in range(300):
            n = int(rng.integers(1, 120))
            base = step // 6
            slots = [int(s) for s in base + rng.integers(-RECENT_SLOTS - 1, 2, n)]
            if step % 3 == 0:
                slots = [base] * n  # the usual batch: one slot
            hashes = [int(h) for h in rng.integers(0, 400, n)]  # many ties
            values: list[float | str | None] = [
                None if k % 13 == 0 else (float(k) if numeric else f"c{k % 7}") for k in range(n)
            ]
            order = FirstSample.of(hashes) if ordered and len(set(slots)) == 1 else None
            if order is not None and step % 6 == 0:
                fresh_entries += 1  # the batch starts its ring entry: the sorted-once path
            entry = slots[0] % RECENT_SLOTS
            if (
                order is not None
                and many.ids[entry] == slots[0]
                and len(many.samples[entry]) == SLOT_SAMPLE
            ):
                full_entries += 1  # its entry is full: only the batch's smaller hashes pair up
            runs = slot_runs(slots, hashes) if ordered and len(set(slots)) > 1 else None
            if runs is not None:
                full_runs += sum(
                    many.ids[top % RECENT_SLOTS] == top
                    and len(many.samples[top % RECENT_SLOTS]) == SLOT_SAMPLE
                    for top, _ in runs
                )  # a run into a full entry: only its smaller hashes pair up, found once
            many.add_many(slots, hashes, values, order, runs)
            for s, h, v in zip(slots, hashes, values, strict=True):
                one.add(s, h, v)
            assert many.ids == one.ids and many.samples == one.samples, (numeric, step)
            if numeric:
                for last in range(max(base - 2, 0), base + 1):
                    got, want = many.slot_arrays(last, 2), one.slot_arrays(last, 2)
                    assert (got is None) == (want is None), (step, last)
                    if got is not None and want is not None:
                        assert [m for _, m in got] == [m for _, m in want]
                        pairs = zip(got, want, strict=True)
                        assert all(np.array_equal(g, w) for (g, _), (w, _) in pairs)
            assert many.to_bytes(numeric) == one.to_bytes(numeric), (numeric, step)
    assert fresh_entries >= 10 and full_entries >= 10 and full_runs >= 10


def test_a_batchs_features_share_its_picks_and_keep_what_one_at_a_time_keeps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every feature of a batch takes its values through the batch's one :class:`Picks`
    (a run's, or under a cut, hashes and taker worked out once): with batches in event-time
    order (each run's indices consecutive: a slice), shuffled ones (taken in C) and runs of
    one index, each feature's ring keeps what adding its values one at a time keeps."""
    rng = np.random.default_rng(33)
    made = 0
    make = recent_slots._taker

    def counted(ks: list[int]) -> Any:
        nonlocal made
        made += 1
        return make(ks)

    monkeypatch.setattr(recent_slots, "_taker", counted)
    features = 5
    many = [RecentSlots() for _ in range(features)]
    one = [RecentSlots() for _ in range(features)]
    kinds: Counter[str] = Counter()
    for step in range(240):
        n = int(rng.integers(1, 200))
        base = step // 5
        if step % 4 == 0:
            slots = [base] * n
        elif step % 4 == 1:  # in event-time order: consecutive runs
            slots = sorted(int(s) for s in base + rng.integers(-2, 1, n))
        else:
            slots = [int(s) for s in base + rng.integers(-RECENT_SLOTS - 1, 1, n)]
        hashes = [int(h) for h in rng.integers(0, 2**20, n)]
        first = FirstSample.of(hashes) if len(set(slots)) == 1 else None
        runs = slot_runs(slots, hashes) if first is None else None
        before = made
        for f in range(features):
            values: list[float | str | None] = [
                None if (k + f) % 11 == 0 else float(k * features + f) for k in range(n)
            ]
            many[f].add_many(slots, hashes, values, first, runs)
            for s, h, v in zip(slots, hashes, values, strict=True):
                one[f].add(s, h, v)
            assert many[f].ids == one[f].ids and many[f].samples == one[f].samples, (step, f)
        picks = (first or runs).picks._held  # type: ignore[union-attr]
        assert made - before == len(picks)  # a taker per index list, whatever the features
        for ks, _, _ in picks.values():
            kinds["one" if len(ks) == 1 else "slice" if ks[-1] - ks[0] < len(ks) else "gather"] += 1
    assert min(kinds["one"], kinds["slice"], kinds["gather"]) > 20, kinds


def test_a_full_entry_is_merged_once_for_the_features_holding_the_same_hashes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dense stream's batches meet full ring entries: the features whose entries hold the
    same hashes share one merge of the batch's run (:meth:`Picks.merged`), and a feature whose
    entry differs (it missed events of an earlier batch, applied on its own as a subset) is
    merged afresh; each keeps what adding its values one at a time keeps."""
    merged, keep = Picks.merged, RecentSlots._keep
    shared = guarded = foreign = kept_alone = 0
    sharing: Picks | None = None  # inside add_many given the batch's FirstSample or runs: theirs

    def counted(self: Picks, kept: list[int], fresh: list[int]) -> Any:
        nonlocal shared, guarded, foreign
        foreign += sharing is not None and self is not sharing
        hit = self._merged.get(id(fresh))
        if hit is not None:
            shared += hit[1] == kept
            guarded += hit[1] != kept
        return merged(self, kept, fresh)

    def sorted_alone(self: RecentSlots, *args: Any) -> None:
        nonlocal kept_alone
        kept_alone += sharing is not None
        keep(self, *args)

    monkeypatch.setattr(Picks, "merged", counted)
    monkeypatch.setattr(RecentSlots, "_keep", sorted_alone)
    rng = np.random.default_rng(51)
    features = 6
    many = [RecentSlots() for _ in range(features)]
    one = [RecentSlots() for _ in range(features)]
    for step in range(200):
        n = int(rng.integers(1, 120))
        base = step // 10  # ten batches a slot: its entry is full after the first few
        slots = [base] * n if step % 3 else [int(s) for s in base + rng.integers(-3, 1, n)]
        hashes = [int(h) for h in rng.integers(0, 2**16, n)]  # ties too
        first = FirstSample.of(hashes) if len(set(slots)) == 1 else None
        runs = slot_runs(slots, hashes) if first is None else None
        for f in range(features):
            values: list[float | str | None] = [float(step * 1000 + k) for k in range(n)]
            if f >= features - 2 and step % 7 == f % 7:  # present in some events only
                rows = [k for k in range(n) if (k + f) % 3]
                sub = ([slots[k] for k in rows], [hashes[k] for k in rows])
                many[f].add_many(*sub, [values[k] for k in rows])
                for s, h, k in zip(*sub, rows, strict=True):
                    one[f].add(s, h, values[k])
            else:
                sharing = (first or runs).picks  # type: ignore[union-attr]
                many[f].add_many(slots, hashes, values, first, runs)
                sharing = None
                for s, h, v in zip(slots, hashes, values, strict=True):
                    one[f].add(s, h, v)
        # One feature's entry changed in place (add's pop and insert): no other feature's,
        # nor a merge kept for the next, shares its lists.
        g, h = step % features, int(rng.integers(0, 2**16))
        many[g].add(base, h, -1.0)
        one[g].add(base, h, -1.0)
        for f in range(features):
            assert many[f].ids == one[f].ids and many[f].samples == one[f].samples, (step, f)
    # Every path of add_many given the batch's picks merges through them (none sorts per
    # feature, alone or with picks of its own), and merges were shared and guarded.
    assert kept_alone == foreign == 0 and shared > 500 and guarded > 100, (
        kept_alone, foreign, shared, guarded,
    )  # fmt: skip


def test_a_span_reaching_before_the_window_is_unknown_there() -> None:
    """Slots before the window's first are unknown, not slots without traffic: slot -1 too,
    whose ring entry's id a new ring starts with (-1), so a look early in a window tests
    only the slots the window has."""
    recent = RecentSlots()
    for slot in range(3):
        recent.add_many([slot] * 3, [slot * 10 + k for k in range(3)], [1.0, 2.0, None])
    assert recent.slot_arrays(2, 3) is not None
    assert recent.slot_arrays(2, 4) is None and recent.slot_arrays(1, 3) is None
    assert len(recent.known_slot_arrays(2, 4)) == 3
    assert len(recent.known_slot_arrays(2, RECENT_SLOTS)) == 3
    assert RecentSlots().known_slot_arrays(-1, RECENT_SLOTS) == []


def test_a_looks_recent_run_moved_on_is_the_ring_walked_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A look's whole-ring run, made from the last look's when only the newest slot's entry
    changed since, is the run a walk of the ring finds, the same arrays: as looks go on slot
    by slot, ask twice at a slot, jump or go back; with values late into older slots, slots
    with no traffic, entries taken by later slots, and after a round trip through bytes."""
    walk = RecentSlots._walk
    walks = 0

    def counted(self: RecentSlots, last_slot: int, slots: int) -> list[tuple[np.ndarray, int]]:
        nonlocal walks
        walks += 1
        return walk(self, last_slot, slots)

    monkeypatch.setattr(RecentSlots, "_walk", counted)
    rng = np.random.default_rng(33)
    moved_on = asked_again = walked = 0
    for trial in range(40):
        recent = RecentSlots()
        last = int(rng.integers(-2, 3))
        for step in range(120):
            kind = rng.random()
            if kind < 0.6:  # the usual: values into the newest slot
                n = int(rng.integers(1, 90))
                slots = [last + 1] * n
            elif kind < 0.75:  # late values into older slots, some too late
                n = int(rng.integers(1, 20))
                slots = [int(s) for s in last + 1 - rng.integers(0, RECENT_SLOTS + 2, n)]
            elif kind < 0.8:  # a later slot's values: its entry takes an older slot's place
                n, slots = 3, [last + int(rng.integers(2, RECENT_SLOTS + 3))] * 3
            elif kind < 0.9:  # late values into the slot just looked at
                n = int(rng.integers(1, 5))
                slots = [last] * n
            else:
                n, slots = 0, []
            if step % 4 == 1 and rng.random() < 0.5:  # a slot with no traffic
                slots = [s for s in slots if s != last + 1]
                n = len(slots)
            hashes = [int(h) for h in rng.integers(0, 1 << 20, n)]
            values: list[float | str | None] = [
                None if k % 11 == 0 else (math.inf if k % 29 == 0 else float(rng.normal()))
                for k in range(n)
            ]
            if slots:
                recent.add_many(slots, hashes, values)
            if trial % 5 == 0 and step % 30 == 29:  # stored and read back: no run kept
                recent = RecentSlots.from_bytes(recent.to_bytes(True), True)
            move = rng.random()
            if 0.8 <= kind < 0.9 or move < 0.1:
                pass  # asked again at the same slot
            elif move < 0.9:
                last += 1  # the next look
            else:
                last += int(rng.integers(-3, 5))
            kept, others = recent._run, recent._moved & ~(1 << (last % RECENT_SLOTS))
            before = walks
            got = recent.known_slot_arrays(last, RECENT_SLOTS)
            if walks == before:  # made from the last look's: only when it may be
                assert kept is not None and last >= 0 and not others, (trial, step)
                if kept[0] == last - 1:
                    moved_on += 1
                else:
                    assert kept[0] == last
                    asked_again += 1
            else:
                assert kept is None or others or not last - 1 <= kept[0] <= last or last < 0
                walked += 1
            want = walk(recent, last, RECENT_SLOTS)
            assert len(got) == len(want), (trial, step, last)
            for (a, ma), (b, mb) in zip(got, want, strict=True):
                assert a is b and ma == mb, (trial, step, last)
            shorter = recent.known_slot_arrays(last, 3)  # a span's own: always walked
            assert [m for _, m in shorter] == [m for _, m in walk(recent, last, 3)]
    assert moved_on > 2_000 and asked_again > 100 and walked > 400, (moved_on, asked_again, walked)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what state holds (load_json)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_stored_json_reads_back_as_the_standard_library_reads_it(value: object) -> None:
    """``load_json`` (orjson first) gives what ``json.loads`` gives for anything the state
    codecs write with ``json.dumps`` (integers within 64 bits): non-finite floats and
    unpaired surrogates included (compared through their JSON, as NaN is not equal to
    itself)."""
    from streams.keyed_state import load_json

    raw = json.dumps(value, separators=(",", ":")).encode()
    expected = json.loads(raw)
    got = load_json(raw)
    assert json.dumps(got) == json.dumps(expected)
    assert type(got) is type(expected)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        _JSON | st.sampled_from(["null", "\udc80", "é", 1e-05, 1e300, 2**63 - 1, -(2**63)]),
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
        max_leaves=20,
    )
)
def test_stored_json_is_written_so_it_reads_back_as_the_standard_library_wrote_it(
    value: object,
) -> None:
    """``dump_json`` (orjson first, the standard library where orjson would write a NaN or
    infinity as null or refuses) reads back, through ``load_json``, as what ``json.dumps``
    wrote reads back: non-finite floats, unpaired surrogates and the text "null" included
    (integers within 64 bits, as ``load_json`` reads them); and it takes orjson's way when
    nothing asks otherwise."""
    from streams.keyed_state import dump_json, load_json

    expected = json.loads(json.dumps(value, separators=(",", ":")))
    got = load_json(dump_json(value))
    assert json.dumps(got) == json.dumps(expected)
    assert type(got) is type(expected)
    assert dump_json({"p": 1e-05}) == b'{"p":0.00001}'  # orjson's spelling: its way taken


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["get", "put", "delete", "flush", "forget"]),
            st.sampled_from("abcdef"),
            st.integers(0, 40),
        ),
        max_size=60,
    ),
    max_bytes=st.integers(0, 60),
)
def test_a_state_cache_counts_the_stored_bytes_it_keeps(
    ops: list[tuple[str, str, int]], max_bytes: int
) -> None:
    """Whatever is read, put, deleted, flushed and forgotten, ``stored_bytes`` is the stored
    size of the cached values whose size is known, a flush leaves it within ``max_bytes``,
    and every value read is the store's or the one put since."""
    from streams.keyed_state import MemoryStore, StateCache

    store = MemoryStore()
    cache = StateCache(store, bytes.decode, str.encode, capacity=4, max_bytes=max_bytes)
    truth: dict[str, str | None] = {}
    for op, key, size in ops:
        if op == "get":
            assert cache.get(key) == truth.get(key)
        elif op == "put":
            truth[key] = value = "x" * size
            cache.put(key, value, partition=0)
        elif op == "delete":
            truth[key] = None
            cache.delete(key, partition=0)
        elif op == "flush":
            store.apply(cache.flush())
            if max_bytes:
                assert cache.stored_bytes <= max_bytes
        else:
            store.apply(cache.flush())
            cache.forget([0])
        assert set(cache._sizes) <= set(cache._values)
        assert cache.stored_bytes == sum(cache._sizes.values())
        assert all(size == len(store.data.get(k) or b"") for k, size in cache._sizes.items())


def test_one_value_applies_once_with_its_score_and_kinds_do_not_merge() -> None:
    from streams.categorical_summary import CategoricalSummary
    from streams.numeric_summary import NumericSummary
    from streams.state import merge_summaries

    fw = FeatureWindow.new("numeric", recent=False)
    assert fw.apply(2.5, (0, 7), score=0.9) and fw.assoc is not None
    assert not fw.apply(2.5, (0, 7), score=0.9)  # the same offset again: a replay
    assert fw.count == 1
    with pytest.raises(TypeError):
        merge_summaries(NumericSummary(), CategoricalSummary())


def test_spans_cut_from_a_looks_recent_arrays_are_the_spans_read_alone() -> None:
    """A look reads a feature's recent slots once and cuts every span and the scan's
    series from them: the same slots as reading each on its own, gaps included."""
    fw = FeatureWindow.new("numeric", recent=True)
    rng = np.random.default_rng(9)
    for slot in (0, 1, 2, 3, 5, 6, 8, 9, 10, 11):  # slots 4 and 7 have no traffic
        for k in range(40):
            value = None if k % 9 == 0 else float(rng.normal())
            fw.apply(value, None, slot=slot, h=event_hash(f"{slot}-{k}"))
    for last in range(12):
        recent = fw.recent_arrays(last)
        for slots in (1, 2, 4, 8):
            alone = fw.span_summary(last, slots)
            cut = fw.span_summary(last, slots, recent=recent)
            assert (alone is None) == (cut is None), (last, slots)
            if isinstance(alone, SlotSpan) and isinstance(cut, SlotSpan):
                # The same arrays: the per-slot figures a look remembers key on them.
                assert all(a is c for a, c in zip(alone.slots, cut.slots, strict=True))
                assert len(alone.slots) == slots and alone.missing == cut.missing
        series, cut_series = (
            fw.slot_series(last, 3600.0),
            fw.slot_series(last, 3600.0, recent=recent),
        )
        assert (series is None) == (cut_series is None)
        if series is not None and cut_series is not None:
            assert all(a is c for a, c in zip(series.slots, cut_series.slots, strict=True))
            assert (series.missing, series.count) == (cut_series.missing, cut_series.count)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30), st.text(max_size=30), st.floats(-1e15, 1e15), st.text(max_size=30))
def test_window_keys_are_the_keys_earlier_versions_wrote(
    tenant: str, model: str, start: float, feature: str
) -> None:
    expected = json.dumps(["w", tenant, model, int(start), feature])
    assert window_key.__wrapped__(tenant, model, start, feature) == expected
