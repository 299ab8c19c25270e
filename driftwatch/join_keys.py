"""Which predictions a backtest's join must keep: a semi-join filter built from its inputs.

A worker's join keeps every prediction for its retention, since any of them may yet be
labelled. A backtest reads its outcomes before it starts (each file is scanned once first).
Take a prediction that no outcome names and whose id comes only once. It can never join,
never be refused as a duplicate, and never change what the join gives back. Storing it,
indexing it and expiring it a retention later (a record of ~0.7 KB for 20 features) was most
of what labels cost a backtest. :class:`JoinKeys` holds the ids the join needs: every
outcome's, and every prediction id that comes more than once.

The ids are kept as one bit each in a bitmap, at a hash of the id: about 8-16 bytes an id,
whatever the ids. Another id that falls on a set bit (fewer than 1 in 64) is kept, as every
prediction was before, which changes nothing. The hash is Python's own ``hash`` of the
string, so keys are built and asked in one process (they refuse to be pickled).

The join matches ids by their JSON escape, under which a character beyond the BMP and the
surrogate pair that encodes it are one id; their hashes differ. Only events made in Python
can hold surrogates (the validator refuses them in a file): two such ids of one prediction
and its outcome would not join in a backtest given the keys.
"""

from __future__ import annotations

import array
from collections.abc import Iterable
from typing import Any, Final

import numpy as np

from schemas import OutcomeEvent, PredictionEvent

__all__ = ["JoinKeyScan", "JoinKeys"]

SLOTS_PER_KEY: Final = 64
"""Bits of the bitmap per key, at least (rounded up to a power of two): a false positive
rate under 1/64, at 8-16 bytes a key."""


class JoinKeys:
    """The event ids a backtest's join keeps (see the module); ``JoinKeys.everything()``
    keeps every one, as a worker's join does.

    >>> keys = JoinKeys.of(["p1", "p2", "p2", "p3"], ["p1", "o9"])
    >>> "p1" in keys, "p2" in keys, "o9" in keys  # an outcome's, and a duplicate prediction
    (True, True, True)
    >>> sum(f"other{k}" in keys for k in range(10_000)) < 2 * 10_000 // SLOTS_PER_KEY
    True
    >>> "anything" in JoinKeys.everything()
    True
    """

    __slots__ = ("_bits", "_mask", "size")

    def __init__(self, hashes: np.ndarray | None) -> None:
        """``hashes``: the keys' ``hash`` values (int64); None: every id is a key."""
        self.size = -1 if hashes is None else int(np.unique(hashes).size)
        """Distinct hashes of the keys (-1: every id)."""
        if hashes is None:
            self._mask = -1
            self._bits = bytearray()
            return
        slots = 1 << max(3, (SLOTS_PER_KEY * max(1, self.size) - 1).bit_length())
        self._mask = slots - 1
        at = hashes.view(np.uint64) & np.uint64(slots - 1)
        bits = np.zeros(slots >> 3, np.uint8)
        bit = np.left_shift(1, at & np.uint64(7)).astype(np.uint8)
        np.bitwise_or.at(bits, at >> np.uint64(3), bit)
        self._bits = bytearray(bits.tobytes())

    @classmethod
    def everything(cls) -> JoinKeys:
        return cls(None)

    @classmethod
    def of(cls, predictions: Iterable[str], outcomes: Iterable[str]) -> JoinKeys:
        """The keys of inputs held whole: ids of the ``predictions`` and ``outcomes``."""
        scan = JoinKeyScan()
        scan.predicted.extend(map(hash, predictions))
        scan.labelled.extend(map(hash, outcomes))
        return scan.keys()

    def __contains__(self, event_id: object) -> bool:
        mask = self._mask
        if mask < 0:
            return True
        at = hash(event_id) & mask
        return bool(self._bits[at >> 3] >> (at & 7) & 1)

    def __repr__(self) -> str:
        return "JoinKeys(every id)" if self._mask < 0 else f"JoinKeys({self.size:,} keys)"

    def __reduce__(self) -> Any:
        raise TypeError("JoinKeys hold this process's string hashes: not for another process")


class JoinKeyScan:
    """Collects the hashes of the ids a file scan sees (:meth:`prediction` and
    :meth:`outcome` are ``on_event`` hooks), 8 bytes an event, for :meth:`keys`: a run
    without outcomes has no join, and needs no scan."""

    def __init__(self) -> None:
        self.predicted = array.array("q")
        self.labelled = array.array("q")
        self._keys: JoinKeys | None = None

    def prediction(self, event: PredictionEvent) -> None:
        self.predicted.append(hash(event.event_id))

    def outcome(self, event: OutcomeEvent) -> None:
        self.labelled.append(hash(event.event_id))

    def keys(self) -> JoinKeys:
        """Every outcome's id and every prediction id seen more than once (as hashes: two
        ids of one hash both count, which only keeps more). The hashes collected are let go
        (the run that follows holds only the bitmap): the scan is over, and asked again it
        gives the same keys."""
        if self._keys is not None:
            return self._keys
        predicted = np.sort(np.frombuffer(self.predicted, np.int64))
        again = predicted[1:][predicted[1:] == predicted[:-1]]
        labelled = np.frombuffer(self.labelled, np.int64)
        keys = JoinKeys(np.concatenate((labelled, again)))
        del predicted, labelled
        self.predicted, self.labelled = array.array("q"), array.array("q")
        self._keys = keys
        return keys
