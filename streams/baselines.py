"""Baselines: which windows a window is compared with, merged once and kept while asked for.

A window's features are tested against the merge of its baseline windows (``EngineConfig``'s
candidates that have events). The same merge serves a window's interim looks and its final
test, so merges are kept, per stream feature, keyed by what went into them (each window and
its event count): a late event into a baseline window makes a new key, never a stale hit.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Generic, Protocol, TypeVar, cast

from streams.categorical_summary import CategoricalSummary
from streams.config import EngineConfig
from streams.importance import Association, merge_associations
from streams.moments import MomentSummary, MomentWindow, moment_key
from streams.numeric_summary import NumericSummary
from streams.segments import split_segment_feature
from streams.state import FeatureWindow, StreamState, Summary, merge_summaries, window_key

__all__ = [
    "PER_SLOT",
    "Baselines",
    "FeatureBaseline",
    "MomentAccess",
    "SlotCache",
    "WindowAccess",
    "merge_baseline",
]

PER_SLOT = 2
"""Merged baselines kept per stream feature: the open window's, and the one it followed."""
FeatureBaseline = tuple[NumericSummary | CategoricalSummary, float, float] | None
"""A feature's merged baseline and the start and end of the windows in it, or None."""
NOT_CACHED: Any = object()
"""Not in a cache (None is a value there)."""
V = TypeVar("V")


class WindowAccess(Protocol):
    """The engine's decoded feature windows, as far as judging needs them (a
    :class:`~streams.keyed_state.StateCache` of :class:`FeatureWindow`)."""

    def get(self, key: str) -> FeatureWindow | None: ...

    def mark(self, key: str, partition: int | None = None) -> None: ...


class MomentAccess(Protocol):
    """The engine's decoded moment windows (:class:`~streams.moments.MomentWindow`)."""

    def get(self, key: str) -> MomentWindow | None: ...


class Baselines:
    """The merged baselines of a stream's features and moments, as the judge asks for them.

    Merges are derived data: kept across flushes, and dropped by :meth:`forget` when the
    windows they merged may have changed elsewhere (a partition given up and taken back).
    """

    def __init__(
        self, config: EngineConfig, windows: WindowAccess, moments: MomentAccess | None = None
    ) -> None:
        self.config = config
        self.windows = windows
        self.moments = moments
        self._features: SlotCache[tuple[FeatureBaseline, Association | None]] = SlotCache()
        self._moments: SlotCache[tuple[MomentSummary, float, float] | None] = SlotCache()

    def forget(self) -> None:
        self._features.clear()
        self._moments.clear()

    def windows_of(self, stream: StreamState, window: float) -> tuple[tuple[float, int], ...]:
        """The baseline windows of ``window`` that have events, with their event counts (the
        same for every feature of one judgement: worked out once per look). Every feature's
        baseline is made of some of them: with fewer than ``min_baseline_windows``, no
        feature can be tested."""
        counts = stream.window_events
        return tuple((w, counts[w]) for w in self.config.baseline_candidates(window) if w in counts)

    def feature(
        self,
        stream: StreamState,
        feature: str,
        window: float,
        windows: tuple[tuple[float, int], ...],
    ) -> FeatureBaseline:
        """``feature``'s baseline for ``window`` (of ``windows``, :meth:`windows_of`'s): the
        merged summary and the span of the windows in it; None with fewer than
        ``min_baseline_windows`` that have its values."""
        cfg = self.config
        # Keyed by what went into it: a late event into a baseline window changes its count,
        # so a stale merge is never found again (and is dropped as newer ones come).
        slot, cache_key = (stream.tenant, stream.model, feature), (window, windows)
        found = self._features.get(slot, cache_key)
        if found is not NOT_CACHED:
            return found[0]
        parts: list[Summary] = []
        associations: list[Association | None] = []
        with_data: list[float] = []
        for w, _ in windows:
            fw = self.windows.get(window_key(stream.tenant, stream.model, w, feature))
            if fw is None or fw.count == 0:
                continue
            parts.append(fw.summary)
            associations.append(fw.assoc)
            with_data.append(w)
        merged = merge_baseline(parts)
        result = None
        if merged is not None and len(with_data) >= cfg.min_baseline_windows:
            result = (merged, with_data[0], with_data[-1] + cfg.window_seconds)
        self._features.put(slot, cache_key, (result, merge_associations(associations)))
        return result

    def association(
        self,
        stream: StreamState,
        feature: str,
        window: float,
        windows: tuple[tuple[float, int], ...],
    ) -> Association | None:
        """The merged association of the baseline :meth:`feature` merged (cached with it);
        a segment's is its feature's (segment windows keep none)."""
        feature = split_segment_feature(feature)[0]
        slot, key = (stream.tenant, stream.model, feature), (window, windows)
        found = self._features.get(slot, key)
        if found is NOT_CACHED:
            self.feature(stream, feature, window, windows)
            found = self._features.get(slot, key)
        return None if found is NOT_CACHED else found[1]

    def moments_of(
        self,
        stream: StreamState,
        window: float,
        windows: tuple[tuple[float, int], ...],
        features: tuple[str, ...],
        blocks: int | None,
    ) -> tuple[MomentSummary, float, float] | None:
        assert self.moments is not None
        slot = (stream.tenant, stream.model, "\x00".join(features))
        cache_key = (window, windows, blocks)
        found = self._moments.get(slot, cache_key)
        if found is not NOT_CACHED:
            return found
        parts: list[MomentSummary] = []
        with_data: list[float] = []
        for w, _ in windows:
            mw = self.moments.get(moment_key(stream.tenant, stream.model, w))
            if mw is None or mw.features != features:
                continue
            part = mw.upto(blocks)
            if part.count == 0:
                continue
            parts.append(part)
            with_data.append(w)
        result = None
        if parts and len(with_data) >= self.config.min_baseline_windows:
            merged = MomentSummary.merge_all(parts)
            result = (merged, with_data[0], with_data[-1] + self.config.window_seconds)
        self._moments.put(slot, cache_key, result)
        return result


class SlotCache(Generic[V]):
    """Derived values keyed by what went into them, at most ``per_slot`` per slot (a stream's
    feature). A merged baseline is asked for again only while its window is open, so the
    older ones go as newer come: the cache is bounded by the features being judged, not by
    how long the worker has run (a cache of 4,096 merges cleared when full held windows
    closed long ago: ~110 MiB of a worker's growth over its first 2M events).

    >>> cache: SlotCache[str] = SlotCache(per_slot=2)
    >>> for window in (1, 2, 3):
    ...     cache.put("f", window, f"baseline {window}")
    >>> cache.get("f", 1) is NOT_CACHED, cache.get("f", 3), len(cache)
    (True, 'baseline 3', 2)
    >>> cache.hits, cache.misses
    (1, 1)
    """

    def __init__(self, per_slot: int = PER_SLOT) -> None:
        self.per_slot = per_slot
        self._slots: dict[Hashable, dict[Hashable, V]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._slots.values())

    def get(self, slot: Hashable, key: Hashable) -> V:
        """The value, or ``NOT_CACHED``."""
        entries = self._slots.get(slot)
        if entries is None or key not in entries:
            self.misses += 1
            return cast(V, NOT_CACHED)
        self.hits += 1
        return entries[key]

    def put(self, slot: Hashable, key: Hashable, value: V) -> None:
        entries = self._slots.setdefault(slot, {})
        entries.pop(key, None)
        entries[key] = value
        while len(entries) > self.per_slot:
            del entries[next(iter(entries))]

    def clear(self) -> None:
        self._slots.clear()


def merge_baseline(parts: list[Summary]) -> Summary | None:
    """The baseline's windows as one summary: numeric ones pooled and reduced once
    (:meth:`NumericSummary.merge_all`: one reduction instead of one per window, as close to
    the data), categorical ones merged in window order."""
    if not parts:
        return None
    numeric = [p for p in parts if isinstance(p, NumericSummary)]
    if len(numeric) == len(parts):
        return NumericSummary.merge_all(numeric)
    merged = parts[0]
    for part in parts[1:]:
        merged = merge_summaries(merged, part)
    return merged
