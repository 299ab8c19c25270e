"""Topic names and topic administration: what the worker and the retrain worker read and
write, and creating it on a real cluster (Apache Kafka in production, the embedded broker in
development) before anything touches it.

Every name here is the suffix after ``DRIFTWATCH_TOPIC_PREFIX``
(:meth:`runtime.settings.Settings.topic`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runtime.kafka_connection import (
    ErrorWatch,
    KafkaConnectError,
    KafkaTarget,
    bootstrap_of,
    client_config,
    make_client,
)

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

    from runtime.settings import Settings

log = logging.getLogger(__name__)

PREDICTIONS = "predictions"
OUTCOMES = "outcomes"
DRIFT_EVENTS = "drift-events"
DEAD_LETTERS = "dead-letters"
LABELED_PREDICTIONS = "labeled-predictions"
JOIN_INPUT = "join-input"
PERFORMANCE_INPUT = "performance-input"
ALERTS = "alerts"
RETRAIN_EVENTS = "retrain-events"
MODEL_EVENTS = "model-events"
RETRAIN_CONTROL = "retrain-control"

WORKER_TOPICS = (
    PREDICTIONS,
    OUTCOMES,
    DRIFT_EVENTS,
    DEAD_LETTERS,
    LABELED_PREDICTIONS,
    JOIN_INPUT,
    PERFORMANCE_INPUT,
    ALERTS,
    RETRAIN_EVENTS,
    MODEL_EVENTS,
    RETRAIN_CONTROL,
)
"""Every topic the worker reads or writes (besides its tables' changelogs), created up front
with the same partition count: the internal ones are routed by partition number."""
INPUT_TOPICS = (PREDICTIONS, OUTCOMES)
"""Written by the models' serving systems: created when missing (development), but their
retention and other settings are left to their owners."""
COPARTITIONED = (PREDICTIONS, OUTCOMES, JOIN_INPUT, PERFORMANCE_INPUT, ALERTS)
"""Sources of the worker's agents that write its tables: each partition of these is one
partition of the tables (and of their changelogs), so all must have the same count."""
COMPACTED = (RETRAIN_CONTROL,)
"""Keyed latest-value topics (approvals, flags): compacted, never deleted by age."""
KEPT = (RETRAIN_EVENTS,)
"""Topics that are state, read whole at every start (the retrain worker rebuilds its requests,
cooldowns, data marks and post-deploy checks from ``retrain-events``): created with
``retention.ms=-1`` unless ``DRIFTWATCH_TOPIC_RETENTION_MS`` names the topic itself (not with
``*``: at a broker's default of 7 days, a restart forgot the cooldowns and the checks still
running). A few records per request."""
TABLES = ("drift-state", "join-state", "performance", "alert-deliveries")
"""The worker's Faust tables; each has a compacted changelog topic
``{DRIFTWATCH_APP_ID}-{table}-changelog`` (no topic prefix: Faust names them)."""
RETRAIN_TOPICS = (RETRAIN_EVENTS, MODEL_EVENTS, RETRAIN_CONTROL)
RETRAIN_WORKER_TOPICS = (*RETRAIN_TOPICS, DRIFT_EVENTS, LABELED_PREDICTIONS, DEAD_LETTERS, ALERTS)
"""What the retrain worker reads or writes."""


class TopicError(RuntimeError):
    """Topics could not be created (a broker error that retrying cannot fix, or a timeout),
    or existing ones do not fit (missing with creation off, partition counts that break
    co-partitioning)."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic driftwatch needs: its full name, partition count and the configuration it is
    created with. ``copartitioned`` topics must have exactly ``partitions`` (see
    :data:`COPARTITIONED`); for the others a different count is only reported."""

    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)
    role: str = "output"
    """``input``, ``output``, ``internal``, ``changelog`` or ``compacted``."""
    copartitioned: bool = False


def changelog_topic(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


def leader_topic(settings: Settings) -> str:
    """Faust's leader-election topic (one partition)."""
    return f"{settings.app_id}-__assignor-__leader"


def parse_retention(text: str) -> dict[str, int]:
    """``DRIFTWATCH_TOPIC_RETENTION_MS``: ``topic=ms,...`` (``*`` for every owned topic).

    >>> parse_retention("dead-letters=2592000000, *=-1")
    {'dead-letters': 2592000000, '*': -1}
    """
    out: dict[str, int] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            ms = int(value.strip()) if sep else None
        except ValueError:
            ms = None
        if not name or ms is None or ms < -1:
            raise ValueError(
                f"DRIFTWATCH_TOPIC_RETENTION_MS: {item!r} is not topic=milliseconds "
                "(-1 keeps for ever)"
            )
        known = (*WORKER_TOPICS, *TABLES, "*")
        if name not in known:
            raise ValueError(
                f"DRIFTWATCH_TOPIC_RETENTION_MS: unknown topic {name!r} (one of {', '.join(known)})"
            )
        if name in INPUT_TOPICS:
            raise ValueError(
                f"DRIFTWATCH_TOPIC_RETENTION_MS: {name!r} is an input topic; its retention "
                "is its owner's to set"
            )
        out[name] = ms
    return out


def topic_specs(settings: Settings, names: Iterable[str], tables: bool = False) -> list[TopicSpec]:
    """What to create or check for ``names`` (topic names without the prefix), plus the
    worker's table changelogs and Faust's leader topic when ``tables``."""
    retention = parse_retention(settings.topic_retention_ms)
    common: dict[str, str] = {}
    if settings.min_insync_replicas > 0:
        if settings.min_insync_replicas > settings.replication:
            raise ValueError(
                f"DRIFTWATCH_MIN_INSYNC_REPLICAS={settings.min_insync_replicas} is more than "
                f"DRIFTWATCH_REPLICATION={settings.replication}: no write could succeed"
            )
        common["min.insync.replicas"] = str(settings.min_insync_replicas)

    def owned(name: str, compact: bool) -> dict[str, str]:
        cfg = dict(common)
        if compact:
            cfg["cleanup.policy"] = "compact"
        else:
            ms = retention.get(name, -1 if name in KEPT else retention.get("*"))
            if ms is not None:
                cfg["retention.ms"] = str(ms)
        return cfg

    specs: list[TopicSpec] = []
    for name in dict.fromkeys(names):
        if name in INPUT_TOPICS:
            cfg: dict[str, str] = {}
            role = "input"
        elif name in COMPACTED:
            cfg, role = owned(name, True), "compacted"
        else:
            cfg = owned(name, False)
            role = "internal" if name in (JOIN_INPUT, PERFORMANCE_INPUT) else "output"
        specs.append(
            TopicSpec(
                settings.topic(name),
                settings.partitions,
                cfg,
                role,
                copartitioned=tables and name in COPARTITIONED,
            )
        )
    if tables:
        for table in TABLES:
            specs.append(
                TopicSpec(
                    changelog_topic(settings, table),
                    settings.partitions,
                    owned(table, True),
                    "changelog",
                    copartitioned=True,
                )
            )
        specs.append(TopicSpec(leader_topic(settings), 1, dict(common), "internal"))
    return specs


def prepare_topics(
    settings: Settings,
    specs: list[TopicSpec],
    kafka: KafkaTarget | None = None,
    timeout: float = 15.0,
) -> dict[str, int]:
    """Create the missing topics of ``specs`` (unless ``DRIFTWATCH_CREATE_TOPICS`` is off),
    then check every one: raises :class:`TopicError` naming each topic that is missing (with
    creation off) or whose partition count breaks co-partitioning, and logs a warning for
    other differences. Returns every spec's partition count as found."""
    from runtime.kafka_connection import confluent_config

    target = kafka if kafka is not None else confluent_config(settings)
    wanted = {s.name: s.partitions for s in specs}
    if settings.create_topics:
        found = ensure_topics(
            target,
            wanted,
            replication=settings.replication,
            timeout=timeout,
            configs={s.name: s.config for s in specs if s.config},
            warn=False,
        )
    else:
        found = existing_topics(target, list(wanted), timeout=timeout)
    problems = check_partitions(specs, found)
    missing = [s.name for s in specs if found.get(s.name) is None]
    if missing:
        problems.insert(
            0,
            f"missing topics (DRIFTWATCH_CREATE_TOPICS=false: create them, or turn creation "
            f"on): {', '.join(missing)}",
        )
    if problems:
        raise TopicError("; ".join(problems))
    return {k: v for k, v in found.items() if v is not None}


def check_partitions(specs: list[TopicSpec], found: Mapping[str, int | None]) -> list[str]:
    """The partition-count problems of ``found`` against ``specs``: co-partitioned topics
    that differ are returned (fatal), other differences are logged as warnings."""
    problems: list[str] = []
    bad = [
        s
        for s in specs
        if s.copartitioned and found.get(s.name) is not None and found[s.name] != s.partitions
    ]
    if bad:
        counts = ", ".join(f"{s.name!r} has {found[s.name]}" for s in bad)
        expected = bad[0].partitions
        problems.append(
            f"partition counts differ from DRIFTWATCH_PARTITIONS={expected}: {counts}. The "
            "worker's state tables are partitioned like their source topics (predictions, "
            "outcomes, join-input, performance-input, alerts and the table changelogs must all "
            "have the same count): set DRIFTWATCH_PARTITIONS to the count of the existing "
            "'predictions' topic and recreate or repartition the others to match (the "
            "changelogs only after stopping every worker)"
        )
    for s in specs:
        have = found.get(s.name)
        if not s.copartitioned and have is not None and have != s.partitions:
            log.warning(
                "topic %r has %d partitions, driftwatch would create it with %d; leaving it "
                "as is (it is not co-partitioned with the tables)",
                s.name,
                have,
                s.partitions,
            )
    return problems


def _topic_partitions(admin: AdminClient, timeout: float) -> dict[str, int | None]:
    """Map every topic in the cluster to its partition count (None if its metadata has an error).

    Lists all topics rather than naming ours: on Tansu a metadata request that names a missing
    topic creates it (with 4 partitions).
    """
    metadata = admin.list_topics(timeout=timeout)
    result: dict[str, int | None] = {}
    for name, topic in metadata.topics.items():
        result[name] = None if topic.error is not None else len(topic.partitions)
    return result


def _admin(target: KafkaTarget, watch: ErrorWatch) -> AdminClient:
    from confluent_kafka.admin import AdminClient

    admin: AdminClient = make_client(
        AdminClient,
        client_config(
            target,
            **{
                "socket.connection.setup.timeout.ms": 5000,
                "reconnect.backoff.ms": 50,
                "reconnect.backoff.max.ms": 500,
                "error_cb": watch,
                "log_level": 0,  # errors reach us through error_cb (see check_connection)
            },
        ),
    )
    return admin


def _protocol(target: KafkaTarget) -> str:
    return str(client_config(target).get("security.protocol", "plaintext")).upper()


def existing_topics(
    target: KafkaTarget, names: list[str], timeout: float = 15.0
) -> dict[str, int | None]:
    """Partition counts of ``names`` (None: missing), without creating anything. Raises
    :class:`KafkaConnectError` on an authentication or TLS failure, :class:`TopicError` when
    the cluster does not answer within ``timeout``."""
    from confluent_kafka import KafkaException

    watch = ErrorWatch()
    admin = _admin(target, watch)
    deadline = time.monotonic() + timeout
    last = "no attempt finished"
    while True:
        try:
            listed = _topic_partitions(
                admin, timeout=min(max(deadline - time.monotonic(), 0.1), 2.0)
            )
        except KafkaException as exc:
            last = f"listing topics: {exc.args[0] if exc.args else exc}"
        else:
            return {name: listed.get(name) for name in names}
        admin.poll(0)
        watch.raise_if_fatal(bootstrap_of(target), _protocol(target))
        if time.monotonic() >= deadline:
            raise TopicError(
                f"cannot list topics on {bootstrap_of(target)} within {timeout:.1f}s "
                f"(last error: {watch.last or last})"
            )


def ensure_topics(
    bootstrap: KafkaTarget,
    topics: dict[str, int],
    replication: int = 1,
    timeout: float = 15.0,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    warn: bool = True,
) -> dict[str, int | None]:
    """Create the topics in ``topics`` (name -> partition count) that do not exist yet, with
    ``configs[name]`` (topic configuration, e.g. ``cleanup.policy``) if given.

    ``bootstrap``: ``host:port,...`` or a confluent-kafka configuration with its security
    (:func:`runtime.kafka_connection.confluent_config`). Existing topics are left alone; if
    one has a different partition count a warning is logged (unless ``warn`` is off).
    Retries while the broker is still coming up, and returns only once every topic shows up
    in the cluster metadata, with the partition counts found. Raises
    :class:`~runtime.kafka_connection.KafkaConnectError` at once when the broker refuses the
    credentials or the TLS handshake, :class:`TopicError` on a non-retriable broker error
    (bad partition count, policy violation, authorization, ...) or when ``timeout`` seconds
    pass.
    """
    from confluent_kafka import KafkaError, KafkaException

    # Imported here so `driftwatch dev-broker` does not pay for loading librdkafka.
    from confluent_kafka.cimpl import NewTopic

    if replication < 1:
        raise ValueError(f"replication must be >= 1, got {replication}")
    for name, partitions in topics.items():
        if not name:
            raise ValueError("topic names must be non-empty")
        if partitions < 1:
            raise ValueError(f"topic {name!r}: partitions must be >= 1, got {partitions}")
    if not topics:
        return {}
    configs = configs or {}

    fatal_codes = {
        KafkaError.INVALID_PARTITIONS,
        KafkaError.INVALID_REPLICATION_FACTOR,
        KafkaError.INVALID_REPLICA_ASSIGNMENT,
        KafkaError.INVALID_CONFIG,
        KafkaError.TOPIC_EXCEPTION,  # InvalidTopicException: bad topic name
        KafkaError.INVALID_REQUEST,
        KafkaError.POLICY_VIOLATION,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.UNSUPPORTED_VERSION,
    }
    watch = ErrorWatch()
    admin = _admin(bootstrap, watch)
    where = bootstrap_of(bootstrap)
    protocol = _protocol(bootstrap)
    deadline = time.monotonic() + timeout
    warned: set[str] = set()
    last_error: str = "no attempt finished"

    def remaining() -> float:
        return max(deadline - time.monotonic(), 0.1)

    while True:
        try:
            existing = _topic_partitions(admin, timeout=min(remaining(), 5.0))
        except KafkaException as exc:
            last_error = f"listing topics: {exc.args[0] if exc.args else exc}"
        else:
            missing = []
            for name, wanted in topics.items():
                have = existing.get(name)
                if have is None:
                    missing.append(name)
                elif have != wanted and warn and name not in warned:
                    warned.add(name)
                    log.warning(
                        "topic %r exists with %d partitions, expected %d; leaving it as is",
                        name,
                        have,
                        wanted,
                    )
            if not missing:
                return {name: existing.get(name) for name in topics}
            # Topics listed with a metadata error exist already; creating them again just
            # yields TOPIC_ALREADY_EXISTS, which is fine, and we re-check on the next round.
            futures = admin.create_topics(
                [
                    NewTopic(name, topics[name], replication, config=dict(configs.get(name, {})))
                    for name in missing
                ],
                request_timeout=min(remaining(), 10.0),
            )
            for name, future in futures.items():
                try:
                    future.result()
                except KafkaException as exc:
                    err = exc.args[0] if exc.args else None
                    code = err.code() if isinstance(err, KafkaError) else None
                    if code == KafkaError.TOPIC_ALREADY_EXISTS:
                        continue
                    if code in fatal_codes:
                        raise TopicError(f"cannot create topic {name!r}: {err}") from exc
                    last_error = f"creating {name!r}: {err}"
                else:
                    extra = configs.get(name)
                    log.info(
                        "created topic %r (%d partitions, replication %d%s)",
                        name,
                        topics[name],
                        replication,
                        f", {dict(extra)}" if extra else "",
                    )
        admin.poll(0)
        watch.raise_if_fatal(where, protocol)
        if time.monotonic() >= deadline:
            raise TopicError(
                f"topics {sorted(topics)} not ready on {where} after {timeout:.1f}s "
                f"(last error: {watch.last or last_error})"
            )
        time.sleep(0.1)


__all__ = [
    "KafkaConnectError",
    "TopicError",
    "TopicSpec",
    "check_partitions",
    "ensure_topics",
    "existing_topics",
    "prepare_topics",
    "topic_specs",
]
