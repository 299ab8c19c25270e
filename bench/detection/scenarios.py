"""The benchmark's seeded streams, each with its known truth.

One stream (tenant ``acme``, model ``fraud``) per scenario and seed, from
``driftwatch.simulate`` (its features, its ~1 % missing values, its per-day seeding), with
the drifts it cannot inject itself (a gradual ramp, a never-seen category) applied to its
output here. The seeds are shared across scenarios (seed 1 of the 0.25 sd and the 1 sd shift
are the same noise), and the onset is at a fractional day so delays in hours mean something.
One sd is the feature's own standard deviation in the simulator's profile; for the gradual ramp,
which is applied here, the pre-onset sample standard deviation of the feature.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from bench.detection.metrics import DAY, Truth
from bench.detection.peers import REFERENCE_DAYS
from driftwatch.simulate import DriftSpec, DriftType, SimulationConfig, feature_names, generate
from schemas import PredictionEvent
from streams.config import EngineConfig
from streams.drift_tests.multivariate import MULTIVARIATE_FEATURE
from streams.segments import OTHER

START = 1_735_689_600.0  # 2025-01-01T00:00:00Z: fixed, so every run sees the same bytes
TENANT, MODEL = "acme", "fraud"


def first_tested_day(cfg: EngineConfig) -> int:
    """The first daily window that ``cfg`` has enough baseline windows to test, given data
    from day 0 (49 for the defaults: 3 windows of the same weekday 30-60 days earlier).

    >>> first_tested_day(EngineConfig(seasonal_period_days=0.0))
    33
    """
    for w in range(10_000):
        start = w * cfg.window_seconds
        have = sum(cfg.in_baseline(start, c * cfg.window_seconds) for c in range(w))
        if have >= cfg.min_baseline_windows:
            return math.ceil(start / DAY)
    raise ValueError("this config never tests a window")


# Alarms are scored from the first day on which every detector is running: after alibi's
# reference period and from driftwatch's first testable window (its defaults).
EVAL_FROM_DAY = max(REFERENCE_DAYS, first_tested_day(EngineConfig()))
NEW_CATEGORY = "bnpl_wallet"  # never produced by the simulator


@dataclass(frozen=True)
class Stream:
    events: list[PredictionEvent]
    truth: Truth
    numeric: list[str]
    categorical: list[str]
    peer_events: list[PredictionEvent] | None = None
    """What the peers see, when not ``events``: with a segment's values as features of their
    own (:func:`segment_view`), so they watch each segment as driftwatch does."""


@dataclass(frozen=True)
class Scenario:
    number: int
    key: str
    title: str
    days: int
    onset_day: float | None
    events_per_day: int = 1500
    numeric_features: int = 4
    categorical_features: int = 2
    weekly_seasonality: float = 0.0
    seeds: int = 5
    drift: DriftSpec | None = None  # injected by the simulator
    post: str | None = None  # injected here: "gradual", "new_category", "correlated", "corr_flip"
    magnitude: float = 0.0
    drifting: tuple[str, ...] = ()
    cost: float = 1.0  # rough relative run time, to start the long jobs first
    segment: tuple[str, str, float] | None = None
    """(column, value, share): that share of the events get the value in the column (a
    segment); ``post="segment_shift"`` shifts the drifting feature in it alone, and
    driftwatch runs with the column as its segment column."""

    def engine_config(self) -> EngineConfig:
        """driftwatch's config for this scenario: the defaults (and the segment column)."""
        if self.segment is None:
            return EngineConfig()
        return EngineConfig(segment_columns=self.segment[0])

    @property
    def is_drift(self) -> bool:
        return self.onset_day is not None

    def sim_config(self, seed: int) -> SimulationConfig:
        return SimulationConfig(
            seed=seed,
            tenants=(TENANT,),
            models=(MODEL,),
            days=self.days,
            events_per_day=self.events_per_day,
            numeric_features=self.numeric_features,
            categorical_features=self.categorical_features,
            start=START,
            drifts=(self.drift,) if self.drift is not None else (),
            label_rate=0.0,
            weekly_seasonality=self.weekly_seasonality,
        )

    def build(self, seed: int) -> Stream:
        cfg = self.sim_config(seed)
        numeric, categorical = feature_names(cfg)
        events = list(generate(cfg))
        if self.post == "gradual":
            events = _gradual(events, self.drifting[0], self._onset(), self.magnitude)
        elif self.post == "new_category":
            events = _new_category(events, self.drifting[0], self._onset(), self.magnitude, seed)
        segments: tuple[str, ...] = ()
        peer_events = None
        if self.segment is not None:
            column, value, share = self.segment
            events = _with_segment(events, column, value, share, seed)
            if self.post == "segment_shift":
                events = _shift_in_segment(
                    events, self.drifting[0], column, value, self._onset(), self.magnitude
                )
            peer_events, segments = segment_view(events, column, numeric + categorical)
        multivariate: tuple[str, ...] = ()
        if self.post in ("correlated", "corr_flip"):
            flip = self._onset() if self.post == "corr_flip" else None
            events = _correlate(events, numeric[0], numeric[1], self.magnitude, flip)
            multivariate = (MULTIVARIATE_FEATURE,)  # scored as a feature of its own
        truth = Truth(
            start=START,
            days=self.days,
            features=(*numeric, *categorical, *multivariate, *segments),
            drifting=frozenset(self.drifting),
            onset_day=self.onset_day,
            eval_from_day=EVAL_FROM_DAY,
        )
        if peer_events is None:
            return Stream(events, truth, numeric, categorical)
        # The peers get no __other__ columns: which values share it is driftwatch's choice.
        watched = [n for n in segments if not n.endswith(f"={OTHER}")]
        seg_numeric = [n for n in watched if n.split("@")[0] in numeric]
        seg_categorical = [n for n in watched if n.split("@")[0] in categorical]
        return Stream(
            events, truth, numeric + seg_numeric, categorical + seg_categorical, peer_events
        )

    def _onset(self) -> float:
        assert self.onset_day is not None
        return START + self.onset_day * DAY


def _gradual(
    events: list[PredictionEvent], feature: str, onset: float, sigmas: float, ramp_days: float = 14
) -> list[PredictionEvent]:
    """Add a mean shift that ramps linearly from 0 at ``onset`` to ``sigmas`` sd over
    ``ramp_days`` (sd: the feature's sample standard deviation before the onset)."""
    before = [
        v for e in events if e.timestamp < onset and isinstance(v := e.features.get(feature), float)
    ]
    sigma = float(np.std(before))
    out: list[PredictionEvent] = []
    for e in events:
        v = e.features.get(feature)
        if e.timestamp >= onset and isinstance(v, float):
            share = min((e.timestamp - onset) / (ramp_days * DAY), 1.0)
            e = dataclasses.replace(
                e, features={**e.features, feature: round(v + share * sigmas * sigma, 4)}
            )
        out.append(e)
    return out


def _new_category(
    events: list[PredictionEvent], feature: str, onset: float, share: float, seed: int
) -> list[PredictionEvent]:
    """From ``onset`` on, a ``share`` of the (non-missing) values become a category never seen
    before; the mass comes from every category in proportion."""
    rng = np.random.default_rng([seed, 7])
    draws = rng.random(len(events))
    out: list[PredictionEvent] = []
    for e, u in zip(events, draws.tolist(), strict=True):
        if e.timestamp >= onset and u < share and e.features.get(feature) is not None:
            e = dataclasses.replace(e, features={**e.features, feature: NEW_CATEGORY})
        out.append(e)
    return out


def _correlate(
    events: list[PredictionEvent], a: str, b: str, rho: float, flip: float | None
) -> list[PredictionEvent]:
    """Give ``b`` correlation ``rho`` with ``a`` (``-rho`` from ``flip`` on), its marginal
    unchanged: ``b' = m_b + s_b (rho z_a + sqrt(1 - rho^2) z_b)`` with both standardised by
    their sample mean and deviation (the simulator's features are independent normals).
    Rows missing either value are left as they are."""

    def stats(name: str) -> tuple[float, float]:
        values = [v for e in events if isinstance(v := e.features.get(name), float)]
        return float(np.mean(values)), float(np.std(values))

    (m_a, s_a), (m_b, s_b) = stats(a), stats(b)
    out: list[PredictionEvent] = []
    for e in events:
        x, y = e.features.get(a), e.features.get(b)
        if isinstance(x, float) and isinstance(y, float):
            r = -rho if flip is not None and e.timestamp >= flip else rho
            z = r * (x - m_a) / s_a + math.sqrt(1.0 - r * r) * (y - m_b) / s_b
            e = dataclasses.replace(e, features={**e.features, b: round(m_b + s_b * z, 4)})
        out.append(e)
    return out


def segment_name(feature: str, column: str, value: str) -> str:
    """How the benchmark names a feature within a segment (driftwatch's and the peers')."""
    return f"{feature}@{column}={value}"


def _with_segment(
    events: list[PredictionEvent], column: str, value: str, share: float, seed: int
) -> list[PredictionEvent]:
    """A seeded ``share`` of the events get ``value`` (never simulated) in ``column``."""
    rng = np.random.default_rng([seed, 11])
    draws = rng.random(len(events))
    return [
        dataclasses.replace(e, features={**e.features, column: value}) if u < share else e
        for e, u in zip(events, draws.tolist(), strict=True)
    ]


def _shift_in_segment(
    events: list[PredictionEvent], feature: str, column: str, value: str, onset: float,
    sigmas: float,
) -> list[PredictionEvent]:  # fmt: skip
    """From ``onset`` on, ``feature`` shifted by ``sigmas`` (its pre-onset sample deviation)
    in the events whose ``column`` is ``value`` only."""
    before = [
        v for e in events if e.timestamp < onset and isinstance(v := e.features.get(feature), float)
    ]
    shift = sigmas * float(np.std(before))
    return [
        dataclasses.replace(e, features={**e.features, feature: round(v + shift, 4)})
        if e.timestamp >= onset
        and e.features.get(column) == value
        and isinstance(v := e.features.get(feature), float)
        else e
        for e in events
    ]


def segment_view(
    events: list[PredictionEvent], column: str, features: list[str]
) -> tuple[list[PredictionEvent], tuple[str, ...]]:
    """The events with, per value ``v`` of ``column`` and feature ``f``, a feature
    ``f@column=v`` holding ``f``'s value in that segment only (what the peers watch), and
    the names of those segment features (every value seen, and driftwatch's ``__other__``)."""
    values = sorted({v for e in events if isinstance(v := e.features.get(column), str)})
    names = tuple(
        segment_name(f, column, v) for v in (*values, OTHER) for f in features if f != column
    )
    out = []
    for e in events:
        v = e.features.get(column)
        if not isinstance(v, str):
            out.append(e)
            continue
        extra = {segment_name(f, column, v): x for f, x in e.features.items() if f != column}
        out.append(dataclasses.replace(e, features={**e.features, **extra}))
    return out, names


ONSET = 60.3
DAYS = 90


def _mean(magnitude: float) -> DriftSpec:
    return DriftSpec(DriftType.MEAN_SHIFT, ONSET, magnitude, features=("amount",))


S = "\u03c3"  # sigma, for the titles
SEGMENT = ("country", "IT", 0.05)  # a country with 5 % of the traffic

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        1,
        "mean-0.25",
        f"abrupt mean shift 0.25{S}",
        DAYS,
        ONSET,
        drift=_mean(0.25),
        drifting=("amount",),
    ),
    Scenario(
        2,
        "mean-0.5",
        f"abrupt mean shift 0.5{S}",
        DAYS,
        ONSET,
        drift=_mean(0.5),
        drifting=("amount",),
    ),
    Scenario(
        3, "mean-1", f"abrupt mean shift 1{S}", DAYS, ONSET, drift=_mean(1.0), drifting=("amount",)
    ),
    Scenario(
        4,
        "variance-2",
        "variance change (deviation x2)",
        DAYS,
        ONSET,
        drift=DriftSpec(DriftType.VARIANCE, ONSET, 2.0, features=("amount",)),
        drifting=("amount",),
        seeds=3,
    ),
    Scenario(
        5,
        "gradual-1",
        f"gradual drift, mean 0→1{S} over 14 days",
        DAYS,
        ONSET,
        post="gradual",
        magnitude=1.0,
        drifting=("amount",),
        seeds=3,
    ),
    Scenario(
        6,
        "category-mix-0.3",
        "categorical mix change (0.3 of mass to the rare category)",
        DAYS,
        ONSET,
        drift=DriftSpec(DriftType.CATEGORY_MIX, ONSET, 0.3, features=("merchant_category",)),
        drifting=("merchant_category",),
        seeds=3,
    ),
    Scenario(
        7,
        "new-category",
        "new category, 5% of traffic",
        DAYS,
        ONSET,
        post="new_category",
        magnitude=0.05,
        drifting=("merchant_category",),
        seeds=3,
    ),
    Scenario(
        8,
        "seasonal-null",
        f"weekly seasonality 0.5{S}, no drift",
        DAYS,
        None,
        weekly_seasonality=0.5,
        seeds=2,
    ),
    Scenario(
        9,
        "null-50",
        f"50 features (40 numeric, 10 categorical), seasonality 0.3{S}, no drift",
        DAYS,
        None,
        numeric_features=40,
        categorical_features=10,
        weekly_seasonality=0.3,
        seeds=1,
        cost=20.0,
    ),
    Scenario(
        10,
        "tiny-shift",
        f"tiny shift 0.03{S} at 50,000 events/day (2 numeric features, 60 days)",
        60,
        50.3,
        events_per_day=50_000,
        numeric_features=2,
        categorical_features=0,
        seeds=1,
        drift=DriftSpec(DriftType.MEAN_SHIFT, 50.3, 0.03, features=("amount",)),
        drifting=("amount",),
        cost=15.0,
    ),
    Scenario(
        11,
        "corr-flip",
        "correlation flip +0.8 → -0.8 of two numeric features, marginals unchanged",
        DAYS,
        ONSET,
        post="corr_flip",
        magnitude=0.8,
        drifting=(MULTIVARIATE_FEATURE,),
        seeds=5,
    ),
    Scenario(
        12,
        "corr-null",
        f"two numeric features correlated 0.8, weekly seasonality 0.5{S}, no drift",
        DAYS,
        None,
        post="correlated",
        magnitude=0.8,
        weekly_seasonality=0.5,
        seeds=3,
    ),
    Scenario(
        13,
        "segment-shift",
        f"mean shift 2{S} in one segment (country IT, 5 % of the traffic), "
        "segment column `country`",
        DAYS,
        ONSET,
        categorical_features=4,
        post="segment_shift",
        magnitude=2.0,
        drifting=("amount", segment_name("amount", *SEGMENT[:2])),
        segment=SEGMENT,
        cost=2.0,
    ),
    Scenario(
        14,
        "segment-null",
        f"segment column `country` (8 segments), weekly seasonality 0.5{S}, no drift",
        DAYS,
        None,
        categorical_features=4,
        weekly_seasonality=0.5,
        segment=SEGMENT,
        cost=2.0,
    ),
    Scenario(
        15,
        "mean-0.5-600",
        f"abrupt mean shift 0.5{S} at 600 events/day (issue 12's stream)",
        DAYS,
        ONSET,
        drift=_mean(0.5),
        drifting=("amount",),
        events_per_day=600,
    ),
)

# driftwatch's defaults test a window against >= 3 windows of the same weekday 30-60 days
# earlier, so its first tested window is day 49: a shorter stream would test nothing.
QUICK_DAYS = 60
QUICK_ONSET = 50.3


def with_seeds(s: Scenario, seeds: int | None) -> Scenario:
    return s if seeds is None else dataclasses.replace(s, seeds=seeds)


def quick(s: Scenario) -> Scenario:
    """The smoke-run version: 60 days (onset 50.3), one seed, 10,000 events/day at most."""
    onset = None if s.onset_day is None else QUICK_ONSET
    drift = None if s.drift is None else dataclasses.replace(s.drift, start_day=QUICK_ONSET)
    return dataclasses.replace(
        s,
        days=QUICK_DAYS,
        onset_day=onset,
        drift=drift,
        seeds=1,
        events_per_day=min(s.events_per_day, 10_000),
    )


def select(keys: str | None, quick_run: bool, seeds: int | None = None) -> list[Scenario]:
    """Scenarios by comma-separated key or number (all if ``keys`` is empty); ``seeds``
    overrides every scenario's seed count."""
    chosen = list(SCENARIOS)
    if keys:
        wanted = [k.strip() for k in keys.split(",") if k.strip()]
        by_name = {s.key: s for s in SCENARIOS} | {str(s.number): s for s in SCENARIOS}
        unknown = [k for k in wanted if k not in by_name]
        if unknown:
            known = ", ".join(f"{s.number}={s.key}" for s in SCENARIOS)
            raise SystemExit(f"unknown scenario(s) {unknown}; known: {known}")
        chosen = sorted({by_name[k] for k in wanted}, key=lambda s: s.number)
    chosen = [quick(s) for s in chosen] if quick_run else chosen
    return [with_seeds(s, seeds) for s in chosen]
