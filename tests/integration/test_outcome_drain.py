"""The join's drain check (``agents.outcome_drain.drain_marks``) against a real broker: no
outcome is on its way once the worker group has committed every ``outcomes`` partition to its
end, and the join partitions' ends are then the marks to read past."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition

from agents.outcome_drain import drain_marks
from tests.integration.kafka_helpers import produce


def _commit(config: dict[str, str], group: str, offsets: list[TopicPartition]) -> None:
    committer = Consumer({**config, "group.id": group, "enable.auto.commit": False})
    try:
        committer.commit(offsets=offsets, asynchronous=False)
    finally:
        committer.close()


def test_outcomes_are_drained_once_the_group_committed_every_partition_to_its_end(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    outcomes = make_topic("drain-outcomes", partitions=2)
    join = make_topic("drain-join", partitions=2)
    config = {"bootstrap.servers": kafka_bootstrap}
    group = f"{outcomes}-group"
    # Nothing in outcomes, never committed: none on the way; the join's ends are the marks.
    produce(kafka_bootstrap, join, [(b"k", b"v")], partition=0)
    produce(kafka_bootstrap, join, [(b"k", b"v")], partition=0)
    produce(kafka_bootstrap, join, [(b"k", b"v")], partition=1)
    assert drain_marks(config, group, outcomes, join) == {0: 2, 1: 1}
    # Outcomes the group has not read: on their way.
    for _ in range(3):
        produce(kafka_bootstrap, outcomes, [(b"o", b"x")], partition=1)
    assert drain_marks(config, group, outcomes, join) is None
    _commit(config, group, [TopicPartition(outcomes, 1, 2)])
    assert drain_marks(config, group, outcomes, join) is None  # one still unread
    _commit(config, group, [TopicPartition(outcomes, 1, 3)])
    produce(kafka_bootstrap, join, [(b"k", b"v")], partition=1)
    assert drain_marks(config, group, outcomes, join) == {0: 2, 1: 2}
    # Another group (another app id) has read none of them.
    assert drain_marks(config, f"{group}-other", outcomes, join) is None


def test_a_check_without_its_topics_fails_rather_than_finding_them_drained(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_prefix: str
) -> None:
    """Before the worker made its topics (or with a wrong prefix) the check must not read
    "nothing on its way": it fails, and the worker keeps the grace."""
    join = make_topic("drain-join-only")
    config = {"bootstrap.servers": kafka_bootstrap}  # as the worker: no auto-creation
    with pytest.raises(RuntimeError, match="no partitions"):
        drain_marks(config, f"{join}-group", f"{unique_prefix}-never-made", join, timeout=5)
