"""Offline cost of the outcome join's own logic per prediction, without Kafka or Faust.

Run as ``python -m bench.profile_join [--events N] [--features F] [--profile]``.

What the worker's join agent does with the predictions the drift agent forwards to
``join-input``: decode the frames (:func:`agents.envelopes.decode_join`), decode each
prediction (:meth:`PredictionEvent.from_trusted_json`; ``--checked`` decodes it with the full
validation instead, as before), record it in an :class:`OutcomeJoiner` and flush the joiner's
writes into a :class:`MemoryStore` once per ``join-input`` message, then expire. Prints µs per
prediction for both decodings side by side (the ratio is the figure to compare across
machines); ``--profile`` adds a cProfile listing of the trusted path.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import time
from collections.abc import Callable

from agents.envelopes import batch_join, decode_join
from schemas import PredictionEvent
from streams.join import JoinConfig, OutcomeJoiner
from streams.keyed_state import MemoryStore

Messages = list[tuple[bytes, bytes, int]]
Decode = Callable[[bytes], PredictionEvent]


def forwarded(events: int, features: int, seed: int = 1) -> Messages:
    """``join-input`` messages carrying ``events`` predictions, as the drift agent sends them."""
    rng = random.Random(seed)
    frames = []
    for i in range(events):
        p = PredictionEvent(
            f"e{i}", "acme", "fraud", "v1", 1.7e9 + i * 40.0,
            {f"f{j}": rng.random() for j in range(features)}, rng.random(),
        )  # fmt: skip
        frames.append((p.event_id, ("p", (0, i * 65536), 1, p.to_json())))
    return batch_join(frames, 1)  # type: ignore[arg-type]


def run(
    messages: list[tuple[bytes, bytes, int]], decode: Callable[[bytes], PredictionEvent]
) -> int:
    store = MemoryStore()
    joiner = OutcomeJoiner(JoinConfig(), store, 0)
    n = 0
    for _, value, _ in messages:
        for _, origin, home, raw in decode_join(value):
            joiner.on_prediction(decode(raw), origin, home)
            n += 1
        store.apply(joiner.flush())
    joiner.expire()
    store.apply(joiner.flush())
    return n


def timed(
    messages: list[tuple[bytes, bytes, int]], decode: Callable[[bytes], PredictionEvent]
) -> float:
    started = time.perf_counter()
    n = run(messages, decode)
    return (time.perf_counter() - started) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_join", description=__doc__)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)
    messages = forwarded(args.events, args.features)
    trusted = [timed(messages, PredictionEvent.from_trusted_json) for _ in range(3)]
    checked = [timed(messages, PredictionEvent.from_json) for _ in range(3)]
    t, c = min(trusted), min(checked)
    print(f"{args.events:,} forwarded predictions x {args.features} features (best of 3):")
    print(f"  join, trusted decoding: {t:6.1f} µs/prediction")
    print(f"  join, checked decoding: {c:6.1f} µs/prediction ({t / c:.2f}x)")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(run, messages, PredictionEvent.from_trusted_json)
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
