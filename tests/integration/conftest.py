"""Fixtures for tests that talk to a broker (see ``kafka_bootstrap`` in ``tests/conftest.py``).

Every test collected from this directory gets the ``integration`` marker, so
``pytest -m "not integration"`` skips them all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.topics import ensure_topics

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def make_topic(kafka_bootstrap: str, unique_prefix: str) -> Callable[..., str]:
    """Create a topic named ``<unique_prefix>-<suffix>`` and return its full name.

    ``make_topic("events", partitions=3)``; topics are never deleted (the session broker is
    throwaway, and unique names keep tests independent on a shared one).
    """

    def _make(suffix: str, partitions: int = 1) -> str:
        name = f"{unique_prefix}-{suffix}"
        ensure_topics(kafka_bootstrap, {name: partitions})
        return name

    return _make
