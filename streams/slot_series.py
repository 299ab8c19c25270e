"""The recent sub-day slots of an open window, slot by slot: what the sequential scan reads.

A span summary (``FeatureWindow.span_summary``) pools the last 1, 2, 4 or 8 slots into one
sample, tested only at the looks where that span ends on a multiple of its length. A scan over
*every* suffix of the recent slots at *every* look needs the slots apart: this is them, as the
finite values each slot's deterministic sample kept (``streams.recent_slots.RecentSlots``), oldest
first, so the newest slot is last.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SlotSeries"]


@dataclass(frozen=True, slots=True, eq=False)
class SlotSeries:
    """Per slot, the finite sampled values (oldest first); the missing ones counted apart;
    ``min_values``: the fewest values a tested span may hold (``min_window_count``)."""

    slots: tuple[np.ndarray, ...]
    missing: int
    slot_seconds: float
    min_values: int = 0

    @property
    def count(self) -> int:
        """Finite values over all the slots (what a test of the values counts)."""
        return sum(map(len, self.slots))  # 1-d arrays: len is the size

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
