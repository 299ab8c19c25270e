"""Backtest speed: the detection engine over 90 days x 2,000 events/day x 20 features.

    python -m bench.backtest_speed [--days 90] [--rate 2000] [--features 20]
                                   [--label-rate 0.15] [--out FILE]

``--features 1000 --days 14 --rate 200`` measures a wide model (issue 10's width target).

Prints feature-values per second of the full engine (sub-day looks on, the default), of the
engine with end-of-window tests only, of the engine with a ``--label-rate`` share of the
predictions labelled (outcomes 1-3 days late, joined, the performance history kept), and of a
baseline that only parses and validates the same JSON lines, measured side by side in this
process on one core. The garbage collector is paced as ``driftwatch backtest`` paces it
(``DRIFTWATCH_GC_THRESHOLD``; 0 for CPython's own).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.results_file import write_results
from driftwatch.backtest import run_backtest
from driftwatch.simulate import (
    DriftSpec,
    DriftType,
    SimulationConfig,
    generate,
    generate_outcomes,
)
from runtime.gc_tuning import tune_gc
from runtime.settings import Settings
from streams.config import EngineConfig
from streams.ingest import PredictionValidator

RESULTS = Path(__file__).resolve().parent / "results" / "backtest_speed.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--days", type=int, default=90)
    p.add_argument("--rate", type=int, default=2000)
    p.add_argument("--features", type=int, default=20, help="one in five categorical (20)")
    p.add_argument(
        "--label-rate", type=float, default=0.15, help="share of predictions labelled (0.15)"
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    # As `driftwatch backtest` runs (DRIFTWATCH_GC_THRESHOLD; 0: CPython's own, to compare).
    gc_threshold = Settings.from_env().gc_threshold
    tune_gc(gc_threshold)
    if args.features > 1000:
        p.error("--features: at most 1000 (the wire format's limit per event)")
    categorical = args.features // 5
    cfg = SimulationConfig(
        seed=3,
        tenants=("acme",),
        models=("fraud",),
        days=args.days,
        events_per_day=args.rate,
        numeric_features=args.features - categorical,
        categorical_features=categorical,
        start=1_767_225_600.0,
        label_rate=args.label_rate,
        drifts=(DriftSpec(DriftType.MEAN_SHIFT, args.days * 2 / 3 + 0.3, 0.5, ("amount",)),),
    )
    lines = [e.to_json() for e in generate(cfg)]
    outcomes = list(generate_outcomes(cfg))
    values = len(json.loads(lines[0])["features"]) * len(lines)

    validator = PredictionValidator(max_future_seconds=None)
    started = time.process_time()
    events = [validator.validate(line, now=None) for line in lines]
    parse_s = time.process_time() - started

    rows: list[dict[str, Any]] = [
        {"run": "parse + validate only (baseline)", "seconds": parse_s, "drift_events": 0}
    ]
    # a model this wide needs the per-stream feature limit (500 by default) raised
    base = replace(EngineConfig(), max_features_per_stream=max(500, args.features))
    labelled = f"engine + join + performance ({args.label_rate:.0%} labelled)"
    for name, config, labels in (
        ("engine, end-of-window tests only", replace(base, interim_seconds=0), []),
        ("engine, defaults (hourly sub-day looks)", base, []),
        (labelled, base, outcomes),
    ):
        started = time.process_time()
        report = run_backtest(events, config, outcomes=labels)
        if report.rejected or not report.feature_values:
            raise SystemExit(f"{name}: the engine refused the input: {dict(report.rejected)}")
        rows.append(
            {
                "run": name,
                "seconds": time.process_time() - started,
                "drift_events": len(report.drift_events),
                "stats": dict(Counter(report.engine_stats)),
            }
        )
    print(f"{len(lines):,} events x {args.features} features = {values:,} feature-values "
          f"({args.days} days; {len(outcomes):,} outcomes for the labelled run)")  # fmt: skip
    print(f"{'run':<48}{'CPU s':>8}{'values/s':>12}{'vs baseline':>13}{'drifts':>8}")
    for row in rows:
        row["feature_values_per_s"] = round(values / row["seconds"])
        row["vs_baseline"] = round(parse_s / row["seconds"], 3)
        print(
            f"{row['run']:<48}{row['seconds']:>8.1f}{row['feature_values_per_s']:>12,}"
            f"{row['vs_baseline']:>13.3f}{row['drift_events']:>8}"
        )
    write_results(
        args.out,
        "bench.backtest_speed",
        events=len(lines),
        features=args.features,
        gc_threshold=gc_threshold,
        feature_values=values,
        outcomes=len(outcomes),
        results=rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
