"""Validation speed: the worker's checks of ``predictions`` messages, per prediction.

    python -m bench.validation_speed [--events 60000] [--features 20] [--out FILE]

Validates ``bench.throughput``'s messages (single events, and envelopes of 500) with
``PredictionValidator.validate_message``, as the worker does, twice side by side in this
process: as it is, and with every event taken field by field (``PredictionEvent.
checked_from_dict``, what ``from_dict`` does for anything but the usual event). Prints
microseconds per prediction (the best of seven passes each, in turns) and the ratio.
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import schemas.events
from bench.results_file import write_results
from bench.throughput import bench_messages
from streams.ingest import PredictionValidator

RESULTS = Path(__file__).resolve().parent / "results" / "validation_speed.json"
PASSES = 7


@contextmanager
def field_by_field() -> Any:
    """Every event through the field-by-field checks (the one-pass path declines all)."""
    usual = schemas.events.usual_event
    schemas.events.usual_event = lambda cls, data: None
    try:
        yield
    finally:
        schemas.events.usual_event = usual


def one_pass_us(messages: list[bytes]) -> float:
    """Microseconds per prediction of one pass over ``messages``."""
    validator = PredictionValidator(max_future_seconds=None, max_batch_bytes=1 << 26)
    started = time.perf_counter()
    count = 0
    for raw in messages:
        items = validator.validate_message(raw, None)
        count += len(items)
        if any(item.event is None for item in items):
            raise SystemExit("a benchmark prediction was refused")
    return (time.perf_counter() - started) / count * 1e6


def best_of_alternating(messages: list[bytes]) -> tuple[float, float]:
    """(field by field, as is): the best of :data:`PASSES` passes each, taken in turns so
    that a slower spell of a shared machine falls on both."""
    checked, now = float("inf"), float("inf")
    for _ in range(PASSES):
        with field_by_field():
            checked = min(checked, one_pass_us(messages))
        now = min(now, one_pass_us(messages))
    return checked, now


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--events", type=int, default=60_000)
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    rows: list[dict[str, Any]] = []
    print(f"{'messages':<22}{'field by field us':>19}{'as is us':>10}{'speed-up':>10}")
    for name, batch in (("single events", 1), ("envelopes of 500", 500)):
        messages = [v for _, v in bench_messages(args.events, args.features, batch)]
        checked, now = best_of_alternating(messages)
        rows.append(
            {
                "messages": name,
                "field_by_field_us": round(checked, 2),
                "us": round(now, 2),
                "speedup": round(checked / now, 2),
            }
        )
        print(f"{name:<22}{checked:>19.2f}{now:>10.2f}{checked / now:>9.2f}x")
    write_results(
        args.out, "bench.validation_speed", events=args.events, features=args.features, rows=rows
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
