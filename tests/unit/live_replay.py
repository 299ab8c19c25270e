"""The worker's way of feeding the engine, without the worker: for tests that a live run and
a backtest agree."""

from __future__ import annotations

from collections.abc import Sequence

from schemas import DriftEvent, PredictionEvent
from streams.config import EngineConfig
from streams.engine import DriftEngine
from streams.keyed_state import MemoryStore

UNEVEN_BATCHES = (1, 7, 300, 64, 5, 1_000)


def replay_live(
    config: EngineConfig, store: MemoryStore, events: Sequence[PredictionEvent]
) -> list[DriftEvent]:
    """``events`` through a fresh engine on ``store`` as the worker feeds it: with offsets,
    in batches of uneven size, each flushed to the store, every third flush dropping the
    decoded state (read back from the store, as after a rebalance)."""
    engine = DriftEngine(config, store)
    live: list[DriftEvent] = []
    i = k = 0
    while i < len(events):
        end = min(i + UNEVEN_BATCHES[k % len(UNEVEN_BATCHES)], len(events))
        for offset in range(i, end):
            live.extend(engine.observe(events[offset], (0, offset)))
        i = end
        k += 1
        store.apply(engine.flush(keep_cache=k % 3 != 0))
    return live
