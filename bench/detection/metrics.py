"""Scoring of one detector's alarms on one stream with a known truth.

Everything here is pure (no I/O, no detector code), so the same definitions score driftwatch
and the peers. Times are event-time epoch seconds; days are counted from the stream's day 0.

* An **alarm** is one signal that a feature drifted, at an event time: a driftwatch
  DriftEvent (its ``detected_at``), a river detector's ``drift_detected`` (the timestamp of
  the event that triggered it), or an alibi-detect daily test (the end of the tested day).
* An alarm's **day** is the day its time falls in, days being half-open on the left,
  (d, d + 1]: a test run at the very end of day d belongs to day d.
* **Detection delay**: the first alarm on a truly drifting feature at or after the onset,
  minus the onset, in hours; ``None`` (missed) if there is none.
* **False alarms**: distinct (feature, day) pairs, within the evaluation period, with an
  alarm on a feature that does not drift, or with an alarm before the onset; per 1,000
  feature-days of the evaluation period in which that feature was not drifting.
* **Confirmed false incidents**: driftwatch's own incidents (``drift_id``) that were
  confirmed although they are on a non-drifting feature or started before the onset. The
  peers have no confirmation, so their daily alarm flags go through the same rule as the
  engine (:func:`incidents_from_days`: open on an alarm day, confirmed at the 7th alarm day
  while open, closed after 2 consecutive clean days).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

DAY = 86_400.0
SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")


@dataclass(frozen=True, slots=True)
class Alarm:
    """One drift signal on one feature.

    ``incident``, ``confirmed`` and ``severity`` are driftwatch's (peers leave the defaults).
    ``off_target``: the alarm is about a kind of change that was not injected anywhere
    (driftwatch's missing-rate test: no scenario changes the missing rate), so it is false
    even on the drifting feature after the onset.
    """

    feature: str
    time: float
    incident: str | None = None
    confirmed: bool = False
    severity: str | None = None
    off_target: bool = False


@dataclass(frozen=True)
class Truth:
    """What was injected into a stream.

    ``onset_day`` is fractional (60.3 = 07:12 on day 60); ``None`` for a stream with no
    drift. Alarms are scored only from ``eval_from_day`` on (before it, the reference /
    baseline period that the batch detectors need).
    """

    start: float
    days: int
    features: tuple[str, ...]
    drifting: frozenset[str] = field(default_factory=frozenset)
    onset_day: float | None = None
    eval_from_day: int = 30

    @property
    def onset(self) -> float | None:
        return None if self.onset_day is None else self.start + self.onset_day * DAY

    def day_of(self, t: float) -> int:
        """The day an event time falls in, (d, d + 1] (a test at the end of a day is that day's).

        >>> tr = Truth(start=0.0, days=90, features=("x",))
        >>> tr.day_of(0.5 * DAY), tr.day_of(1.0 * DAY), tr.day_of(1.0 * DAY + 1)
        (0, 0, 1)
        """
        return math.ceil((t - self.start) / DAY) - 1

    def is_false(self, alarm: Alarm) -> bool:
        """An alarm on a non-drifting feature, before the onset, or off target."""
        onset = self.onset
        return (
            alarm.off_target
            or alarm.feature not in self.drifting
            or onset is None
            or alarm.time < onset
        )

    def clean_feature_days(self) -> float:
        """Feature-days of the evaluation period in which a feature was not drifting.

        >>> Truth(0.0, 90, ("a", "b"), frozenset({"a"}), 60.5).clean_feature_days()
        90.5
        """
        span = self.days - self.eval_from_day
        total = 0.0
        for f in self.features:
            if f in self.drifting and self.onset_day is not None:
                total += min(max(self.onset_day - self.eval_from_day, 0.0), span)
            else:
                total += span
        return total


def in_period(alarms: Iterable[Alarm], truth: Truth) -> list[Alarm]:
    """The alarms whose day is inside the evaluation period."""
    return [a for a in alarms if truth.eval_from_day <= truth.day_of(a.time) < truth.days]


def detection_delay_hours(alarms: Iterable[Alarm], truth: Truth) -> float | None:
    """Hours from the onset to the first alarm on a drifting feature at or after it.

    >>> tr = Truth(0.0, 90, ("x", "y"), frozenset({"x"}), 60.5)
    >>> detection_delay_hours([Alarm("y", 61 * DAY), Alarm("x", 60 * DAY),
    ...                        Alarm("x", 61.25 * DAY)], tr)
    18.0
    >>> detection_delay_hours([Alarm("y", 61 * DAY), Alarm("x", 61 * DAY, off_target=True)], tr)
    >>> detection_delay_hours([Alarm("x", 62 * DAY, off_target=True), Alarm("x", 63 * DAY)], tr)
    60.0
    """
    if truth.onset is None:
        return None
    hits = [a.time for a in alarms if not truth.is_false(a)]
    return (min(hits) - truth.onset) / 3600.0 if hits else None


def false_alarm_days(alarms: Iterable[Alarm], truth: Truth) -> set[tuple[str, int]]:
    """Distinct (feature, day) pairs with a false alarm in the evaluation period.

    >>> tr = Truth(0.0, 90, ("x", "y"), frozenset({"x"}), 60.5)
    >>> sorted(false_alarm_days([Alarm("y", 40.2 * DAY), Alarm("y", 40.7 * DAY),
    ...                          Alarm("x", 60.2 * DAY), Alarm("x", 70 * DAY),
    ...                          Alarm("y", 10 * DAY)], tr))
    [('x', 60), ('y', 40)]
    """
    return {
        (a.feature, truth.day_of(a.time)) for a in in_period(alarms, truth) if truth.is_false(a)
    }


def per_thousand(count: float, feature_days: float) -> float:
    """``count`` per 1,000 feature-days.

    >>> per_thousand(3, 1500.0)
    2.0
    """
    return 1000.0 * count / feature_days if feature_days > 0 else 0.0


@dataclass(frozen=True, slots=True)
class DailyIncident:
    """An incident found by :func:`incidents_from_days` (day indices into the flags)."""

    start: int
    confirmed_at: int | None
    end: int | None


def incidents_from_days(
    flags: Sequence[bool], confirm: int = 7, resolve: int = 2
) -> list[DailyIncident]:
    """driftwatch's incident rule over one feature's daily alarm flags.

    An alarm day opens an incident (or adds one to its persistence); it is confirmed on its
    ``confirm``-th alarm day and closes after ``resolve`` consecutive days without an alarm.

    >>> incidents_from_days([True] * 7)
    [DailyIncident(start=0, confirmed_at=6, end=None)]
    >>> for i in incidents_from_days([1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1]):  # gaps of 1 day
    ...     print(i)
    DailyIncident(start=0, confirmed_at=8, end=10)
    DailyIncident(start=11, confirmed_at=None, end=None)
    >>> incidents_from_days([1, 0, 0] * 10)
    ... # doctest: +ELLIPSIS
    [DailyIncident(start=0, confirmed_at=None, end=2), DailyIncident(start=3, ...]
    """
    out: list[DailyIncident] = []
    start: int | None = None
    persistence = clean = 0
    confirmed_at: int | None = None
    for day, flag in enumerate(flags):
        if flag:
            if start is None:
                start, persistence, confirmed_at = day, 0, None
            persistence += 1
            clean = 0
            if confirmed_at is None and persistence >= confirm:
                confirmed_at = day
        elif start is not None:
            clean += 1
            if clean >= resolve:
                out.append(DailyIncident(start, confirmed_at, day))
                start = None
    if start is not None:
        out.append(DailyIncident(start, confirmed_at, None))
    return out


def confirmed_false_incidents_daily(alarms: Iterable[Alarm], truth: Truth) -> int:
    """Confirmed false incidents of a detector without confirmation of its own.

    Each feature's alarm days (evaluation period) go through :func:`incidents_from_days`;
    a confirmed incident is false if the feature does not drift or its first alarm day's
    first alarm came before the onset. A feature that is not in ``truth.features`` (a
    multivariate detector's ``__multivariate__`` in a stream without a correlated pair) is
    counted too: its alarms are false alarms all the same.

    >>> tr = Truth(0.0, 90, ("x", "y"), frozenset({"x"}), 60.5)
    >>> ys = [Alarm("y", (d + 0.5) * DAY) for d in range(40, 47)]
    >>> xs = [Alarm("x", (d + 0.9) * DAY) for d in range(60, 70)]
    >>> confirmed_false_incidents_daily(ys + xs, tr), confirmed_false_incidents_daily(xs, tr)
    (1, 0)
    >>> confirmed_false_incidents_daily([Alarm("z", (d + 0.5) * DAY) for d in range(40, 47)], tr)
    1
    """
    first: dict[tuple[str, int], float] = {}
    for a in in_period(alarms, truth):
        key = (a.feature, truth.day_of(a.time))
        first[key] = min(a.time, first.get(key, math.inf))
    onset = truth.onset
    count = 0
    others = sorted({f for f, _ in first} - set(truth.features))
    for feature in (*truth.features, *others):
        days = range(truth.eval_from_day, truth.days)
        flags = [(feature, d) in first for d in days]
        for inc in incidents_from_days(flags):
            if inc.confirmed_at is None:
                continue
            t0 = first[(feature, days[inc.start])]
            if feature not in truth.drifting or onset is None or t0 < onset:
                count += 1
    return count


def confirmed_false_incidents(alarms: Iterable[Alarm], truth: Truth) -> int:
    """driftwatch's confirmed incidents (by ``drift_id``) on non-drifting features or opened
    before the onset.

    >>> tr = Truth(0.0, 90, ("x", "y"), frozenset({"x"}), 60.5)
    >>> confirmed_false_incidents([
    ...     Alarm("y", 50 * DAY, "i1", True), Alarm("y", 51 * DAY, "i1", True),  # wrong feature
    ...     Alarm("x", 61 * DAY, "i2", True),  # true
    ...     Alarm("x", 59 * DAY, "i3"), Alarm("x", 66 * DAY, "i3", True),  # opened before onset
    ...     Alarm("x", 62 * DAY, "i4", True, off_target=True),  # a change that was not injected
    ... ], tr)
    3
    """
    first: dict[str, Alarm] = {}
    confirmed: set[str] = set()
    for a in sorted(alarms, key=lambda a: a.time):
        if a.incident is None:
            continue
        first.setdefault(a.incident, a)
        if a.confirmed:
            confirmed.add(a.incident)
    return sum(1 for i in confirmed if truth.is_false(first[i]))


def max_confirmed_severity(alarms: Iterable[Alarm]) -> str | None:
    """The highest severity of any confirmed alarm (``None`` if nothing was confirmed).

    >>> max_confirmed_severity([Alarm("x", 1.0, "i", True, "LOW"),
    ...     Alarm("x", 2.0, "i", False, "HIGH"), Alarm("y", 3.0, "j", True, "MEDIUM")])
    'MEDIUM'
    >>> max_confirmed_severity([]) is None
    True
    """
    ranks = [SEVERITIES.index(a.severity) for a in alarms if a.confirmed and a.severity]
    return SEVERITIES[max(ranks)] if ranks else None


def median_delay(delays: Sequence[float | None]) -> float | None:
    """Median over seeds, a miss counting as an infinite delay (``None`` if most missed).

    >>> median_delay([10.0, 30.0, None]), median_delay([10.0, None, None]), median_delay([])
    (30.0, None, None)
    """
    if not delays:
        return None
    m = statistics.median(math.inf if d is None else d for d in delays)
    return None if math.isinf(m) else m


def confirm_delay_hours(alarms: Iterable[Alarm], truth: Truth) -> float | None:
    """Hours from the onset to the first *confirmed* alarm on a drifting feature (driftwatch).

    >>> tr = Truth(0.0, 90, ("x",), frozenset({"x"}), 60.5)
    >>> confirm_delay_hours([Alarm("x", 61 * DAY, "i"), Alarm("x", 67 * DAY, "i", True)], tr)
    156.0
    """
    if truth.onset is None:
        return None
    hits = [a.time for a in alarms if a.confirmed and not truth.is_false(a)]
    return (min(hits) - truth.onset) / 3600.0 if hits else None


@dataclass(frozen=True)
class Score:
    """One detector on one stream."""

    delay_hours: float | None
    confirm_delay_hours: float | None
    false_alarm_days: int
    feature_days: float
    confirmed_false: int
    max_confirmed_severity: str | None
    alarms: int


def score(alarms: Sequence[Alarm], truth: Truth, own_incidents: bool) -> Score:
    """All metrics of one detector's alarms; ``own_incidents``: the alarms carry the
    detector's own confirmed incidents (driftwatch), else the daily rule is applied.

    >>> tr = Truth(0.0, 90, ("x", "y"), frozenset({"x"}), 60.5)
    >>> s = score([Alarm("y", 40.2 * DAY), Alarm("x", 61 * DAY)], tr, own_incidents=False)
    >>> s.delay_hours, s.false_alarm_days, s.feature_days, s.confirmed_false
    (12.0, 1, 90.5, 0)
    """
    return Score(
        delay_hours=detection_delay_hours(alarms, truth),
        confirm_delay_hours=confirm_delay_hours(alarms, truth) if own_incidents else None,
        false_alarm_days=len(false_alarm_days(alarms, truth)),
        feature_days=truth.clean_feature_days(),
        confirmed_false=(
            confirmed_false_incidents(alarms, truth)
            if own_incidents
            else confirmed_false_incidents_daily(alarms, truth)
        ),
        max_confirmed_severity=max_confirmed_severity(alarms) if own_incidents else None,
        alarms=len(alarms),
    )
