"""Offline cost of the outcome join's own logic per prediction, without Kafka or Faust.

Run as ``python -m bench.profile_join [--events N] [--features F] [--profile]``.

What the worker's join agent does with the predictions the drift agent forwards to
``join-input``: decode the frames (:func:`agents.envelopes.decode_join`), record each
prediction in an :class:`OutcomeJoiner` and flush the joiner's writes into a
:class:`MemoryStore` once per ``join-input`` message, then expire. Three ways side by side:
as the worker does now (the frame's head carries what the join needs of the prediction, and
its bytes are stored as they are, never decoded), as it did before (each prediction decoded
with :meth:`PredictionEvent.from_trusted_json`, and stored re-encoded from
:meth:`~PredictionEvent.to_dict`), and that with the full validation (``from_json``). Prints
µs per prediction (the ratios are the figures to compare across machines); ``--profile`` adds
a cProfile listing of the worker's path.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import time
from collections.abc import Callable

from agents.envelopes import About, JoinFrame, batch_join, decode_join
from schemas import PredictionEvent
from streams.join import ForwardedPrediction, JoinConfig, OutcomeJoiner
from streams.keyed_state import MemoryStore

Messages = list[tuple[bytes, bytes, int]]
Decode = Callable[[bytes, About | None], PredictionEvent | ForwardedPrediction]


def forwarded_as_is(raw: bytes, about: About | None) -> PredictionEvent | ForwardedPrediction:
    """The worker's way: the head's facts and the bytes (decoded only without a head)."""
    if about is None:
        return PredictionEvent.from_trusted_json(raw)
    return ForwardedPrediction(*about, raw)


def trusted(raw: bytes, about: About | None) -> PredictionEvent:
    return PredictionEvent.from_trusted_json(raw)


def checked(raw: bytes, about: About | None) -> PredictionEvent:
    return PredictionEvent.from_json(raw)


def forwarded(events: int, features: int, seed: int = 1) -> Messages:
    """``join-input`` messages carrying ``events`` predictions, as the drift agent sends them."""
    rng = random.Random(seed)
    frames = []
    for i in range(events):
        p = PredictionEvent(
            f"e{i}", "acme", "fraud", "v1", 1.7e9 + i * 40.0,
            {f"f{j}": rng.random() for j in range(features)}, rng.random(),
        )  # fmt: skip
        about = (p.event_id, p.tenant, p.model, p.model_version, p.timestamp, p.score)
        frame: JoinFrame = ("p", (0, i * 65536), 1, p.to_json(), about)
        frames.append((p.event_id, frame))
    return batch_join(frames, 1)


def run(messages: Messages, decode: Decode) -> int:
    store = MemoryStore()
    joiner = OutcomeJoiner(JoinConfig(), store, 0)
    n = 0
    for _, value, _ in messages:
        for _, origin, home, raw, about in decode_join(value):
            joiner.on_prediction(decode(raw, about), origin, home)
            n += 1
        store.apply(joiner.flush())
    joiner.expire()
    store.apply(joiner.flush())
    return n


def timed(messages: Messages, decode: Decode) -> float:
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
    best: dict[str, float] = {}
    for _ in range(3):  # in turns, so that a slow spell of the machine hits all three
        for name, decode in (("as is", forwarded_as_is), ("trusted", trusted),
                             ("checked", checked)):  # fmt: skip
            best[name] = min(best.get(name, float("inf")), timed(messages, decode))
    a, t, c = best["as is"], best["trusted"], best["checked"]
    print(f"{args.events:,} forwarded predictions x {args.features} features (best of 3):")
    print(f"  join, stored as forwarded:  {a:6.1f} µs/prediction")
    print(f"  join, decoded (trusted):    {t:6.1f} µs/prediction ({a / t:.2f}x of it)")
    print(f"  join, decoded (checked):    {c:6.1f} µs/prediction ({a / c:.2f}x of it)")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(run, messages, forwarded_as_is)
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
