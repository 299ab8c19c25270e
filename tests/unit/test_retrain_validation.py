"""The validation gate and the post-deploy check, on seeded figures."""

from __future__ import annotations

import numpy as np

from retrain.validation import (
    GatePolicy,
    PostDeployCheck,
    PostDeployPolicy,
    Verdict,
    gate,
    holdout_metrics,
)

DAY = 86_400.0


def rows(version: str, start: float, n: int, accuracy: float, seed: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    return [
        {"event_id": f"{version}-{seed}-{i}", "model_version": version, "score": 0.9,
         "prediction_timestamp": start + 100.0 * i, "label": int(rng.random() < accuracy)}
        for i in range(n)
    ]  # fmt: skip


def test_gate_needs_the_floor_and_the_champion() -> None:
    policy = GatePolicy(min_pr_auc=0.70, champion_margin=0.01)
    assert gate({"pr_auc": 0.75}, {"pr_auc": 0.755}, policy).passed
    assert not gate({"pr_auc": 0.75}, {"pr_auc": 0.77}, policy).passed
    assert not gate({"pr_auc": 0.69}, None, policy).passed
    assert not gate({"pr_auc": float("nan")}, None, policy).passed


def test_holdout_metrics_match_the_definition() -> None:
    scores = np.array([0.9, 0.8, 0.2, 0.1])
    labels = np.array([1, 0, 0, 0])
    m = holdout_metrics(scores, labels)
    assert m["accuracy"] == 0.75 and m["pr_auc"] == 1.0 and m["n"] == 4


def test_no_traffic_is_never_a_pass_and_the_window_starts_at_the_first_served() -> None:
    idle = PostDeployCheck("acme", "fraud", "r1", "v1", 0.0, {"accuracy": 0.9, "n": 1000})
    assert idle.verdict(now=10 * DAY)[0] is Verdict.WATCHING  # no r1 traffic yet
    verdict, reason, _ = idle.verdict(now=30 * DAY)  # ...and none for weeks: the watch ends
    assert verdict is Verdict.INCONCLUSIVE and "no traffic" in reason
    thin = PostDeployCheck("acme", "fraud", "r1", "v1", 0.0, {"accuracy": 0.9, "n": 1000})
    for row in rows("r1", DAY, 40, 0.9, seed=6):
        thin.observe(row)
    verdict, reason, _ = thin.verdict(now=6 * DAY)
    assert verdict is Verdict.INCONCLUSIVE and "40 labels" in reason  # never a pass
    check = PostDeployCheck("acme", "fraud", "r1", "v1", 0.0, {"accuracy": 0.9, "n": 1000})
    for row in rows("r1", 5 * DAY, 300, 0.9, seed=1):  # serving switched 5 days later
        assert check.observe(row)
    assert check.window_start == 5 * DAY
    assert check.verdict(now=6 * DAY)[0] is Verdict.WATCHING  # labels still arriving
    verdict, reason, figures = check.verdict(now=9.5 * DAY)
    assert verdict is Verdict.PASSED and "300 labels" in reason and figures["labelled"] == 300


def test_a_worse_version_is_rolled_back_but_noise_is_not() -> None:
    policy = PostDeployPolicy(max_drop=0.05, alpha=0.01, min_labels=100)
    fine = PostDeployCheck("acme", "fraud", "r1", "v1", 0.0, {"accuracy": 0.9, "n": 2000}, policy)
    for row in rows("r1", 0.0, 400, 0.88, seed=2):  # a little worse: within noise and margin
        fine.observe(row)
    assert fine.verdict(now=DAY)[0] is Verdict.WATCHING
    bad = PostDeployCheck("acme", "fraud", "r1", "v1", 10.0, {"accuracy": 0.9, "n": 2000}, policy)
    for row in rows("r1", 10.0, 400, 0.75, seed=3):
        bad.observe(row)
    verdict, reason, figures = bad.verdict(now=DAY)
    assert verdict is Verdict.ROLLBACK and figures["p_value"] < 0.01 and "v1" in reason
    # rows of other versions, before the promotion, or seen twice do not count
    assert not bad.observe(rows("v1", 10.0, 1, 0.9, seed=4)[0])
    assert not bad.observe(rows("r1", 5.0, 1, 0.9, seed=5)[0])
    assert not bad.observe(rows("r1", 10.0, 1, 0.75, seed=3)[0])


def test_the_watch_counts_only_the_first_24_h_of_the_new_version_s_own_traffic() -> None:
    """Labels arrive out of order: the earliest prediction seen so far starts the window,
    and when an earlier one's label comes, rows counted past the window's new end must leave
    the count. They stayed in it: a few labels of a later day, come early, went into every
    later verdict and rolled back a version whose first 24 h were within the margin. Rows
    of the predecessor never count."""
    check = PostDeployCheck("acme", "fraud", "r1", "v1", 0.0, {"accuracy": 0.9, "n": 2000})
    later = rows("r1", 1.5 * DAY, 90, 0.0, seed=7)  # a later day, every one wrong
    first = rows("r1", 0.1 * DAY, 400, 0.87, seed=8)  # its first 24 h: within the margin
    for row in later:  # a few of the later day's labels came first
        assert check.observe(row)
    assert check.verdict(now=2.0 * DAY)[0] is Verdict.WATCHING  # too few to judge
    assert not check.observe(rows("v1", 0.2 * DAY, 1, 0.9, seed=9)[0])  # the predecessor's
    for row in first:
        assert check.observe(row)
    assert check.window_start == 0.1 * DAY and check.window_end == 0.1 * DAY + DAY
    verdict, reason, figures = check.verdict(now=5.0 * DAY)
    assert figures["labelled"] == 400, figures  # the first 24 h only
    assert verdict is Verdict.PASSED, reason
    for row in later[:3]:  # redelivered: outside the window now, never counted again
        assert not check.observe(row)
    assert check.verdict(now=5.0 * DAY)[2]["labelled"] == 400
