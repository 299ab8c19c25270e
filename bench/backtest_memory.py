"""Backtest memory: peak RSS of ``driftwatch backtest`` against the size of its input.

    python -m bench.backtest_memory [--events 1500000] [--days 60] [--keep DIR]

Generates predictions (2 tenants x 2 models, 16 numeric + 4 categorical features, ``--days``
days at the rate that reaches the event count, a mean shift on acme's ``amount`` from 5/6 of
the way) for three sizes (``--events`` / 10, / 3 and itself), each in event-time order and as a
copy shuffled within blocks of 6 hours (the external merge sort's case), and runs
``python -m driftwatch.cli backtest --predictions F`` on each as a child process, measuring
its peak resident memory (``ru_maxrss`` of that child, from ``os.wait4``) and wall time. The
sorted and shuffled runs of a size must print the same DriftEvents. For contrast, the previous
implementation (files read into lists, sorted in memory, every DriftEvent kept) runs on the
sizes up to ``--baseline-max-events``. Prints a table; writes bench/results/backtest_memory.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.results_file import write_results
from driftwatch.simulate import DriftSpec, DriftType, SimulationConfig, generate, write_jsonl

RESULTS = Path(__file__).resolve().parent / "results" / "backtest_memory.json"
STREAMS = 4  # 2 tenants x 2 models
SHUFFLE_HOURS = 6.0

# The previous ``driftwatch backtest``: both files read into lists, sorted in memory, every
# DriftEvent kept in the report (run in a child, as the streamed one, for its peak RSS).
_IN_MEMORY = """
import sys
from collections import Counter
from pathlib import Path
from driftwatch.backtest import read_predictions, run_backtest
from runtime.settings import Settings
from streams.ingest import PredictionValidator
settings = Settings.from_env()
rejected = Counter()
validator = PredictionValidator(max_bytes=settings.max_message_bytes, max_future_seconds=None)
events = list(read_predictions(Path(sys.argv[1]), validator, rejected))
report = run_backtest(events, settings.engine_config(), out=sys.stdout, outcomes=[],
                      performance=settings.performance_config())
print(len(report.drift_events), file=sys.stderr)
"""


def _simulation(events: int, days: int) -> SimulationConfig:
    return SimulationConfig(
        seed=17,
        tenants=("acme", "globex"),
        models=("fraud", "conflict"),
        days=days,
        events_per_day=max(1, round(events / (STREAMS * days))),
        numeric_features=16,
        categorical_features=4,
        start=1_767_225_600.0,
        drifts=(
            DriftSpec(
                DriftType.MEAN_SHIFT, days * 5 / 6 + 0.3, 0.5, ("amount",), tenants=("acme",)
            ),
        ),
    )


def _shuffle_blocks(src: Path, dst: Path, block: int, seed: int) -> None:
    """Copy ``src`` (in event-time order) with its lines shuffled within consecutive blocks
    of ``block`` lines (about ``SHUFFLE_HOURS`` of traffic): one block in memory."""
    rng = random.Random(seed)
    with src.open("rb") as fin, dst.open("wb") as fout:
        buf: list[bytes] = []
        for line in fin:
            buf.append(line)
            if len(buf) >= block:
                rng.shuffle(buf)
                fout.writelines(buf)
                buf.clear()
        rng.shuffle(buf)
        fout.writelines(buf)


def _measure(cmd: list[str], out: Path, err: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd`` with stdout/stderr to files; its wall time and peak RSS (this child's)."""
    started = time.perf_counter()
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited {proc.returncode}: {err.read_text()[-2000:]}")
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "seconds": round(seconds, 1)}


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=1_500_000, help="the largest input")
    p.add_argument("--days", type=int, default=60)
    p.add_argument(
        "--baseline-max-events",
        type=int,
        default=150_000,
        help="run the previous in-memory backtest on sizes up to this (0: never)",
    )
    p.add_argument("--keep", default=None, help="keep the generated files in this directory")
    args = p.parse_args(argv)
    sizes = sorted({max(STREAMS * args.days, args.events // k) for k in (10, 3, 1)})
    env = {**os.environ, "DRIFTWATCH_LOG_LEVEL": "WARNING"}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-backtest-memory-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for size in sizes:
            cfg = _simulation(size, args.days)
            sorted_file = work / f"predictions-{size}.jsonl"
            shuffled_file = work / f"predictions-{size}-shuffled.jsonl"
            started = time.perf_counter()
            n = write_jsonl(generate(cfg), sorted_file)
            block = round(STREAMS * cfg.events_per_day * SHUFFLE_HOURS / 24)
            _shuffle_blocks(sorted_file, shuffled_file, block, seed=size)
            print(
                f"generated {n:,} events ({sorted_file.stat().st_size / 1e6:.0f} MB) and a "
                f"shuffled copy in {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
            )
            runs = [
                ("streamed, sorted input", sorted_file),
                ("streamed, shuffled input", shuffled_file),
            ]
            digests = {}
            for name, path in runs:
                out, err = work / f"{path.stem}.out", work / f"{path.stem}.err"
                cmd = [sys.executable, "-m", "driftwatch.cli", "backtest"]
                cmd += ["--predictions", str(path)]
                row = _measure(cmd, out, err, env)
                summary = json.loads(err.read_text().strip().splitlines()[-1])["backtest"]
                assert summary["events"] == n, summary
                digests[name] = _digest(out)
                rows.append(_row(name, path, n, row, summary["drift_events"]))
                print(_line(rows[-1]), file=sys.stderr)
            same = len(set(digests.values())) == 1
            for row in rows[-2:]:
                row["same_drift_events_as_sorted"] = same
            if not same:
                print(f"WARNING: sorted and shuffled outputs differ at {n} events", file=sys.stderr)
            if size <= args.baseline_max_events:
                out, err = work / f"{sorted_file.stem}.inmemory.out", work / "inmemory.err"
                cmd = [sys.executable, "-c", _IN_MEMORY, str(sorted_file)]
                row = _measure(cmd, out, err, env)
                drifts = int(err.read_text().strip().splitlines()[-1])
                rows.append(_row("previous (in memory), sorted input", sorted_file, n, row, drifts))
                rows[-1]["same_drift_events_as_sorted"] = _digest(out) == digests[runs[0][0]]
                print(_line(rows[-1]), file=sys.stderr)
            if not args.keep:
                for path in work.iterdir():
                    path.unlink()
    print()
    print(
        f"{'run':<38}{'input MB':>10}{'events':>12}{'peak RSS MB':>13}{'seconds':>9}"
        f"{'events/s':>10}{'drifts':>8}"
    )
    for row in rows:
        print(_line(row))
    write_results(
        RESULTS,
        "bench.backtest_memory",
        days=args.days,
        streams=STREAMS,
        features=20,
        shuffle_hours=SHUFFLE_HOURS,
        results=rows,
    )
    return 0


def _row(
    name: str, path: Path, events: int, measured: dict[str, Any], drifts: int
) -> dict[str, Any]:
    return {
        "run": name,
        "input_mb": round(path.stat().st_size / 1e6, 1),
        "events": events,
        **measured,
        "events_per_s": round(events / max(measured["seconds"], 1e-9)),
        "drift_events": drifts,
    }


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['run']:<38}{row['input_mb']:>10.1f}{row['events']:>12,}{row['peak_rss_mb']:>13.1f}"
        f"{row['seconds']:>9.1f}{row['events_per_s']:>10,}{row['drift_events']:>8}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
