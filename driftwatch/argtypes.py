"""Argument types for the command line: names follow the one rule (``schemas.names``).

A name given on the command line ends up where an event's would (a registry directory, a
``retrain-control`` key, a report's file name), so it is held to the same rule, and a bad one
is refused by argparse (exit 2, the rule in the message) before anything is read or written.
"""

from __future__ import annotations

import argparse

from schemas.names import UnsafeName, validate_name


def name(value: str) -> str:
    """A tenant, model, version or request id.

    >>> name("acme")
    'acme'
    >>> name("../etc")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: bad name '../etc': use 1-128 of A-Z a-z 0-9 _ . - (...)
    """
    try:
        return validate_name(value)
    except UnsafeName as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def names(value: str) -> str:
    """Comma-separated names (the commands split them themselves).

    >>> names("acme,globex")
    'acme,globex'
    """
    for part in value.split(","):
        name(part.strip())
    return value


def tenants(value: str) -> str:
    """Comma-separated tenants, or ``*`` for all (an API token's reach)."""
    return value if value.strip() == "*" else names(value)


def stream(value: str) -> str:
    """``tenant:model``.

    >>> stream("acme:fraud")
    'acme:fraud'
    """
    tenant, sep, model = value.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{value!r} is not tenant:model")
    name(tenant)
    name(model)
    return value
