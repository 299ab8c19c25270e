"""Shared pytest fixtures.

``kafka_bootstrap`` gives integration tests a Kafka-protocol broker: the one named by
``KAFKA_BOOTSTRAP_SERVERS`` if that is set (e.g. the docker-compose Kafka on localhost:9094),
otherwise an embedded Tansu broker started once per test session. Tests share that broker, so
they name their topics, consumer groups and app ids with ``unique_prefix`` and create topics
explicitly (``driftwatch.devbroker.ensure_topics``) before using them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from driftwatch.devbroker import DevBroker

KAFKA_BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``bootstrap.servers`` of the broker integration tests run against."""
    external = os.environ.get(KAFKA_BOOTSTRAP_ENV, "").strip()
    if external:
        yield external
        return
    log_path = tmp_path_factory.mktemp("devbroker") / "tansu.log"
    broker = DevBroker(port=None, log_path=log_path)
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def unique_prefix() -> str:
    """A short name prefix unique to this test, for topics, consumer groups and app ids."""
    return f"t{uuid.uuid4().hex[:8]}"
