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

__all__ = [
    "SCHEMA_VERSION",
    "DeadLetter",
    "DriftEvent",
    "DriftKind",
    "FeatureValue",
    "InvalidEvent",
    "OutcomeEvent",
    "PredictionEvent",
    "Severity",
    "format_timestamp",
    "parse_timestamp",
]
