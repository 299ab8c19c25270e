"""Seeded synthetic traffic for the ``fraud`` and ``conflict`` models, with injectable drift.

Pure and deterministic: numpy only, no Kafka, no clock except for the default ``start``.
Every (tenant, model) pair is an independent *stream* with its own fixed feature
distributions and scoring function, and every (stream, day) draws from its own random
generator seeded by ``(seed, tenant, model, day)``. So the same config gives byte-identical
output, a drift restricted to one tenant leaves the other tenants' streams exactly as they
were without it, and the days before a drift starts are identical to a run without the drift.

Model of one stream:

* numeric feature ``k`` is Gaussian with a fixed mean/std (derived from the seed), plus an
  optional day-of-week pattern (``weekly_seasonality`` sigmas);
* categorical feature ``j`` has a fixed mix of 5-8 categories; the *last* category is the
  rare one (1-3 %), which ``category_mix`` drift moves probability mass to;
* about 1 % of feature values are missing (``null``);
* the true log-odds are a linear function of the first (up to four) standardized numeric
  features and a per-category offset of the first categorical feature, scaled so the base
  rate is about 10 % and the model is good (ROC-AUC about 0.95, PR-AUC about 0.8); the
  emitted ``score`` is the logistic of the true log-odds plus a little noise, and the label
  is a Bernoulli draw of the true probability. Drifted features feed the same function, so
  feature drift moves the score distribution and the positive rate (covariate shift).

Outcomes: a ``label_rate`` share of predictions gets an :class:`OutcomeEvent` with the same
``event_id``, ``outcome_delay_hours`` (uniform) after the prediction.

Timestamps are whole microseconds, so they survive the RFC 3339 wire format unchanged.
"""

from __future__ import annotations

import gzip
import heapq
import math
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt

from schemas.events import FeatureValue, OutcomeEvent, PredictionEvent

__all__ = [
    "MODEL_VERSION",
    "DriftSpec",
    "DriftType",
    "SimulationConfig",
    "day_start",
    "feature_names",
    "format_drift",
    "generate",
    "generate_outcomes",
    "parse_drift",
    "resolve_start",
    "validate",
    "write_jsonl",
]

MODEL_VERSION = "v1"

SECONDS_PER_DAY = 86_400
_US = 1_000_000
_DAY_US = SECONDS_PER_DAY * _US

MISSING_RATE = 0.01
BASE_RATE = 0.10
LOGIT_SCALE = 4.2  # std of the true log-odds; sets how separable the classes are
SCORE_NOISE = 0.4  # std of the model's error on the log-odds scale
DECISION_THRESHOLD = 0.5
_MODEL_NUMERIC = 4  # how many numeric features drive the score
_FEATURE_DECIMALS = 4
_SCORE_DECIMALS = 6

# Purposes for the per-stream random generators, so draws for one thing never shift another.
_P_PROFILE = 0
_P_FEATURES = 1
_P_LABELS = 2
_P_CONCEPT = 3
_P_OUTCOMES = 3

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class DriftType(StrEnum):
    MEAN_SHIFT = "mean_shift"
    VARIANCE = "variance"
    CATEGORY_MIX = "category_mix"
    CONCEPT = "concept"
    RELATION = "relation"
    NONE = "none"


@dataclass(frozen=True)
class DriftSpec:
    """One injected drift.

    ``magnitude``: shift in sigmas (``mean_shift``), multiplier of the deviation from the mean
    (``variance``, > 0), share of probability mass moved to the rare category
    (``category_mix``, 0..1), or share of predictions whose label is flipped while features
    and scores stay as they were (``concept``, 0..1: noise no model can learn), or how far the
    true log-odds move toward a new rule: the scored features' weights rotated by one place
    (``relation``, 0..1: a concept drift a retrained model *can* learn; scores stay the old
    model's). ``start_day`` may be
    fractional (60.5 = noon of day 60).
    Empty ``features`` = the first numeric feature (first categorical for ``category_mix``);
    empty ``tenants``/``models`` = all of them.
    """

    type: DriftType
    start_day: float
    magnitude: float = 1.0
    features: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()
    models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            kind = DriftType(self.type)
        except ValueError:
            raise ValueError(f"unknown drift type {self.type!r}") from None
        object.__setattr__(self, "type", kind)
        for name in ("features", "tenants", "models"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"DriftSpec.{name} must be a tuple of names, not a string")
            object.__setattr__(self, name, tuple(value))
            if any(not isinstance(v, str) or not v for v in getattr(self, name)):
                raise ValueError(f"DriftSpec.{name} must hold non-empty names")
        for name in ("start_day", "magnitude"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"DriftSpec.{name} must be a number, not {value!r}")
            object.__setattr__(self, name, float(value))
        if not math.isfinite(self.start_day) or self.start_day < 0:
            raise ValueError(f"drift start_day must be a finite number >= 0, not {self.start_day}")
        if not math.isfinite(self.magnitude):
            raise ValueError(f"drift magnitude must be finite, not {self.magnitude}")
        if kind is DriftType.VARIANCE and self.magnitude <= 0:
            raise ValueError(f"variance drift magnitude must be > 0, not {self.magnitude}")
        unit = (DriftType.CATEGORY_MIX, DriftType.CONCEPT, DriftType.RELATION)
        if kind in unit and not 0 <= self.magnitude <= 1:
            raise ValueError(f"{kind.value} magnitude must be in [0, 1], not {self.magnitude}")


@dataclass(frozen=True)
class SimulationConfig:
    seed: int = 7
    tenants: tuple[str, ...] = ("acme", "globex")
    models: tuple[str, ...] = ("fraud", "conflict")
    days: int = 90
    events_per_day: int = 1500  # per (tenant, model)
    numeric_features: int = 6
    categorical_features: int = 2
    start: float | None = None  # epoch seconds of day 0; None = UTC midnight of today - days
    drifts: tuple[DriftSpec, ...] = ()
    outcome_delay_hours: tuple[float, float] = (24.0, 72.0)
    label_rate: float = 0.8
    weekly_seasonality: float = 0.0

    @property
    def streams(self) -> list[tuple[str, str]]:
        """(tenant, model) pairs in output order."""
        return [(t, m) for t in self.tenants for m in self.models]


# --- feature catalogue -----------------------------------------------------------------------

# (name, nominal mean, nominal std); the seed jitters both by up to +-25 %.
_NUMERIC_TEMPLATES: dict[str, tuple[tuple[str, float, float], ...]] = {
    "fraud": (
        ("amount", 120.0, 30.0),
        ("velocity_1h", 3.0, 0.75),
        ("account_age_days", 420.0, 100.0),
        ("distance_km", 25.0, 6.0),
        ("avg_amount_30d", 110.0, 25.0),
        ("session_duration_s", 180.0, 45.0),
        ("ip_risk_score", 0.3, 0.07),
        ("minutes_since_last_txn", 240.0, 60.0),
    ),
    "conflict": (
        ("message_rate_1h", 4.0, 1.0),
        ("sentiment", 0.1, 0.3),
        ("response_time_min", 45.0, 12.0),
        ("order_value", 80.0, 20.0),
        ("toxicity_score", 0.15, 0.04),
        ("prior_disputes_90d", 1.2, 0.3),
        ("account_age_days", 500.0, 120.0),
        ("thread_length", 12.0, 3.0),
    ),
}

# (name, categories); the last category is the rare one.
_CATEGORICAL_TEMPLATES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "fraud": (
        (
            "merchant_category",
            (
                "grocery",
                "restaurants",
                "fuel",
                "electronics",
                "travel",
                "online_services",
                "gift_cards",
                "crypto",
            ),
        ),
        ("channel", ("pos", "ecommerce", "mobile_app", "atm", "phone_order")),
        ("device_type", ("ios", "android", "desktop", "tablet", "unknown")),
        ("country", ("domestic", "eu", "us", "uk", "apac", "latam", "high_risk")),
    ),
    "conflict": (
        (
            "issue_type",
            ("delivery", "refund", "quality", "billing", "account", "harassment", "legal"),
        ),
        ("contact_channel", ("chat", "email", "phone", "social", "in_app", "letter")),
        ("customer_tier", ("basic", "plus", "premium", "business", "enterprise")),
        ("region", ("na", "eu", "uk", "apac", "latam", "mea")),
    ),
}


def feature_names(cfg: SimulationConfig, model: str | None = None) -> tuple[list[str], list[str]]:
    """(numeric names, categorical names) of ``model`` (default: ``cfg.models[0]``).

    >>> feature_names(SimulationConfig(numeric_features=3, categorical_features=1))
    (['amount', 'velocity_1h', 'account_age_days'], ['merchant_category'])
    >>> feature_names(SimulationConfig(numeric_features=2, categorical_features=0), "other")
    (['num_00', 'num_01'], [])
    """
    if model is None:
        if not cfg.models:
            raise ValueError("the config has no models")
        model = cfg.models[0]
    numeric = [n for n, _, _ in _NUMERIC_TEMPLATES.get(model, ())][: cfg.numeric_features]
    numeric += [f"num_{i:02d}" for i in range(len(numeric), cfg.numeric_features)]
    categorical = [n for n, _ in _CATEGORICAL_TEMPLATES.get(model, ())][: cfg.categorical_features]
    categorical += [f"cat_{i:02d}" for i in range(len(categorical), cfg.categorical_features)]
    return numeric, categorical


# --- drift syntax ----------------------------------------------------------------------------


def parse_drift(text: str) -> DriftSpec:
    """Parse the CLI drift syntax: ``TYPE:key=value:...``.

    Keys: ``day`` (or ``start_day``; required except for ``none``), ``magnitude``, and the
    comma-separated lists ``features``, ``tenants``, ``models``.

    >>> parse_drift("mean_shift:day=60.5:magnitude=1.5:features=amount,velocity_1h:tenants=acme")
    DriftSpec(type=<DriftType.MEAN_SHIFT: 'mean_shift'>, start_day=60.5, magnitude=1.5, \
features=('amount', 'velocity_1h'), tenants=('acme',), models=())
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty drift spec")
    head, *parts = text.strip().split(":")
    try:
        kind = DriftType(head.strip().lower())
    except ValueError:
        known = ", ".join(t.value for t in DriftType)
        raise ValueError(f"unknown drift type {head!r} (expected one of {known})") from None
    values: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        key = "day" if key == "start_day" else key
        if not sep or not key:
            raise ValueError(f"drift option {part!r} is not key=value")
        if key not in ("day", "magnitude", "features", "tenants", "models"):
            raise ValueError(f"unknown drift option {key!r}")
        if key in values:
            raise ValueError(f"drift option {key!r} given twice")
        values[key] = value.strip()
    if "day" not in values and kind is not DriftType.NONE:
        raise ValueError(f"drift {text!r} needs day=N")

    def number(key: str, default: float) -> float:
        raw = values.get(key)
        if raw is None:
            return default
        try:
            out = float(raw)
        except ValueError:
            raise ValueError(f"drift option {key}={raw!r} is not a number") from None
        if not math.isfinite(out):
            raise ValueError(f"drift option {key}={raw!r} is not finite")
        return out

    def names(key: str) -> tuple[str, ...]:
        raw = values.get(key)
        if raw is None:
            return ()
        items = tuple(item.strip() for item in raw.split(","))
        if not all(items):
            raise ValueError(f"drift option {key}={raw!r} has an empty name")
        return items

    return DriftSpec(
        type=kind,
        start_day=number("day", 0.0),
        magnitude=number("magnitude", 1.0),
        features=names("features"),
        tenants=names("tenants"),
        models=names("models"),
    )


def format_drift(spec: DriftSpec) -> str:
    """The canonical CLI text of ``spec``; ``parse_drift(format_drift(s)) == s``.

    >>> format_drift(parse_drift("variance:day=30:magnitude=2:models=fraud"))
    'variance:day=30:magnitude=2:models=fraud'
    """
    parts = [spec.type.value, f"day={_fmt_number(spec.start_day)}"]
    parts.append(f"magnitude={_fmt_number(spec.magnitude)}")
    for key in ("features", "tenants", "models"):
        items: tuple[str, ...] = getattr(spec, key)
        if items:
            parts.append(f"{key}={','.join(items)}")
    return ":".join(parts)


def _fmt_number(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


# --- per-stream profile ----------------------------------------------------------------------


@dataclass(frozen=True)
class _ResolvedDrift:
    type: DriftType
    start_us: int
    magnitude: float
    numeric: tuple[int, ...]
    categorical: tuple[int, ...]


@dataclass(frozen=True)
class _Categorical:
    name: str
    categories: npt.NDArray[np.object_]
    probs: FloatArray  # the last category is the rare one


@dataclass(frozen=True)
class _Profile:
    index: int
    tenant: str
    model: str
    numeric_names: tuple[str, ...]
    means: FloatArray
    stds: FloatArray
    phases: FloatArray  # day-of-week pattern phase per numeric feature
    categorical: tuple[_Categorical, ...]
    weights: FloatArray  # on standardized numeric features (zeros past the first few)
    cat_offsets: FloatArray  # log-odds offset per category of the first categorical feature
    intercept: float
    drifts: tuple[_ResolvedDrift, ...]

    @property
    def feature_order(self) -> tuple[str, ...]:
        return self.numeric_names + tuple(c.name for c in self.categorical)


def _name_key(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def _rng(
    cfg: SimulationConfig, tenant: str, model: str, purpose: int, day: int = 0
) -> np.random.Generator:
    seq = np.random.SeedSequence([cfg.seed, _name_key(tenant), _name_key(model), purpose, day])
    return np.random.default_rng(seq)


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float64)


def _build_profile(
    cfg: SimulationConfig, index: int, tenant: str, model: str, start_us: int
) -> _Profile:
    rng = _rng(cfg, tenant, model, _P_PROFILE)
    numeric_names, categorical_names = feature_names(cfg, model)
    templates = _NUMERIC_TEMPLATES.get(model, ())
    k = len(numeric_names)
    nominal = np.array([(m, s) for _, m, s in templates[:k]], dtype=np.float64).reshape(-1, 2)
    extra = k - len(nominal)
    generic = np.column_stack([rng.uniform(0.0, 100.0, extra), rng.uniform(1.0, 15.0, extra)])
    nominal = np.vstack([nominal, generic]) if extra else nominal
    jitter = rng.uniform(0.8, 1.25, (k, 2))
    means = np.asarray(nominal[:, 0] * jitter[:, 0], dtype=np.float64)
    stds = np.asarray(nominal[:, 1] * jitter[:, 1], dtype=np.float64)
    phases = rng.uniform(0.0, 2 * np.pi, k)

    cat_templates = dict(_CATEGORICAL_TEMPLATES.get(model, ()))
    categorical: list[_Categorical] = []
    for name in categorical_names:
        cats = cat_templates.get(name)
        if cats is None:
            cats = tuple(f"c{i}" for i in range(int(rng.integers(5, 9))))
        rare = rng.uniform(0.01, 0.03)
        common = rng.dirichlet(np.full(len(cats) - 1, 4.0)) * (1.0 - rare)
        probs = np.append(common, rare)
        categorical.append(
            _Categorical(name=name, categories=np.array(cats, dtype=object), probs=probs)
        )

    weights = np.zeros(k)
    base_weights = np.array([1.0, 0.8, -0.7, 0.5])[: min(k, _MODEL_NUMERIC)]
    weights[: len(base_weights)] = base_weights * rng.uniform(0.85, 1.15, len(base_weights))
    if categorical:
        n_cats = len(categorical[0].probs)
        cat_offsets = rng.normal(0.0, 0.3, n_cats)
        cat_offsets[-1] += 1.5  # the rare category is the risky one
        probs0 = categorical[0].probs
        cat_offsets -= float(probs0 @ cat_offsets)
        cat_var = float(probs0 @ cat_offsets**2)
    else:
        cat_offsets = np.zeros(0)
        cat_var = 0.0
    spread = math.sqrt(float(weights @ weights) + cat_var)
    if spread > 1e-9:
        weights *= LOGIT_SCALE / spread
        cat_offsets *= LOGIT_SCALE / spread
    intercept = _calibrate_intercept(rng, weights, cat_offsets, categorical)

    return _Profile(
        index=index,
        tenant=tenant,
        model=model,
        numeric_names=tuple(numeric_names),
        means=means,
        stds=stds,
        phases=phases,
        categorical=tuple(categorical),
        weights=weights,
        cat_offsets=cat_offsets,
        intercept=intercept,
        drifts=_resolve_drifts(cfg, tenant, model, numeric_names, categorical_names, start_us),
    )


def _calibrate_intercept(
    rng: np.random.Generator,
    weights: FloatArray,
    cat_offsets: FloatArray,
    categorical: list[_Categorical],
) -> float:
    """The intercept that puts the mean true probability at ``BASE_RATE``."""
    n = 20_000
    eta = rng.standard_normal((n, len(weights))) @ weights
    if categorical:
        probs = categorical[0].probs
        eta = eta + cat_offsets[_draw_categories(rng.random(n), probs)]
    lo, hi = -30.0, 10.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if float(_sigmoid(eta + mid).mean()) > BASE_RATE:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def _draw_categories(u: FloatArray, probs: FloatArray) -> IntArray:
    cdf = np.cumsum(probs)
    idx = np.searchsorted(cdf, u, side="right")
    return np.minimum(idx, len(probs) - 1).astype(np.int64)


def _resolve_drifts(
    cfg: SimulationConfig,
    tenant: str,
    model: str,
    numeric: list[str],
    categorical: list[str],
    start_us: int,
) -> tuple[_ResolvedDrift, ...]:
    out: list[_ResolvedDrift] = []
    for spec in cfg.drifts:
        if spec.type is DriftType.NONE:
            continue
        if spec.tenants and tenant not in spec.tenants:
            continue
        if spec.models and model not in spec.models:
            continue
        num_idx: tuple[int, ...] = ()
        cat_idx: tuple[int, ...] = ()
        if spec.type in (DriftType.CONCEPT, DriftType.RELATION):
            pass  # labels only
        elif spec.type is DriftType.CATEGORY_MIX:
            if spec.features:
                cat_idx = tuple(categorical.index(f) for f in spec.features if f in categorical)
            elif categorical:
                cat_idx = (0,)
        elif spec.features:
            num_idx = tuple(numeric.index(f) for f in spec.features if f in numeric)
        elif numeric:
            num_idx = (0,)
        if num_idx or cat_idx or spec.type in (DriftType.CONCEPT, DriftType.RELATION):
            out.append(
                _ResolvedDrift(
                    type=spec.type,
                    start_us=start_us + round(spec.start_day * _DAY_US),
                    magnitude=spec.magnitude,
                    numeric=num_idx,
                    categorical=cat_idx,
                )
            )
    return tuple(out)


# --- validation ------------------------------------------------------------------------------


def validate(cfg: SimulationConfig) -> None:
    """Raise ValueError, saying what is wrong, for a configuration no stream can come of."""
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ValueError(f"seed must be an integer >= 0, not {cfg.seed!r}")
    for name in ("days", "events_per_day", "numeric_features", "categorical_features"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, not {value!r}")
    if cfg.events_per_day > 1_000_000:
        raise ValueError("events_per_day must be at most 1,000,000 (event ids have 6 digits)")
    for name in ("tenants", "models"):
        values: tuple[str, ...] = getattr(cfg, name)
        if not values:
            raise ValueError(f"{name} must not be empty")
        if len(set(values)) != len(values) or not all(isinstance(v, str) and v for v in values):
            raise ValueError(f"{name} must be distinct non-empty names: {values!r}")
    if not 0.0 <= cfg.label_rate <= 1.0:
        raise ValueError(f"label_rate must be in [0, 1], not {cfg.label_rate}")
    lo, hi = cfg.outcome_delay_hours
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
        raise ValueError(f"outcome_delay_hours must be 0 <= low <= high, not {(lo, hi)}")
    if not math.isfinite(cfg.weekly_seasonality):
        raise ValueError("weekly_seasonality must be finite")
    if cfg.start is not None and not math.isfinite(cfg.start):
        raise ValueError("start must be finite")
    for spec in cfg.drifts:
        if spec.type is DriftType.NONE:
            continue
        unknown = set(spec.tenants) - set(cfg.tenants)
        if unknown:
            raise ValueError(f"drift {format_drift(spec)!r}: unknown tenants {sorted(unknown)}")
        unknown = set(spec.models) - set(cfg.models)
        if unknown:
            raise ValueError(f"drift {format_drift(spec)!r}: unknown models {sorted(unknown)}")
        is_cat = spec.type is DriftType.CATEGORY_MIX
        available: set[str] = set()
        for model in spec.models or cfg.models:
            numeric, categorical = feature_names(cfg, model)
            available.update(categorical if is_cat else numeric)
        kind = "categorical" if is_cat else "numeric"
        if not spec.features and not available:
            raise ValueError(f"drift {format_drift(spec)!r}: the models have no {kind} features")
        unknown = set(spec.features) - available
        if unknown:
            raise ValueError(
                f"drift {format_drift(spec)!r}: no {kind} feature named {sorted(unknown)}"
            )


def resolve_start(cfg: SimulationConfig) -> float:
    """Epoch seconds of day 0: ``cfg.start``, or UTC midnight of today minus ``cfg.days``
    and, when there are outcomes, minus the days of their longest delay: the last outcomes
    are then not from the future, which a worker refuses (``DRIFTWATCH_MAX_FUTURE_SECONDS``:
    with the stream ending today, ~5 % of outcomes 1-3 days late were dead-lettered)."""
    if cfg.start is not None:
        return float(cfg.start)
    late = math.ceil(cfg.outcome_delay_hours[1] / 24) if cfg.label_rate > 0 else 0
    day0 = datetime.now(UTC).date() - timedelta(days=cfg.days + late)  # UTC's today
    return datetime.combine(day0, time(0), tzinfo=UTC).timestamp()


def day_start(cfg: SimulationConfig, day: float) -> float:
    """Epoch seconds at which (possibly fractional) ``day`` starts."""
    return resolve_start(cfg) + day * SECONDS_PER_DAY


# --- one (stream, day) -----------------------------------------------------------------------


@dataclass(frozen=True)
class _DayBatch:
    profile: _Profile
    day: int
    times_us: IntArray
    numeric: FloatArray  # (n, k) before rounding
    categorical: IntArray  # (n, c) category indices
    missing: BoolArray  # (n, k + c)
    score: FloatArray
    label: IntArray


def _simulate_day(cfg: SimulationConfig, p: _Profile, day: int, day_start_us: int) -> _DayBatch:
    n = cfg.events_per_day
    rng = _rng(cfg, p.tenant, p.model, _P_FEATURES, day)
    times = np.sort(rng.integers(0, _DAY_US, n, dtype=np.int64)) + day_start_us
    k = len(p.means)
    c = len(p.categorical)
    z = rng.standard_normal((n, k))
    u_cat = rng.random((n, c))
    missing = rng.random((n, k + c)) < MISSING_RATE

    shift = np.zeros((n, k))
    scale = np.ones((n, k))
    cat_probs: dict[int, FloatArray] = {}
    for d in p.drifts:
        active = times >= d.start_us
        if not active.any():
            continue
        for j in d.numeric:
            if d.type is DriftType.MEAN_SHIFT:
                shift[active, j] += d.magnitude * p.stds[j]
            elif d.type is DriftType.VARIANCE:
                scale[active, j] *= d.magnitude
        for j in d.categorical:
            rows = cat_probs.get(j)
            if rows is None:
                rows = np.tile(p.categorical[j].probs, (n, 1))
                cat_probs[j] = rows
            target = np.zeros(rows.shape[1])
            target[-1] = 1.0
            rows[active] = (1.0 - d.magnitude) * rows[active] + d.magnitude * target

    seasonal = np.zeros(k)
    if cfg.weekly_seasonality and k:
        weekday = datetime.fromtimestamp(day_start_us / _US, tz=UTC).weekday()
        seasonal = cfg.weekly_seasonality * np.sin(2 * np.pi * weekday / 7 + p.phases)
    standardized = seasonal + shift / p.stds + scale * z
    numeric = p.means + p.stds * standardized

    categorical = np.zeros((n, c), dtype=np.int64)
    for j, cat in enumerate(p.categorical):
        rows = cat_probs.get(j)
        if rows is None:
            categorical[:, j] = _draw_categories(u_cat[:, j], cat.probs)
        else:
            cdf = np.cumsum(rows, axis=1)
            idx = (u_cat[:, j, None] >= cdf).sum(axis=1)
            categorical[:, j] = np.minimum(idx, rows.shape[1] - 1)

    eta = p.intercept + standardized @ p.weights
    if c:
        eta = eta + p.cat_offsets[categorical[:, 0]]
    label_rng = _rng(cfg, p.tenant, p.model, _P_LABELS, day)
    score = _sigmoid(eta + label_rng.normal(0.0, SCORE_NOISE, n))
    truth = eta
    for d in p.drifts:
        if d.type is DriftType.RELATION:
            used = int(np.count_nonzero(p.weights))
            rotated = p.weights.copy()
            rotated[:used] = np.roll(p.weights[:used], 1)
            mixed = (1.0 - d.magnitude) * p.weights + d.magnitude * rotated
            active = times >= d.start_us
            truth = truth.copy()
            truth[active] = eta[active] + standardized[active] @ (mixed - p.weights)
    label = (label_rng.random(n) < _sigmoid(truth)).astype(np.int64)
    concept = [d for d in p.drifts if d.type is DriftType.CONCEPT]
    if concept:
        flip_u = _rng(cfg, p.tenant, p.model, _P_CONCEPT, day).random(n)
        for d in concept:
            flip = (times >= d.start_us) & (flip_u < d.magnitude)
            label[flip] = 1 - label[flip]
    return _DayBatch(p, day, times, numeric, categorical, missing, score, label)


def _event_ids(p: _Profile, day: int, idx: Iterable[int]) -> list[str]:
    prefix = f"{p.tenant}-{p.model}-{day:03d}-"
    return [f"{prefix}{i:06d}" for i in idx]


def _prediction_events(b: _DayBatch) -> list[PredictionEvent]:
    p = b.profile
    n = len(b.times_us)
    columns: list[list[FeatureValue]] = []
    rounded = np.round(b.numeric, _FEATURE_DECIMALS)
    for j in range(len(p.means)):
        col: list[FeatureValue] = rounded[:, j].tolist()
        columns.append(col)
    for j, cat in enumerate(p.categorical):
        columns.append(cat.categories[b.categorical[:, j]].tolist())
    for i, j in zip(*np.nonzero(b.missing), strict=True):
        columns[int(j)][int(i)] = None
    names = p.feature_order
    rows = zip(*columns, strict=True) if columns else ((),) * n
    scores = np.round(b.score, _SCORE_DECIMALS)
    preds = (scores >= DECISION_THRESHOLD).astype(np.int64).tolist()
    ids = _event_ids(p, b.day, range(n))
    timestamps = (b.times_us / _US).tolist()
    return [
        PredictionEvent(
            event_id=event_id,
            tenant=p.tenant,
            model=p.model,
            model_version=MODEL_VERSION,
            timestamp=ts,
            features=dict(zip(names, row, strict=True)),
            score=score,
            prediction=pred,
        )
        for event_id, ts, row, score, pred in zip(
            ids, timestamps, rows, scores.tolist(), preds, strict=True
        )
    ]


# --- public generators -----------------------------------------------------------------------


def _profiles(cfg: SimulationConfig, start_us: int) -> list[_Profile]:
    return [
        _build_profile(cfg, i, tenant, model, start_us)
        for i, (tenant, model) in enumerate(cfg.streams)
    ]


def generate(cfg: SimulationConfig) -> Iterator[PredictionEvent]:
    """All streams' predictions interleaved in non-decreasing event time; one day in memory.

    >>> events = list(generate(SimulationConfig(days=2, events_per_day=3, start=0.0)))
    >>> len(events), sorted(e.event_id for e in events)[0]
    (24, 'acme-conflict-000-000000')
    """
    validate(cfg)
    start_us = round(resolve_start(cfg) * _US)
    profiles = _profiles(cfg, start_us)
    for day in range(cfg.days):
        day_us = start_us + day * _DAY_US
        events: list[PredictionEvent] = []
        times: list[IntArray] = []
        for p in profiles:
            batch = _simulate_day(cfg, p, day, day_us)
            events.extend(_prediction_events(batch))
            times.append(batch.times_us)
        if not events:
            continue
        order = np.argsort(np.concatenate(times), kind="stable")
        for k in order.tolist():
            yield events[k]


def generate_outcomes(cfg: SimulationConfig) -> Iterator[OutcomeEvent]:
    """Outcomes of :func:`generate`'s predictions, in non-decreasing outcome time.

    A ``label_rate`` share of predictions gets one, ``outcome_delay_hours`` after it. Memory
    holds the outcomes still pending, about (max delay in days + 1) days of them.
    """
    validate(cfg)
    start_us = round(resolve_start(cfg) * _US)
    profiles = _profiles(cfg, start_us)
    lo_us = round(cfg.outcome_delay_hours[0] * 3600 * _US)
    hi_us = round(cfg.outcome_delay_hours[1] * 3600 * _US)
    # Pending outcomes: (time_us, stream index, day, index in day, label), a heap of tuples.
    pending: list[tuple[int, int, int, int, int]] = []
    for day in range(cfg.days):
        day_us = start_us + day * _DAY_US
        for p in profiles:
            batch = _simulate_day(cfg, p, day, day_us)
            rng = _rng(cfg, p.tenant, p.model, _P_OUTCOMES, day)
            n = len(batch.times_us)
            has = rng.random(n) < cfg.label_rate
            delay = rng.integers(lo_us, hi_us + 1, n, dtype=np.int64)
            idx = np.flatnonzero(has)
            out_us = (batch.times_us + delay)[idx]
            for t, i, y in zip(
                out_us.tolist(), idx.tolist(), batch.label[idx].tolist(), strict=True
            ):
                heapq.heappush(pending, (t, p.index, day, i, y))
        # Every later prediction is at or after the next day's start, its outcome >= this.
        cutoff = day_us + _DAY_US + lo_us
        while pending and pending[0][0] < cutoff:
            yield _outcome(profiles, heapq.heappop(pending))
    while pending:
        yield _outcome(profiles, heapq.heappop(pending))


def _outcome(profiles: list[_Profile], item: tuple[int, int, int, int, int]) -> OutcomeEvent:
    t, stream, day, i, label = item
    p = profiles[stream]
    return OutcomeEvent(
        event_id=f"{p.tenant}-{p.model}-{day:03d}-{i:06d}",
        tenant=p.tenant,
        model=p.model,
        timestamp=t / _US,
        label=label,
    )


def write_jsonl(events: Iterable[PredictionEvent | OutcomeEvent], path: Path) -> int:
    """Write one JSON object per line (gzip if the name ends in ``.gz``); return the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as raw:
        if path.suffix == ".gz":
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed:
                return _write_lines(events, packed.write)
        return _write_lines(events, raw.write)


def _write_lines(
    events: Iterable[PredictionEvent | OutcomeEvent], write: Callable[[bytes], object]
) -> int:
    count = 0
    for event in events:
        write(event.to_json() + b"\n")
        count += 1
    return count
