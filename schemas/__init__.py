"""Wire contracts (v1). Depends on nothing else in the project."""

from schemas.events import (
    SCHEMA_VERSION,
    DeadLetter,
    DriftEvent,
    DriftKind,
    FeatureValue,
    InvalidEvent,
    OutcomeEvent,
    PredictionEvent,
    Severity,
    format_timestamp,
    parse_timestamp,
)
from schemas.retrain import (
    AUTO_ROLLBACK,
    MANUAL_ROLLBACK,
    ControlMessage,
    ModelAction,
    ModelEvent,
    RetrainEvent,
    RetrainStatus,
)

__all__ = [
    "AUTO_ROLLBACK",
    "MANUAL_ROLLBACK",
    "SCHEMA_VERSION",
    "ControlMessage",
    "DeadLetter",
    "DriftEvent",
    "DriftKind",
    "FeatureValue",
    "InvalidEvent",
    "ModelAction",
    "ModelEvent",
    "OutcomeEvent",
    "PredictionEvent",
    "RetrainEvent",
    "RetrainStatus",
    "Severity",
    "format_timestamp",
    "parse_timestamp",
]
