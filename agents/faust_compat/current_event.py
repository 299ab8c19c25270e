"""Which partition Faust reads and writes a table in: the partition of the *current event*,
a context variable private to Faust (``faust.streams._current_event``, holding a weak
reference). Processors set it per message, and to a stand-in event to reach state owned by
another partition than the message's (timers, expiry, writes of a batch that spans
partitions)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from faust.streams import _current_event

from agents.faust_compat.version import check_version

check_version()


@dataclass(frozen=True)
class _PartitionMessage:
    partition: int
    topic: str


@dataclass(frozen=True)
class _PartitionEvent:
    """What Faust's table code reads from the current event: its message's partition, and
    the source topic (to check it is co-partitioned with the changelog)."""

    message: _PartitionMessage


_READ_STUBS: dict[int, _PartitionEvent] = {}


def set_current_event(event: Any) -> None:
    """Make ``event`` (a Faust event, or anything with ``.message.partition`` and
    ``.message.topic``) the one whose partition Faust's tables use, in this context."""
    _current_event.set(weakref.ref(event))


def read_in(partition: int) -> Any:
    """From now on table reads go to ``partition``'s store; returns the token that
    :func:`read_done` takes to put the current event back (no context manager: every join
    read of a new key passes here)."""
    stub = _READ_STUBS.get(partition)
    if stub is None:  # kept: the context variable holds only a weak reference
        stub = _READ_STUBS[partition] = _PartitionEvent(_PartitionMessage(partition, ""))
    return _current_event.set(weakref.ref(stub))  # type: ignore[arg-type]  # a stand-in


def read_done(token: Any) -> None:
    """Put back the current event :func:`read_in` replaced."""
    _current_event.reset(token)


@dataclass
class PartitionContext:
    """Makes a partition the one Faust writes a table and its changelog to, outside of the
    message that owns it (timers, expiry, state of another message in the same batch)."""

    source_topic: str
    _stubs: dict[int, Any] = field(default_factory=dict)

    def enter(self, partition: int) -> None:
        stub = self._stubs.get(partition)
        if stub is None:
            stub = self._stubs[partition] = _PartitionEvent(
                _PartitionMessage(partition, self.source_topic)
            )
        set_current_event(stub)
