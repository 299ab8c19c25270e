"""Challenger training on seeded traffic: parsing, the time split, model quality and
calibration against the champion, label noise, and the process limits."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss

from driftwatch.simulate import SimulationConfig, generate, generate_outcomes
from retrain import training
from retrain.training import (
    Dataset,
    TrainedModel,
    TrainingFailed,
    TrainingLimits,
    _reap,
    build_pipeline,
    evaluate,
    featurize,
    infer_feature_types,
    permutation_importances,
    predict_scores,
    train,
    train_with_limits,
)
from streams.join import LabeledPrediction

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86_400.0


def simulated_rows(model: str, days: int = 15, seed: int = 3) -> list[dict[str, Any]]:
    cfg = SimulationConfig(
        seed=seed,
        tenants=("acme",),
        models=(model,),
        days=days,
        events_per_day=1500,
        start=T0,
        label_rate=1.0,
    )
    preds = {p.event_id: p for p in generate(cfg)}
    return [
        LabeledPrediction(preds[o.event_id], o.label, o.timestamp).to_dict()
        for o in generate_outcomes(cfg)
    ]


@pytest.fixture(scope="module")
def fraud() -> Dataset:
    return Dataset.from_rows(simulated_rows("fraud"))


@pytest.fixture(scope="module")
def conflict() -> Dataset:
    return Dataset.from_rows(simulated_rows("conflict"))


@pytest.fixture(scope="module")
def fraud_model(fraud: Dataset) -> TrainedModel:
    return train("fraud", fraud, seed=0)


def row(event_id: str, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": event_id,
        "tenant": "acme",
        "model": "fraud",
        "model_version": "v1",
        "features": {"amount": 95.5, "channel": "pos", "velocity_1h": None},
        "score": 0.25,
        "prediction": 0,
        "prediction_timestamp": "2026-01-01T02:00:00Z",
        "label": 1,
        "outcome_timestamp": "2026-01-02T02:00:00Z",
    }
    return base | overrides


def children() -> set[int]:
    """Pids of this process's live children, from /proc (not just multiprocessing's view),
    except multiprocessing's resource tracker, a helper that lives as long as we do."""
    me = str(os.getpid())
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z" and b"resource_tracker" not in cmdline:
            out.add(int(stat.parent.name))
    return out


# --- data ------------------------------------------------------------------------------------


def test_from_rows_parses_dedups_and_skips_bad_rows() -> None:
    rows: list[Any] = [
        row("e1"),
        row("e2", label="fraud", prediction_timestamp=T0 + 60, model_version="v2", score=0.9),
        row("e3", label="legit", features={"amount": 1.0, "channel": None}),
        row("e1", label=0, score=0.5),  # redelivered with other values: the first one wins
        row("bad-label-int", label=7),
        row("bad-label-bool", label=True),
        row("no-label", label=None),
        row("bad-ts", prediction_timestamp="yesterday"),
        row("naive-ts", prediction_timestamp="2026-01-01T02:00:00"),
        row("bad-score", score=1.5),
        row("bad-features", features=[1, 2]),
        {k: v for k, v in row("no-ts").items() if k != "prediction_timestamp"},
        {k: v for k, v in row("no-id").items() if k != "event_id"},
        None,
        "not a row",
    ]
    data = Dataset.from_rows(rows)
    assert len(data) == 3 and data.skipped == 11
    assert data.event_ids == ["e1", "e2", "e3"]
    assert data.labels.tolist() == [1, 1, 0]
    assert data.scores.tolist() == [0.25, 0.9, 0.25]
    assert data.versions == ["v1", "v2", "v1"]
    assert data.timestamps.tolist() == [T0 + 7200, T0 + 60, T0 + 7200]
    assert data.features[2] == {"amount": 1.0, "channel": None}
    empty = Dataset.from_rows([])
    assert len(empty) == 0 and empty.skipped == 0


def test_simulated_rows_parse_completely(fraud: Dataset) -> None:
    assert len(fraud) == 15 * 1500 and fraud.skipped == 0
    assert 0.08 < fraud.labels.mean() < 0.12
    assert set(fraud.versions) == {"v1"}


def test_split_by_time_puts_the_newest_rows_in_validation(fraud: Dataset) -> None:
    shuffled = fraud.subset(np.random.default_rng(1).permutation(len(fraud)))
    train_part, valid = shuffled.split_by_time(0.2)
    assert (len(train_part), len(valid)) == (18_000, 4_500)
    assert train_part.timestamps.max() <= valid.timestamps.min()
    assert np.all(np.diff(valid.timestamps) >= 0) and np.all(np.diff(train_part.timestamps) >= 0)
    assert sorted(train_part.event_ids + valid.event_ids) == sorted(fraud.event_ids)
    # The rows keep their own labels and features through the shuffle and the split.
    index = {e: i for i, e in enumerate(fraud.event_ids)}
    for part in (train_part, valid):
        rows = [index[e] for e in part.event_ids]
        assert part.labels.tolist() == fraud.labels[rows].tolist()
        assert part.features[:50] == [fraud.features[i] for i in rows[:50]]
    with pytest.raises(ValueError):
        fraud.split_by_time(1.0)


def test_subset_by_mask_and_by_index(fraud: Dataset) -> None:
    mask = fraud.labels == 1
    positives = fraud.subset(mask)
    assert len(positives) == int(mask.sum()) and positives.labels.min() == 1
    picked = fraud.subset(np.array([5, 2]))
    assert picked.event_ids == [fraud.event_ids[5], fraud.event_ids[2]]
    assert picked.scores.tolist() == [fraud.scores[5], fraud.scores[2]]
    with pytest.raises(ValueError):
        fraud.subset(mask[:10])


def test_feature_types_are_inferred_and_odd_values_never_crash_a_prediction(
    fraud_model: TrainedModel,
) -> None:
    assert fraud_model.numeric == [
        "account_age_days",
        "amount",
        "avg_amount_30d",
        "distance_km",
        "session_duration_s",
        "velocity_1h",
    ]
    assert fraud_model.categorical == ["channel", "merchant_category"]
    assert infer_feature_types([{"n": 1, "m": "a", "x": None}, {"m": 2.0}]) == (["n"], ["m"])
    x = featurize([{"n": "oops", "m": 2.0}], ["n"], ["m"])
    assert np.isnan(x[0, 0]) and x[0, 1] == "2.0"
    odd = [
        {},  # every feature missing
        {"amount": "lots", "merchant_category": "never-seen", "channel": 3.0},
        {"amount": 1e6, "velocity_1h": 50.0, "merchant_category": "crypto", "channel": "pos"},
    ]
    scores = fraud_model.predict(odd)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))


# --- quality ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["fraud", "conflict"])
def test_pipelines_rank_and_calibrate_like_the_champion(
    model: str, fraud: Dataset, conflict: Dataset, fraud_model: TrainedModel
) -> None:
    data = fraud if model == "fraud" else conflict
    trained = fraud_model if model == "fraud" else train(model, data, seed=0)
    train_part, valid = data.split_by_time(0.2)
    scores = trained.predict(valid.features)
    pr_auc = average_precision_score(valid.labels, scores)
    brier = brier_score_loss(valid.labels, scores)
    champion_brier = brier_score_loss(valid.labels, valid.scores)
    assert pr_auc >= 0.70
    assert abs(brier - champion_brier) <= 0.02
    assert trained.metrics["pr_auc"] == pytest.approx(pr_auc)
    assert trained.metrics["brier"] == pytest.approx(brier)
    assert trained.metrics["champion_brier"] == pytest.approx(champion_brier)
    assert trained.metrics["champion_pr_auc"] == pytest.approx(
        average_precision_score(valid.labels, valid.scores)
    )
    assert 0.9 < trained.metrics["roc_auc"] <= 1.0 and trained.metrics["accuracy"] > 0.9
    assert trained.metrics["n_train"] == len(train_part) == 18_000
    assert trained.metrics["n_valid"] == len(valid) == 4_500
    assert trained.metrics["positives_valid"] == valid.labels.sum()
    assert trained.train_window == (train_part.timestamps.min(), train_part.timestamps.max())
    assert evaluate(trained, valid) == pytest.approx(
        {k: trained.metrics[k] for k in ("pr_auc", "roc_auc", "accuracy", "brier")}
    )


def test_training_is_deterministic_for_a_seed(conflict: Dataset) -> None:
    a = train("conflict", conflict, seed=1)
    b = train("conflict", conflict, seed=1)
    x = conflict.features[:200]
    assert np.array_equal(a.predict(x), b.predict(x))
    # Early stopping holds out a random share of the rows: the seed fixes it.
    data = conflict.subset(np.arange(6000))
    f1, f2 = train("fraud", data, seed=5), train("fraud", data, seed=5)
    assert np.array_equal(f1.predict(x), f2.predict(x))


@pytest.mark.parametrize("model", ["fraud", "conflict"])
def test_label_noise_costs_ranking_and_calibration(
    model: str, fraud: Dataset, conflict: Dataset, fraud_model: TrainedModel
) -> None:
    data = fraud if model == "fraud" else conflict
    clean = fraud_model if model == "fraud" else train(model, data, seed=0)
    n_train = len(data) - round(0.2 * len(data))
    in_train = np.zeros(len(data), dtype=bool)
    in_train[np.argsort(data.timestamps, kind="stable")[:n_train]] = True
    flip = in_train & (np.random.default_rng(0).random(len(data)) < 0.4)
    noisy = train(
        model, dataclasses.replace(data, labels=np.where(flip, 1 - data.labels, data.labels))
    )
    # Validated on the same newest rows, whose labels were left clean.
    assert noisy.metrics["positives_valid"] == clean.metrics["positives_valid"]
    assert noisy.metrics["pr_auc"] < clean.metrics["pr_auc"] - 0.1
    assert noisy.metrics["brier"] > clean.metrics["brier"] + 0.1


# --- failures --------------------------------------------------------------------------------


def test_one_class_and_empty_data_are_refused(fraud: Dataset) -> None:
    negatives = fraud.subset(fraud.labels == 0)
    with pytest.raises(TrainingFailed) as exc:
        train("fraud", negatives)
    assert exc.value.reason == "one_class" and "training" in str(exc.value)
    # Positives only in the oldest rows: the validation split has one class.
    order = np.argsort(fraud.timestamps)
    late = np.zeros(len(fraud), dtype=bool)
    late[order[len(fraud) // 2 :]] = True
    old_positives = fraud.subset(~late | (fraud.labels == 0))
    with pytest.raises(TrainingFailed) as exc:
        train("conflict", old_positives)
    assert exc.value.reason == "one_class" and "validation" in str(exc.value)
    with pytest.raises(TrainingFailed) as exc:
        train("fraud", Dataset.from_rows([]))
    assert exc.value.reason == "no_data"
    with pytest.raises(TrainingFailed) as exc:
        train("fraud", fraud.subset(np.array([0])))
    assert exc.value.reason == "no_data"


def test_unknown_model_is_a_value_error(fraud: Dataset) -> None:
    with pytest.raises(ValueError, match="no pipeline"):
        build_pipeline("churn", ["a"], [])
    with pytest.raises(ValueError, match="no pipeline"):
        train("churn", fraud)
    with pytest.raises(ValueError, match="no pipeline"):
        train_with_limits("churn", fraud, TrainingLimits())


def test_bare_pipelines_predict_probabilities(fraud: Dataset) -> None:
    small = fraud.subset(np.arange(3000))
    numeric, categorical = infer_feature_types(small.features)
    pipeline = build_pipeline("conflict", numeric, categorical, seed=0)
    pipeline.fit(featurize(small.features, numeric, categorical), small.labels)
    scores = predict_scores(pipeline, small.features, numeric, categorical)
    assert scores.shape == (3000,) and average_precision_score(small.labels, scores) > 0.7
    assert set(evaluate(pipeline, small, numeric, categorical)) == {
        "pr_auc",
        "roc_auc",
        "accuracy",
        "brier",
    }
    assert set(evaluate(pipeline, small.subset(small.labels == 0), numeric, categorical)) == {
        "accuracy",
        "brier",
    }


# --- process limits --------------------------------------------------------------------------


def reaped(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, bool]]:
    """The grace each training process was given, and whether it was killed."""
    seen: list[tuple[float, bool]] = []

    def spy(process: Any, grace: float) -> bool:
        killed = _reap(process, grace)
        seen.append((grace, killed))
        return killed

    monkeypatch.setattr(training, "_reap", spy)
    return seen


def test_train_with_limits_matches_in_process_training(
    fraud: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = children()
    seen = reaped(monkeypatch)
    data = fraud.subset(np.arange(9000))
    here = train("fraud", data, seed=2)
    there = train_with_limits("fraud", data, TrainingLimits(max_seconds=120), seed=2)
    assert seen == [(training.EXIT_GRACE_SECONDS, False)]  # it answered, then exited by itself
    assert isinstance(there, TrainedModel)
    drop = {"seconds"}
    assert {k: v for k, v in there.metrics.items() if k not in drop} == {
        k: v for k, v in here.metrics.items() if k not in drop
    }
    assert there.train_window == here.train_window
    assert np.array_equal(there.predict(data.features[:100]), here.predict(data.features[:100]))
    assert children() <= before


def test_a_slow_training_is_killed_on_time(fraud: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    before = children()
    seen = reaped(monkeypatch)
    started = time.monotonic()
    with pytest.raises(TrainingFailed) as exc:
        train_with_limits("fraud", fraud, TrainingLimits(max_seconds=0.01))
    assert exc.value.reason == "timeout"
    assert seen == [(0.0, True)]  # no answer: no grace
    assert time.monotonic() - started < 15
    assert children() <= before


def test_a_training_process_that_answered_gets_to_exit_by_itself_then_is_killed() -> None:
    """Once it has answered, a child is given time to exit by itself (its shutdown, a
    coverage run's data file, runs to the end); one that does not exit in time is killed."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    done = ctx.Process(target=int)
    done.start()
    assert _reap(done, 30.0) is False
    stuck = ctx.Process(target=time.sleep, args=(60,))
    stuck.start()
    started = time.monotonic()
    assert _reap(stuck, 0.5) is True
    assert time.monotonic() - started < 15


def test_running_out_of_memory_is_reported_as_memory(fraud: Dataset) -> None:
    before = children()
    with pytest.raises(TrainingFailed) as exc:
        train_with_limits("fraud", fraud, TrainingLimits(max_memory_mb=64))
    assert exc.value.reason == "memory"
    assert children() <= before


def test_training_failed_survives_pickling() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(TrainingFailed("timeout", "took too long")))
    assert (err.reason, err.detail, str(err)) == (
        "timeout",
        "took too long",
        "timeout: took too long",
    )
    with pytest.raises(ValueError):
        TrainingFailed("bored")


def test_training_records_permutation_importances(fraud_model: TrainedModel) -> None:
    """Score-based permutation importances over the raw features: sum 1, every feature,
    deterministic for a seed, and a feature the model cannot use gets none."""
    imp = fraud_model.importances
    assert imp is not None
    assert set(imp) == {*fraud_model.numeric, *fraud_model.categorical}
    assert sum(imp.values()) == pytest.approx(1.0, abs=1e-5)
    assert all(v >= 0 for v in imp.values())


def test_importances_are_deterministic_for_a_seed(
    fraud: Dataset, fraud_model: TrainedModel
) -> None:
    rows = fraud.features[:300]
    args = (fraud_model.pipeline, rows, fraud_model.numeric, fraud_model.categorical)
    assert permutation_importances(*args, seed=0) == permutation_importances(*args, seed=0)


def test_permutation_importances_find_the_feature_the_score_uses() -> None:
    class OnlyFirst:
        def predict_proba(self, x: Any) -> Any:
            p = 1 / (1 + np.exp(-np.asarray(x[:, 0], dtype=float)))
            return np.column_stack([1 - p, p])

    rng = np.random.default_rng(2)
    rows = [{"a": float(v), "b": float(w)} for v, w in rng.normal(size=(500, 2))]
    imp = permutation_importances(OnlyFirst(), rows, ["a", "b"], [], seed=0)
    assert imp == {"a": 1.0, "b": 0.0}
    assert permutation_importances(OnlyFirst(), [], ["a"], []) == {}
