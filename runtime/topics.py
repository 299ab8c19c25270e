"""Topic names and topic administration: what the worker and the retrain worker read and
write, and creating it on a real cluster (Apache Kafka in production, the embedded broker in
development) before anything touches it.

Every name here is the suffix after ``DRIFTWATCH_TOPIC_PREFIX``
(:meth:`runtime.settings.Settings.topic`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

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
RETRAIN_TOPICS = (RETRAIN_EVENTS, MODEL_EVENTS, RETRAIN_CONTROL)
RETRAIN_WORKER_TOPICS = (*RETRAIN_TOPICS, DRIFT_EVENTS, LABELED_PREDICTIONS, DEAD_LETTERS)
"""What the retrain worker reads or writes."""


class TopicError(RuntimeError):
    """Topics could not be created (a broker error that retrying cannot fix, or a timeout)."""


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


def ensure_topics(
    bootstrap: str,
    topics: dict[str, int],
    replication: int = 1,
    timeout: float = 15.0,
) -> None:
    """Create the topics in ``topics`` (name -> partition count) that do not exist yet.

    Existing topics are left alone; if one has a different partition count a warning is
    logged. Retries while the broker is still coming up, and returns only once every topic
    shows up in the cluster metadata. Raises :class:`TopicError` on a non-retriable
    broker error (bad partition count, policy violation, authorization, ...) or when
    ``timeout`` seconds pass.
    """
    from confluent_kafka import KafkaError, KafkaException

    # Imported here so `driftwatch dev-broker` does not pay for loading librdkafka.
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    if replication < 1:
        raise ValueError(f"replication must be >= 1, got {replication}")
    for name, partitions in topics.items():
        if not name:
            raise ValueError("topic names must be non-empty")
        if partitions < 1:
            raise ValueError(f"topic {name!r}: partitions must be >= 1, got {partitions}")
    if not topics:
        return

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
    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "socket.connection.setup.timeout.ms": 5000,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
        }
    )
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
                elif have != wanted and name not in warned:
                    warned.add(name)
                    log.warning(
                        "topic %r exists with %d partitions, expected %d; leaving it as is",
                        name,
                        have,
                        wanted,
                    )
            if not missing:
                return
            # Topics listed with a metadata error exist already; creating them again just
            # yields TOPIC_ALREADY_EXISTS, which is fine, and we re-check on the next round.
            futures = admin.create_topics(
                [NewTopic(name, topics[name], replication) for name in missing],
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
                    log.info("created topic %r (%d partitions)", name, topics[name])
        if time.monotonic() >= deadline:
            raise TopicError(
                f"topics {sorted(topics)} not ready on {bootstrap} after {timeout:.1f}s "
                f"(last error: {last_error})"
            )
        time.sleep(0.1)
