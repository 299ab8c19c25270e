"""FDR control and severity: pinned against scipy, and the false-alarm bound checked."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from schemas import Severity
from streams.decision import benjamini_hochberg, severity_for
from streams.drift_tests import DRIFT_TESTS
from streams.numeric_summary import NumericSummary


@pytest.mark.parametrize("seed", range(20))
def test_bh_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.concatenate((rng.uniform(0, 1, 30), rng.uniform(0, 0.003, seed % 7)))
    ours = benjamini_hochberg(p.tolist(), alpha=0.01)
    adjusted = stats.false_discovery_control(p, method="bh")
    assert ours == (adjusted <= 0.01).tolist()


def test_bh_bounds_the_chance_of_any_alarm_when_nothing_changed() -> None:
    rng = np.random.default_rng(7)
    trials = 20_000
    any_alarm = sum(
        any(benjamini_hochberg(rng.uniform(0, 1, 20).tolist(), 0.01)) for _ in range(trials)
    )
    # Under the global null BH controls the family-wise rate at alpha: ~1% of windows.
    assert any_alarm / trials <= 0.0125


def test_debiased_effect_removes_null_noise() -> None:
    rng = np.random.default_rng(3)
    raw, net = [], []
    ks, base = DRIFT_TESTS["ks"], NumericSummary()
    for _ in range(300):
        d = stats.ks_2samp(rng.normal(size=64), rng.normal(size=20_000)).statistic
        raw.append(d)
        net.append(ks.debiased_effect(d, 64, 20_000, base))
    assert np.mean(raw) > 0.09  # what an hour's sample shows when nothing changed
    assert np.mean(net) < 0.03
    assert severity_for(max(net), 0.0, 1) in (Severity.LOW, Severity.MEDIUM)


def test_share_of_drifting_features_raises_severity() -> None:
    assert severity_for(0.1, 0.1, 1) == Severity.MEDIUM
    assert severity_for(0.1, 0.5, 2) == Severity.HIGH
    assert severity_for(0.1, 1.0, 1) == Severity.MEDIUM  # one feature is not "the input"
    assert severity_for(0.9, 1.0, 5) == Severity.CRITICAL
