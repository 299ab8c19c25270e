"""The API's routes and their OpenAPI 3 document, from one table.

The server registers exactly :data:`ROUTES` and serves :func:`openapi_document` built from
the same table, so the document cannot drift from what is served (a test checks both ways).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.names import MAX_NAME_LEN, NAME_PATTERN, NAME_RULE

API_VERSION = "1.0.0"


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return schema | {"nullable": True}


NAME = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_NAME_LEN,
    "pattern": NAME_PATTERN,
    "description": f"a safe name (schemas/names.py): {NAME_RULE}",
}
TIMESTAMP = {"type": "string", "format": "date-time"}
NUM = {"type": "number"}
SEVERITY = {"type": "string", "enum": ["LOW", "MEDIUM", "HIGH", "CRITICAL"]}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "id": {
                        "type": "string",
                        "description": "error id of a failure whose detail went to the "
                        "worker's log (5xx): quote it to the operator",
                    },
                },
            }
        },
    },
    "IncidentCounts": {
        "type": "object",
        "required": ["LOW", "MEDIUM", "HIGH", "CRITICAL"],
        "properties": {s: {"type": "integer", "minimum": 0} for s in SEVERITY["enum"]},
    },
    "ModelSummary": {
        "type": "object",
        "required": ["tenant", "model", "versions", "active_version", "open_incidents"],
        "properties": {
            "tenant": {"type": "string"},
            "model": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "active_version": _nullable({"type": "string"}),
            "latest_version": _nullable({"type": "string"}),
            "open_incidents": {"$ref": "#/components/schemas/IncidentCounts"},
            "last_window_tested": _nullable(TIMESTAMP),
            "event_time": _nullable(TIMESTAMP),
            "features": {"type": "integer"},
            "events": {"type": "integer"},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["models"],
        "properties": {
            "models": {"type": "array", "items": {"$ref": "#/components/schemas/ModelSummary"}},
            "partial": {
                "type": "boolean",
                "description": "true when a worker did not answer: some models may be missing",
            },
        },
    },
    "PerformanceRow": {
        "type": "object",
        "required": ["window_start", "model_version", "predictions", "labelled"],
        "properties": {
            "tenant": {"type": "string"},
            "model": {"type": "string"},
            "model_version": {"type": "string"},
            "window_start": TIMESTAMP,
            "window_end": TIMESTAMP,
            "complete": {"type": "boolean", "description": "the window's final look is done"},
            "predictions": {"type": "integer"},
            "labelled": {"type": "integer"},
            **{
                k: _nullable(NUM)
                for k in (
                    "label_rate",
                    "accuracy",
                    "precision",
                    "recall",
                    "f1",
                    "roc_auc",
                    "roc_auc_error_bound",
                    "pr_auc",
                    "pr_auc_error_bound",
                    "brier",
                    "calibration_error",
                    "positive_rate",
                    "estimated_accuracy",
                    "estimated_pr_auc",
                )
            },
        },
    },
    "PerformanceHistory": {
        "type": "object",
        "required": ["tenant", "model", "windows"],
        "properties": {
            "tenant": {"type": "string"},
            "model": {"type": "string"},
            "windows": {"type": "array", "items": {"$ref": "#/components/schemas/PerformanceRow"}},
        },
    },
    "Incident": {
        "type": "object",
        "required": ["drift_id", "kind", "severity", "status"],
        "properties": {
            "drift_id": {"type": "string"},
            "kind": {"type": "string", "enum": ["statistical", "performance", "objective"]},
            "feature": _nullable({"type": "string"}),
            "segment": _nullable(
                {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "segment drift: the segment the feature drifted in, "
                    "{column: value}; null: the whole traffic (DRIFTWATCH_SEGMENT_COLUMNS)",
                }
            ),
            "model_version": _nullable({"type": "string"}),
            "signal": _nullable({"type": "string"}),
            "test": _nullable({"type": "string"}),
            "severity": SEVERITY,
            "confirmed": {"type": "boolean"},
            "persistence": {"type": "integer"},
            "opened_window": TIMESTAMP,
            "last_window": TIMESTAMP,
            "closed_at": TIMESTAMP,
            "status": {"type": "string", "enum": ["open", "resolved"]},
            "effect_size": _nullable(
                {**NUM, "description": "effect size of the test that last found it drifting"}
            ),
            "importance": _nullable(
                {
                    **NUM,
                    "description": "how much the feature matters to the model's score, in "
                    "[0, 1] (open feature incidents; null when unknown or for performance)",
                }
            ),
            "importance_source": _nullable(
                {"type": "string", "enum": ["registry", "association", "unknown"]}
            ),
            "impact": _nullable(
                {
                    **NUM,
                    "description": "importance x effect_size; open_incidents are ordered by "
                    "it (highest first; ties: severity, then feature), incidents without one "
                    "last",
                }
            ),
        },
    },
    "TestResult": {
        "type": "object",
        "required": ["test"],
        "properties": {
            "test": {"type": "string"},
            "statistic": _nullable(NUM),
            "p_value": _nullable(NUM),
            "effect_size": _nullable(NUM),
            "threshold": _nullable(NUM),
            "drifting": {"type": "boolean"},
            "count": {"type": "integer"},
            "baseline_count": {"type": "integer"},
        },
    },
    "FeatureStatus": {
        "type": "object",
        "required": ["feature", "kind", "drifting"],
        "properties": {
            "feature": {"type": "string"},
            "kind": {"type": "string", "enum": ["numeric", "categorical"]},
            "drifting": {"type": "boolean"},
            "drift_id": _nullable({"type": "string"}),
            "latest": _nullable(
                {
                    "type": "object",
                    "properties": {
                        "window_start": TIMESTAMP,
                        "tests": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/TestResult"},
                        },
                    },
                }
            ),
        },
    },
    "DriftStatus": {
        "type": "object",
        "required": ["tenant", "model", "open_incidents", "recent_incidents", "features"],
        "properties": {
            "tenant": {"type": "string"},
            "model": {"type": "string"},
            "event_time": _nullable(TIMESTAMP),
            "open_incidents": {"type": "array", "items": {"$ref": "#/components/schemas/Incident"}},
            "recent_incidents": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Incident"},
            },
            "features": {"type": "array", "items": {"$ref": "#/components/schemas/FeatureStatus"}},
        },
    },
    "RetrainRequest": {
        "type": "object",
        "required": ["reason"],
        "additionalProperties": False,
        "properties": {
            "reason": {"type": "string", "minLength": 1, "maxLength": 1000},
            "requested_by": {"type": "string", "minLength": 1, "maxLength": 200},
        },
    },
    "RollbackRequest": {
        "type": "object",
        "required": ["reason"],
        "additionalProperties": False,
        "properties": {
            "reason": {"type": "string", "minLength": 1, "maxLength": 1000},
            "to_version": NAME,
            "requested_by": {"type": "string", "minLength": 1, "maxLength": 200},
        },
    },
    "ApprovalDecision": {
        "type": "object",
        "required": ["decision", "reason"],
        "additionalProperties": False,
        "properties": {
            "decision": {"type": "string", "enum": ["approve", "reject"]},
            "reason": {"type": "string", "minLength": 1, "maxLength": 1000},
            "requested_by": {"type": "string", "minLength": 1, "maxLength": 200},
        },
    },
    "AutoRetrainFlag": {
        "type": "object",
        "required": ["enabled"],
        "additionalProperties": False,
        "properties": {
            "enabled": {"type": "boolean"},
            "reason": {"type": "string", "maxLength": 1000},
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["status", "control_key"],
        "properties": {
            "status": {"type": "string", "enum": ["accepted"]},
            "control_key": {"type": "string"},
            "request_id": _nullable({"type": "string"}),
            "message": {"type": "string"},
        },
    },
    "Approval": {
        "type": "object",
        "required": ["request_id", "tenant", "model", "status"],
        "properties": {
            "request_id": {"type": "string"},
            "tenant": {"type": "string"},
            "model": {"type": "string"},
            "drift_id": {"type": "string"},
            "status": {"type": "string"},
            "reason": {"type": "string"},
            "event_time": TIMESTAMP,
            "at": TIMESTAMP,
        },
    },
    "ApprovalList": {
        "type": "object",
        "required": ["approvals"],
        "properties": {
            "approvals": {"type": "array", "items": {"$ref": "#/components/schemas/Approval"}}
        },
    },
    "AlertList": {
        "type": "object",
        "required": ["alerts"],
        "properties": {
            "alerts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["alert_id", "kind", "change", "tenant", "model", "severity"],
                    "properties": {
                        "alert_id": {"type": "string"},
                        "kind": {"type": "string"},
                        "change": {"type": "string"},
                        "tenant": {"type": "string"},
                        "model": {"type": "string"},
                        "severity": SEVERITY,
                        "title": {"type": "string"},
                        "text": {"type": "string"},
                    },
                },
            }
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string"},
            "reason": {"type": "string"},
            "loop_lag_seconds": _nullable(NUM),
        },
    },
}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    """aiohttp/OpenAPI path template (``{tenant}``)."""
    name: str
    """The handler method of :class:`agents.api.server.Api`, and the operationId."""
    summary: str
    scope: str | None
    """``read``, ``write`` or None (no authentication)."""
    ok: tuple[int, str, str] = (200, "application/json", "")
    """Success status, content type and schema name."""
    body: str | None = None
    query: tuple[tuple[str, dict[str, Any], str], ...] = ()
    errors: tuple[int, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


MODEL = "/v1/models/{tenant}/{model}"
MAX_CURSOR = 64
"""Longest ``?after=`` (an alert id: 36 characters); a longer one is a 400."""
READ_ERRORS = (400, 401, 404, 429, 503)
WRITE_ERRORS = (400, 401, 403, 404, 413, 415, 429, 503)

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/healthz",
        "healthz",
        "Liveness: the process and its event loop respond",
        None,
        (200, "application/json", "Health"),
        errors=(503,),
    ),
    Route(
        "GET",
        "/readyz",
        "readyz",
        "Readiness: tables recovered and the worker not stalled",
        None,
        (200, "application/json", "Health"),
        errors=(503,),
    ),
    Route(
        "GET", "/v1/openapi.json", "openapi", "This document", None, (200, "application/json", "")
    ),
    Route(
        "GET",
        "/v1/models",
        "list_models",
        "The caller's tenants' models",
        "read",
        (200, "application/json", "ModelList"),
        errors=(401, 429, 503),
    ),
    Route(
        "GET",
        MODEL,
        "get_model",
        "One model",
        "read",
        (200, "application/json", "ModelSummary"),
        errors=READ_ERRORS,
    ),
    Route(
        "GET",
        MODEL + "/performance",
        "get_performance",
        "Performance history per window and version (realised and estimated, with bounds)",
        "read",
        (200, "application/json", "PerformanceHistory"),
        query=(
            ("from", TIMESTAMP, "windows ending after this (RFC 3339 or epoch seconds)"),
            ("to", TIMESTAMP, "windows starting before this"),
        ),
        errors=READ_ERRORS,
    ),
    Route(
        "GET",
        MODEL + "/drift",
        "get_drift",
        "Open and recent incidents, and per feature its latest tests",
        "read",
        (200, "application/json", "DriftStatus"),
        errors=READ_ERRORS,
    ),
    Route(
        "GET",
        MODEL + "/report",
        "get_report",
        "The HTML drift report of this model",
        "read",
        (200, "text/html", ""),
        errors=READ_ERRORS,
    ),
    Route(
        "POST",
        MODEL + "/retrain",
        "post_retrain",
        "Ask for a retraining (through the retrain worker's safeguards)",
        "write",
        (202, "application/json", "Accepted"),
        body="RetrainRequest",
        errors=WRITE_ERRORS,
    ),
    Route(
        "POST",
        MODEL + "/rollback",
        "post_rollback",
        "Make the previous (or a given) version active again",
        "write",
        (202, "application/json", "Accepted"),
        body="RollbackRequest",
        errors=WRITE_ERRORS,
    ),
    Route(
        "GET",
        "/v1/approvals",
        "list_approvals",
        "Retrain requests waiting for a person",
        "read",
        (200, "application/json", "ApprovalList"),
        errors=(401, 429, 503),
    ),
    Route(
        "POST",
        "/v1/approvals/{request_id}",
        "post_approval",
        "Approve or reject a retrain request",
        "write",
        (202, "application/json", "Accepted"),
        body="ApprovalDecision",
        errors=WRITE_ERRORS,
    ),
    Route(
        "PUT",
        "/v1/tenants/{tenant}/auto-retrain",
        "put_auto_retrain",
        "Switch automatic retraining on or off for a tenant",
        "write",
        (202, "application/json", "Accepted"),
        body="AutoRetrainFlag",
        errors=WRITE_ERRORS,
    ),
    Route(
        "GET",
        "/v1/alerts",
        "list_alerts",
        "Recent alerts of the caller's tenants",
        "read",
        (200, "application/json", "AlertList"),
        query=(
            (
                "after",
                {"type": "string", "maxLength": MAX_CURSOR},
                "only alerts after this id (404 when no such alert was read here; 400 when "
                f"longer than {MAX_CURSOR} characters)",
            ),
            ("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "at most"),
        ),
        errors=(400, 401, 404, 429, 503),
    ),
    Route(
        "GET",
        "/v1/alerts/stream",
        "alert_stream",
        "WebSocket: alerts pushed live (JSON text frames), resuming after ?after=<alert id>; "
        "closed (1008) when its token is revoked",
        "read",
        (101, "application/json", ""),
        query=(
            (
                "after",
                {"type": "string", "maxLength": MAX_CURSOR},
                "resume after this alert id (404 when no such alert was read here; 400 when "
                f"longer than {MAX_CURSOR} characters)",
            ),
        ),
        errors=(400, 401, 404, 429, 503),
        extra={"x-websocket": True},
    ),
)


def _path_params(path: str) -> list[dict[str, Any]]:
    names = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
    return [{"name": n, "in": "path", "required": True, "schema": NAME} for n in names]


def openapi_document(server_url: str = "/") -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        status, ctype, schema = r.ok
        content: dict[str, Any] = {ctype: {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
        if not schema:
            content = {ctype: {"schema": {"type": "string" if ctype == "text/html" else "object"}}}
        responses: dict[str, Any] = {str(status): {"description": "OK", "content": content}}
        for code in r.errors:
            responses[str(code)] = {
                "description": _ERROR_TEXT[code],
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        op: dict[str, Any] = {
            "operationId": r.name,
            "summary": r.summary,
            "parameters": _path_params(r.path)
            + [
                {"name": n, "in": "query", "required": False, "schema": s, "description": d}
                for n, s, d in r.query
            ],
            "responses": responses,
        }
        if r.scope is None:
            op["security"] = []
        else:
            op["x-scope"] = r.scope
        if r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{r.body}"}}
                },
            }
        op.update(r.extra)
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "driftwatch API",
            "version": API_VERSION,
            "description": "Drift and performance of the models a driftwatch worker monitors, "
            "and the operators' actions on retraining. Bearer tokens (DRIFTWATCH_API_TOKENS_FILE)"
            "; another tenant's objects are 404.",
        },
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


_ERROR_TEXT = {
    400: "Invalid request (parameters or body)",
    401: "Missing or invalid token",
    403: "The token lacks the write scope",
    404: "No such object for this caller (another tenant's objects are 404 too)",
    413: "Request body too large",
    415: "Body must be application/json",
    429: "Rate limit exceeded (see Retry-After)",
    503: "Not ready (recovering, rebalancing) or a peer worker did not answer",
}
