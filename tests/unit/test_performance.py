"""Performance summaries: sklearn-exact threshold metrics, bounded AUC error, order-free merges,
calibration, label-free (CBPE) estimates and the drop tests."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics

from streams.calibration import CalibrationMap, estimate_performance
from streams.perf_drop_tests import auc_drop_test, proportion_drop_test
from streams.performance import PerformanceSummary

N = 5_000


def exact(x: object) -> object:
    """Equal up to float rounding (sums accumulated in another order)."""
    return pytest.approx(x, rel=1e-12, abs=1e-15)


def calibrated(n: int, seed: int, shrink: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Scores from Beta(0.5, 4.5) (~10% positives), labels ~ Bernoulli(score): calibrated.

    ``shrink < 1`` pulls scores toward 0.5 (a less confident, degrading model), labels still
    following the scores."""
    rng = np.random.default_rng(seed)
    s = 0.5 + shrink * (rng.beta(0.5, 4.5, n) - 0.5)
    return s, (rng.random(n) < s).astype(np.int64)


def separable(n: int, seed: int, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """~10% positives; ``strength`` 2.5 gives PR-AUC ~0.8, 1.6 gives ~0.5."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(np.int64)
    s = 1.0 / (1.0 + np.exp(-(rng.normal(0.0, 1.0, n) + strength * y - 2.5)))
    return s, y


def summarize(s: np.ndarray, y: np.ndarray, labelled: int | None = None) -> PerformanceSummary:
    out = PerformanceSummary()
    out.add_predictions(s)
    k = s.size if labelled is None else labelled
    out.add_labels(s[:k], y[:k])
    return out


def one_by_one(s: np.ndarray, y: np.ndarray, order: np.ndarray) -> PerformanceSummary:
    out = PerformanceSummary()
    for score in s.tolist():
        out.add_prediction(score)
    for i in order.tolist():
        out.add_label(float(s[i]), int(y[i]))
    return out


def numpy_ece(s: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Textbook ECE: sum over equal-width bins of (n_b / n) * |mean score - positive share|."""
    g = np.minimum((s * bins).astype(np.int64), bins - 1)
    return sum(
        float((g == b).mean() * abs(s[g == b].mean() - y[g == b].mean()))
        for b in range(bins)
        if (g == b).any()
    )


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return calibrated(N, seed=0)


# --------------------------------------------------------------------------- metrics vs sklearn


def test_threshold_metrics_and_brier_equal_sklearn(data: tuple[np.ndarray, np.ndarray]) -> None:
    s, y = data
    assert 0.08 < y.mean() < 0.12
    ps = one_by_one(s, y, np.arange(N))
    pred = (s >= 0.5).astype(np.int64)
    assert ps.accuracy() == metrics.accuracy_score(y, pred)
    assert ps.precision() == metrics.precision_score(y, pred)
    assert ps.recall() == metrics.recall_score(y, pred)
    assert ps.f1() == exact(metrics.f1_score(y, pred))
    assert ps.brier() == exact(metrics.brier_score_loss(y, s))
    tn, fp, fn, tp = metrics.confusion_matrix(y, pred).ravel().tolist()
    assert ps.confusion() == (tp, fp, tn, fn)
    assert summarize(s, y).confusion() == ps.confusion()  # bulk path == scalar path


def test_roc_auc_within_its_bound_of_sklearn(data: tuple[np.ndarray, np.ndarray]) -> None:
    s, y = data
    ps = summarize(s, y)
    auc, bound = ps.roc_auc(), ps.roc_auc_error_bound()
    assert auc is not None and bound is not None
    err = abs(auc - metrics.roc_auc_score(y, s))
    assert err <= bound and err < 0.005
    assert bound < 0.01
    # Binned scores have the bins' ties, which sklearn scores exactly as we do.
    binned = ps._bins(s)
    assert auc == exact(metrics.roc_auc_score(y, binned))


def test_pr_auc_within_001_and_its_bound(data: tuple[np.ndarray, np.ndarray]) -> None:
    s, y = data
    ps = summarize(s, y)
    ap, bound = ps.pr_auc(), ps.pr_auc_error_bound()
    assert ap is not None and bound is not None
    err = abs(ap - metrics.average_precision_score(y, s))
    assert err < 0.01 and err <= bound
    binned = ps._bins(s)
    assert ap == exact(metrics.average_precision_score(y, binned))


def test_pr_auc_bound_holds_under_heavy_ties() -> None:
    rng = np.random.default_rng(4)
    s = rng.choice([0.1, 0.3, 0.55, 0.9], N)  # four distinct scores: every bin is one tie
    y = (rng.random(N) < s).astype(np.int64)
    ps = summarize(s, y)
    ap, bound = ps.pr_auc(), ps.pr_auc_error_bound()
    assert ap is not None and bound is not None
    assert ap == exact(metrics.average_precision_score(y, s))
    # Any ordering inside the ties stays within the bound.
    for seed in range(3):
        jitter = np.random.default_rng(seed).uniform(0, 1e-4, N)
        assert abs(ap - metrics.average_precision_score(y, s + jitter)) <= bound


def test_calibration_error_matches_numpy_ece(data: tuple[np.ndarray, np.ndarray]) -> None:
    s, y = data
    ece = summarize(s, y).calibration_error()
    assert ece == pytest.approx(numpy_ece(s, y), rel=1e-9, abs=1e-12)
    miscalibrated = summarize(s, (np.random.default_rng(9).random(N) < s**0.5).astype(np.int64))
    mis = miscalibrated.calibration_error()
    assert mis is not None and ece is not None and mis > ece + 0.05


# --------------------------------------------------------------------------- algebra


def test_merge_of_halves_equals_whole(data: tuple[np.ndarray, np.ndarray]) -> None:
    s, y = data
    whole = summarize(s, y)
    rng = np.random.default_rng(1)
    # Predictions and labels split independently: a label may land in the half that never
    # saw its prediction, as with two partitions.
    pred_side, label_side = rng.random(N) < 0.5, rng.random(N) < 0.5
    a, b = PerformanceSummary(), PerformanceSummary()
    a.add_predictions(s[pred_side])
    b.add_predictions(s[~pred_side])
    a.add_labels(s[label_side], y[label_side])
    b.add_labels(s[~label_side], y[~label_side])
    for merged in (a.merge(b), b.merge(a)):
        for h_m, h_w in zip(merged.histograms(), whole.histograms(), strict=True):
            np.testing.assert_array_equal(h_m, h_w)
        assert merged.confusion() == whole.confusion()
        assert (merged.predictions, merged.labelled) == (N, N)
        for name in ("roc_auc", "pr_auc", "brier", "calibration_error", "accuracy"):
            assert getattr(merged, name)() == exact(getattr(whole, name)())


def test_label_arrival_order_does_not_matter(data: tuple[np.ndarray, np.ndarray]) -> None:
    s, y = data
    m = 1_500
    ref = one_by_one(s[:m], y[:m], np.arange(m))
    for seed in range(3):
        other = one_by_one(s[:m], y[:m], np.random.default_rng(seed).permutation(m))
        for h_o, h_r in zip(other.histograms(), ref.histograms(), strict=True):
            np.testing.assert_array_equal(h_o, h_r)
        assert other.confusion() == ref.confusion()
        assert other.brier() == exact(ref.brier())
        assert other.calibration_error() == exact(ref.calibration_error())
    # Labels before their predictions: same state once both are in.
    early = PerformanceSummary()
    early.add_labels(s[:m], y[:m])
    assert early.predictions == 0 and early.labelled == m
    early.add_predictions(s[:m])
    for h_e, h_r in zip(early.histograms(), ref.histograms(), strict=True):
        np.testing.assert_array_equal(h_e, h_r)
    assert early.confusion() == ref.confusion()
    assert early.brier() == exact(ref.brier())


def test_serialization_round_trips_under_8_kib(data: tuple[np.ndarray, np.ndarray]) -> None:
    s, y = data
    ps = summarize(s, y, labelled=3_000)
    raw = ps.to_bytes()
    assert len(raw) < 8 * 1024
    back = PerformanceSummary.from_bytes(raw)
    assert back == ps and back.to_bytes() == raw
    assert (back.predictions, back.labelled) == (N, 3_000)
    assert back.roc_auc() == ps.roc_auc() and back.brier() == ps.brier()
    assert PerformanceSummary.from_bytes(PerformanceSummary().to_bytes()).predictions == 0
    with pytest.raises(ValueError):
        PerformanceSummary.from_bytes(raw[:-1])
    with pytest.raises(ValueError):
        PerformanceSummary.from_bytes(b"XXXX" + raw[4:])
    tampered = bytearray(raw)
    tampered[8:16] = (10**6).to_bytes(8, "little")  # tp no longer matches the histograms
    with pytest.raises(ValueError):
        PerformanceSummary.from_bytes(bytes(tampered))


def test_partial_labels_rates() -> None:
    empty = PerformanceSummary()
    assert empty.label_rate is None and empty.positive_rate is None
    for metric in (
        empty.accuracy,
        empty.precision,
        empty.recall,
        empty.f1,
        empty.brier,
        empty.roc_auc,
        empty.roc_auc_error_bound,
        empty.pr_auc,
        empty.pr_auc_error_bound,
        empty.calibration_error,
    ):
        assert metric() is None
    s, y = calibrated(1_000, seed=2)
    ps = summarize(s, y, labelled=250)
    assert (ps.predictions, ps.labelled, ps.unlabelled) == (1_000, 250, 750)
    assert ps.label_rate == 0.25
    assert ps.positive_rate == y[:250].mean()
    assert ps.accuracy() == ((s[:250] >= 0.5) == y[:250]).mean()
    only_negatives = summarize(np.array([0.2, 0.7]), np.array([0, 0]))
    assert only_negatives.roc_auc() is None and only_negatives.pr_auc() is None
    assert only_negatives.recall() is None and only_negatives.precision() == 0.0


def test_rejects_bad_input() -> None:
    ps = PerformanceSummary()
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            ps.add_prediction(bad)
        with pytest.raises(ValueError):
            ps.add_label(bad, 1)
    with pytest.raises(ValueError):
        ps.add_label(0.5, 2)
    with pytest.raises(ValueError):
        ps.add_labels(np.array([0.5]), np.array([3]))
    with pytest.raises(ValueError):
        ps.add_predictions(np.array([0.2, np.nan]))
    ps.add_prediction(1.0)  # the closed upper end lands in the last bin
    assert ps.histograms()[0][-1] == 1


# --------------------------------------------------------------------------- calibration, CBPE


def test_calibration_map_recovers_identity_and_is_monotone() -> None:
    rng = np.random.default_rng(3)
    s = rng.random(50_000)
    base = summarize(s, (rng.random(s.size) < s).astype(np.int64))
    cal = CalibrationMap.fit(base)
    assert cal is not None
    grid = np.linspace(0.0, 1.0, 401)
    p = cal.probability(grid)
    assert np.max(np.abs(p - grid)) < 0.05
    assert np.all(np.diff(p) >= 0)
    back = CalibrationMap.from_bytes(cal.to_bytes())
    np.testing.assert_array_equal(back.probability(grid), p)
    # Miscalibrated (over-confident) scores still give a monotone map, pulled to the truth.
    y = (rng.random(s.size) < 0.5 + 0.5 * (s - 0.5)).astype(np.int64)
    shrunk = CalibrationMap.fit(summarize(s, y))
    assert shrunk is not None
    q = shrunk.probability(grid)
    assert np.all(np.diff(q) >= 0) and np.max(np.abs(q - (0.5 + 0.5 * (grid - 0.5)))) < 0.05


def test_calibration_map_needs_200_labels() -> None:
    s, y = calibrated(1_000, seed=5)
    assert CalibrationMap.fit(summarize(s, y, labelled=199)) is None
    assert CalibrationMap.fit(summarize(s, y, labelled=200)) is not None


def test_cbpe_estimates_accuracy_and_sees_a_degrading_model() -> None:
    base = summarize(*calibrated(20_000, seed=10))
    cal = CalibrationMap.fit(base)
    assert cal is not None
    estimates = []
    for shrink in (1.0, 0.5):
        s, y = calibrated(N, seed=11, shrink=shrink)
        window = PerformanceSummary()
        window.add_predictions(s)  # no labels yet
        est = estimate_performance(window, cal)
        realised = float(((s >= 0.5) == y).mean())
        assert abs(est["accuracy"] - realised) < 0.02, (shrink, est, realised)
        assert abs(est["roc_auc"] - metrics.roc_auc_score(y, s)) < 0.03
        assert abs(est["pr_auc"] - metrics.average_precision_score(y, s)) < 0.05
        estimates.append(est)
    assert estimates[1]["accuracy"] < estimates[0]["accuracy"] - 0.1
    assert estimates[1]["roc_auc"] < estimates[0]["roc_auc"] - 0.1
    with pytest.raises(ValueError):
        estimate_performance(PerformanceSummary(), cal)


# --------------------------------------------------------------------------- drop tests


def test_proportion_drop_test() -> None:
    z, p = proportion_drop_test(950, 1_000, 850, 1_000)
    assert z < 0 and p < 0.01
    z, p = proportion_drop_test(900, 1_000, 900, 1_000)
    assert z == 0.0 and p > 0.1
    _, p_up = proportion_drop_test(850, 1_000, 950, 1_000)
    assert p_up > 0.99  # a rise is no drop
    assert proportion_drop_test(10, 10, 5, 5) == (0.0, 0.5)
    with pytest.raises(ValueError):
        proportion_drop_test(5, 0, 1, 1)
    with pytest.raises(ValueError):
        proportion_drop_test(11, 10, 1, 1)


def test_auc_drop_test_detects_a_pr_auc_drop() -> None:
    base = summarize(*separable(20_000, seed=20, strength=2.5))
    same = summarize(*separable(5_000, seed=21, strength=2.5))
    worse = summarize(*separable(5_000, seed=22, strength=1.6))
    ap_base, ap_worse = base.pr_auc(), worse.pr_auc()
    assert ap_base is not None and ap_worse is not None
    assert 0.75 < ap_base < 0.85 and 0.45 < ap_worse < 0.55
    z, p = auc_drop_test(base, worse)
    assert z < 0 and p < 1e-6
    _, p_same = auc_drop_test(base, same)
    assert p_same > 0.05
    z_roc, p_roc = auc_drop_test(base, worse, metric="roc_auc")
    assert z_roc < 0 and p_roc < 1e-6
    assert auc_drop_test(base, same, metric="roc_auc")[1] > 0.05
    with pytest.raises(ValueError):
        auc_drop_test(base, worse, metric="f1")
    with pytest.raises(ValueError):
        auc_drop_test(base, PerformanceSummary())


def test_scalar_bin_is_the_array_bin() -> None:
    """One prediction is binned without building an array; it must land in the same bin as
    the bulk path puts it (edges, the clipped ends and 0/1 included)."""
    s = PerformanceSummary()
    rng = np.random.default_rng(0)
    scores = np.concatenate(
        [rng.random(20_000), rng.beta(0.05, 0.05, 20_000), [0.0, 1.0, 1e-300, 1 - 1e-16, 0.5]]
    )
    assert [s._bin(x) for x in scores.tolist()] == [
        int(s._bins(np.array([x]))[0]) for x in scores.tolist()
    ]
