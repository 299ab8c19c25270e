"""The engine's steady-state cost in instructions, not seconds: repeatable on a noisy machine.

    python -m bench.steady_instructions [--days 3] [--features 20] [--rate 2000]
                                        [--compare DIR] [--out FILE]

Wall-clock rates on these shared 2-core machines move by a fifth between runs of the same
code (``bench.backtest_speed``: 0.19-0.27M feature-values/s for one commit in one hour), more
than most single changes to the engine are worth. ``valgrind --tool=callgrind`` counts the
instructions a run executes: for the same code and input the same count within ~0.7 % (object
addresses), whatever else the machine does. A whole 90-day backtest is too slow under it
(~50x), so this benchmark

1. runs the engine over the first 60 days of ``bench.backtest_speed``'s stream (20 features,
   2,000 events a day, the drift from day 60.3) natively and keeps the state it stored
   (``--features 1000 --rate 400 --days 1``: the wide model of its width target, one in five
   features categorical, ~1 % of values null as everywhere);
2. under callgrind, restores that state into a new engine and feeds it the next ``--days``
   days (every window with its whole baseline, every hourly look testing: the steady state),
   then flushes; and once more without feeding it anything (imports, start-up, the state's
   load); both with the garbage collector paced as ``driftwatch backtest`` and the worker
   pace it (:func:`pace_gc`; counts before the fiftieth round were made at CPython's pace);
3. prints the difference, per event and per feature-value.

``--compare DIR`` measures another checkout's code (``PYTHONPATH=DIR``; the same state and
events: the stored format is the same) beside this one, for a before/after ratio. Needs
valgrind (``apt-get install valgrind``). The instrumented runs take ~2 minutes each; with
``--compare``, two run at a time.
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.results_file import write_results

RESULTS = Path(__file__).resolve().parent / "results" / "steady_instructions.json"
ROOT = Path(__file__).resolve().parent.parent
START = 1_767_225_600.0
DAY = 86_400.0
WARM_DAYS = 60
BACKTEST_GC_THRESHOLD = 100_000
"""``runtime.gc_tuning.BACKTEST_THRESHOLD``, written here: a checkout measured beside this
one (``--compare``) may predate that module."""


def engine_config(features: int) -> Any:
    """The engine's defaults, with the per-stream feature limit raised for a wide model (as
    ``bench.backtest_speed`` raises it)."""
    from dataclasses import replace

    from streams.config import EngineConfig

    return replace(EngineConfig(), max_features_per_stream=max(500, features))


def prepare(path: Path, days: int, features: int = 20, rate: int = 2000) -> int:
    """The engine's stored state after :data:`WARM_DAYS` days, and the next ``days`` days'
    events, pickled to ``path``; returns how many events are measured."""
    from driftwatch.simulate import DriftSpec, DriftType, SimulationConfig, generate
    from streams.engine import DriftEngine
    from streams.ingest import PredictionValidator
    from streams.keyed_state import MemoryStore

    cfg = SimulationConfig(
        seed=3,
        tenants=("acme",),
        models=("fraud",),
        days=WARM_DAYS + days,
        events_per_day=rate,
        numeric_features=features - features // 5,
        categorical_features=features // 5,
        start=START,
        drifts=(DriftSpec(DriftType.MEAN_SHIFT, WARM_DAYS + 0.3, 0.5, ("amount",)),),
    )
    validator = PredictionValidator(max_future_seconds=None)
    events = sorted(
        (validator.validate(e.to_json(), now=None) for e in generate(cfg)),
        key=lambda e: e.timestamp,
    )
    cut = START + WARM_DAYS * DAY
    store = MemoryStore()
    engine = DriftEngine(engine_config(features), store)
    for i, event in enumerate(e for e in events if e.timestamp < cut):
        engine.observe(event)
        if (i + 1) % 20_000 == 0:  # as driftwatch.backtest flushes
            store.apply(engine.flush(keep_cache=True))
    store.apply(engine.flush())
    measured = [e for e in events if e.timestamp >= cut]
    with path.open("wb") as fh:
        pickle.dump((store.data, measured), fh)
    return len(measured)


def pace_gc() -> None:
    """The garbage collector paced as ``driftwatch backtest`` and the worker pace it: at
    CPython's default pace (a young collection every 700 allocations) allocation-heavy code
    weighed more here than it costs them."""
    gc.set_threshold(BACKTEST_GC_THRESHOLD, *gc.get_threshold()[1:])


def replay(path: Path, feed: bool) -> None:
    """What callgrind measures: the state restored, the events fed (``feed``), a flush, with
    the collector paced (:func:`pace_gc`)."""
    from streams.engine import DriftEngine
    from streams.keyed_state import MemoryStore

    pace_gc()
    with path.open("rb") as fh:
        data, events = pickle.load(fh)
    store = MemoryStore()
    store.data = data
    engine = DriftEngine(engine_config(len(events[0].features)), store)
    drifts = 0
    if feed and hasattr(engine, "observe_many"):  # as driftwatch.backtest feeds it
        for start in range(0, len(events), 1_000):
            drifts += len(engine.observe_many(events[start : start + 1_000]).drifts)
        store.apply(engine.flush())
    elif feed:  # a checkout from before observe_many (--compare)
        for event in events:
            drifts += len(engine.observe(event))
        store.apply(engine.flush())
    print(f"drift events: {drifts}")


def instructions(code: Path, state: Path, feed: bool) -> subprocess.Popen[str]:
    """A callgrind run of :func:`replay` on ``code``'s packages (its count: :func:`count`)."""
    return callgrind(code, state, __file__, [] if feed else ["--no-feed"])


def callgrind(code: Path, state: Path, script: str, flags: list[str]) -> subprocess.Popen[str]:
    """``script --replay state *flags`` under callgrind, on ``code``'s packages. The script
    runs as a file, so another checkout needs no copy of it."""
    # String hashes are seeded per process: dicts and sets then take other paths, ~1 % of
    # the count between runs of the same code. A fixed seed leaves object addresses (dicts
    # keyed by id()) as the only difference: up to ~0.7 %.
    env = dict(os.environ, PYTHONPATH=str(code), PYTHONHASHSEED="0")
    out = state.parent / f"callgrind.{abs(hash((str(code), script, *flags)))}"
    cmd = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
        sys.executable, script, "--replay", str(state), *flags,
    ]  # fmt: skip
    return subprocess.Popen(
        cmd, cwd=code, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def count(run: subprocess.Popen[str]) -> tuple[int, int]:
    """The instructions callgrind counted, and the drift events the replay found (the same
    figure on both sides of a comparison, or the two did not do the same work)."""
    output, _ = run.communicate()
    refs = re.search(r"I\s+refs:\s+([\d,]+)", output)
    drifts = re.search(r"drift events: (\d+)", output)
    if run.returncode or refs is None or drifts is None:
        raise SystemExit(f"callgrind run failed ({run.returncode}):\n{output[-2000:]}")
    return int(refs.group(1).replace(",", "")), int(drifts.group(1))


def arguments(
    argv: list[str] | None,
    doc: str | None,
    days: int,
    days_help: str,
    results: Path,
    off: str,
    numbers: dict[str, tuple[int, str]] | None = None,
) -> argparse.Namespace:
    """The arguments of a callgrind comparison (this one's and ``bench.labelled_instructions``'):
    ``--days``, ``numbers`` (more whole-number options: name -> default, help), ``--compare``,
    ``--out``, and the hidden ``--replay`` and ``off`` (the run whose count is subtracted);
    valgrind is needed unless replaying."""
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--days", type=int, default=days, help=days_help)
    for name, (default, help_text) in (numbers or {}).items():
        p.add_argument(name, type=int, default=default, help=help_text)
    p.add_argument("--compare", type=Path, help="another checkout, measured beside this one")
    p.add_argument("--out", type=Path, default=results)
    p.add_argument("--replay", type=Path, help=argparse.SUPPRESS)
    p.add_argument(off, action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.replay is None and shutil.which("valgrind") is None:
        p.error("needs valgrind (apt-get install valgrind)")
    return args


def checkouts(compare: Path | None) -> dict[str, Path]:
    """The code measured, by name: another checkout first (the before), then this one."""
    codes = {"this checkout": ROOT}
    return codes if compare is None else {f"{compare}": compare.resolve()} | codes


def net_counts(
    compare: Path | None, state: Path, run: Callable[[Path, Path, bool], subprocess.Popen[str]]
) -> list[tuple[str, int, int]]:
    """Per checkout (:func:`checkouts`), two at a time: the instructions of ``run(code,
    state, True)`` less those of ``run(code, state, False)``, and the drift events counted."""
    out = []
    for name, code in checkouts(compare).items():
        measured, other = run(code, state, True), run(code, state, False)
        (total, drifts), (fixed, _) = count(measured), count(other)
        out.append((name, total - fixed, drifts))
    return out


def print_rows(rows: list[dict[str, Any]], columns: list[tuple[str, str, int]]) -> None:
    """``rows`` as a table of their code and ``columns`` (field, heading, width), then this
    checkout's instructions over the other's."""
    print(f"{'code':<40}" + "".join(f"{head:>{width}}" for _, head, width in columns))
    for row in rows:
        print(f"{row['code']:<40}" + "".join(f"{row[k]:>{w},}" for k, _, w in columns))
    if len(rows) == 2:
        ratio = rows[1]["instructions"] / rows[0]["instructions"]
        print(f"this checkout / {rows[0]['code']}: {ratio:.3f}")


def main(argv: list[str] | None = None) -> int:
    numbers = {
        "--features": (20, "features per event, one in five categorical (20)"),
        "--rate": (2000, "events a day (2000)"),
    }
    args = arguments(
        argv, __doc__, 3, "days measured after day 60 (3)", RESULTS, "--no-feed", numbers
    )
    if args.replay:
        replay(args.replay, feed=not args.no_feed)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state.pkl"
        events = prepare(state, args.days, args.features, args.rate)
        rows = [
            {
                "code": name,
                "instructions": net,
                "per_event": round(net / events),
                "per_feature_value": round(net / (events * args.features)),
                "drift_events": drifts,
            }
            for name, net, drifts in net_counts(args.compare, state, instructions)
        ]
    print(f"{events:,} events x {args.features} features, days {WARM_DAYS}-{WARM_DAYS + args.days} "
          "(state restored at day 60), instructions under callgrind")  # fmt: skip
    print_rows(
        rows,
        [("instructions", "instructions", 16), ("per_event", "per event", 12),
         ("per_feature_value", "per value", 12), ("drift_events", "drifts", 8)],
    )  # fmt: skip
    write_results(args.out, "bench.steady_instructions", events=events, days=args.days,
                  features=args.features, rate=args.rate, results=rows)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
