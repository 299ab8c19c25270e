"""``LookScreen``: the hourly looks' parts proven quiet for a whole stream at once.

Its promise is the judge's results, unchanged: a part it proves quiet is one the judge would
have returned nothing for, and its tests are counted as the judge counts them. So the engine
runs with it and without it over the same streams and must give the same drift events and
counters, with most parts screened (the fast path really taken).
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

import streams.look_screen as look_screen
from schemas import DriftEvent, PredictionEvent
from streams.config import EngineConfig
from streams.drift_tests import DRIFT_TESTS, DriftTest, Registry, TestResult
from streams.drift_tests.ks import count_below
from streams.drift_tests.mean_scan import slot_rank_sum
from streams.engine import DriftEngine
from streams.keyed_state import MemoryStore
from streams.look_screen import LookScreen, NumericRows
from streams.numeric_summary import NumericSummary
from streams.segments import is_segment_feature, segment_feature
from streams.state import StreamState, stream_key
from tests.unit.test_engine import DEFAULTS_SHORT_HISTORY, T0, stream

DAY = 86_400.0


def _two_drifts() -> Iterator[PredictionEvent]:
    """x0 shifts at 07:12 on day 30; x1 spreads at 14:24 (no shift of its mean for the scan,
    too little for an hour's span: a look at the window so far finds it, and that look's
    spans, quiet, then skip it) and x2 shifts a little (for the scan); the category mix
    changes on day 31."""
    for e in stream(seed=21, days=32, per_day=1500, n_numeric=4, shift_day=30.3,
                    categorical=True, cat_shift_day=31):  # fmt: skip
        if e.timestamp >= T0 + 30.6 * DAY:
            x1, x2 = e.features["x1"], e.features["x2"]
            assert isinstance(x1, float) and isinstance(x2, float)
            e = replace(e, features={**e.features, "x1": x1 * 1.7, "x2": x2 + 0.3})
        yield e


def _run(
    events: list[PredictionEvent], screen: bool, config: EngineConfig = DEFAULTS_SHORT_HISTORY
) -> tuple[list[DriftEvent], DriftEngine]:
    engine = DriftEngine(config, MemoryStore())
    engine._looks.screen.enabled = screen
    out = []
    for e in events:
        out.extend(engine.observe(e))
    return out, engine


def _same_results(
    events: list[PredictionEvent], config: EngineConfig = DEFAULTS_SHORT_HISTORY
) -> tuple[list[DriftEvent], Counter[str]]:
    """The engine's drift events and counters with the screen, once checked equal to the
    judge's alone (less the screen's own counter)."""
    judged, plain = _run(events, False, config)
    screened, fast = _run(events, True, config)
    assert [d.to_json() for d in screened] == [d.to_json() for d in judged]
    # Key by key (Counter subtraction would drop a count driven below zero).
    for key in (fast.stats.keys() | plain.stats.keys()) - {"look_parts_screened"}:
        assert fast.stats[key] == plain.stats[key], key
    assert plain.stats["look_parts_screened"] == 0
    return judged, fast.stats


def test_the_screen_changes_no_event_and_no_count(monkeypatch: pytest.MonkeyPatch) -> None:
    asked_again: list[bool] = []
    still_quiet = LookScreen.still_quiet

    def spy(self: LookScreen, screened: look_screen.Screened, *args: object) -> bool:
        moved = sum(screened.skipped.values())
        quiet = still_quiet(self, screened, *args)  # type: ignore[arg-type]
        asked_again.append(quiet and sum(screened.skipped.values()) > moved)
        return quiet

    monkeypatch.setattr(LookScreen, "still_quiet", spy)
    judged, stats = _same_results(list(_two_drifts()))
    # Found at looks (partial), numeric and categorical; and most parts screened.
    assert {d.feature for d in judged if d.partial} >= {"x0", "x1", "x2"}
    assert {"ks", "mean_scan", "chi2"} <= {d.test for d in judged}
    looks = stats["interim_looks"] - stats["looks_without_baseline"]
    assert stats["look_parts_screened"] > 0.8 * looks
    # After a part found drift, later parts were screened without the features it found
    # (their tests counted as skipped, as the judge counts them).
    assert any(asked_again)


def test_a_wide_quiet_stream_is_screened_with_the_same_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sixty numeric features at a generous alpha: at some looks a part's least p is below
    alpha, and only Benjamini-Hochberg over its family shows it is no discovery (the screen
    runs it on the judge's p-values), so the part is still not judged."""
    below_alpha: list[bool] = []
    discovers = look_screen._Family.discovers

    def spy(self: look_screen._Family, alpha: float) -> bool:
        found = discovers(self, alpha)
        below_alpha.append(not found and min(self.features + self.segments + [1.0]) <= alpha)
        return found

    monkeypatch.setattr(look_screen._Family, "discovers", spy)
    events = list(stream(seed=23, days=33, per_day=400, n_numeric=60, categorical=True))
    judged, stats = _same_results(events, replace(DEFAULTS_SHORT_HISTORY, alpha=0.2))
    assert judged == [] and stats["tests"] > 5_000
    looks = stats["interim_looks"] - stats["looks_without_baseline"]
    assert stats["look_parts_screened"] > 0.9 * looks
    assert any(below_alpha)


def test_a_part_is_asked_again_without_the_features_found() -> None:
    """After a part found drift: the features it found leave each family (segments'
    too), their tests then count as skipped; fewer tests can make a discovery where more did
    not, and then nothing moves (the judge runs that part)."""
    screen = LookScreen(EngineConfig(), Counter())
    alpha = screen.config.interim_alpha
    stream = StreamState("acme", "fraud")
    window = 10 * DAY

    def screened(ps: dict[str, float]) -> look_screen.Screened:
        family = look_screen._Family()
        for key, p in ps.items():
            family.add(p, is_segment_feature(key), key)
        out = look_screen.Screened(families={1: family})
        out.tests[1], out.skipped[1] = len(ps), 2
        return out

    # x0 drifted in an earlier part: without it, x1's p (0.8 alpha) is a discovery alone.
    stream.incidents.last_window["x0"] = window
    lonely = screened({"x0": 0.9, "x1": 0.8 * alpha})
    assert not lonely.families[1].discovers(alpha)  # quiet before x0 was found...
    assert not screen.still_quiet(lonely, 1, stream, window)  # ...and not after
    assert (lonely.tests[1], lonely.skipped[1]) == (2, 2)
    # With others beside it, x1 is no discovery: quiet, x0's test (and its segment's, found
    # too) counted as skipped; x0 found in an earlier window is no reason to skip it.
    segment = segment_feature("x0", "region", "eu")
    stream.incidents.last_window[segment] = window
    stream.incidents.last_window["x2"] = window - DAY
    crowd = screened({"x0": 1e-12, "x1": 0.8 * alpha, "x2": 0.5, "x3": 0.5, segment: 1e-9})
    assert crowd.families[1].discovers(alpha)
    assert screen.still_quiet(crowd, 1, stream, window)
    assert (crowd.tests[1], crowd.skipped[1]) == (3, 4)
    assert crowd.families[1].feature_keys == ["x1", "x2", "x3"]
    assert crowd.families[1].segments == []
    # No family (the window so far, or a screen that showed nothing): judged.
    assert not screen.still_quiet(crowd, 0, stream, window)


def test_a_family_discovers_only_what_benjamini_hochberg_finds() -> None:
    alpha = 0.001
    family = look_screen._Family([alpha / 2] + [0.5] * 99)  # rank 1 needs alpha / 100
    assert not family.discovers(alpha)
    assert look_screen._Family([alpha / 200] + [0.5] * 99).discovers(alpha)
    # Features and segment features are two families.
    assert not look_screen._Family([0.5] * 9, [alpha / 20] + [0.5] * 99).discovers(alpha)
    assert look_screen._Family([0.5] * 9, [alpha / 200] + [0.5] * 99).discovers(alpha)
    assert not look_screen._Family().discovers(alpha)


def _slots(rng: np.random.Generator, sizes: list[int]) -> list[tuple[np.ndarray, int]]:
    return [(rng.normal(0.0, 1.0, n), 0) for n in sizes]


def test_rows_compute_each_slot_once_and_again_when_it_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(3)
    base = NumericSummary()
    base.add_many(rng.normal(0.0, 1.0, 20_000))
    calls: list[int] = []

    def counting(values: np.ndarray, xs: np.ndarray, out: np.ndarray) -> None:
        calls.append(values.size)
        count_below(values, xs, out)

    monkeypatch.setattr(look_screen, "count_below", counting)
    rows = NumericRows()
    recent = _slots(rng, [64, 0, 64])  # slots 5, 6 (no values), 7
    r = rows.row("x", base)
    rows.fill(r, recent, 7)
    assert calls == [64, 0, 64]
    grid = base.cdf_grid()
    for slot, (values, _) in zip((5, 6, 7), recent, strict=True):
        pos = slot % 8
        expect = np.empty((2, grid.xs.size), np.int64)
        count_below(values, grid.xs, expect)
        assert rows.counts[r, pos, :, : grid.xs.size].tolist() == expect.tolist()
        assert (rows.counts[r, pos, :, grid.xs.size :] == values.size).all()  # +inf: all
        assert np.isnan(rows.ranks[r, pos])  # ranked only when a look needs it
        assert rows.sizes[r, pos] == values.size
    rows.fill(rows.row("x", base), recent, 7)
    assert len(calls) == 3  # nothing changed: nothing computed
    recent[-1] = (rng.normal(2.0, 1.0, 64), 0)  # slot 7's sample changed
    rows.fill(rows.row("x", base), recent, 7)
    assert len(calls) == 4
    base.add_many(rng.normal(0.0, 1.0, 1_000))  # a live baseline grew: a new grid
    assert rows.row("x", base) == r
    rows.fill(r, recent, 7)
    assert len(calls) == 7
    assert rows.row("y", base) == 1 and len(rows) == 2


class _SpanMedian(DriftTest[NumericSummary]):
    name = "span_median"
    kinds = frozenset({"numeric"})

    def run(self, window: NumericSummary, baseline: NumericSummary) -> TestResult:
        return TestResult(0.0, 1.0, 0.0, 0.0, True, self.name)

    def noise(self, n_eff: float, baseline: NumericSummary) -> float:
        return 0.0


def _baseline(kind: str, rng: np.random.Generator) -> NumericSummary:
    if kind == "few":  # ten integers: a grid of fewer points than a row has (+inf padding)
        return NumericSummary.of(rng.integers(0, 10, 10).astype(np.float64))
    if kind == "tail":  # bucketed, with values not folded in yet
        base = NumericSummary()
        base.extend(rng.normal(0.0, 1.0, 5_000).round(2))
        assert base.has_tail and not base.is_exact
        return base
    size = {"exact": 300, "bucketed": 20_000}[kind]
    return NumericSummary.of(rng.normal(0.0, 1.0, size).round(2))  # ties, as real data have


@pytest.mark.parametrize("kind", ["exact", "bucketed", "tail", "few"])
def test_rank_bounds_hold_each_slot_s_exact_rank_sum_closely(kind: str) -> None:
    """Values below the first grid point, above the last, on grid points and between them,
    an empty slot and one past a byte a count: each slot's exact rank sum lies within its
    bounds; against a continuous baseline they are close (a grid cell holds a small part of
    it) and exact for values on grid points only; against a few values, exact."""
    rng = np.random.default_rng(11)
    base = _baseline(kind, rng)
    xs = base.cdf_grid().xs
    assert (xs.size < 10) == (kind == "few")
    lo, hi = float(xs[0]), float(xs[-1])
    recent = [
        (rng.normal(0.0, 1.0, 64), 0),
        (np.concatenate((rng.uniform(lo, hi, 40), [lo - 9.0, hi + 9.0, lo, hi])), 0),
        (rng.normal(1.0, 0.5, 17), 0),
        (rng.choice(xs, 30), 0),  # every value on a grid point
        (np.empty(0), 0),
        (rng.normal(0.0, 1.0, 300), 0),  # counts become int64
    ]
    rows = NumericRows()
    r = rows.row("x", base)
    rows.fill(r, recent, len(recent) - 1)
    assert rows.counts.dtype == np.int64
    pos = np.arange(len(recent))
    rows.rank_bounds(np.full(pos.size, r), pos)
    for k, (values, _) in enumerate(recent):
        exact = slot_rank_sum(values, base)
        low, high = rows.low[r, k], rows.high[r, k]
        assert low <= exact <= high, k
        if kind != "few" and values.size:
            assert high - low < 0.05 * values.size, k
    width = rows.high[r, pos] - rows.low[r, pos]
    assert width[3] < 1e-6 and width[4] < 1e-6  # on grid points, and no values: exact
    if kind == "few":  # a step CDF, every step a grid point: no mass between them
        assert (width < 1e-6).all()
    else:
        assert width[2] > 1e-3  # between points: not known exactly


def test_a_scan_ranks_exactly_only_what_its_bounds_leave_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The two-drift stream's looks: the scan's p-values come from the bounds for nearly
    every slot, the exact ranks only for features whose bound reaches alpha (the drifting
    ones among them), and the results are the judge's (``_same_results``)."""
    ranked: list[int] = []
    bounded: list[int] = []
    bounds = NumericRows.rank_bounds

    def ranking(values: np.ndarray, base: NumericSummary) -> float:
        ranked.append(values.size)
        return slot_rank_sum(values, base)

    def bounding(self: NumericRows, rows: np.ndarray, pos: np.ndarray) -> None:
        bounded.append(rows.size)
        bounds(self, rows, pos)

    monkeypatch.setattr(look_screen, "slot_rank_sum", ranking)
    monkeypatch.setattr(NumericRows, "rank_bounds", bounding)
    events = list(_two_drifts())
    judged, _ = _same_results(events)
    assert "mean_scan" in {d.test for d in judged}
    assert ranked and sum(bounded) > 5 * len(ranked)  # 293 slots bounded, 27 ranked
    # With bounds that prove nothing, every feature is ranked exactly: the same parts are
    # screened (a bound p kept where the exact one was needed would judge parts in vain).
    _, with_bounds = _run(events, True)

    def nothing_proven(self: NumericRows, rows: np.ndarray, pos: np.ndarray) -> None:
        self.low[rows, pos], self.high[rows, pos] = -np.inf, np.inf

    monkeypatch.setattr(NumericRows, "rank_bounds", nothing_proven)
    ranked.clear()
    _, exactly = _run(events, True)
    assert len(ranked) > 5 * 27
    assert with_bounds.stats == exactly.stats and with_bounds.stats["look_parts_screened"] > 0


def test_another_span_test_turns_the_screen_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """It proves only what the built-in tests decide: a plug-in that also runs on the spans
    leaves every part to the judge."""
    assert LookScreen(EngineConfig(), Counter()).enabled
    monkeypatch.setattr(look_screen, "DRIFT_TESTS", Registry(*DRIFT_TESTS.values(), _SpanMedian()))
    screen = LookScreen(EngineConfig(), Counter())
    assert not screen.enabled
    quiet = screen.quiet(
        StreamState("acme", "fraud"), 0.0, 8, [1, 2, 4, 8], True, [], lambda f, w: None
    )
    assert quiet.quiet == set()


def test_rows_kept_are_bounded_over_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(look_screen, "KEPT_ROWS", 4)
    screen = LookScreen(EngineConfig(), Counter())
    base = NumericSummary.of(np.random.default_rng(4).normal(size=500))
    for k in range(5):
        rows = screen._rows_of(StreamState("acme", f"m{k}"), 0.0)
        before = rows.allocated
        rows.row("a", base), rows.row("b", base)
        screen._kept += rows.allocated - before
        screen._evict()
    assert [key[0] for key in screen._rows] == [stream_key("acme", f"m{k}") for k in (3, 4)]
    assert screen._kept == sum(t.allocated for t in screen._rows.values()) == 4
    # A stream's next window replaces its rows.
    first = screen._rows_of(StreamState("acme", "m4"), 0.0)
    assert screen._rows_of(StreamState("acme", "m4"), DAY) is not first
    assert (stream_key("acme", "m4"), 0.0) not in screen._rows
    assert screen._kept == sum(t.allocated for t in screen._rows.values())


def test_rows_hold_no_slot_alive_and_count_a_large_slot_exactly() -> None:
    rng = np.random.default_rng(5)
    base = NumericSummary()
    base.add_many(rng.normal(0.0, 1.0, 20_000))
    rows = NumericRows()
    recent = _slots(rng, [64, 300])  # a slot past the usual sample (a byte a count)
    kept = weakref.ref(recent[0][0])
    r = rows.row("x", base)
    rows.fill(r, recent, 1)
    assert rows.counts.dtype == np.int64 and rows.sizes[r, 1] == 300
    assert (rows.counts[r, 1, :, -1] == 300).all()
    assert rows.counts[r, 1, 0, :-1].tolist() == np.sort(recent[1][0]).searchsorted(
        base.cdf_grid().xs, "right"
    ).tolist() + [300] * (rows.counts.shape[-1] - 1 - base.cdf_grid().xs.size)
    recent[0] = _slots(rng, [64])[0]
    assert kept() is None  # the row's reference did not keep the old sample
