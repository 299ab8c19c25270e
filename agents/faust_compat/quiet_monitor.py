"""Faust's own Monitor kept, but not called for every message, event and table access.

Faust adds its :class:`~faust.sensors.Monitor` to the app's sensors when the app starts
(``App.on_init_dependencies``). Every message then passes through it four times (received,
into a stream, out of it, acked) and every table read and write once: it keeps the rates,
latencies and counts behind Faust's web statistics pages, which the worker turns off
(``web_stats_enabled=False``, ``web_metrics_enabled=False``: the worker's metrics are its
own Prometheus ones, :mod:`agents.metrics`). Sampled with ``py-spy --gil`` on single-event
messages, the Monitor and the sensor fan-out calling it were ~4 % of the interpreter's time.

:func:`install` leaves the Monitor as the app's ``monitor`` (Faust's consumer reports end
offsets and commits to it directly) but takes it out of the sensors called per message. One
thing of it is still fed, by a sensor of one line: when each partition's stream last took an
event (``Monitor.stream_inbound_time``), which Faust's check for a stream that stopped
processing reads every few seconds; without it, that check logged every partition with unread
messages as never processed, five minutes after start.
"""

from __future__ import annotations

from collections.abc import Iterable
from time import monotonic
from typing import Any

import faust

from agents.faust_compat.version import check_version


class InboundTime(faust.Sensor):
    """The Monitor's ``stream_inbound_time`` (per partition, when its stream last took an
    event), kept without the rest of the Monitor."""

    def __init__(self, times: dict[Any, float]) -> None:
        super().__init__()
        self.times = times

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.times[tp] = monotonic()


def install(app: Any) -> None:
    """Take ``app``'s Monitor out of its sensors as soon as Faust puts it there."""
    check_version()
    original = app.on_init_dependencies

    def on_init_dependencies() -> Iterable[Any]:
        dependencies = original()  # adds the Monitor to app.sensors
        app.sensors.remove(app.monitor)
        app.sensors.add(InboundTime(app.monitor.stream_inbound_time))
        return dependencies  # type: ignore[no-any-return]

    app.on_init_dependencies = on_init_dependencies
