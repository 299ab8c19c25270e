"""Performance drift scaled to the model (issue 12, item 4), on seeded streams.

A model at ~0.94 accuracy whose accuracy falls to ~0.91 has its error rate up by half; the
absolute 0.05 floor never counted that. Now the floor is ``min(0.05, 0.4 x the baseline's
error rate)`` (``streams.perf_findings.accuracy_floor``), and a span test merges the last 7
windows' labels, so a drop no single day's ~165 labels can show is found from a week of them.

What a week of labels can show, stated plainly: by 7 days after the change, with labels 1-3
days late, ~830 post-change labels exist; even against a perfectly known baseline error rate
a one-sided test at the look's alpha (~1e-4) finds a 0.06 -> 0.09 rise from them about half
the time. So the claim tested here is "about half the streams within 7 days, none before
the change, and no alarm at all on null streams", not "every stream within 7 days".
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from streams.config import DAY, PerformanceConfig
from streams.perf_findings import accuracy_floor, span_test
from streams.performance import PerformanceSummary
from tests.unit.test_perf_monitor import T0, Stream

ONSET_DAY = 62
WEEK = 7 * 24 * 3600 + 600
"""7 days: the span test's daily look at the end of the 7th day happens when the stream's
clock passes it, a few seconds later at these rates (the delays are measured to the event)."""
PER_DAY, LABEL_RATE = 1_500, 0.11  # ~165 labels a day
FLIP = 0.034  # accuracy ~0.941 -> ~0.911: the error rate 0.059 -> 0.089
OLD = PerformanceConfig(relative_error_rise=0.0, span_windows=0)  # the absolute floor only


def _first_realised_delay(seed: int, config: PerformanceConfig | None) -> float | None:
    s = Stream(seed=seed, per_day=PER_DAY, config=config)
    for d in range(ONSET_DAY + 8):
        s.day(d, flip=FLIP if d >= ONSET_DAY else 0.0, label_rate=LABEL_RATE)
    s.advance(T0 + (ONSET_DAY + 8) * DAY)
    onset = T0 + ONSET_DAY * DAY
    assert all(e.detected_at >= onset for e in s.events), "an alarm before the change"
    realised = [e.detected_at for e in s.performance()]
    return (min(realised) - onset) if realised else None


def test_a_small_drop_of_a_high_accuracy_model_is_found_within_a_week() -> None:
    delays = [_first_realised_delay(seed, None) for seed in range(1, 9)]
    within = [d for d in delays if d is not None and d <= WEEK]
    # 4 of these 8 seeds within 7 days (the span test at the end of the 6th or 7th day);
    # see the module docstring for why not all of them.
    assert len(within) >= 4, delays


def test_the_absolute_floor_alone_misses_it() -> None:
    """The old behaviour (what the new test's ``>= 4`` fails on): only a window whose own
    165 labels happen to drop by 0.05 counts, 1 of these 8 seeds within 7 days (seed 2, at
    89 h; the new settings find that one at 168 h: the span test's look costs the other
    looks a little alpha)."""
    delays = [_first_realised_delay(seed, OLD) for seed in range(1, 9)]
    assert sum(d is not None and d <= WEEK for d in delays) <= 1, delays


@pytest.mark.parametrize("seed", range(1, 9))
def test_null_streams_of_a_high_accuracy_model_with_few_labels_raise_nothing(seed: int) -> None:
    s = Stream(seed=200 + seed, per_day=PER_DAY)
    for d in range(75):
        s.day(d, label_rate=LABEL_RATE)
    s.advance(T0 + 75 * DAY)
    assert s.events == []  # realised, sequential, span and label-free alike
    assert s.mon.stats["span_looks"] > 30 and s.mon.stats["estimates"] > 20  # they did test


def test_the_label_free_estimate_sees_a_small_shift_in_the_scores() -> None:
    """From day 62 the scores crowd a little toward 0.5 (the model less sure: an estimated
    accuracy drop of ~0.03); 11 % of predictions are labelled, so each closed window gets a
    CBPE estimate. The absolute floor never counted it; the relative one does, a day or two
    after the change, without an alarm before it."""
    onset = T0 + ONSET_DAY * DAY
    for config, expect in ((None, True), (OLD, False)):
        for seed in (2, 3):
            s = Stream(seed=seed, per_day=PER_DAY, config=config)
            for d in range(ONSET_DAY + 3):
                s.day(d, score_shift=0.1 if d >= ONSET_DAY else 0.0, label_rate=LABEL_RATE)
            s.advance(T0 + (ONSET_DAY + 3) * DAY)
            estimated = [e for e in s.events if e.extra.get("estimated")]
            assert all(e.window_start >= onset for e in s.events)
            if not expect:
                assert estimated == []
                continue
            first = min(estimated, key=lambda e: e.detected_at)
            assert first.window_start == onset and first.detected_at - onset <= 26 * 3600
            assert first.test == "estimated_accuracy_drop"
            assert first.effect_size is not None and first.effect_size < 0.05  # below 0.05


def _labels(rng: np.random.Generator, n: int, error_rate: float) -> PerformanceSummary:
    s, y = PerformanceSummary(), (rng.random(n) < 0.1).astype(int)
    wrong = rng.random(n) < error_rate
    scores = np.where((y == 1) != wrong, 0.9, 0.1)
    s.add_predictions(scores)
    s.add_labels(scores, y)
    return s


def test_span_test_keeps_its_alpha_on_null_spans() -> None:
    """A week of ~165 labels a day against 28 baseline days at the same error rate: at a
    loose alpha the alarm rate is within it (Fisher's exact test is conservative), at the
    default look alpha none of 3,000."""
    rng = np.random.default_rng(21)
    cfg = PerformanceConfig()
    alpha, draws = 0.02, 3_000
    loose = strict = 0
    for _ in range(draws):
        base, span = _labels(rng, 4_620, 0.06), _labels(rng, 1_155, 0.06)
        loose += span_test(base, span, cfg, alpha) is not None
        strict += span_test(base, span, cfg, cfg.look_alpha) is not None
    assert loose / draws <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / draws), loose
    assert strict == 0


def test_floor_and_budget_settings() -> None:
    assert accuracy_floor(0.06, PerformanceConfig()) == pytest.approx(0.024)
    assert accuracy_floor(0.06, OLD) == 0.05
    # the span test is one more look per window on the looks' share; objectives keep theirs
    cfg = PerformanceConfig()
    assert cfg.look_alpha == pytest.approx(cfg.alpha * 0.75 / 8)
    assert cfg.objective_alpha == pytest.approx(OLD.look_alpha)
    with pytest.raises(ValueError):
        PerformanceConfig(relative_error_rise=-0.1)
