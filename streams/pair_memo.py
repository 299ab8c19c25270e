"""Figures derived from a pair of objects, remembered while both are alive and unchanged.

The looks derive the same figures from the same inputs again and again: a recent slot's
sample against the window's baseline (its rank sum for the scan, its counts below the
baseline's grid points for the KS screen) at each of the up to eight looks that read that
slot. Samples and baselines are replaced, never changed in place (a live one-window baseline
grows, so its count is part of the key), so a figure is keyed by the two objects' identities
and forgotten with the first of them (weakly referenced: an address reused by a new sample is
never served the old figure). A bound guards against a leak only.
"""

from __future__ import annotations

import weakref
from typing import Any, Generic, TypeVar

__all__ = ["PairMemo"]

V = TypeVar("V")


class PairMemo(Generic[V]):
    """``value`` per (``first``, ``second``, ``version``), while both objects live.

    >>> import numpy as np
    >>> memo: PairMemo[float] = PairMemo(kept=2)
    >>> a, b = np.zeros(3), np.ones(3)
    >>> memo.put(a, b, 0, 1.5)
    >>> memo.get(a, b, 0), memo.get(a, b, 1), memo.hits
    (1.5, None, 1)
    >>> del a
    >>> len(memo)
    0
    """

    def __init__(self, kept: int) -> None:
        self.kept = kept
        self.hits = 0
        self._values: dict[tuple[int, int, int], tuple[weakref.ref[Any], weakref.ref[Any], V]]
        self._values = {}

    def __len__(self) -> int:
        return len(self._values)

    def get(self, first: object, second: object, version: int) -> V | None:
        hit = self._values.get((id(first), id(second), version))
        if hit is not None and hit[0]() is first and hit[1]() is second:
            self.hits += 1
            return hit[2]
        return None

    def put(self, first: object, second: object, version: int, value: V) -> None:
        key = (id(first), id(second), version)
        values = self._values

        def forget(_: object, key: tuple[int, int, int] = key) -> None:
            values.pop(key, None)  # gone: its address may be another's next

        while len(values) >= self.kept:
            values.pop(next(iter(values)), None)
        values[key] = (weakref.ref(first, forget), weakref.ref(second, forget), value)
