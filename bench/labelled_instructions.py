"""What labels cost a backtest, in instructions: the outcome join and the performance history.

    python -m bench.labelled_instructions [--days 45] [--join-keys] [--compare DIR] [--out FILE]

``bench.backtest_speed``'s labelled run times the whole backtest on a shared, noisy machine.
This counts instructions under ``valgrind --tool=callgrind`` (see
:mod:`bench.steady_instructions`): the first ``--days`` of ``bench.backtest_speed``'s stream
(20 features, 2,000 predictions a day, 15 % labelled 1-3 days late) through
:func:`driftwatch.backtest.run_backtest` once with its outcomes and once without, and prints
the difference per prediction: the join's records (stored, indexed, expired to tombstones
after ``join_retention_days``, 30, then deleted), the performance history's windows and
looks, and the loop's work for the outcomes. With the default 45 days the first 15 days'
records expire (their tombstones go a retention later: ``--days`` over 60 to count that).
``--join-keys``: the join as ``driftwatch backtest`` runs it, keeping only the predictions
an outcome names (:mod:`driftwatch.join_keys`); without it, every prediction, as a worker's
join must. ``--compare DIR`` measures another checkout's code beside this one (this script,
with that checkout's packages, its ``bench.steady_instructions`` and ``bench.results_file``
among them).
Needs valgrind; each instrumented run takes ~4 minutes, two at a time.
"""

from __future__ import annotations

import gc
import inspect
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.results_file import write_results
from bench.steady_instructions import START, arguments, callgrind, net_counts, print_rows

RESULTS = Path(__file__).resolve().parent / "results" / "labelled_instructions.json"
GC_THRESHOLD = 100_000
"""``runtime.gc_tuning.BACKTEST_THRESHOLD``, as the backtest paces its collector."""


def prepare(path: Path, days: int) -> tuple[int, int]:
    """The stream's validated predictions and its outcomes, pickled to ``path``; returns
    how many of each."""
    from driftwatch.simulate import (
        DriftSpec,
        DriftType,
        SimulationConfig,
        generate,
        generate_outcomes,
    )
    from streams.ingest import PredictionValidator

    cfg = SimulationConfig(
        seed=3, tenants=("acme",), models=("fraud",), days=days, events_per_day=2000,
        numeric_features=16, categorical_features=4, start=START, label_rate=0.15,
        drifts=(DriftSpec(DriftType.MEAN_SHIFT, days * 2 / 3 + 0.3, 0.5, ("amount",)),),
    )  # fmt: skip
    validator = PredictionValidator(max_future_seconds=None)
    events = sorted(
        (validator.validate(e.to_json(), now=None) for e in generate(cfg)),
        key=lambda e: e.timestamp,
    )
    outcomes = sorted(generate_outcomes(cfg), key=lambda o: o.timestamp)
    with path.open("wb") as fh:
        pickle.dump((events, outcomes), fh)
    return len(events), len(outcomes)


def replay(path: Path, labelled: bool, join_keys: bool = False) -> None:
    """What callgrind measures: the backtest, with the outcomes or without them; with
    ``join_keys``, its join keeping only the predictions an outcome names (the keys found
    in the measured run, as ``driftwatch backtest``'s scans find them; code from before
    :mod:`driftwatch.join_keys` keeps every prediction)."""
    from driftwatch.backtest import run_backtest
    from streams.config import EngineConfig

    # The collector paced as ``bench.steady_instructions.pace_gc`` paces it, written here:
    # with ``--compare``, that module is the other checkout's, which may predate it.
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    with path.open("rb") as fh:
        events, outcomes = pickle.load(fh)
    keys: dict[str, Any] = {}
    # (asked of the signature: the editable install finds this checkout's new modules for
    # another checkout's packages too)
    if join_keys and labelled and "join_keys" in inspect.signature(run_backtest).parameters:
        from driftwatch.join_keys import JoinKeys

        ids = (e.event_id for e in events), (o.event_id for o in outcomes)
        keys["join_keys"] = JoinKeys.of(*ids)
    report = run_backtest(
        iter(events), EngineConfig(), outcomes=outcomes if labelled else [], presorted=True,
        **keys,
    )  # fmt: skip
    # "drift events" as bench.steady_instructions.count reads it: the same on both sides
    print(f"drift events: {report.drift_events_total} joined: {report.outcomes_joined}")


def instructions(
    code: Path, state: Path, labelled: bool, join_keys: bool = False
) -> subprocess.Popen[str]:
    """A callgrind run of :func:`replay` on ``code``'s packages."""
    flags = ([] if labelled else ["--no-labels"]) + (["--join-keys"] if join_keys else [])
    return callgrind(code, state, __file__, flags)


def main(argv: list[str] | None = None) -> int:
    # --join-keys is this script's own, taken out before the shared arguments (which may be
    # another checkout's, when it replays there).
    argv = sys.argv[1:] if argv is None else argv
    join_keys = "--join-keys" in argv
    args = arguments(
        [a for a in argv if a != "--join-keys"], __doc__, 45, "days of the stream (45)",
        RESULTS, "--no-labels",
    )  # fmt: skip
    if args.replay:
        replay(args.replay, labelled=not args.no_labels, join_keys=join_keys)
        return 0

    def run(code: Path, state: Path, labelled: bool) -> subprocess.Popen[str]:
        return instructions(code, state, labelled, join_keys)

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "stream.pkl"
        predictions, outcomes = prepare(state, args.days)
        rows = [
            {
                "code": name,
                "instructions": net,
                "per_prediction": round(net / predictions),
                "drift_events": drifts,
            }
            for name, net, drifts in net_counts(args.compare, state, run)
        ]
    join = "only what can join (--join-keys)" if join_keys else "every prediction"
    print(f"{predictions:,} predictions, {outcomes:,} outcomes over {args.days} days: what the "
          f"outcomes add, instructions under callgrind; the join keeps {join}")  # fmt: skip
    print_rows(
        rows,
        [("instructions", "instructions", 16), ("per_prediction", "per prediction", 16),
         ("drift_events", "drifts", 8)],
    )  # fmt: skip
    write_results(args.out, "bench.labelled_instructions", predictions=predictions,
                  outcomes=outcomes, days=args.days, join_keys=join_keys,
                  results=rows)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
