"""Segment drift: a feature watched within each segment of the traffic, not only overall.

A shift confined to one segment (a country with 5 % of the traffic) moves the feature's
marginal distribution by a twentieth of its size: under the effect floor, and lost among the
segments that did not change. With segment columns configured
(``EngineConfig.segment_columns``), the engine also keeps every feature's summary per
segment of each column, as a *segment feature* of its own (its windows, baselines, looks and
incidents are a feature's), and judges them in a Benjamini-Hochberg family of their own
(segments x features), so the marginal tests keep the power they have without segments.

Which values of a column get a segment of their own is decided per window, at its first event,
from the previous window's counts: the values with at least ``segment_min_share`` of the
traffic, most frequent first, at most ``segment_values`` of them; the rest share
:data:`OTHER`. A value keeps its segment while it has half that share (so a segment does not
come and go at the threshold). State per stream is therefore bounded by
``columns x (segment_values + 1) x features`` feature windows, whatever the column's
cardinality, plus counts of at most :data:`MAX_COUNTED_VALUES` values per column for two
windows.

A segment feature's name joins the feature, the column and the value with U+001F, a control
character no feature name may contain (``schemas.names``), so it never collides with a
feature's and splits back unambiguously.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "MAX_COUNTED_VALUES",
    "OTHER",
    "SEPARATOR",
    "choose_segments",
    "is_segment_feature",
    "parse_columns",
    "segment_feature",
    "segment_label",
    "segment_of",
    "split_segment_feature",
]

OTHER: Final = "__other__"
"""The segment of the values without one of their own."""
SEPARATOR: Final = "\x1f"
MAX_COUNTED_VALUES: Final = 256
"""Distinct values counted per column and window; values seen after that are not counted
(a column with more values than this is no segment column: they fall into :data:`OTHER`)."""


def segment_feature(feature: str, column: str, value: str) -> str:
    """The name of ``feature`` within the segment ``column == value``. It ends with the
    separator, so a value ending in ``#missing`` (the suffix of a missing-rate incident's
    key) cannot make one segment's key another's.

    >>> split_segment_feature(segment_feature("amount", "country", "IT"))
    ('amount', 'country', 'IT')
    """
    return f"{feature}{SEPARATOR}{column}{SEPARATOR}{value}{SEPARATOR}"


def is_segment_feature(name: str) -> bool:
    return SEPARATOR in name


def split_segment_feature(name: str) -> tuple[str, str | None, str | None]:
    """(feature, column, value) of a segment feature; (name, None, None) for a feature.

    >>> split_segment_feature("amount")
    ('amount', None, None)
    """
    if SEPARATOR not in name:
        return name, None, None
    feature, column, value = name.split(SEPARATOR, 2)  # a value may hold the separator
    return feature, column, value.removesuffix(SEPARATOR)


def parse_columns(raw: str) -> tuple[str, ...]:
    """The segment columns of the setting (comma-separated names, blanks ignored, in order).

    >>> parse_columns(" country, device_type ,,country")
    ('country', 'device_type')
    """
    return tuple(dict.fromkeys(c.strip() for c in raw.split(",") if c.strip()))


def choose_segments(
    counts: dict[str, int],
    kept: list[str],
    max_values: int,
    min_share: float,
    total: int | None = None,
) -> list[str]:
    """The values with a segment of their own in the next window, from a window's ``counts``
    of the column's values (of ``total`` events: by default the counted ones): the values of
    ``kept`` (the current choice) that still have half of ``min_share``, then the most
    frequent others with ``min_share``, at most ``max_values`` in all; sorted by name (the
    order is no ranking).

    >>> choose_segments({"IT": 50, "FR": 900, "DE": 30, "ES": 20}, [], 2, 0.025)
    ['FR', 'IT']
    >>> choose_segments({"IT": 20, "FR": 900, "DE": 60, "ES": 20}, ["IT"], 2, 0.025)
    ['FR', 'IT']
    >>> choose_segments({"IT": 5, "FR": 900, "DE": 60}, ["IT"], 2, 0.025)
    ['DE', 'FR']
    """
    total = max(total or 0, sum(counts.values()))
    if not total:
        return sorted(kept)[:max_values]
    out = [v for v in kept if counts.get(v, 0) >= min_share / 2 * total][:max_values]
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    for value, n in ranked:
        if len(out) >= max_values or n < min_share * total:
            break
        if value not in out and value != OTHER:
            out.append(value)
    return sorted(out)


def segment_of(value: object, chosen: frozenset[str] | set[str]) -> str | None:
    """The segment of an event whose column has ``value``: its own, :data:`OTHER`, or None
    when the column is missing or not a category (the event is in no segment of it).

    >>> segment_of("IT", {"IT"}), segment_of("MT", {"IT"}), segment_of(None, {"IT"})
    ('IT', '__other__', None)
    """
    if not isinstance(value, str):
        return None
    return value if value in chosen else OTHER


def segment_label(segment: dict[str, str]) -> str:
    """How people read a segment (alerts, the report).

    >>> segment_label({"country": "IT"})
    'in segment country=IT'
    """
    return "in segment " + ", ".join(f"{c}={v}" for c, v in segment.items())
