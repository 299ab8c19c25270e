"""The one rule for names that come from outside: tenants, models, versions and features.

Tenant, model and version names become table keys, metric labels, Kafka keys
(``tenant:model``) and directories of the model registry, so they are held to the strictest
rule any of those needs, at the edge, before anything is stored: 1-128 of ``A-Z a-z 0-9 _ .
-``, not starting with a dot or a dash, never containing ``..``. That excludes path
separators, control characters, ``:`` (the key separator), whitespace and anything a shell
would need quoted; ASCII only, so a name has one spelling (no Unicode normalisation or
look-alike letters in directory names or alert titles).

Feature names are only ever keys inside a model (JSON-encoded table keys, DriftEvent fields,
the report, escaped), never paths or metric labels, and producers name them after their
columns, so they may be any Unicode text of 1-128 characters except what cannot be shown or
stored faithfully: control characters, unpaired surrogates, line and paragraph separators and
invisible format characters (bidirectional overrides, zero-width spaces; the zero-width
(non-)joiners that some scripts and emoji need are allowed).

This module depends on nothing else in the project: the registry, the event validators, the
retrain-control parser, the API and the command line all import it.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Final

MAX_NAME_LEN = 128

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
"""The rule as a regular expression, all but the ``..`` (for OpenAPI, whose clients generate
strings from it: a lookahead is beyond most generators)."""
NAME_JSON_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
"""The whole rule as one regular expression (the published JSON Schemas, ``schemas/v1``)."""
_NAME = re.compile(NAME_PATTERN)
_JOINERS = frozenset("\u200c\u200d")
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Cf", "Zl", "Zp"})
NAME_RULE = "1-128 of A-Z a-z 0-9 _ . - (not starting with '.' or '-', no '..')"
FEATURE_RULE = (
    "1-128 characters, no control, surrogate, line/paragraph separator or invisible format "
    "characters"
)


class UnsafeName(ValueError):
    """A name that breaks its rule; ``too_long_or_empty`` tells a length problem (which the
    event validators report as ``bad_value``, as before the rule) from a character one."""

    def __init__(self, what: str, value: object, problem: str, too_long_or_empty: bool) -> None:
        super().__init__(f"bad {what} {_show(value)}: {problem}")
        self.what = what
        self.problem = problem
        self.too_long_or_empty = too_long_or_empty


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 72 else text[:64] + "...'"


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a safe tenant, model or version name, or None if it is.

    >>> name_problem("acme"), name_problem("fraud-v2.1"), name_problem("r12")
    (None, None, None)
    >>> name_problem("../../etc")
    "use 1-128 of A-Z a-z 0-9 _ . - (not starting with '.' or '-', no '..')"
    >>> name_problem("")
    'empty'
    """
    if not name:
        return "empty"
    if len(name) > MAX_NAME_LEN:
        return f"{len(name)} characters, limit {MAX_NAME_LEN}"
    if not _NAME.fullmatch(name) or ".." in name:
        return f"use {NAME_RULE}"
    return None


def validate_name(name: object, what: str = "name") -> str:
    """``name`` if it is a safe tenant, model or version name, else :class:`UnsafeName` (a
    ``ValueError``).

    >>> validate_name("acme", "tenant")
    'acme'
    >>> validate_name("a/b", "tenant")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    schemas.names.UnsafeName: bad tenant 'a/b': use 1-128 of A-Z a-z 0-9 _ . - (...)
    """
    if name.__class__ is str and name in _SAFE_NAMES:
        return name
    if not isinstance(name, str):
        raise UnsafeName(what, name, "not a string", False)
    problem = name_problem(name)
    if problem is not None:
        raise UnsafeName(what, name, problem, not name or len(name) > MAX_NAME_LEN)
    if name.__class__ is str:
        if len(_SAFE_NAMES) >= _SAFE_NAMES_KEPT:
            _SAFE_NAMES.clear()
        _SAFE_NAMES.add(name)
    return name


_SAFE_NAMES: set[str] = set()
"""Names :func:`validate_name` passed (at most 128 characters each): every event names its
tenant, model and version, a few names over and over, and the regular expression was 3 % of
the worker's validation; a set look-up is not."""
_SAFE_NAMES_KEPT = 1 << 14

is_known_safe_name = _SAFE_NAMES.__contains__
"""Whether :func:`validate_name` has passed this exact string (a C-level set look-up, for a
hot path that checks a name the cheap way first; False says only "not known")."""


MISSING_RATE_SUFFIX: Final = "#missing"
"""A feature's missing-rate incident is kept under its name with this suffix."""
MULTIVARIATE_KEY: Final = "__multivariate__"
"""The multivariate (correlation) incident of a model is kept under this name."""


@functools.lru_cache(maxsize=1 << 14)
def feature_name_problem(name: str) -> str | None:
    """Why ``name`` is not an acceptable feature name, or None if it is (memoised: a model's
    features repeat on every event, so the check costs a dictionary look-up).

    >>> feature_name_problem("amount"), feature_name_problem("Gr\\u00f6\\u00dfe (m\\u00b2)")
    (None, None)
    >>> feature_name_problem("clicks/session")  # not a path: features never name files
    >>> feature_name_problem("\\U0001f469\\u200d\\U0001f4bb")  # an emoji sequence with a joiner
    >>> feature_name_problem("amount\\x00")
    'character U+0000 (category Cc) at 6'
    >>> feature_name_problem("\\u202eevil")
    'character U+202E (category Cf) at 0'
    >>> feature_name_problem("amount#missing"), feature_name_problem("__multivariate__")
    ('reserved: ends with #missing', 'reserved: __multivariate__')
    """
    if not name:
        return "empty"
    if len(name) > MAX_NAME_LEN:
        return f"{len(name)} characters, limit {MAX_NAME_LEN}"
    if name.endswith(MISSING_RATE_SUFFIX) or name == MULTIVARIATE_KEY:
        # The engine's incidents are kept by feature name, per model, and these are its own
        # keys: a feature "amount#missing" had its KS incidents filed, confirmed and alerted
        # under "amount"'s missing-rate incident (in the same events or not), and alone it
        # was shown as "amount" (found by review).
        which = MULTIVARIATE_KEY if name == MULTIVARIATE_KEY else f"ends with {MISSING_RATE_SUFFIX}"
        return f"reserved: {which}"
    if name.isascii() and name.isprintable():
        return None  # the common case, in C
    for i, c in enumerate(name):
        category = unicodedata.category(c)
        if category in _REFUSED_CATEGORIES and c not in _JOINERS:
            return f"character U+{ord(c):04X} (category {category}) at {i}"
    return None


def validate_feature_name(name: object) -> str:
    """``name`` if it is an acceptable feature name, else :class:`UnsafeName`.

    >>> validate_feature_name("velocity_1h")
    'velocity_1h'
    """
    if not isinstance(name, str):
        raise UnsafeName("feature name", name, "not a string", False)
    problem = feature_name_problem(name)
    if problem is not None:
        raise UnsafeName("feature name", name, problem, not name or len(name) > MAX_NAME_LEN)
    return name
