"""The ``driftwatch`` command line (see ../shared/design/contracts.md for the public part)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import prometheus_client

from driftwatch import argtypes
from driftwatch.retrain_cli import add_commands
from runtime.settings import Settings, settings_markdown, update_readme

log = logging.getLogger("driftwatch")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from driftwatch.worker import run_worker

    return run_worker(settings)


def cmd_dev_broker(args: argparse.Namespace, settings: Settings) -> int:
    from driftwatch.devbroker import run_dev_broker

    return run_dev_broker(args.port)


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from driftwatch.simulate import (
        SimulationConfig,
        generate,
        generate_outcomes,
        resolve_start,
        validate,
        write_jsonl,
    )

    cfg = SimulationConfig(
        seed=args.seed,
        tenants=tuple(args.tenants.split(",")),
        models=tuple(args.models.split(",")),
        days=args.days,
        events_per_day=args.rate,
        numeric_features=args.numeric_features,
        categorical_features=args.categorical_features,
        start=args.start,
        drifts=tuple(args.drift),  # parsed by the parser (_drift_arg)
        weekly_seasonality=args.seasonality,
    )
    try:
        validate(cfg)  # a drift naming a feature, tenant or model the traffic lacks
    except ValueError as exc:
        print(f"driftwatch simulate: {exc}", file=sys.stderr)
        return 2
    if cfg.start is None:  # once, for the predictions and the outcomes alike
        # Without outcomes there are none to keep out of the future: the stream ends today.
        shifted = cfg if args.outcomes else dataclasses.replace(cfg, label_rate=0)
        cfg = dataclasses.replace(cfg, start=resolve_start(shifted))
    if args.out_dir is not None:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        n = write_jsonl(generate(cfg), out / "predictions.jsonl")
        m = write_jsonl(generate_outcomes(cfg), out / "outcomes.jsonl") if args.outcomes else 0
        print(f"wrote {n} predictions and {m} outcomes to {out}", file=sys.stderr)
        return 0
    from driftwatch.kafka_io import produce_simulation

    n, m = produce_simulation(settings, cfg, with_outcomes=args.outcomes, batch=args.batch)
    print(f"produced {n} predictions and {m} outcomes to {settings.bootstrap}", file=sys.stderr)
    return 0


def cmd_backtest(args: argparse.Namespace, settings: Settings) -> int:
    from collections import Counter

    from driftwatch.backtest import backtest_files
    from runtime.gc_tuning import paced_gc
    from streams.ingest import PredictionValidator

    if args.config is not None:
        try:
            settings = settings.with_file(Path(args.config))
            settings.performance_config()
        except (ValueError, OSError) as exc:
            print(f"driftwatch: configuration error: {exc}", file=sys.stderr)
            return 2
    validator = PredictionValidator(
        max_bytes=settings.max_message_bytes,
        tenants=settings.tenant_allowlist,
        max_future_seconds=None,
    )
    rejected: Counter[str] = Counter()
    if args.performance is not None:  # a path it cannot write is refused before the run
        try:
            open(args.performance, "a").close()  # (rewritten after the run)
        except OSError as exc:
            print(f"driftwatch: {args.performance}: {exc.strerror}", file=sys.stderr)
            return 2
    # Streamed: each file is scanned once, then read in event-time order (sorted on disk if
    # it is not already), and DriftEvents go to stdout as they come: memory does not grow
    # with the input. The collector paced for one run to its end: the engine's windows and
    # each batch's columns, walked less often.
    with paced_gc(settings.backtest_gc_threshold):
        report = backtest_files(
            Path(args.predictions),
            settings.engine_config(),
            validator,
            outcomes=None if args.outcomes is None else Path(args.outcomes),
            out=sys.stdout,
            performance=settings.performance_config(),
            keep_drift_events=False,
            rejected=rejected,
        )
    summary = {
        "events": report.events,
        "feature_values": report.feature_values,
        "drift_events": report.drift_events_total,
        "performance_drift_events": report.performance_drift_events_total,
        "rejected": dict(report.rejected),
        "seconds": round(report.seconds, 3),
        "feature_values_per_second": round(report.feature_values / max(report.seconds, 1e-9)),
        "outcomes_joined": report.outcomes_joined,
    }
    print(json.dumps({"backtest": summary}), file=sys.stderr)
    if args.performance is not None:
        with open(args.performance, "w") as fh:
            for row in report.performance:
                fh.write(json.dumps(row) + "\n")
        print(
            f"performance history: {len(report.performance)} windows -> {args.performance}",
            file=sys.stderr,
        )
    if report.events == 0 and report.rejected:  # not "no drift": nothing was looked at
        top = ", ".join(f"{reason} {n:,}" for reason, n in report.rejected.most_common(3))
        print(
            f"driftwatch: no prediction accepted: {report.rejected.total():,} lines rejected "
            f"({top}{', ...' if len(report.rejected) > 3 else ''})",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    """The offline HTML report: the backtest's engine over files, then the report's page."""
    from contextlib import ExitStack
    from dataclasses import replace

    from driftwatch.backtest import run_backtest, sorted_outcomes, sorted_predictions
    from driftwatch.join_keys import JoinKeyScan
    from driftwatch.report.collect import collect
    from driftwatch.report.render import render_report
    from runtime.gc_tuning import paced_gc
    from schemas import PredictionEvent
    from streams.ingest import PredictionValidator

    if args.config is not None:
        try:
            settings = settings.with_file(Path(args.config))
        except (ValueError, OSError) as exc:
            print(f"driftwatch: configuration error: {exc}", file=sys.stderr)
            return 2
    from collections import Counter

    validator = PredictionValidator(
        max_bytes=settings.max_message_bytes,
        tenants=settings.tenant_allowlist,
        max_future_seconds=None,
    )
    rejected: Counter[str] = Counter()
    seen: set[tuple[str, str]] = set()
    scan = JoinKeyScan()  # the predictions the join needs (see driftwatch.join_keys)

    def on_prediction(event: PredictionEvent) -> None:
        seen.add((event.tenant, event.model))
        if args.outcomes is not None:  # (no outcomes, no join)
            scan.prediction(event)

    with ExitStack() as stack:
        stack.enter_context(paced_gc(settings.backtest_gc_threshold))  # as `backtest` runs
        # Scanned once (counts, time span, models), then streamed in event-time order.
        events = stack.enter_context(
            sorted_predictions(Path(args.predictions), validator, rejected, on_event=on_prediction)
        )
        outcomes = (
            () if args.outcomes is None
            else stack.enter_context(
                sorted_outcomes(Path(args.outcomes), rejected, on_event=scan.outcome)
            )
        )  # fmt: skip
        if not events.count:
            print("driftwatch: no valid predictions", file=sys.stderr)
            return 1
        # The scan pass has seen every model: a wrong choice is refused before the run.
        streams = sorted(seen)
        if args.tenant or args.model:
            streams = [
                s for s in streams if (args.tenant in (None, s[0])) and (args.model in (None, s[1]))
            ]
            if not streams:
                asked = f"{args.tenant or '*'}/{args.model or '*'}"
                names = ", ".join(f"{t}/{m}" for t, m in sorted(seen)) or "none"
                print(f"driftwatch: no model {asked} in the input (it has: {names})",
                      file=sys.stderr)  # fmt: skip
                return 2
        out = Path(args.out)
        if len(streams) != 1 and not out.is_dir():
            names = ", ".join(f"{t}/{m}" for t, m in streams) or "none"
            print(
                f"driftwatch: {len(streams)} models in the input ({names}): choose one with "
                "--tenant/--model, or give a directory as --out for one report each",
                file=sys.stderr,
            )
            return 2
        # Keep every window of the input (not only the retention's): the report covers it all.
        span_days = (events.max_timestamp - events.min_timestamp) / 86_400
        cfg = settings.engine_config()
        cfg = replace(cfg, retention_days=max(cfg.retention_days, span_days + 2))
        pcfg = replace(settings.performance_config(), engine=cfg)
        report = run_backtest(
            events, cfg, outcomes=outcomes, performance=pcfg,
            presorted=True, keep_drift_events=False,
            join_keys=None if args.outcomes is None else scan.keys(),
        )  # fmt: skip
    assert report.feature_state is not None and report.performance_state is not None
    for tenant, model in streams:
        data = collect(
            report.feature_state, report.performance_state, pcfg, tenant, model,
            source=f"backtest of {Path(args.predictions).name}"
            + (f" and {Path(args.outcomes).name}" if args.outcomes else ""),
        )  # fmt: skip
        if data is None:
            continue
        html = render_report(data)
        target = out / f"{tenant}-{model}.html" if out.is_dir() else out
        target.write_text(html, encoding="utf-8")
        print(f"{tenant}/{model}: {target} ({len(html.encode()) / 1e6:.2f} MB)", file=sys.stderr)
    return 0


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    """Make an API token: print it once, store only its hash (in --file, or print the entry)."""
    from agents.api.auth import TokenFileError, hash_token, new_token, parse_tokens

    token = new_token()
    entry = {
        "name": args.name,
        "sha256": hash_token(token),
        "tenants": [t.strip() for t in args.tenants.split(",") if t.strip()],
        "scopes": [s.strip() for s in args.scopes.split(",") if s.strip()],
    }
    if args.file:
        path = Path(args.file)
        data = json.loads(path.read_text()) if path.exists() else {"tokens": []}
        data.setdefault("tokens", [])
        data["tokens"] = [t for t in data["tokens"] if t.get("name") != args.name] + [entry]
        text = json.dumps(data, indent=2) + "\n"
    else:
        text = json.dumps({"tokens": [entry]}, indent=2) + "\n"
    try:
        parse_tokens(text)
    except TokenFileError as exc:
        print(f"driftwatch: {exc}", file=sys.stderr)
        return 2
    if args.file:
        tmp = Path(args.file + ".tmp")
        tmp.write_text(text)
        tmp.replace(args.file)
        print(f"{args.name}: added to {args.file} (workers pick it up within seconds)",
              file=sys.stderr)  # fmt: skip
    else:
        print(text, file=sys.stderr, end="")
    print(token)
    print("(shown once: store it now; only its hash is kept)", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from driftwatch.demo import run_demo

    return run_demo(
        settings, days=args.days, rate=args.rate, drift_day=args.drift_day, batch=args.batch
    )


def cmd_inspect(args: argparse.Namespace, settings: Settings) -> int:
    from agents.app import PERFORMANCE_TABLE, WINDOW_TABLE
    from agents.state_files import describe_performance, describe_state, read_table

    data_dir = args.data_dir or settings.data_dir
    if not Path(data_dir).is_dir():
        print(f"driftwatch: no worker state at {data_dir} (DRIFTWATCH_DATA_DIR, --data-dir)",
              file=sys.stderr)  # fmt: skip
        return 1
    state = describe_state(read_table(data_dir, WINDOW_TABLE))
    for stream, perf in describe_performance(read_table(data_dir, PERFORMANCE_TABLE)).items():
        state.setdefault(stream, {})["performance"] = perf
    if args.stream:
        state = {k: v for k, v in state.items() if k == args.stream}
    print(json.dumps(state, indent=2, sort_keys=True))
    if not state:
        what = f"stream {args.stream}" if args.stream else "stream state"
        print(f"driftwatch: no {what} in {data_dir}", file=sys.stderr)
    return 0 if state else 1


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    if args.update_readme:
        changed = update_readme(Path(args.update_readme))
        print(f"{args.update_readme}: {'updated' if changed else 'already current'}")
    elif args.markdown:
        print(settings_markdown())
    else:
        print(json.dumps(settings.as_dict(redact=True), indent=2, default=str))
    return 0


DRIFT_TYPES = ("mean_shift", "variance", "category_mix", "concept", "relation", "none")
"""``simulate --drift``'s types, for its help (``driftwatch.simulate.DriftType``'s values: a
test keeps them equal; importing it here cost every command ~80 ms)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftwatch", description="Streaming model-drift monitor on Kafka."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "worker", help="run the Faust worker against KAFKA_BOOTSTRAP_SERVERS"
    ).set_defaults(func=cmd_worker)

    p = sub.add_parser("dev-broker", help="run the embedded Kafka-compatible broker on 127.0.0.1")
    p.add_argument("--port", type=int, default=9092)
    p.set_defaults(func=cmd_dev_broker)

    p = sub.add_parser("simulate", help="produce seeded synthetic traffic with injected drift")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--tenants", default="acme,globex", type=argtypes.names)
    p.add_argument("--models", default="fraud,conflict", type=argtypes.names)
    p.add_argument("--days", type=int, default=90)
    p.add_argument("--rate", type=int, default=1500, help="events per day per tenant and model")
    p.add_argument("--numeric-features", type=int, default=6)
    p.add_argument("--categorical-features", type=int, default=2)
    p.add_argument(
        "--start",
        type=float,
        default=None,
        help="epoch seconds of day 0 (default: today - days, and - the outcomes' longest "
        "delay with --outcomes: none from the future)",
    )
    p.add_argument(
        "--seasonality", type=float, default=0.0, help="weekly pattern amplitude, sigmas"
    )
    p.add_argument(
        "--drift",
        action="append",
        default=[],
        type=_drift_arg,
        help="e.g. mean_shift:day=60:magnitude=1.0:features=amount:tenants=acme:models=fraud "
        f"(types: {', '.join(DRIFT_TYPES)}); repeatable",
    )
    p.add_argument("--outcomes", action="store_true", help="also produce outcomes")
    p.add_argument("--out-dir", default=None, help="write JSON lines files here instead of Kafka")
    p.add_argument(
        "--batch",
        type=int,
        default=1,
        help="predictions per message: >1 sends batch envelopes (one tenant/model each)",
    )
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("demo", help="the whole loop on one machine")
    p.add_argument("--days", type=int, default=70)
    p.add_argument("--rate", type=int, default=500, help="events per day per tenant and model")
    p.add_argument(
        "--drift-day",
        type=int,
        default=50,
        help="when the changes start; leave ~14 days after it (labels come 1-3 days late, "
        "confirmation takes 7, the promoted model's check 4 more) for the demo to pass",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=1,
        help="predictions per message: >1 sends batch envelopes (one tenant/model each)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("backtest", help="run the detection engine offline over JSON lines files")
    p.add_argument("--predictions", required=True)
    p.add_argument("--outcomes", default=None, help="OutcomeEvents (JSON lines) to join")
    p.add_argument(
        "--performance", default=None, help="write the per-window performance history here"
    )
    p.add_argument("--config", default=None, help="TOML or JSON file of settings")
    p.set_defaults(func=cmd_backtest)

    p = sub.add_parser("token", help="make an API token (printed once; only its hash is kept)")
    p.add_argument("--name", required=True, help="who or what uses it, e.g. acme-ops")
    p.add_argument(
        "--tenants",
        required=True,
        type=argtypes.tenants,
        help="comma-separated tenants, or * for all",
    )
    p.add_argument("--scopes", default="read", help="read, or read,write")
    p.add_argument("--file", default=None, help="add it to this tokens file (else print it)")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("report", help="an HTML drift report from files (the backtest's engine)")
    p.add_argument("--predictions", required=True)
    p.add_argument("--outcomes", default=None, help="OutcomeEvents (JSON lines) to join")
    p.add_argument("--out", required=True, help="the HTML file, or a directory: one per model")
    p.add_argument("--tenant", default=None, type=argtypes.name)
    p.add_argument("--model", default=None, type=argtypes.name)
    p.add_argument("--config", default=None, help="TOML or JSON file of settings")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "inspect", help="print a stopped worker's state: stream clocks, window counts, incidents"
    )
    p.add_argument("--data-dir", default=None, help="default: DRIFTWATCH_DATA_DIR")
    p.add_argument("--stream", default=None, type=argtypes.stream, help="only this tenant:model")
    p.set_defaults(func=cmd_inspect)

    add_commands(sub)

    p = sub.add_parser("config", help="print the effective settings")
    p.add_argument("--markdown", action="store_true", help="the documentation table instead")
    p.add_argument("--update-readme", metavar="README", help="rewrite the table in this file")
    p.set_defaults(func=cmd_config)
    return parser


def _drift_arg(text: str) -> Any:
    """``--drift``'s value as a DriftSpec, a mistake in it as a usage error."""
    from driftwatch.simulate import parse_drift

    try:
        return parse_drift(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"driftwatch: configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level)
    # No ``*_created`` series (a quarter of a worker's scrape; Prometheus ignores them).
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    from runtime.kafka_connection import KafkaConfigError, KafkaConnectError
    from runtime.metrics_http import ListenError
    from runtime.topics import TopicError

    try:
        result: int = args.func(args, settings)
    except KafkaConfigError as exc:  # the settings do not fit together: nothing was tried
        print(f"driftwatch: configuration error: {exc}", file=sys.stderr)
        return 2
    except (KafkaConnectError, TopicError) as exc:  # refused, unreachable, topics do not fit
        print(f"driftwatch: {exc}", file=sys.stderr)
        return 1
    except ListenError as exc:  # a port taken, an address this host does not have
        print(f"driftwatch: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        if exc.filename is None:  # not a path the user gave: a fault, with its traceback
            raise
        print(f"driftwatch: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except ValueError as exc:
        from driftwatch.sortedio import UnreadableFile  # (not imported by every command)

        if not isinstance(exc, UnreadableFile):
            raise
        print(f"driftwatch: {exc}", file=sys.stderr)  # a gzip input cut short, or corrupt
        return 2
    except BrokenPipeError:  # the reader went away (``| head``): nothing left to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush must not fail
        return 1
    return result


if __name__ == "__main__":
    raise SystemExit(main())
