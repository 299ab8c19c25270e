"""The within-window performance signal keeps its stated false-alarm rate, measured.

The sequential error-rate test is checked at every label of a window, against the upper
confidence bound of its baseline's error rate. Its budget per window and version is
``PerformanceConfig.alpha * sequential_alpha_share`` (half for the bound, half for the
martingale). These tests simulate many null windows - a baseline of several days of labels
and one window, all at the same error rate, labels in arrival order - at the label rates of
the integration tests, the demo and the benchmark, and count the windows that ever alarm.
Then the same on whole streams through the PerformanceMonitor (labels 1-3 days late), and
the delay on concept drift against the label-count looks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from streams.config import DAY, PerformanceConfig
from streams.sequential import RateRiseTest, rate_upper_bound
from tests.unit.test_perf_monitor import T0, Stream


def null_alarm_rate(
    *,
    alpha: float,
    per_day: int,
    label_rate: float,
    error_rate: float,
    baseline_days: int,
    windows: int,
    seed: int,
    min_rise: float = 0.05,
) -> tuple[int, int]:
    """(windows that alarmed, windows tested) under the null, for the signal at ``alpha``
    (split as the monitor splits it: half to the baseline bound, half to the test)."""
    rng = np.random.default_rng(seed)
    labels = int(per_day * label_rate)
    nb = labels * baseline_days
    alarms = 0
    n = np.arange(1, labels + 1)
    for base_errors in rng.binomial(nb, error_rate, size=windows):
        bound = rate_upper_bound(int(base_errors), nb, alpha / 2)
        test = RateRiseTest(bound, min_rise, alpha / 2)
        k = np.cumsum(rng.random(labels) < error_rate)
        # Only looks whose observed rate clears the effect floor can reject; test those.
        candidates = k / n - bound >= min_rise
        if candidates.any() and test.rejects(n[candidates], k[candidates]).any():
            alarms += 1
    return alarms, windows


@pytest.mark.parametrize(
    ("per_day", "label_rate", "error_rate"),
    [
        (300, 0.9, 0.06),  # the integration tests' fraud stream
        (1_000, 0.9, 0.25),  # the demo's streams, a weaker model
        (1_500, 1.0, 0.06),  # the performance benchmark
        (100, 0.5, 0.30),  # small windows: few labels, a noisy model
    ],
)
def test_null_false_alarm_rate_is_within_alpha(
    per_day: int, label_rate: float, error_rate: float
) -> None:
    # At a loose alpha the measurement is precise (thousands of windows, ~40 alarms at the
    # nominal rate) and shows the budget is kept, not just that alarms are rare.
    alpha = 0.02
    alarms, windows = null_alarm_rate(
        alpha=alpha, per_day=per_day, label_rate=label_rate, error_rate=error_rate,
        baseline_days=5, windows=2_000, seed=per_day,
    )  # fmt: skip
    rate = alarms / windows
    assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / windows), (alarms, windows)


def test_default_budget_holds_on_many_null_windows() -> None:
    cfg = PerformanceConfig()
    budget = cfg.alpha * cfg.sequential_alpha_share
    assert budget == pytest.approx(2 * cfg.sequential_alpha)
    windows = 20_000
    alarms, _ = null_alarm_rate(
        alpha=budget, per_day=300, label_rate=0.9, error_rate=0.06,
        baseline_days=5, windows=windows, seed=11,
    )  # fmt: skip
    # 20,000 windows at a budget of 0.00025: 5 alarms expected at the nominal rate.
    assert alarms <= budget * windows + 3 * math.sqrt(budget * windows)


def test_the_bound_is_what_keeps_it_honest_on_a_small_baseline() -> None:
    """Against the baseline's point estimate instead of its bound, the same test raises
    more alarms than its budget when the baseline is small: the bound is needed."""
    rng = np.random.default_rng(5)
    alpha, p, nb, labels = 0.02, 0.06, 200, 270
    naive = 0
    n = np.arange(1, labels + 1)
    windows = 2_000
    for base_errors in rng.binomial(nb, p, size=windows):
        test = RateRiseTest(max(base_errors / nb, 1e-6), 0.05, alpha)
        k = np.cumsum(rng.random(labels) < p)
        naive += bool(test.rejects(n, k).any())
    assert naive / windows > alpha


def test_power_a_large_rise_is_found_from_a_few_dozen_labels() -> None:
    rng = np.random.default_rng(3)
    bound = rate_upper_bound(81, 1_350, 0.000125)  # a fraud model's baseline, 5 days
    test = RateRiseTest(bound, 0.05, 0.000125)
    n = np.arange(1, 301)
    needed = []
    for _ in range(200):
        k = np.cumsum(rng.random(300) < 0.5)  # half the labels flipped: error rate ~0.5
        hits = np.flatnonzero(test.rejects(n, k))
        needed.append(int(hits[0]) + 1)
    assert np.median(needed) <= 25 and max(needed) <= 60


@pytest.mark.parametrize(
    ("p0", "min_rise", "alpha"), [(0.05, 0.05, 0.001), (0.2, 0.02, 0.01), (0.0, 0.1, 0.05)]
)
def test_one_look_decides_as_the_vectorised_test_does(
    p0: float, min_rise: float, alpha: float
) -> None:
    """``rejects_one`` decides most looks from the bounds of the log-sum-exp: the same answer
    as ``rejects`` at every (n, k) of a grid that crosses the threshold at every n, and both
    answers occur (the bounds decide some looks, the exact value the ones near it)."""
    t = RateRiseTest(p0=p0, min_rise=min_rise, alpha=alpha)
    ns = np.repeat(np.arange(1, 301), 301)
    ks = np.tile(np.arange(0, 301), 300)
    keep = ks <= ns
    ns, ks = ns[keep], ks[keep]
    want = t.rejects(ns, ks)
    got = np.array([t.rejects_one(int(n), int(k)) for n, k in zip(ns, ks, strict=True)])
    np.testing.assert_array_equal(got, want)
    assert want.any() and not want.all()


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        RateRiseTest(1.0, 0.05, 0.01)
    with pytest.raises(ValueError):
        RateRiseTest(0.1, 0.0, 0.01)
    with pytest.raises(ValueError):
        RateRiseTest(0.1, 0.05, 0.0)
    assert RateRiseTest(0.99, 0.05, 0.01).alternatives == 0
    assert not RateRiseTest(0.99, 0.05, 0.01).rejects_one(10, 10)
    assert RateRiseTest(0.1, 0.05, 0.01).p_value(10, 0) == 1.0


def sequential_alarms(s: Stream) -> list[float]:
    return [e.detected_at for e in s.events if e.test == "sequential_error_rate"]


@pytest.mark.parametrize("seed", range(6))
def test_null_streams_through_the_monitor_raise_nothing(seed: int) -> None:
    # 75 days at 300 predictions a day, every label 1-3 days late (the tests' and the
    # demo's label delays): ~45 windows tested per stream, each at every label.
    s = Stream(seed=100 + seed, per_day=300)
    for d in range(75):
        s.day(d)
    assert s.performance() == []
    assert s.mon.stats["looks"] > 40  # the looks ran; and so did the sequential test:
    assert s.mon._judge._rate_tests == {}  # cleared at each flush, so it was filled and used


def test_concept_drift_is_found_by_the_sequential_test_before_the_first_look() -> None:
    s = Stream(seed=2, per_day=1_500)
    for d in range(66):
        s.day(d, flip=0.5 if d >= 62 else 0.0)
    onset = T0 + 62 * DAY
    seq = sequential_alarms(s)
    looks = [e.detected_at for e in s.performance() if e.test == "accuracy_drop"]
    assert seq and looks
    assert min(seq) >= onset and min(seq) < min(looks)
    # labels 1-3 days late: the onset window's first labels arrive 24 h after it opened
    assert min(seq) - onset <= 32 * 3600
