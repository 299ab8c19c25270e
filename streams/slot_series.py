"""The recent sub-day slots of an open window, kept slot by slot: what the looks read.

A span (``FeatureWindow.span_summary``) is the last 1, 2, 4 or 8 slots as one sample, tested
only at the looks where that span ends on a multiple of its length: a :class:`SlotSpan`, pooled
into one summary only when a test needs the values. A scan over *every* suffix of the recent
slots at *every* look needs the slots apart: a :class:`SlotSeries`. Both hold the finite
values each slot's deterministic sample kept (``streams.recent_slots.RecentSlots``), oldest
first, so the newest slot is last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from streams.numeric_summary import NumericSummary

__all__ = ["SlotSeries", "SlotSpan", "pooled"]


class SlotSpan:
    """A numeric feature's sampled values over a few consecutive slots, as the slots' own
    arrays (oldest first) and the missing ones counted apart. Most spans are only screened:
    the KS screen bounds D from each slot's counts below the baseline's grid points, which
    it remembers per slot (``streams.drift_tests.ks.ks_screen``), so pooling every span into
    a summary at every look (~9 % of a steady-state backtest) is left to the few a test must
    run on: :meth:`summary` is the same summary, built once, as ``NumericSummary.of`` of the
    pooled values.

    >>> span = SlotSpan((np.array([3.0, 1.0]), np.array([2.0])), missing=1)
    >>> span.count, span.missing, span.summary().values().tolist(), span.summary().missing
    (3, 1, [1.0, 2.0, 3.0], 1)
    """

    __slots__ = ("_summary", "count", "missing", "slots")
    is_exact = True  # samples: every value kept, as in the summary they pool into

    def __init__(self, slots: tuple[np.ndarray, ...], missing: int) -> None:
        self.slots = slots
        self.missing = missing
        self.count = sum(int(s.size) for s in slots)
        self._summary: NumericSummary | None = None

    def to_bytes(self) -> bytes:
        """As a :class:`SlotSeries` of the same slots (for the contract suite's round trip:
        a span is read from the stored slots at each look, never stored itself)."""
        return SlotSeries(self.slots, self.missing, 0.0).to_bytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> SlotSpan:
        series = SlotSeries.from_bytes(raw)
        return cls(series.slots, series.missing)

    def summary(self) -> NumericSummary:
        if self._summary is None:
            values = np.concatenate(self.slots) if self.slots else np.empty(0, np.float64)
            self._summary = NumericSummary.of(values, self.missing)
        return self._summary


W = TypeVar("W")


def pooled(window: SlotSpan | W) -> NumericSummary | W:
    """``window`` as a test of a pooled sample takes it: a :class:`SlotSpan`'s summary, any
    other window as it is."""
    return window.summary() if isinstance(window, SlotSpan) else window


# Not frozen: one is made per feature scanned at a look, and a frozen dataclass's __init__ costs 6x.
@dataclass(slots=True, eq=False)
class SlotSeries:
    """Per slot, the finite sampled values (oldest first); the missing ones counted apart;
    ``min_values``: the fewest values a tested span may hold (``min_window_count``)."""

    slots: tuple[np.ndarray, ...]
    missing: int
    slot_seconds: float
    min_values: int = 0
    count: int = field(init=False)
    """Finite values over all the slots (what a test of the values counts): read by each
    step of a look's scan, so counted once."""

    def __post_init__(self) -> None:
        self.count = sum(map(len, self.slots))  # 1-d arrays: len is the size

    def to_bytes(self) -> bytes:
        """As the summaries have it (the contract suite round-trips what tests read); a
        series is never stored: it is read from the stored slots at each look."""
        head = np.array(
            [len(self.slots), self.missing, self.slot_seconds, self.min_values], dtype="<f8"
        )
        sizes = np.array([s.size for s in self.slots], dtype="<i8")
        parts = [s.astype("<f8").tobytes() for s in self.slots]
        return b"".join([head.tobytes(), sizes.tobytes(), *parts])

    @classmethod
    def from_bytes(cls, raw: bytes) -> SlotSeries:
        """
        >>> s = SlotSeries((np.array([1.0, 2.0]), np.empty(0)), 3, 3600.0)
        >>> t = SlotSeries.from_bytes(s.to_bytes())
        >>> [x.tolist() for x in t.slots], t.missing, t.slot_seconds
        ([[1.0, 2.0], []], 3, 3600.0)
        """
        n, missing, seconds, least = np.frombuffer(raw, dtype="<f8", count=4)
        k = int(n)
        sizes = np.frombuffer(raw, dtype="<i8", count=k, offset=32)
        pos = 32 + 8 * k
        slots = []
        for size in sizes:
            slots.append(np.frombuffer(raw, dtype="<f8", count=int(size), offset=pos).copy())
            pos += 8 * int(size)
        return cls(tuple(slots), int(missing), float(seconds), int(least))
