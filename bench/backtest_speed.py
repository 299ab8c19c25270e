"""Backtest speed: the detection engine over 90 days x 2,000 events/day x 20 features.

    python -m bench.backtest_speed [--days 90] [--rate 2000] [--features 20]
                                   [--label-rate 0.15] [--out FILE]

``--features 1000 --days 60 --rate 400`` measures a wide model (issue 10's width target) with
its tests running: a window has the three same-weekday baseline windows the defaults ask for
from day 42 on, so a run of fewer days measures ingestion and the looks' bookkeeping only.

Prints feature-values per second of the full engine (sub-day looks on, the default), of the
engine with end-of-window tests only, of the engine with a ``--label-rate`` share of the
predictions labelled (outcomes 1-3 days late, joined, the performance history kept) with the
join's records in memory and, as ``driftwatch backtest`` keeps them, in a RocksDB scratch store
on disk (its compaction threads' CPU counted: the clock is the process's), both keeping only
the predictions an outcome names (:mod:`driftwatch.join_keys`, found from the inputs within
the timed run) and, as a worker's join must, every prediction; and of a
baseline that only parses and validates the same JSON lines, measured side by side in this
process on one core. The garbage collector is paced as ``driftwatch backtest`` paces it
(``DRIFTWATCH_BACKTEST_GC_THRESHOLD``; 0 for CPython's own).

A stream's first ``baseline_start_days`` (60) have no full baseline, and until
``min_baseline_windows`` of the same weekday have data (day 44 by default) no test runs at
all: the whole run's average then flatters the engine. Each run's clock is therefore also
read when its input reaches day ``baseline_start_days``, and the time after is reported as the
**steady state** (every window with its full baseline, every look testing): what a worker
that has run for weeks costs. With ``--days`` under ``baseline_start_days`` + 7 there is no
steady state to report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.results_file import write_results
from driftwatch.backtest import run_backtest
from driftwatch.disk_store import DiskStore
from driftwatch.join_keys import JoinKeys
from driftwatch.simulate import (
    DriftSpec,
    DriftType,
    SimulationConfig,
    generate,
    generate_outcomes,
)
from runtime.gc_tuning import tune_gc
from runtime.settings import Settings
from schemas.events import PredictionEvent
from streams.config import EngineConfig
from streams.ingest import PredictionValidator

RESULTS = Path(__file__).resolve().parent / "results" / "backtest_speed.json"


@dataclass
class CutClock:
    """Reads the CPU clock when the backtest pulls its first event at or after ``cut``
    (events are consumed lazily, in order: the work of those before is done by then)."""

    cut: float
    at: float | None = None

    def feed(self, events: Iterable[PredictionEvent]) -> Iterator[PredictionEvent]:
        for event in events:
            if self.at is None and event.timestamp >= self.cut:
                self.at = time.process_time()
            yield event


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
    # As `driftwatch backtest` runs (DRIFTWATCH_BACKTEST_GC_THRESHOLD; 0: CPython's own).
    gc_threshold = Settings.from_env().backtest_gc_threshold
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
    per_event = len(json.loads(lines[0])["features"])
    values = per_event * len(lines)
    # The steady state: the days from when a window's baseline is whole (see the docstring).
    steady_days = args.days - int(EngineConfig().baseline_start_days)
    cut = cfg.start + (args.days - steady_days) * 86_400.0

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
    in_order = sorted(events, key=lambda e: e.timestamp)  # as run_backtest sorts, untimed
    sorted_outcomes = sorted(outcomes, key=lambda o: o.timestamp)
    for name, config, labels, on_disk, keep_all in (
        ("engine, end-of-window tests only", replace(base, interim_seconds=0), [], False, False),
        ("engine, defaults (hourly sub-day looks)", base, [], False, False),
        (labelled, base, sorted_outcomes, False, False),
        (f"{labelled}, join on disk", base, sorted_outcomes, True, False),
        (f"{labelled}, join keeps all", base, sorted_outcomes, False, True),
    ):
        clock = CutClock(cut)
        with contextlib.ExitStack() as stack:
            join_store = None
            if on_disk:  # as backtest_files keeps it
                scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                join_store = stack.enter_context(DiskStore(scratch / "join"))
            started = time.process_time()
            # The predictions the join needs, found as backtest_files' scans find them (timed).
            keys = None
            if labels:
                keys = JoinKeys.everything() if keep_all else JoinKeys.of(
                    (e.event_id for e in in_order), (o.event_id for o in labels)
                )  # fmt: skip
            report = run_backtest(
                clock.feed(in_order), config, outcomes=labels, presorted=True,
                join_store=join_store, join_keys=keys,
            )  # fmt: skip
            ended = time.process_time()
        if report.rejected or not report.feature_values:
            raise SystemExit(f"{name}: the engine refused the input: {dict(report.rejected)}")
        row: dict[str, Any] = {
            "run": name,
            "seconds": ended - started,
            "drift_events": len(report.drift_events),
            "stats": dict(Counter(report.engine_stats)),
        }
        if steady_days >= 7 and clock.at is not None:
            row["steady_seconds"] = ended - clock.at
            row["steady_feature_values"] = sum(e.timestamp >= cut for e in events) * per_event
        rows.append(row)
    print(f"{len(lines):,} events x {args.features} features = {values:,} feature-values "
          f"({args.days} days; {len(outcomes):,} outcomes for the labelled run)")  # fmt: skip
    parse_rate = values / parse_s
    steady_head = f"days {args.days - steady_days}+ values/s"
    print(f"{'run':<62}{'CPU s':>8}{'values/s':>12}{'vs baseline':>13}{'drifts':>8}"
          f"{steady_head:>22}{'vs baseline':>13}")  # fmt: skip
    for row in rows:
        row["feature_values_per_s"] = round(values / row["seconds"])
        row["vs_baseline"] = round(parse_s / row["seconds"], 3)
        steady = ""
        if "steady_seconds" in row:
            rate = row["steady_feature_values"] / row["steady_seconds"]
            row["steady_feature_values_per_s"] = round(rate)
            row["steady_vs_baseline"] = round(rate / parse_rate, 3)
            steady = f"{row['steady_feature_values_per_s']:>22,}{row['steady_vs_baseline']:>13.3f}"
        print(
            f"{row['run']:<62}{row['seconds']:>8.1f}{row['feature_values_per_s']:>12,}"
            f"{row['vs_baseline']:>13.3f}{row['drift_events']:>8}{steady}"
        )
    write_results(
        args.out,
        "bench.backtest_speed",
        events=len(lines),
        features=args.features,
        gc_threshold=gc_threshold,
        feature_values=values,
        outcomes=len(outcomes),
        steady_from_day=args.days - steady_days if steady_days >= 7 else None,
        results=rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
