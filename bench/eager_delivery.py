"""Faust's per-message delivery against the worker's eager one, on the no-op Faust agent.

    python -m bench.eager_delivery [--events 60000] [--rounds 4] [--out FILE]

The no-op agent (``bench.noop_agent``) does nothing with a message, so its rate is Faust's
per-message cost alone. It reads the same single-event messages (``bench.throughput``'s, 20
features) from the embedded broker (or ``KAFKA_BOOTSTRAP_SERVERS``) in turns: as plain Faust
(its fetch loop awaits ``wait_first`` - four new tasks - for every message), and with the
delivery the driftwatch worker installs (``agents.faust_compat.eager_delivery``). Each run is
a new consumer group timed by its counter as ``bench.throughput`` times it; the turns put a
slow spell of a shared machine on both. Prints each run and the median ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import uuid
from pathlib import Path

from bench.results_file import write_results
from bench.throughput import (
    PAD,
    bench_broker,
    bench_messages,
    noop_worker,
    produce_all,
    run_worker,
)
from runtime.topics import ensure_topics

RESULTS = Path(__file__).resolve().parent / "results" / "eager_delivery.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--events", type=int, default=60_000)
    p.add_argument("--rounds", type=int, default=4, help="runs of each, in turns (4)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    n = args.events
    messages = bench_messages(n + PAD, 20)
    run_id = uuid.uuid4().hex[:8]
    rates: dict[str, list[float]] = {"faust": [], "eager": []}
    with tempfile.TemporaryDirectory(prefix="driftwatch-bench-") as tmp:
        workdir = Path(tmp)
        with bench_broker(workdir) as (bootstrap, broker_kind):
            topic = f"bench-{run_id}-eager"
            ensure_topics(bootstrap, {topic: 2})
            produce_all(bootstrap, topic, messages)
            del messages
            for k in range(args.rounds):
                for kind in rates:
                    if kind == "eager":
                        os.environ["BENCH_EAGER_DELIVERY"] = "1"
                    try:
                        app_id = f"{run_id}-{kind}-{k}"
                        worker = noop_worker(bootstrap, topic, app_id, 2, workdir)
                    finally:
                        os.environ.pop("BENCH_EAGER_DELIVERY", None)
                    timing, _ = run_worker(worker, n, 300.0)
                    rates[kind].append(timing.rate)
                    print(f"round {k + 1} {kind:<6} {timing.rate:>9,.0f} messages/s", flush=True)
    ratios = [e / f for f, e in zip(rates["faust"], rates["eager"], strict=True)]
    ratio = statistics.median(ratios)
    faust, eager = (statistics.median(rates[kind]) for kind in ("faust", "eager"))
    rounds = ", ".join(f"{r:.2f}" for r in ratios)
    print(
        f"no-op agent, {n:,} single-event messages: Faust's delivery {faust:,.0f}/s, eager "
        f"{eager:,.0f}/s (medians); eager / Faust per round {rounds}, median {ratio:.2f}x"
    )
    write_results(
        args.out,
        "bench.eager_delivery",
        events=n,
        broker=broker_kind,
        messages_per_s=rates,
        ratios=[round(r, 3) for r in ratios],
        median_ratio=round(ratio, 3),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
