"""What the worker's API (:mod:`agents.api.server`) and its front (:mod:`agents.api.front`)
must answer the same way: JSON errors, who the caller is, and the headers between them.

Kept free of Faust, RocksDB and the report code, so the front process starts small.
"""

from __future__ import annotations

import logging
import math
import secrets

from aiohttp import web

from agents.api.auth import ANONYMOUS, Principal, RateLimiter, TokenStore

FORWARDED = "X-Driftwatch-Forwarded"
"""Set by a worker asking its peers: answer from your own state only."""
FRONT_SECRET = "X-Driftwatch-Front-Secret"
"""The per-start secret the front sends to the worker's internal server, which refuses any
request without it (the internal port is on loopback, but other local users share it)."""
FRESH_FOR = "X-Driftwatch-Fresh-For"
"""Seconds an answer of the worker stays fresh (0: it was already stale), so the front's
cache does not add its own second to the worker's: an answer is as old as the state read."""


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        error_id: str | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.error_id = error_id
        """Set when the detail was logged instead of answered (:func:`concealed`)."""


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    error_id: str | None = None,
) -> web.Response:
    error = {"code": code, "message": message}
    if error_id is not None:
        error["id"] = error_id
    return web.json_response({"error": error}, status=status, headers=headers)


def new_error_id() -> str:
    """A short id that ties an error answered to its detail in the log (8 hex digits: read
    out over the phone, unique enough among one deployment's errors of a day)."""
    return secrets.token_hex(4)


def internal_error(logger: logging.Logger, what: str) -> web.Response:
    """The 500 for the exception being handled: a generic message and an error id, the
    traceback logged with that id (call it from an ``except`` block)."""
    error_id = new_error_id()
    logger.exception("%s failed (error id %s)", what, error_id)
    return error_response(
        500, "internal_error", f"internal error (error id {error_id})", error_id=error_id
    )


def concealed(
    logger: logging.Logger,
    status: int,
    code: str,
    public: str,
    what: str,
    exc: BaseException,
    level: int = logging.ERROR,
) -> ApiError:
    """The ApiError to answer for ``exc``: ``public`` and a short error id, while the detail
    is logged with that id. An exception's text names brokers, hosts, addresses and paths
    (``KafkaError{...Connect to ipv4#10.0.0.7:9092 failed}``, ``[Errno 13] ... /var/lib/...``)
    that are the operator's to read, not the caller's."""
    error_id = new_error_id()
    logger.log(level, "API error %s: %s: %s: %s", error_id, what, type(exc).__name__, exc)
    return ApiError(status, code, f"{public} (error id {error_id})", error_id=error_id)


def http_error_response(exc: web.HTTPException, max_body_bytes: int) -> web.Response:
    """aiohttp's own refusals (no such route, method, body too large) as JSON errors."""
    if exc.status == 413:
        return error_response(413, "too_large", f"bodies are limited to {max_body_bytes} B")
    return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)


def current_principal(authorization: str, tokens: TokenStore | None) -> Principal | None:
    """Who a request with this ``Authorization`` header is, by the tokens as they are now
    (None: no valid bearer token). Also asked again by a long-lived request (the alert
    stream), so a token revoked or narrowed meanwhile is noticed."""
    if tokens is None:
        return ANONYMOUS
    kind, _, token = authorization.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        return None
    return tokens.authenticate(token.strip())


def authorize(
    authorization: str, tokens: TokenStore | None, limiter: RateLimiter | None, scope: str
) -> Principal:
    """The caller of a request with this ``Authorization`` header, rate-limited (unless
    ``limiter`` is None) and allowed ``scope``; else the ApiError to answer (401, 429, 403)."""
    principal = current_principal(authorization, tokens)
    if principal is None:
        raise ApiError(401, "unauthorized", "a valid bearer token is needed",
                       {"WWW-Authenticate": 'Bearer realm="driftwatch"'})  # fmt: skip
    if limiter is not None:
        wait = limiter.acquire(principal.name)
        if wait > 0:
            raise ApiError(429, "rate_limited", "too many requests",
                           {"Retry-After": str(max(1, math.ceil(wait)))})  # fmt: skip
    if not principal.can(scope):
        raise ApiError(403, "forbidden", f"this token lacks the {scope} scope")
    return principal
