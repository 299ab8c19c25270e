"""Detection benchmark: driftwatch against river and alibi-detect on the same seeded streams.

Run as ``python -m bench.detection [--quick] [--scenarios 2,mean-1] [--jobs N]
[--alibi auto|scipy] [--bench-venv .venv-bench] [--mmd auto|off] [--mmd-rows 500]
[--mmd-permutations 100] [--mmd-scenarios corr-flip,...|all]``.

Each (scenario, seed) job builds its stream once (``bench.detection.scenarios``), runs
driftwatch's backtest and every peer (``bench.detection.peers``) over the same events, and
scores them (``bench.detection.metrics``). Jobs run in ``--jobs`` processes. The markdown
report goes to stdout and, for a full run, to ``docs/detection-benchmark.md``; the per-seed
numbers to ``bench/results/detection.json`` (partial runs: ``detection-partial.json``).

alibi-detect needs numpy < 2 and so lives in its own venv (``--bench-venv``, created from
``bench/requirements-detection.txt`` on first use); ``--alibi scipy``, or a failed setup,
uses the same procedure written with scipy instead, and the report says so. Its multivariate
MMDDrift and LSDDDrift need PyTorch (in the same venv, from the same file); they run on the
``--mmd-scenarios`` only (their permutation tests cost about half a second a day each), and
are left out, with the reason printed, when PyTorch cannot be had or ``--mmd off`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bench.detection import peers
from bench.detection.metrics import Alarm, score
from bench.detection.report import (
    ALIBI,
    ALIBI_SCIPY,
    DRIFTWATCH,
    MV_NAMES,
    NANNYML,
    RIVER,
    aggregate,
    render,
)
from bench.detection.scenarios import EVAL_FROM_DAY, START, Scenario, segment_name, select
from driftwatch.backtest import run_backtest
from schemas import DriftEvent
from streams.config import EngineConfig
from streams.drift_tests.multivariate import MULTIVARIATE_FEATURE

ROOT = peers.ROOT
OFF_TARGET_TEST = "missing_rate"  # driftwatch's missing-rate test: no scenario changes it
DOC = ROOT / "docs" / "detection-benchmark.md"
RESULTS = ROOT / "bench" / "results"


def log(msg: str) -> None:
    print(f"[bench.detection] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class MultivariatePeer:
    """alibi-detect's MMD / LSDD settings for a job (``None`` on a job: not run there)."""

    rows: int = peers.MV_ROWS
    permutations: int = peers.MV_PERMUTATIONS


@dataclass(frozen=True)
class Job:
    scenario: Scenario
    seed: int
    alibi_python: str | None
    nannyml_python: str | None
    crosscheck: bool
    multivariate: MultivariatePeer | None = None


_WORKER: peers.AlibiWorker | None = None  # one alibi-detect subprocess per pool process
_NANNYML: peers.NannyMLWorker | None = None  # and one NannyML subprocess


def _alarm_feature(d: DriftEvent) -> str:
    """The scored name of a DriftEvent's feature: a segment's as :func:`segment_name`."""
    segment = d.extra.get("segment")
    if isinstance(segment, dict) and len(segment) == 1:
        ((column, value),) = segment.items()
        return segment_name(d.feature or "", column, value)
    return d.feature or ""


def run_job(job: Job) -> dict[str, Any]:
    global _WORKER, _NANNYML
    seconds: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        seconds[name] = seconds.get(name, 0.0) + now - t
        t = now

    wall = time.perf_counter()
    stream = job.scenario.build(job.seed)
    truth = stream.truth
    n_events = len(stream.events)
    lap("generate")

    report = run_backtest(stream.events, job.scenario.engine_config())
    found = [d for d in report.drift_events if d.feature is not None]
    dw = [
        Alarm(_alarm_feature(d), d.detected_at, d.drift_id, d.confirmed, d.severity.value)
        for d in found
    ]
    partial = sum(1 for d in found if getattr(d, "partial", False))
    incidents = _incidents(found, truth)
    lap("driftwatch")

    seen = stream.peer_events if stream.peer_events is not None else stream.events
    cols = peers.to_columns(seen, START, stream.numeric, stream.categorical)
    own_numeric = list(stream.numeric)  # beside the segments' columns, which have an "@"
    del seen
    del stream
    lap("generate")
    river = peers.run_river(cols)
    lap("river")
    nannyml: list[Alarm] | None = None
    if job.nannyml_python is not None:
        if _NANNYML is None:
            _NANNYML = peers.NannyMLWorker(job.nannyml_python)
        # its PCA over the stream's own numeric features (not the segments' columns)
        nannyml = _NANNYML.alarms(cols, [n for n in own_numeric if "@" not in n])
        lap("NannyML")

    crosscheck: dict[str, int] | None = None
    if job.alibi_python is not None:
        if _WORKER is None:
            _WORKER = peers.AlibiWorker(job.alibi_python)
        pvalues = _WORKER.pvalues(cols)
        alibi_name = ALIBI
        lap("alibi-detect")
        if job.crosscheck:
            ours = peers.alibi_alarms(peers.scipy_alibi_equivalent(cols), cols)
            theirs = peers.alibi_alarms(pvalues, cols)
            a = {(x.feature, x.time) for x in ours}
            b = {(x.feature, x.time) for x in theirs}
            tests = sum(len(v) for kind in pvalues.values() for v in kind.values())
            crosscheck = {"tests": tests, "disagree": len(a ^ b), "alarms": len(b)}
            lap("scipy cross-check")
    else:
        pvalues = peers.scipy_alibi_equivalent(cols)
        alibi_name = ALIBI_SCIPY
        lap("alibi-equivalent")
    alibi = peers.alibi_alarms(pvalues, cols)

    # alibi-detect's MMD / LSDD over the same numeric features as NannyML's PCA
    multivariate: dict[str, list[Alarm]] = {}
    mv_pvalues: dict[str, list[float | None]] | None = None
    mv_rows: dict[str, Any] | None = None
    if job.multivariate is not None and job.alibi_python is not None:
        if _WORKER is None:
            _WORKER = peers.AlibiWorker(job.alibi_python)
        batches = peers.multivariate_batches(
            cols, [n for n in own_numeric if "@" not in n], job.multivariate.rows, job.seed
        )
        mv_pvalues = _WORKER.multivariate(batches, job.seed, job.multivariate.permutations)
        mv_rows = {
            "reference": [batches.reference_rows, len(batches.reference)],
            "day_median": int(sorted(batches.day_rows)[len(batches.day_rows) // 2]),
            "backend": _WORKER.backend,
        }
        for det, name in zip(peers.MV_DETECTORS, MV_NAMES, strict=True):
            multivariate[name] = peers.daily_alarms(mv_pvalues[det], START, MULTIVARIATE_FEATURE)
        lap("alibi-detect MMD / LSDD")

    scores = {DRIFTWATCH: asdict(score(dw, truth, own_incidents=True))}
    for name in RIVER:
        scores[name] = asdict(score(river[name.removeprefix("river ")], truth, own_incidents=False))
    if nannyml is not None:
        scores[NANNYML] = asdict(score(nannyml, truth, own_incidents=False))
    scores[alibi_name] = asdict(score(alibi, truth, own_incidents=False))
    for name, alarms in multivariate.items():
        scores[name] = asdict(score(alarms, truth, own_incidents=False))
    # The multivariate detectors alone: their __multivariate__ alarms against that one
    # 'feature', so the false-alarm rate is per 1,000 model-days.
    mv_truth = dataclasses.replace(
        truth,
        features=(MULTIVARIATE_FEATURE,),
        drifting=truth.drifting & {MULTIVARIATE_FEATURE},
    )
    only = lambda alarms: [a for a in alarms if a.feature == MULTIVARIATE_FEATURE]  # noqa: E731
    mv_scores = {DRIFTWATCH: asdict(score(only(dw), mv_truth, own_incidents=True))}
    if nannyml is not None:
        mv_scores[NANNYML] = asdict(score(only(nannyml), mv_truth, own_incidents=False))
    for name, alarms in multivariate.items():
        mv_scores[name] = asdict(score(alarms, mv_truth, own_incidents=False))
    lap("scoring")
    return {
        "scenario": job.scenario.key,
        "number": job.scenario.number,
        "seed": job.seed,
        "events": n_events,
        "scores": scores,
        "driftwatch": {
            "drift_events": len(found),
            "partial_events": partial,
            "incidents": incidents,
            "engine_stats": {k: v for k, v in sorted(report.engine_stats.items())},
        },
        "alibi_crosscheck": crosscheck,
        "multivariate_scores": mv_scores,
        "mmd_lsdd": None
        if mv_pvalues is None
        else {"rows": mv_rows, "pvalues": {k: [_p(p) for p in v] for k, v in mv_pvalues.items()}},
        "stage_seconds": seconds,
        "wall_seconds": time.perf_counter() - wall,
    }


def _mv_calibration(results: list[dict[str, Any]], scenarios: list[Scenario]) -> dict[str, Any]:
    """MMD's and LSDD's alarm days among the tested days without any change: every tested
    day before the onset's day of a stream without a weekly pattern (``corr-flip``'s days
    30-59), from day REFERENCE_DAYS on, unscored days included (their false-alarm rate at
    p_val, measured)."""
    by_key = {s.key: s for s in scenarios}
    out: dict[str, Any] = {"scenarios": [], "days": 0, "alarms": {}}
    for r in results:
        s = by_key[r["scenario"]]
        if not r["mmd_lsdd"] or s.weekly_seasonality:
            continue
        end = int(s.onset_day) if s.onset_day is not None else s.days
        if r["scenario"] not in out["scenarios"]:
            out["scenarios"].append(r["scenario"])
        for det, ps in r["mmd_lsdd"]["pvalues"].items():
            clean = [p for p in ps[: end - peers.REFERENCE_DAYS] if p is not None]
            out["alarms"][det] = out["alarms"].get(det, 0) + sum(p < peers.MV_P_VAL for p in clean)
            if det == peers.MV_DETECTORS[0]:
                out["days"] += len(clean)
    return out


def _median_int(xs: list[int]) -> int | None:
    return sorted(xs)[len(xs) // 2] if xs else None


def _p(p: float | None) -> float | None:
    return None if p is None else round(p, 4)


def _incidents(found: list[Any], truth: Any) -> list[dict[str, Any]]:
    """driftwatch's incidents, one line each: for reading the JSON, not for scoring."""
    by_id: dict[str, list[Any]] = {}
    for d in found:
        by_id.setdefault(d.drift_id, []).append(d)
    out: list[dict[str, Any]] = []
    for events in by_id.values():
        first = events[0]
        confirmed = next((d for d in events if d.confirmed), None)
        day = lambda ts: round((ts - START) / 86_400, 3)  # noqa: E731
        out.append(
            {
                "feature": first.feature,
                "test": first.test,
                "true": not truth.is_false(
                    Alarm(
                        first.feature, first.detected_at, off_target=first.test == OFF_TARGET_TEST
                    )
                ),
                "first_detected_day": day(first.detected_at),
                "first_window_day": day(first.window_start),
                "confirmed_day": None if confirmed is None else day(confirmed.detected_at),
                "events": len(events),
                "partial_events": sum(1 for d in events if getattr(d, "partial", False)),
                "severities": dict(Counter(d.severity.value for d in events)),
                "effect_size_range": [
                    round(min(d.effect_size or 0.0 for d in events), 4),
                    round(max(d.effect_size or 0.0 for d in events), 4),
                ],
            }
        )
    return out


def _cpu_seconds() -> float:
    """User + system CPU of this process and all its finished descendants (pool workers and
    their alibi-detect subprocesses): what the run costs on an otherwise idle machine."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _git(*args: str) -> str:
    try:
        res = subprocess.run(
            ["git", "--no-optional-locks", *args], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return ""
    return res.stdout.rstrip() if res.returncode == 0 else ""


def _versions(alibi_version: str | None, nannyml_version: str | None = None) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("driftwatch", "river", "numpy", "scipy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "?"
    if alibi_version:
        out["alibi-detect"] = alibi_version
    if nannyml_version:
        out["nannyml"] = nannyml_version
    return out


def _alibi_version(python: str, module: str = "alibi_detect") -> str | None:
    res = subprocess.run(
        [python, "-c", f"import {module}; print({module}.__version__)"],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return res.stdout.strip().splitlines()[-1] if res.returncode == 0 and res.stdout else None


def _rerender(path: Path, out_md: Path | None) -> int:
    """The markdown of an earlier run's JSON (after a change to the report only)."""
    payload = json.loads(path.read_text())
    meta = payload["meta"]
    seeds = {s["key"]: s["seeds"] for s in payload["scenarios"]}
    chosen = select(",".join(seeds), meta["quick"])
    scenarios = [dataclasses.replace(s, seeds=seeds[s.key]) for s in chosen]
    markdown = render(
        meta,
        scenarios,
        payload["summary"],
        payload["detectors"],
        payload.get("summary_multivariate"),
    )
    print(markdown)
    if out_md is not None:
        out_md.write_text(markdown)
        log(f"wrote {out_md}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.detection", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: 60 days, one seed")
    parser.add_argument("--scenarios", default="", help="comma-separated keys or numbers")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per scenario (override)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument(
        "--alibi",
        choices=("auto", "scipy"),
        default="auto",
        help="auto: alibi-detect from the bench venv (created if missing), else scipy",
    )
    parser.add_argument("--bench-venv", type=Path, default=ROOT / ".venv-bench")
    parser.add_argument("--no-crosscheck", action="store_true", help="skip alibi vs scipy check")
    parser.add_argument(
        "--mmd",
        choices=("auto", "off"),
        default="auto",
        help="auto: alibi-detect's MMD and LSDD (PyTorch, installed into the bench venv from "
        "bench/requirements-detection.txt if missing) on --mmd-scenarios; off: leave them out",
    )
    parser.add_argument(
        "--mmd-scenarios",
        default=",".join(peers.MV_SCENARIOS),
        help="scenarios (keys or numbers, or 'all') on which MMD / LSDD run "
        f"(default: {','.join(peers.MV_SCENARIOS)}; only those of --scenarios run)",
    )
    parser.add_argument(
        "--mmd-rows", type=int, default=peers.MV_ROWS, help="rows per side of an MMD/LSDD test"
    )
    parser.add_argument(
        "--mmd-permutations",
        type=int,
        default=peers.MV_PERMUTATIONS,
        help="permutations of an MMD/LSDD test",
    )
    parser.add_argument(
        "--rerender", type=Path, default=None, help="re-render a results JSON, run nothing"
    )
    parser.add_argument("--out-md", type=Path, default=None)
    parser.add_argument("--out-json", type=Path, default=None)
    args = parser.parse_args(argv)

    if args.rerender is not None:
        return _rerender(args.rerender, args.out_md)
    started = time.perf_counter()
    # The code state the run measures (the engine modules are imported by now).
    commit = _git("rev-parse", "--short", "HEAD") or "?"
    modified = _git("status", "--porcelain", "--untracked-files=no").splitlines()
    scenarios = select(args.scenarios, args.quick, args.seeds)
    partial_run = args.quick or bool(args.scenarios) or args.seeds is not None
    out_md = args.out_md if args.out_md else (None if partial_run else DOC)
    out_json = args.out_json or RESULTS / (
        "detection-partial.json" if partial_run else "detection.json"
    )

    verified = peers.verify_fast_kswin()
    log(f"FastKSWIN matches river's KSWIN ({verified} alarms compared)")

    alibi_python: str | None = None
    alibi_note = "--alibi scipy was given"
    if args.alibi == "auto":
        alibi_python = peers.alibi_python(args.bench_venv)
        if alibi_python is None:
            if peers.setup_bench_venv(args.bench_venv, log):
                alibi_python = peers.alibi_python(args.bench_venv)
            alibi_note = (
                f"no interpreter with alibi_detect, and setting up {args.bench_venv} failed"
            )
    alibi_version = _alibi_version(alibi_python) if alibi_python else None
    if alibi_python:
        log(f"alibi-detect {alibi_version} from {alibi_python}")
    else:
        log(f"alibi-detect not available ({alibi_note}): using the scipy equivalent")
    nannyml_python = peers.peer_python(args.bench_venv, "nannyml")
    if nannyml_python is None and args.alibi == "auto":
        log(f"{args.bench_venv} has no NannyML: installing {peers.REQUIREMENTS.name} into it")
        if peers.setup_bench_venv(args.bench_venv, log):
            nannyml_python = peers.peer_python(args.bench_venv, "nannyml")
    if nannyml_python is None:
        log("NannyML not available: its column is left out")
    mv_keys = (
        {s.key for s in scenarios}
        if args.mmd_scenarios.strip() == "all"
        else {s.key for s in select(args.mmd_scenarios, False)} & {s.key for s in scenarios}
    )
    mv_note = ""
    mv_ok = False
    if args.mmd == "off":
        mv_note = "--mmd off was given"
    elif not mv_keys:
        mv_note = "none of the --mmd-scenarios was run"
    elif alibi_python is None:
        mv_note = "alibi-detect is not available"
    else:
        mv_ok = peers.torch_python(args.bench_venv) == alibi_python
        if not mv_ok:
            log(f"{args.bench_venv} has no PyTorch: installing {peers.REQUIREMENTS.name} into it")
            if peers.setup_bench_venv(args.bench_venv, log):
                mv_ok = peers.torch_python(args.bench_venv) == alibi_python
            mv_note = f"no PyTorch beside alibi-detect in {args.bench_venv} after installing"
    mv = MultivariatePeer(args.mmd_rows, args.mmd_permutations) if mv_ok else None
    if mv is not None:
        log(
            f"alibi-detect MMD / LSDD (PyTorch, {mv.rows} rows a side, {mv.permutations} "
            f"permutations) on {', '.join(sorted(mv_keys))}"
        )
    else:
        log(f"alibi-detect MMD / LSDD left out: {mv_note}")
    detectors = [
        DRIFTWATCH, *RIVER, *([NANNYML] if nannyml_python else []),
        ALIBI if alibi_python else ALIBI_SCIPY, *(MV_NAMES if mv is not None else ()),
    ]  # fmt: skip

    jobs = [
        Job(
            s,
            seed,
            alibi_python,
            nannyml_python,
            crosscheck=not args.no_crosscheck,
            multivariate=mv if s.key in mv_keys else None,
        )
        for s in scenarios
        for seed in range(1, s.seeds + 1)
    ]
    jobs.sort(key=lambda j: -j.scenario.cost)
    log(f"{len(jobs)} jobs ({len(scenarios)} scenarios) on {args.jobs} processes")
    results: list[dict[str, Any]] = []
    with get_context("fork").Pool(max(1, args.jobs)) as pool:
        for res in pool.imap_unordered(run_job, jobs):
            results.append(res)
            log(
                f"[{len(results)}/{len(jobs)}] {res['scenario']} seed {res['seed']}: "
                f"{res['events']:,} events, {res['wall_seconds']:.0f} s ("
                + ", ".join(f"{k} {v:.1f}" for k, v in res["stage_seconds"].items())
                + ")"
            )
    results.sort(key=lambda r: (r["number"], r["seed"]))
    agg = aggregate(results, detectors)
    mv_detectors = [d for d in (DRIFTWATCH, NANNYML, *MV_NAMES) if d in detectors]
    agg_mv = aggregate([r | {"scores": r["multivariate_scores"]} for r in results], mv_detectors)
    mv_runs = [r["mmd_lsdd"]["rows"] for r in results if r["mmd_lsdd"]]
    calibration = _mv_calibration(results, scenarios)
    backends = {r["backend"] for r in mv_runs}

    cpu: Counter[str] = Counter()
    for r in results:
        cpu.update(r["stage_seconds"])
    checks = [r["alibi_crosscheck"] for r in results if r["alibi_crosscheck"]]
    crosscheck_note = ""
    if checks:
        tests = sum(c["tests"] for c in checks)
        disagree = sum(c["disagree"] for c in checks)
        crosscheck_note = (
            f"Cross-check: the scipy re-implementation of this procedure gives the same daily "
            f"alarms as alibi-detect on {tests - disagree:,} of {tests:,} feature-day tests."
        )
    command = "python -m bench.detection" + (
        " " + shlex.join(sys.argv[1:] if argv is None else argv)
        if (sys.argv[1:] if argv is None else argv)
        else ""
    )
    meta: dict[str, Any] = {
        "command": command,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "commit": commit,
        "dirty": bool(modified),
        "modified_files": [line[3:] for line in modified if len(line) > 3],
        "cpus": os.cpu_count(),
        "jobs": args.jobs,
        "quick": args.quick,
        "seconds": time.perf_counter() - started,
        "cpu_seconds_total": _cpu_seconds(),
        "versions": _versions(
            alibi_version, _alibi_version(nannyml_python, "nannyml") if nannyml_python else None
        )
        | ({"torch": ", ".join(sorted(b.split()[1] for b in backends if b))} if backends else {}),
        "alibi_python": (os.path.relpath(alibi_python, ROOT) if alibi_python else None),
        "alibi_note": alibi_note,
        "alibi_crosscheck": crosscheck_note,
        "mmd": {
            "run": mv is not None,
            "note": mv_note,
            "scenarios": sorted(mv_keys, key=[s.key for s in scenarios].index)
            if mv is not None
            else [],
            "rows": args.mmd_rows,
            "permutations": args.mmd_permutations,
            "p_val": peers.MV_P_VAL,
            "backend": ", ".join(sorted(b for b in backends if b)),
            "reference_rows": _median_int([r["reference"][0] for r in mv_runs]),
            "day_rows": _median_int([r["day_median"] for r in mv_runs]),
            "calibration": calibration,
        },
        "eval_from_day": EVAL_FROM_DAY,
        "kswin_seed": peers.KSWIN_SEED,
        "kswin_verified": verified,
        "stage_seconds": dict(sorted(cpu.items(), key=lambda kv: -kv[1])),
        "engine_config": asdict(EngineConfig()),
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "meta": meta,
        "scenarios": [asdict(s) | {"drift": str(s.drift) if s.drift else None} for s in scenarios],
        "detectors": detectors,
        "summary": agg,
        "summary_multivariate": agg_mv,
        "runs": results,
    }
    out_json.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    log(f"wrote {out_json}")
    markdown = render(meta, scenarios, agg, detectors, agg_mv)
    print(markdown)
    if out_md is not None:
        out_md.parent.mkdir(parents=True, exist_ok=True)
        out_md.write_text(markdown)
        log(f"wrote {out_md}")
    log(f"done in {meta['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
