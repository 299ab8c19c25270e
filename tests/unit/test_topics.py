"""runtime.topics: what driftwatch creates (replication, min.insync.replicas, retention,
compaction), and the checks of existing topics."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from runtime import topics
from runtime.settings import Settings
from runtime.topics import (
    RETRAIN_WORKER_TOPICS,
    WORKER_TOPICS,
    TopicError,
    check_partitions,
    parse_retention,
    prepare_topics,
    topic_specs,
)


def settings(**env: str) -> Settings:
    return Settings.from_env({"DRIFTWATCH_TOPIC_PREFIX": "p-", "DRIFTWATCH_APP_ID": "dw", **env})


def by_name(s: Settings, tables: bool = True) -> dict[str, topics.TopicSpec]:
    return {t.name: t for t in topic_specs(s, WORKER_TOPICS, tables=tables)}


def test_defaults_leave_the_brokers_defaults_alone_but_compact_changelogs() -> None:
    specs = by_name(settings())
    assert set(specs) == {
        *(f"p-{t}" for t in WORKER_TOPICS),
        "dw-drift-state-changelog",
        "dw-join-state-changelog",
        "dw-performance-changelog",
        "dw-alert-deliveries-changelog",
        "dw-__assignor-__leader",
    }
    assert specs["p-predictions"].config == {} and specs["p-predictions"].role == "input"
    assert specs["p-drift-events"].config == {}
    assert specs["dw-drift-state-changelog"].config == {"cleanup.policy": "compact"}
    assert specs["p-retrain-control"].config == {"cleanup.policy": "compact"}
    # the retrain worker's state, read whole at each start: kept (a broker's 7 days forgot it)
    assert specs["p-retrain-events"].config == {"retention.ms": "-1"}
    assert specs["dw-__assignor-__leader"].partitions == 1
    assert all(s.partitions == 4 for n, s in specs.items() if "leader" not in n)


def test_production_settings_reach_every_owned_topic_but_not_the_inputs() -> None:
    s = settings(
        DRIFTWATCH_REPLICATION="3",
        DRIFTWATCH_MIN_INSYNC_REPLICAS="2",
        DRIFTWATCH_PARTITIONS="12",
        DRIFTWATCH_TOPIC_RETENTION_MS="*=604800000,dead-letters=2592000000,drift-events=-1",
    )
    specs = by_name(s)
    assert specs["p-predictions"].config == {} and specs["p-outcomes"].config == {}
    assert specs["p-dead-letters"].config == {
        "min.insync.replicas": "2",
        "retention.ms": "2592000000",
    }
    assert specs["p-drift-events"].config["retention.ms"] == "-1"
    assert specs["p-alerts"].config["retention.ms"] == "604800000"
    assert specs["p-retrain-events"].config["retention.ms"] == "-1"  # `*` does not reach it
    named = by_name(settings(DRIFTWATCH_TOPIC_RETENTION_MS="retrain-events=31536000000"))
    assert named["p-retrain-events"].config == {"retention.ms": "31536000000"}
    # compacted: never deleted by age, whatever `*` says
    changelog = specs["dw-join-state-changelog"].config
    assert changelog == {"min.insync.replicas": "2", "cleanup.policy": "compact"}
    assert specs["p-predictions"].partitions == 12


def test_co_partitioned_topics_are_the_sources_of_the_tables_and_the_changelogs() -> None:
    specs = by_name(settings())
    co = {n for n, s in specs.items() if s.copartitioned}
    assert co == {
        "p-predictions",
        "p-outcomes",
        "p-join-input",
        "p-performance-input",
        "p-alerts",
        "dw-drift-state-changelog",
        "dw-join-state-changelog",
        "dw-performance-changelog",
        "dw-alert-deliveries-changelog",
    }
    # the retrain worker's topics: no tables, nothing co-partitioned
    assert not any(s.copartitioned for s in topic_specs(settings(), RETRAIN_WORKER_TOPICS))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dead-letters", "not topic=milliseconds"),
        ("dead-letters=soon", "not topic=milliseconds"),
        ("dead-letters=-5", "not topic=milliseconds"),
        ("nope=1", "unknown topic 'nope'"),
        ("predictions=1", "is an input topic"),
    ],
)
def test_bad_retention_settings_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_retention(text)


def test_min_insync_above_replication_is_refused() -> None:
    with pytest.raises(ValueError, match="no write could succeed"):
        topic_specs(settings(DRIFTWATCH_MIN_INSYNC_REPLICAS="2"), WORKER_TOPICS)


def test_partition_mismatch_of_a_co_partitioned_topic_is_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    specs = topic_specs(settings(DRIFTWATCH_PARTITIONS="4"), WORKER_TOPICS, tables=True)
    found: dict[str, int | None] = {s.name: s.partitions for s in specs}
    found["p-predictions"] = 8
    found["p-drift-events"] = 1  # read by nobody's tables: only a warning
    with caplog.at_level(logging.WARNING, logger="runtime.topics"):
        problems = check_partitions(specs, found)
    assert len(problems) == 1
    assert "DRIFTWATCH_PARTITIONS=4: 'p-predictions' has 8" in problems[0]
    assert "set DRIFTWATCH_PARTITIONS to the count of the existing 'predictions'" in problems[0]
    assert "'p-drift-events' has 1 partitions" in caplog.text


class FakeAdmin:
    """What prepare_topics sees of a cluster."""

    def __init__(self, existing: dict[str, int]) -> None:
        self.existing = dict(existing)
        self.created: list[tuple[str, int, int, dict[str, str]]] = []


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeAdmin:
    admin = FakeAdmin({})

    def ensure(target: Any, wanted: dict[str, int], replication: int = 1, timeout: float = 15.0,
               configs: Any = None, warn: bool = True) -> dict[str, int | None]:  # fmt: skip
        for name, n in wanted.items():
            if name not in admin.existing:
                admin.existing[name] = n
                admin.created.append((name, n, replication, dict((configs or {}).get(name, {}))))
        return {name: admin.existing.get(name) for name in wanted}

    def existing(target: Any, names: list[str], timeout: float = 15.0) -> dict[str, int | None]:
        return {name: admin.existing.get(name) for name in names}

    monkeypatch.setattr(topics, "ensure_topics", ensure)
    monkeypatch.setattr(topics, "existing_topics", existing)
    return admin


def test_prepare_creates_what_is_missing_with_its_settings(cluster: FakeAdmin) -> None:
    s = settings(DRIFTWATCH_REPLICATION="3", DRIFTWATCH_MIN_INSYNC_REPLICAS="2")
    cluster.existing["p-predictions"] = 4  # the models' own, already there
    prepare_topics(s, topic_specs(s, WORKER_TOPICS, tables=True), "k:9092")
    created = {name: (n, r, cfg) for name, n, r, cfg in cluster.created}
    assert "p-predictions" not in created
    assert created["dw-drift-state-changelog"] == (
        4,
        3,
        {"min.insync.replicas": "2", "cleanup.policy": "compact"},
    )
    assert created["p-outcomes"] == (4, 3, {})


def test_prepare_with_creation_off_only_checks(cluster: FakeAdmin) -> None:
    s = settings(DRIFTWATCH_CREATE_TOPICS="false")
    specs = topic_specs(s, WORKER_TOPICS, tables=True)
    cluster.existing.update({sp.name: sp.partitions for sp in specs})
    del cluster.existing["p-alerts"]
    del cluster.existing["dw-performance-changelog"]
    with pytest.raises(TopicError) as caught:
        prepare_topics(s, specs, "k:9092")
    assert cluster.created == []
    assert str(caught.value) == (
        "missing topics (DRIFTWATCH_CREATE_TOPICS=false: create them, or turn creation on): "
        "p-alerts, dw-performance-changelog"
    )
    cluster.existing["p-alerts"] = 4
    cluster.existing["dw-performance-changelog"] = 4
    assert prepare_topics(s, specs, "k:9092")["p-alerts"] == 4


def test_prepare_refuses_existing_topics_that_break_co_partitioning(cluster: FakeAdmin) -> None:
    s = settings(DRIFTWATCH_PARTITIONS="4")
    cluster.existing["p-predictions"] = 6
    with pytest.raises(TopicError, match="'p-predictions' has 6"):
        prepare_topics(s, topic_specs(s, WORKER_TOPICS, tables=True), "k:9092")
