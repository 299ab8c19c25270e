"""Training challengers for the retrain consumer: scikit-learn pipelines on labeled predictions.

Pure: rows in, a fitted pipeline and its validation metrics out; no Kafka, no registry. The
validation split is always the *newest* share of the rows by prediction time, so a challenger
is judged on data from after everything it learned from, as it will be in production.

:func:`train` fits in-process; :func:`train_with_limits` runs the same fit in a spawned child
process with a wall-clock and an address-space limit, so a runaway fit neither blocks the
event loop of the worker that asked for it nor takes that worker down.
"""

from __future__ import annotations

import math
import multiprocessing
import resource
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, TypeGuard

import numpy as np
import numpy.typing as npt
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from schemas import InvalidEvent, PredictionEvent
from streams.join import binary_label

__all__ = [
    "MODELS",
    "Dataset",
    "TrainedModel",
    "TrainingFailed",
    "TrainingLimits",
    "build_pipeline",
    "champion_metrics",
    "evaluate",
    "featurize",
    "infer_feature_types",
    "predict_scores",
    "score_metrics",
    "train",
    "train_with_limits",
]

MODELS = ("fraud", "conflict")
FAILURE_REASONS = frozenset({"timeout", "memory", "no_data", "one_class", "error"})
MISSING_CATEGORY = "__missing__"
MIN_CATEGORY_COUNT = 20
"""Categories seen fewer times in training are pooled into one "infrequent" column, which is
also where categories never seen in training go at prediction time."""
MAX_CATEGORIES = 64
"""Caps the one-hot width, so a high-cardinality string feature (an id) cannot blow up memory."""
DECISION_THRESHOLD = 0.5
TRAINING_THREADS = 1
"""Native threads (OpenMP, BLAS) a fit may use. One, because training shares its machine with
the stream workers: on the 2-core dev box a 2-thread gradient-boosting fit was 1.7x faster
when the machine was idle but 16x *slower* with both cores busy (spinning OpenMP threads
fight for them). ``TrainingLimits.threads`` raises it on a dedicated machine."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
FeatureRow = dict[str, float | str | None]


class TrainingFailed(Exception):
    """A fit that produced no model; ``reason`` is a stable code (see ``FAILURE_REASONS``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in FAILURE_REASONS:
            raise ValueError(f"unknown training failure reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle their args; ours has two, so say how to rebuild it.
        return (TrainingFailed, (self.reason, self.detail))


@dataclass(frozen=True)
class TrainingLimits:
    max_seconds: float = 300.0
    max_memory_mb: int = 4096
    threads: int = TRAINING_THREADS

    def __post_init__(self) -> None:
        if not self.max_seconds > 0 or self.max_memory_mb <= 0 or self.threads <= 0:
            raise ValueError(f"training limits must be positive: {self}")


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """Labeled rows of one (tenant, model) stream, column-wise.

    ``timestamps`` are the *prediction* times (when the features were seen), which is what
    the time split orders by. ``skipped`` counts the rows :meth:`from_rows` rejected as
    malformed (duplicates are not counted: they are not errors).
    """

    features: list[FeatureRow]
    labels: IntArray
    timestamps: FloatArray
    scores: FloatArray
    versions: list[str]
    event_ids: list[str] = field(default_factory=list)
    """Empty when the dataset was built without them; else one per row."""
    skipped: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.int64))
        object.__setattr__(self, "timestamps", np.asarray(self.timestamps, dtype=np.float64))
        object.__setattr__(self, "scores", np.asarray(self.scores, dtype=np.float64))
        n = len(self.features)
        sizes = {len(self.labels), len(self.timestamps), len(self.scores), len(self.versions)}
        if sizes != {n} or (self.event_ids and len(self.event_ids) != n):
            raise ValueError("Dataset columns have different lengths")
        if n and not np.isin(self.labels, (0, 1)).all():
            raise ValueError("Dataset labels must be 0 or 1")

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> Dataset:
        """Parse ``labeled-predictions`` rows; a malformed row is skipped and counted.

        Rows are validated with the same contract as the ``predictions`` topic, so anything
        the monitor would reject never reaches a model. The first row of an ``event_id``
        wins: a redelivered row must not count twice.

        >>> row = {"event_id": "e1", "tenant": "t", "model": "fraud", "model_version": "v1",
        ...        "features": {"x": 1.5, "c": "a"}, "score": 0.2,
        ...        "prediction_timestamp": "2026-01-01T00:00:00Z", "label": "fraud"}
        >>> data = Dataset.from_rows([row, row, {"event_id": "e2"}])
        >>> len(data), data.labels.tolist(), data.skipped
        (1, [1], 1)
        """
        features: list[FeatureRow] = []
        labels: list[int] = []
        timestamps: list[float] = []
        scores: list[float] = []
        versions: list[str] = []
        event_ids: list[str] = []
        seen: set[str] = set()
        skipped = 0
        for row in rows:
            try:
                event, label = _parse_row(row)
            except (InvalidEvent, TypeError, ValueError, AttributeError):
                skipped += 1
                continue
            if event.event_id in seen:
                continue
            seen.add(event.event_id)
            features.append(event.features)
            labels.append(label)
            timestamps.append(event.timestamp)
            scores.append(event.score)
            versions.append(event.model_version)
            event_ids.append(event.event_id)
        return cls(
            features=features,
            labels=np.asarray(labels, dtype=np.int64),
            timestamps=np.asarray(timestamps, dtype=np.float64),
            scores=np.asarray(scores, dtype=np.float64),
            versions=versions,
            event_ids=event_ids,
            skipped=skipped,
        )

    def __len__(self) -> int:
        return len(self.features)

    @property
    def positives(self) -> int:
        return int(self.labels.sum())

    def subset(self, mask: npt.NDArray[Any]) -> Dataset:
        """Rows selected by a boolean mask or by integer indices (in that order)."""
        index = np.asarray(mask)
        if index.dtype == np.bool_:
            if index.shape != (len(self),):
                raise ValueError(f"mask has shape {index.shape}, dataset has {len(self)} rows")
            index = np.flatnonzero(index)
        elif index.size == 0:
            index = index.astype(np.int64)
        elif not np.issubdtype(index.dtype, np.integer):
            raise TypeError(f"subset needs a boolean mask or integer indices, not {index.dtype}")
        picked = index.tolist()
        return Dataset(
            features=[self.features[i] for i in picked],
            labels=self.labels[index],
            timestamps=self.timestamps[index],
            scores=self.scores[index],
            versions=[self.versions[i] for i in picked],
            event_ids=[self.event_ids[i] for i in picked] if self.event_ids else [],
        )

    def split_by_time(self, validation_share: float = 0.2) -> tuple[Dataset, Dataset]:
        """(train, validation): the oldest rows and the newest ``validation_share`` of them.

        No shuffling: a random split would let the model learn from rows that come after the
        ones it is validated on, which flatters it exactly when the data drifts, i.e. exactly
        when we retrain. Both parts are in time order.
        """
        if not 0.0 < validation_share < 1.0:
            raise ValueError(f"validation_share must be in (0, 1), not {validation_share}")
        n = len(self)
        order = np.argsort(self.timestamps, kind="stable")
        n_valid = round(n * validation_share)
        if n >= 2:
            n_valid = min(max(n_valid, 1), n - 1)
        return self.subset(order[: n - n_valid]), self.subset(order[n - n_valid :])


def _parse_row(row: Mapping[str, Any]) -> tuple[PredictionEvent, int]:
    data = dict(row)
    if "prediction_timestamp" not in data:
        raise InvalidEvent("missing_field", "prediction_timestamp is required")
    data["timestamp"] = data["prediction_timestamp"]
    event = PredictionEvent.from_dict(data)
    label = data.get("label")
    if isinstance(label, bool) or not isinstance(label, int | str):
        raise InvalidEvent("wrong_type", "label must be an integer or a string")
    return event, binary_label(label)


# --- features --------------------------------------------------------------------------------


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def infer_feature_types(features: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """(numeric, categorical) names, each sorted: numeric when every non-null value is a number.

    Inferred from the data, not configured, because the models' feature sets belong to their
    owners and change without telling us. A feature that is null everywhere carries nothing
    and is left out.

    >>> infer_feature_types([{"b": 1.0, "a": "x", "z": None}, {"b": None, "a": 2.0, "c": 3}])
    (['b', 'c'], ['a'])
    """
    seen: set[str] = set()
    not_numeric: set[str] = set()
    for row in features:
        for name, value in row.items():
            if value is None:
                continue
            seen.add(name)
            if not _is_number(value):
                not_numeric.add(name)
    return sorted(seen - not_numeric), sorted(not_numeric)


def featurize(
    features: Sequence[Mapping[str, Any]], numeric: Sequence[str], categorical: Sequence[str]
) -> npt.NDArray[np.object_]:
    """The pipeline's input: an object array, numeric columns first, then categorical.

    Missing values become NaN in numeric columns and None in categorical ones (what the
    imputers look for); a non-number where a number is expected counts as missing, and
    categories are strings, so a feature that changes type never crashes a prediction.
    """
    n, k = len(features), len(numeric)
    out = np.empty((n, k + len(categorical)), dtype=object)
    for i, row in enumerate(features):
        for j, name in enumerate(numeric):
            value = row.get(name)
            out[i, j] = float(value) if _is_number(value) else math.nan
        for j, name in enumerate(categorical, start=k):
            value = row.get(name)
            out[i, j] = None if value is None else str(value)
    return out


# --- pipelines -------------------------------------------------------------------------------


def build_pipeline(
    model: str, numeric: Sequence[str], categorical: Sequence[str], seed: int = 0
) -> Pipeline:
    """The unfitted pipeline of ``model``, for input made by :func:`featurize`.

    Class imbalance (about 10 % positives) is handled by *not* reweighting. Both estimators
    minimise log-loss, which ranks well at this prevalence, and unweighted they stay
    calibrated: a challenger is compared with the champion on Brier as well as PR-AUC, and
    its scores replace the champion's at the same decision threshold. Balanced class weights
    would multiply the odds by about 9 and need a calibration step on held-out rows, which
    are better spent on validation.

    * ``fraud``: gradient-boosted shallow trees (4 leaves), for thresholds and low-order
      interactions, with early stopping on a seeded 10 % of the training rows, so the
      number of trees follows the data size. Deeper trees chase noise in a few thousand
      positives: on simulated traffic 15-leaf trees scored about 0.02 PR-AUC below the
      champion, 4-leaf ones about 0.01.
    * ``conflict``: L2 logistic regression: cheap, stable from one retrain to the next,
      calibrated by construction.
    """
    if model not in MODELS:
        raise ValueError(f"no pipeline for model {model!r} (known: {', '.join(MODELS)})")
    k = len(numeric)
    transformers: list[tuple[str, Any, list[int]]] = []
    if numeric:
        numeric_steps = Pipeline(
            [
                ("impute", SimpleImputer(strategy="median", add_indicator=True)),
                ("scale", StandardScaler()),
            ]
        )
        transformers.append(("numeric", numeric_steps, list(range(k))))
    if categorical:
        categorical_steps = Pipeline(
            [
                (
                    "impute",
                    SimpleImputer(
                        strategy="constant", fill_value=MISSING_CATEGORY, missing_values=None
                    ),
                ),
                (
                    "onehot",
                    OneHotEncoder(
                        handle_unknown="infrequent_if_exist",
                        min_frequency=MIN_CATEGORY_COUNT,
                        max_categories=MAX_CATEGORIES,
                        sparse_output=False,
                    ),
                ),
            ]
        )
        transformers.append(
            ("categorical", categorical_steps, list(range(k, k + len(categorical))))
        )
    if not transformers:
        raise ValueError("a pipeline needs at least one feature")
    preprocess = ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
    estimator: Any
    if model == "fraud":
        estimator = HistGradientBoostingClassifier(
            learning_rate=0.1,
            max_iter=1000,
            max_leaf_nodes=4,
            min_samples_leaf=40,
            l2_regularization=1.0,
            early_stopping=True,
            validation_fraction=0.1,
            n_iter_no_change=15,
            random_state=seed,
        )
    else:
        estimator = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


def predict_scores(
    pipeline: Any,
    features: Sequence[Mapping[str, Any]],
    numeric: Sequence[str],
    categorical: Sequence[str],
) -> FloatArray:
    """Probabilities of class 1."""
    if not features:
        return np.zeros(0, dtype=np.float64)
    proba = pipeline.predict_proba(featurize(features, numeric, categorical))
    return np.asarray(proba[:, 1], dtype=np.float64)


def score_metrics(labels: npt.ArrayLike, scores: npt.ArrayLike) -> dict[str, float]:
    """pr_auc, roc_auc, accuracy (at 0.5) and brier; the AUCs only when both classes occur.

    >>> {k: round(v, 3) for k, v in score_metrics([0, 1, 1], [0.2, 0.9, 0.4]).items()}
    {'accuracy': 0.667, 'brier': 0.137, 'pr_auc': 1.0, 'roc_auc': 1.0}
    >>> sorted(score_metrics([0, 0], [0.2, 0.9]))
    ['accuracy', 'brier']
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(scores, dtype=np.float64)
    if len(y) == 0:
        return {}
    out = {
        "accuracy": float(accuracy_score(y, (p >= DECISION_THRESHOLD).astype(np.int64))),
        "brier": float(brier_score_loss(y, p, pos_label=1)),
    }
    if 0 < int(y.sum()) < len(y):
        out["pr_auc"] = float(average_precision_score(y, p))
        out["roc_auc"] = float(roc_auc_score(y, p))
    return out


def champion_metrics(data: Dataset) -> dict[str, float]:
    """The serving model's metrics on ``data``, from the scores it logged with each row."""
    return score_metrics(data.labels, data.scores)


@dataclass
class TrainedModel:
    pipeline: Any
    model: str
    numeric: list[str]
    categorical: list[str]
    metrics: dict[str, float]
    """On the validation split; ``champion_*`` are the logged scores' on the same rows."""
    train_window: tuple[float, float]
    importances: dict[str, float] | None = None
    """Per feature, how much the model's score moves when that feature is scrambled
    (:func:`permutation_importances`, sum 1); recorded in the registry with the version.
    A class attribute default, so models pickled before it existed still load."""

    def predict(self, features: Sequence[Mapping[str, Any]]) -> FloatArray:
        return predict_scores(self.pipeline, features, self.numeric, self.categorical)


def evaluate(
    trained_or_pipeline: Any,
    data: Dataset,
    numeric: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
) -> dict[str, float]:
    """:func:`score_metrics` of a model on ``data``; the feature lists default to the model's."""
    pipeline = trained_or_pipeline
    if isinstance(trained_or_pipeline, TrainedModel):
        pipeline = trained_or_pipeline.pipeline
        numeric = trained_or_pipeline.numeric if numeric is None else numeric
        categorical = trained_or_pipeline.categorical if categorical is None else categorical
    if numeric is None or categorical is None:
        raise TypeError("evaluate needs the feature lists with a bare pipeline")
    return score_metrics(data.labels, predict_scores(pipeline, data.features, numeric, categorical))


# --- training --------------------------------------------------------------------------------


def train(
    model: str,
    data: Dataset,
    validation_share: float = 0.2,
    seed: int = 0,
    *,
    threads: int = TRAINING_THREADS,
) -> TrainedModel:
    """Fit ``model`` on the oldest rows of ``data`` and validate it on the newest.

    Deterministic for a seed. Raises :class:`TrainingFailed` when there is nothing to learn
    from (``no_data``, ``one_class``) or the fit itself fails (``memory``, ``error``), and
    ``ValueError`` for an unknown model, which is a configuration error, not a data one.
    """
    if model not in MODELS:
        raise ValueError(f"no pipeline for model {model!r} (known: {', '.join(MODELS)})")
    started = time.perf_counter()
    if len(data) == 0:
        raise TrainingFailed("no_data", "no rows")
    train_part, valid_part = data.split_by_time(validation_share)
    parts = (("training", train_part), ("validation", valid_part))
    for name, part in parts:
        if len(part) == 0:
            raise TrainingFailed("no_data", f"the {name} split is empty ({len(data)} rows)")
    for name, part in parts:
        if part.positives in (0, len(part)):
            label = part.labels[0]
            raise TrainingFailed(
                "one_class", f"the {name} split has only label {label} ({len(part)} rows)"
            )
    numeric, categorical = infer_feature_types(train_part.features)
    if not numeric and not categorical:
        raise TrainingFailed("no_data", "the training rows have no non-null features")
    pipeline = build_pipeline(model, numeric, categorical, seed)
    if model == "fraud" and min(train_part.positives, len(train_part) - train_part.positives) < 50:
        # Too few of a class to hold some out for early stopping: a short fixed fit instead.
        pipeline.set_params(model__early_stopping=False, model__max_iter=50)
    try:
        with threadpool_limits(limits=threads):
            pipeline.fit(featurize(train_part.features, numeric, categorical), train_part.labels)
            metrics = evaluate(pipeline, valid_part, numeric, categorical)
    except MemoryError as exc:
        raise TrainingFailed("memory", f"out of memory while fitting {model}") from exc
    except (ValueError, ArithmeticError) as exc:
        raise TrainingFailed("error", f"{type(exc).__name__}: {exc}") from exc
    metrics |= {f"champion_{k}": v for k, v in champion_metrics(valid_part).items()}
    metrics |= {
        "n_train": float(len(train_part)),
        "n_valid": float(len(valid_part)),
        "positives_train": float(train_part.positives),
        "positives_valid": float(valid_part.positives),
        "seconds": time.perf_counter() - started,
    }
    with threadpool_limits(limits=threads):
        importances = permutation_importances(
            pipeline, valid_part.features, numeric, categorical, seed
        )
    return TrainedModel(
        pipeline=pipeline,
        model=model,
        numeric=numeric,
        categorical=categorical,
        metrics=metrics,
        train_window=(float(train_part.timestamps.min()), float(train_part.timestamps.max())),
        importances=importances,
    )


IMPORTANCE_ROWS = 2000
"""Rows (a seeded sample of the validation split) that permutation importance scores."""
IMPORTANCE_REPEATS = 3


def permutation_importances(
    pipeline: Any,
    features: Sequence[Mapping[str, Any]],
    numeric: Sequence[str],
    categorical: Sequence[str],
    seed: int = 0,
) -> dict[str, float]:
    """Per feature: the mean absolute change of the model's score when that feature's column
    is shuffled (``IMPORTANCE_REPEATS`` seeded shuffles of at most ``IMPORTANCE_ROWS`` rows),
    normalised to sum 1; empty when no feature moves the score.

    Score-based, not metric-based: it needs no labels and measures what the drift monitor
    asks, how much the *score* depends on the feature, for any pipeline (the trees of
    ``fraud`` have no ``feature_importances_``, and the logistic coefficients of
    ``conflict`` are per one-hot column and scaled). Deterministic for a seed.
    """
    columns = [*numeric, *categorical]
    if not features or not columns:
        return {}
    rng = np.random.default_rng(seed)
    rows = list(features)
    if len(rows) > IMPORTANCE_ROWS:
        pick = np.sort(rng.choice(len(rows), IMPORTANCE_ROWS, replace=False))
        rows = [rows[i] for i in pick]
    x = featurize(rows, numeric, categorical)
    base = np.asarray(pipeline.predict_proba(x)[:, 1], dtype=np.float64)
    raw: dict[str, float] = {}
    for j, name in enumerate(columns):
        moved = 0.0
        for _ in range(IMPORTANCE_REPEATS):
            shuffled = x.copy()
            shuffled[:, j] = x[rng.permutation(len(rows)), j]
            scores = np.asarray(pipeline.predict_proba(shuffled)[:, 1], dtype=np.float64)
            moved += float(np.mean(np.abs(scores - base)))
        raw[name] = moved / IMPORTANCE_REPEATS
    total = sum(raw.values())
    if not (total > 0 and math.isfinite(total)):
        return {}
    return {name: round(v / total, 6) for name, v in raw.items()}


def _child(
    conn: Connection,
    model: str,
    data: Dataset,
    limits: TrainingLimits,
    validation_share: float,
    seed: int,
) -> None:
    """Entry point of the training process: one message back, whatever happens."""
    mb = limits.max_memory_mb
    message: tuple[Any, ...]
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = mb << 20 if hard == resource.RLIM_INFINITY else min(mb << 20, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        trained = train(model, data, validation_share, seed, threads=limits.threads)
        message = ("ok", trained)
    except TrainingFailed as exc:
        message = ("failed", exc.reason, exc.detail)
    except MemoryError:
        message = ("failed", "memory", f"out of memory (limit {mb} MB)")
    except BaseException as exc:  # everything must reach the parent
        message = ("failed", "error", f"{type(exc).__name__}: {exc}")
    try:
        conn.send(message)
    except MemoryError:
        conn.send(("failed", "memory", f"out of memory sending the model (limit {mb} MB)"))
    finally:
        conn.close()


def train_with_limits(
    model: str,
    data: Dataset,
    limits: TrainingLimits,
    validation_share: float = 0.2,
    seed: int = 0,
) -> TrainedModel:
    """:func:`train` in a spawned child process, under ``limits``.

    Blocking: call it from a thread (``asyncio.to_thread``) in an event loop. A fresh
    *spawned* interpreter, not a fork, because forking a process that runs Kafka clients
    and threads copies their locks in whatever state they are in. The child is killed
    (SIGKILL) when ``max_seconds`` pass, and never outlives this call; once it has answered,
    it is given :data:`EXIT_GRACE_SECONDS` to exit by itself first.
    """
    if model not in MODELS:
        raise ValueError(f"no pipeline for model {model!r} (known: {', '.join(MODELS)})")
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_child,
        args=(sender, model, data, limits, validation_share, seed),
        name=f"driftwatch-train-{model}",
        daemon=True,
    )
    deadline = time.monotonic() + limits.max_seconds
    message: tuple[Any, ...] | None = None
    try:
        process.start()
        sender.close()  # ours; the child has its own, so EOF means the child is gone
        if not receiver.poll(max(0.0, deadline - time.monotonic())):
            raise TrainingFailed("timeout", f"training {model} took over {limits.max_seconds} s")
        try:
            message = receiver.recv()
        except EOFError:
            process.join()
            raise _died(process.exitcode) from None
    finally:
        sender.close()
        if process.pid is not None:
            _reap(process, EXIT_GRACE_SECONDS if message is not None else 0.0)
        receiver.close()
    assert message is not None  # received, or raised above
    if message[0] == "ok":
        result: TrainedModel = message[1]
        return result
    raise TrainingFailed(message[1], message[2])


EXIT_GRACE_SECONDS = 5.0
"""How long a training process that has sent its answer may take to exit on its own before
it is killed: its interpreter's shutdown (atexit handlers, a coverage run's data file) then
runs to the end, where killing it at once cut it short at random."""


def _reap(process: Any, grace: float) -> bool:
    """Wait up to ``grace`` seconds for ``process`` to exit, kill it if it has not, and
    release it; True if it had to be killed.

    >>> import multiprocessing
    >>> p = multiprocessing.get_context("spawn").Process(target=int)
    >>> p.start(); _reap(p, 30.0)
    False
    """
    process.join(grace)
    killed = process.is_alive()
    if killed:
        process.kill()
    process.join()
    process.close()
    return bool(killed)


def _died(exitcode: int | None) -> TrainingFailed:
    if exitcode == -signal.SIGKILL:
        # Nobody here killed it: on Linux that is the kernel's OOM killer.
        return TrainingFailed("memory", "the training process was killed (SIGKILL)")
    return TrainingFailed("error", f"the training process died (exit code {exitcode})")
