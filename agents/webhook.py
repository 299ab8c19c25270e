"""Webhook notifier: POST each :class:`~schemas.alerts.Alert` to an HTTP endpoint, signed.

No Faust here: :class:`WebhookNotifier` is plain asyncio (aiohttp), and the app's alert agent
calls :meth:`WebhookNotifier.deliver` for each alert and writes the returned
:class:`~schemas.alerts.AlertDelivery` back to the ``alerts`` topic.

Routing
    :meth:`WebhookConfig.url_for` gives the endpoint of a tenant: its entry in
    ``tenant_urls`` if it has one (``""`` or ``"off"`` there means *no webhook for this
    tenant*), else the default ``url`` (which may be ``None``). **The caller skips tenants
    whose** ``url_for`` **is** ``None``: nothing is sent and no delivery record is written.
    (Should ``deliver`` be called for such a tenant anyway, it sends nothing and returns a
    ``failed`` delivery with ``attempts=0`` and ``target=""``.)

Request
    ``POST`` of :func:`payload` (JSON: a Slack-compatible top-level ``text`` and the whole
    alert under ``alert``) with the headers ``Content-Type: application/json``,
    ``User-Agent: driftwatch/<version>``, ``X-Driftwatch-Alert-Id`` and
    ``Idempotency-Key`` (both the ``alert_id``, the same on every retry) and, when a secret
    is configured, ``X-Driftwatch-Signature`` (see below). Redirects are not followed.

Delivery semantics: at least once
    A 2xx is ``delivered``. Connection errors, timeouts, 5xx, 408 and 429 are retried with
    exponential backoff and full jitter (``uniform(0, min(backoff_max, base * 2**(n-1)))``
    before attempt ``n+1``), or after the endpoint's ``Retry-After`` (seconds or an HTTP
    date; capped by ``backoff_max_seconds``), up to ``max_attempts`` attempts in all: one
    round; then ``failed``, marked ``retryable`` (the caller tries a later round:
    :mod:`agents.redelivery`), with the last ``Retry-After`` asked (``retry_after``: the
    later round is not before it). Any other status (3xx, other 4xx) is a permanent failure,
    reported at once with the status and a short excerpt of the response body. Because a
    request can time out after the receiver acted on it, a receiver may see an alert more
    than once: it should dedupe on ``Idempotency-Key``.

Signature (the Stripe/Slack pattern)
    ``X-Driftwatch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``.
    The timestamp is signed with the body, so a receiver can reject replays of an old
    request; it is fresh on every attempt. A receiver checks it with :func:`verify`, or the
    same few lines in any language. With aiohttp::

        from aiohttp import web
        from agents.webhook import verify

        SECRET = b"..."  # the driftwatch webhook secret

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()  # the raw bytes: verify before parsing
            header = request.headers.get("X-Driftwatch-Signature", "")
            if not verify(SECRET, header, body, tolerance_seconds=300):
                return web.Response(status=401)
            if already_seen(request.headers["Idempotency-Key"]):
                return web.Response(status=200)  # a retry of an alert handled before
            handle_alert(json.loads(body)["alert"])
            return web.Response(status=204)

Secrets
    Webhook URLs often carry a token in the path or query (Slack, Teams, ...), so neither
    the URL nor the secret is ever logged or returned: deliveries, logs and error texts name
    the endpoint by :func:`redact_url` (``scheme://host[:port]``) only. An endpoint may echo
    its URL, or just the token, in its answer: every error text (a response's excerpt, an
    exception) has the URL's secret-bearing parts taken out (:func:`scrub`: the path, the
    query, the credentials, and each path segment, query value or user name that can be a
    token - a query value or user name under 8 characters only as the URL's own text,
    ``name=value`` or ``user@`` - and the password, in any case, as written, percent-encoded
    or decoded, or JSON-escaped) before it is cut short, and a secret cut in two where the
    body's read ends loses its first part too (4 characters or more).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import importlib.metadata
import json
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

import aiohttp
from yarl import URL

from schemas.alerts import Alert, AlertDelivery, DeliveryStatus

log = logging.getLogger(__name__)

CHANNEL = "webhook"
SIGNATURE_HEADER = "X-Driftwatch-Signature"
ALERT_ID_HEADER = "X-Driftwatch-Alert-Id"
IDEMPOTENCY_HEADER = "Idempotency-Key"
DISABLED = frozenset({"", "off"})
"""Values of a ``tenant_urls`` entry (case-insensitive, stripped) meaning *no webhook*."""

RETRY_STATUSES = frozenset({408, 429})
"""Retried besides every 5xx."""

REDACTED = "<redacted>"
"""What a secret is replaced by in error texts."""

_EXCERPT_BYTES = 512
_EXCERPT_CHARS = 200
_MAX_ERROR_CHARS = 500


def _version() -> str:
    try:
        return importlib.metadata.version("driftwatch")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


USER_AGENT = f"driftwatch/{_version()}"

AttemptCallback = Callable[[int, str], None]
"""``on_attempt(attempt, outcome)``, outcome one of ``delivered``, ``retried``, ``failed``."""
SleepFn = Callable[[float], Awaitable[None]]


def _check_url(url: str, what: str) -> None:
    # The message never repeats the URL: it may carry a token.
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{what} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host")


def redact_url(url: str) -> str:
    """The endpoint of a URL without what can carry secrets: ``scheme://host[:port]``.

    >>> redact_url("https://user:pw@hooks.example.com/services/T0/B0/XYZ?token=abc")
    'https://hooks.example.com'
    >>> redact_url("http://[::1]:8080/x")
    'http://[::1]:8080'
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid url>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + ("" if port is None else f":{port}")


@dataclass(frozen=True)
class WebhookConfig:
    """Where and how to deliver alerts; validated on construction (``ValueError``)."""

    url: str | None = None
    """Default endpoint, for tenants without an entry in ``tenant_urls``. ``None``, ``""``
    or ``"off"``: no default (only the tenants listed get a webhook)."""
    tenant_urls: Mapping[str, str] = field(default_factory=dict)
    """Per-tenant endpoints; a tenant mapped to ``""`` or ``"off"`` gets no webhook."""
    secret: bytes | None = None
    """HMAC-SHA256 key of ``X-Driftwatch-Signature``; ``None``: requests are not signed."""
    timeout_seconds: float = 5.0
    """Per attempt: connecting, sending and reading the response."""
    max_attempts: int = 8
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 60.0
    max_round_wait_seconds: float = 30.0
    """Most seconds one round waits between its attempts, backoff and ``Retry-After``
    together: a wait that would pass it ends the round there, as a retryable failure, and the
    alert is tried again later (redelivery). A round then lasts at most ``max_attempts`` x
    ``timeout_seconds`` plus this (70 s by default), within the worker's stall limit
    (DRIFTWATCH_STALL_BATCH_SECONDS, 300): an endpoint answering 503 with ``Retry-After:
    60`` made one round 420 s, and the watchdog restarted the worker, round after round."""
    max_body_bytes: int = 256 * 1024
    """Largest request body sent; a larger alert fails at once (``attempts=0``)."""
    max_connections: int = 100
    """Concurrent connections of one notifier (all endpoints together)."""

    def __post_init__(self) -> None:
        url = self.url
        if url is not None:
            if not isinstance(url, str):
                raise ValueError("url must be a string or None")
            if url.strip().lower() in DISABLED:
                url = None
            else:
                url = url.strip()
                _check_url(url, "url")
        object.__setattr__(self, "url", url)
        tenants: dict[str, str] = {}
        for tenant, value in dict(self.tenant_urls).items():
            if not isinstance(tenant, str) or not isinstance(value, str):
                raise ValueError("tenant_urls maps tenant names to URL strings")
            value = value.strip()
            if value.lower() in DISABLED:
                value = ""
            else:
                _check_url(value, f"tenant_urls[{tenant!r}]")
            tenants[tenant] = value
        object.__setattr__(self, "tenant_urls", MappingProxyType(tenants))
        if self.secret is not None and (not isinstance(self.secret, bytes) or not self.secret):
            raise ValueError("secret must be non-empty bytes or None")
        if not _positive(self.timeout_seconds):
            raise ValueError("timeout_seconds must be a positive number")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ValueError("max_attempts must be an integer")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not _positive(self.backoff_base_seconds):
            raise ValueError("backoff_base_seconds must be a positive number")
        if not _positive(self.backoff_max_seconds):
            raise ValueError("backoff_max_seconds must be a positive number")
        if self.backoff_max_seconds < self.backoff_base_seconds:
            raise ValueError("backoff_max_seconds must be at least backoff_base_seconds")
        if not _positive(self.max_round_wait_seconds):
            raise ValueError("max_round_wait_seconds must be a positive number")
        for name in ("max_body_bytes", "max_connections"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer")

    def url_for(self, tenant: str) -> str | None:
        """The endpoint of ``tenant``, or ``None`` if it gets no webhook (the caller skips it).

        >>> c = WebhookConfig(url="https://a.example/h", tenant_urls={"b": "https://b.example/h",
        ...                   "quiet": "off"})
        >>> c.url_for("b"), c.url_for("other"), c.url_for("quiet")
        ('https://b.example/h', 'https://a.example/h', None)
        """
        if tenant in self.tenant_urls:
            return self.tenant_urls[tenant] or None
        return self.url

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based): full jitter."""
        cap = min(self.backoff_max_seconds, self.backoff_base_seconds * 2.0 ** (attempt - 1))
        return rng.uniform(0.0, cap)


def _positive(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


# --- signing ------------------------------------------------------------------------------


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Driftwatch-Signature`` value of ``body`` sent at ``timestamp`` (unix seconds).

    >>> sign(b"k", "1700000000", b"{}")[:16]
    't=1700000000,v1='
    """
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: bytes,
    header: str,
    body: bytes,
    tolerance_seconds: float = 300,
    now: float | None = None,
) -> bool:
    """For receivers: is ``header`` a valid signature of ``body``, made within
    ``tolerance_seconds`` of ``now`` (default: the clock)? Never raises.

    Several ``v1=`` entries are accepted (any one matching suffices), for key rotation.

    >>> h = sign(b"k", "1700000000", b"{}")
    >>> verify(b"k", h, b"{}", now=1700000010), verify(b"k", h, b"{ }", now=1700000010)
    (True, False)
    >>> verify(b"k", h, b"{}", now=1700000301), verify(b"other", h, b"{}", now=1700000010)
    (False, False)
    """
    try:
        timestamp: str | None = None
        candidates: list[str] = []
        for item in header.split(","):
            key, sep, value = item.strip().partition("=")
            if not sep:
                return False
            if key == "t":
                timestamp = value
            elif key == "v1":
                candidates.append(value)
        if timestamp is None or not candidates or not timestamp.isascii():
            return False
        if not timestamp.isdigit():
            return False
        current = time.time() if now is None else now
        if abs(current - int(timestamp)) > tolerance_seconds:
            return False
        expected = sign(secret, timestamp, body).rpartition("v1=")[2]
        ok = False
        for candidate in candidates:
            # compare_digest on bytes: a non-ASCII str would raise TypeError.
            ok |= hmac.compare_digest(expected.encode(), candidate.encode("utf-8", "replace"))
        return ok
    except Exception:
        return False


# --- payload ------------------------------------------------------------------------------


def payload(alert: Alert) -> bytes:
    """The request body: ``{"alert": alert.to_dict(), "text": title + "\\n" + text}`` as
    compact JSON with sorted keys (the same alert gives the same bytes).

    Slack incoming webhooks (and compatible receivers) show ``text`` and ignore ``alert``.
    """
    document = {"text": f"{alert.title}\n{alert.text}", "alert": alert.to_dict()}
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False
    ).encode("utf-8")


# --- the notifier -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    delivered: bool
    retryable: bool
    error: str | None = None
    retry_after: float | None = None


class WebhookNotifier:
    """Delivers alerts per a :class:`WebhookConfig`; many deliveries may run concurrently.

    One ``aiohttp.ClientSession`` per notifier, made on first use (inside the running event
    loop); :meth:`close` it when done (or use ``async with``). ``rng`` and ``sleep`` are
    injectable so tests neither depend on chance nor wait; ``on_attempt(attempt, outcome)``
    is called after every attempt (outcome ``delivered``, ``retried`` or ``failed``), e.g. to
    count attempts in a metric; its exceptions are logged and ignored.
    """

    def __init__(
        self,
        config: WebhookConfig,
        *,
        rng: random.Random | None = None,
        sleep: SleepFn = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        on_attempt: AttemptCallback | None = None,
    ) -> None:
        self.config = config
        self._rng = rng if rng is not None else random.Random()
        self._sleep = sleep
        self._clock = clock
        self._on_attempt = on_attempt
        self._session: aiohttp.ClientSession | None = None

    def url_for(self, tenant: str) -> str | None:
        """Same as :meth:`WebhookConfig.url_for`: ``None`` means skip this tenant."""
        return self.config.url_for(tenant)

    async def __aenter__(self) -> WebhookNotifier:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session (a later :meth:`deliver` opens a new one)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.config.max_connections),
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def deliver(self, alert: Alert) -> AlertDelivery:
        """POST ``alert`` to its tenant's endpoint, retrying as configured; never raises
        (except ``asyncio.CancelledError``, which propagates)."""
        url = self.config.url_for(alert.tenant)
        if url is None:
            return self._result(alert, "", DeliveryStatus.FAILED, 0, "no webhook URL for tenant")
        target = redact_url(url)
        attempts = 0
        waited = 0.0
        try:
            body = payload(alert)
            if len(body) > self.config.max_body_bytes:
                error = (
                    f"payload of {len(body)} bytes exceeds max_body_bytes "
                    f"({self.config.max_body_bytes})"
                )
                return self._failed(alert, target, attempts, error)
            session = self._get_session()
            while True:
                attempts += 1
                outcome = await self._attempt(session, url, alert.alert_id, body)
                if outcome.delivered:
                    self._notify(attempts, "delivered")
                    log.debug("alert %s delivered to %s", alert.alert_id, target)
                    return self._result(alert, target, DeliveryStatus.DELIVERED, attempts, None)
                error = scrub(outcome.error or "unknown error", url)
                if not outcome.retryable or attempts >= self.config.max_attempts:
                    self._notify(attempts, "failed")
                    return self._failed(
                        alert, target, attempts, error, outcome.retryable, outcome.retry_after
                    )
                delay = self.config.backoff(attempts, self._rng)
                if outcome.retry_after is not None:
                    delay = min(outcome.retry_after, self.config.backoff_max_seconds)
                if waited + delay > self.config.max_round_wait_seconds:
                    self._notify(attempts, "failed")
                    error += f"; the round ends (its waits would pass {waited + delay:.0f} s)"
                    # Owed a later round only for a wait asked longer than a round may wait
                    # at all: waits of a few seconds that add up past it are the endpoint's
                    # failure (they earned an hour of rounds with redelivery off).
                    asked = outcome.retry_after
                    return replace(
                        self._failed(alert, target, attempts, error, True, asked),
                        wait_asked=asked is not None and asked > self.config.max_round_wait_seconds,
                    )
                waited += delay
                self._notify(attempts, "retried")
                log.debug(
                    "alert %s to %s: attempt %d failed (%s), retrying in %.2fs",
                    alert.alert_id,
                    target,
                    attempts,
                    error,
                    delay,
                )
                await self._sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # unforeseen: a later round may not meet it
            return self._failed(alert, target, attempts, scrub(repr(exc), url), retryable=True)

    async def _attempt(
        self, session: aiohttp.ClientSession, url: str, alert_id: str, body: bytes
    ) -> _Outcome:
        headers = {
            "Content-Type": "application/json",
            ALERT_ID_HEADER: alert_id,
            IDEMPOTENCY_HEADER: alert_id,
        }
        if self.config.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.config.secret, str(int(self._clock())), body)
        try:
            async with session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                # Reading (a bounded start of) the body lets a short response's connection
                # be reused; errors reading it do not change what the status said.
                excerpt = await _excerpt(response, url)
                if 200 <= status < 300:
                    return _Outcome(delivered=True, retryable=False)
                error = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
                if status >= 500 or status in RETRY_STATUSES:
                    asked = response.headers.get("Retry-After")
                    retry_after = _retry_after(asked, self._clock())
                    return _Outcome(False, True, error, retry_after)
                return _Outcome(False, False, error)
        except aiohttp.InvalidURL as exc:
            return _Outcome(False, False, repr(exc))
        except TimeoutError:
            return _Outcome(False, True, f"timeout: no response in {self.config.timeout_seconds}s")
        except (aiohttp.ClientError, OSError) as exc:
            # str, not repr: aiohttp's reprs are long and name proxy settings.
            return _Outcome(False, True, f"{type(exc).__name__}: {exc}")

    def _notify(self, attempt: int, outcome: str) -> None:
        if self._on_attempt is None:
            return
        try:
            self._on_attempt(attempt, outcome)
        except Exception:
            log.exception("webhook on_attempt callback failed")

    def _failed(
        self,
        alert: Alert,
        target: str,
        attempts: int,
        error: str,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> AlertDelivery:
        log.warning(
            "alert %s (tenant %s) not delivered to %s after %d attempt(s): %s",
            alert.alert_id,
            alert.tenant,
            target,
            attempts,
            error,
        )
        result = self._result(alert, target, DeliveryStatus.FAILED, attempts, error, retryable)
        return result if retry_after is None else replace(result, retry_after=retry_after)

    def _result(
        self,
        alert: Alert,
        target: str,
        status: DeliveryStatus,
        attempts: int,
        error: str | None,
        retryable: bool = False,
    ) -> AlertDelivery:
        return AlertDelivery(
            alert_id=alert.alert_id,
            tenant=alert.tenant,
            model=alert.model,
            channel=CHANNEL,
            target=target,
            status=status,
            attempts=attempts,
            at=self._clock(),
            error=None if error is None else error[:_MAX_ERROR_CHARS],
            retryable=retryable,
        )


async def _excerpt(response: aiohttp.ClientResponse, url: str) -> str:
    """The start of a response body, on one line, for an error message: scrubbed of
    ``url``'s secrets before it is cut short (a cut first could keep a part of one)."""
    try:
        raw = await response.content.read(_EXCERPT_BYTES)
    except Exception:
        return ""
    text = " ".join(raw.decode("utf-8", "replace").split())
    text = scrub(text, url, cut_short=len(raw) >= _EXCERPT_BYTES)
    return text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 3] + "..."


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` asks to wait: a number of seconds, or an HTTP date (from
    ``now``); None for none, one not understood, or a date already past (backoff applies)."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if not seconds > 0:
            return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


_TOKEN_MIN_CHARS = 8
"""A path segment this long or longer can be a token (Slack's are 24, its ids 9-11)..."""
_WORD = re.compile(r"[a-z][a-z._-]*")
"""... unless it is a lower-case word (``services``, ``webhooks``) under 16 characters."""
_VALUE_MIN_CHARS = 8
"""A query value or a user name this long or longer is taken out wherever it appears; a
shorter one only as the URL's own text (``format=json``: not every ``json``, ``user@``: not
every ``user``), as free words they would take common text out with them."""
_PASSWORD_MIN_CHARS = 4
"""A password this long or longer is taken out wherever it appears (it is no common word)."""
_PARTIAL_MIN_CHARS = 4
"""A text cut short that ends in this many or more first characters of a secret loses them."""


def url_secrets(url: str) -> list[str]:
    """The strings that may carry ``url``'s secrets, longest first: the URL itself, its
    credentials, path and query, each path segment that can be a token, each query value (a
    short one: with its name, ``name=value``) and user name (a short one: with its ``@``) and
    the password, each also as percent-decoded (with ``+`` as a space or not),
    percent-encoded (a space as ``+`` or not) and JSON-escaped (``\\/``): the forms an
    endpoint's answer or an exception may quote them in.

    >>> found = url_secrets("https://h.example/services/T0AB12CD3/x?key=abc123&t=a+b/cd1234")
    >>> "T0AB12CD3" in found, "key=abc123" in found, "a+b/cd1234" in found, "a b/cd1234" in found
    (True, True, True, True)
    >>> "abc123" in found, "services" in found, "x" in found
    (False, False, False)
    """
    parts = urlsplit(url)
    found = {url}
    with contextlib.suppress(Exception):
        found.add(str(URL(url)))  # as aiohttp prints it (normalised)
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        found.add(userinfo)
        user, _, password = userinfo.partition(":")
        found.add(user if len(user) >= _VALUE_MIN_CHARS else f"{user}@")
        if len(password) >= _PASSWORD_MIN_CHARS:
            found.add(password)
    if parts.query:
        found.add(parts.query)
        for item in parts.query.split("&"):  # as written: parse_qsl made a "+" a space
            name, _, raw = item.partition("=")
            for value in {raw, unquote(raw), unquote_plus(raw)}:
                if len(value) >= _VALUE_MIN_CHARS:
                    found.add(value)
                elif value:
                    found.add(f"{name}={value}")
    if len(parts.path) > 1:
        found.add(parts.path)
        for segment in parts.path.split("/"):
            if len(segment) >= _TOKEN_MIN_CHARS and (
                len(segment) >= 16 or not _WORD.fullmatch(segment)
            ):
                found.add(segment)
    forms = set()
    for secret in found:
        for form in (
            secret,
            unquote(secret),
            quote(secret, safe=""),
            quote(unquote(secret)),
            quote_plus(secret, safe=""),
            quote_plus(unquote(secret), safe=""),
        ):
            forms.add(form)
            forms.add(form.replace("/", "\\/"))
    return sorted((f for f in forms if f and f != "@"), key=lambda f: (-len(f), f))


def scrub(text: str, url: str, cut_short: bool = False) -> str:
    """``text`` without ``url``'s secrets (:func:`url_secrets`): an aiohttp error, or a
    response body, may quote the URL or its token. ``cut_short``: ``text`` was cut where it
    ends, so a secret's beginning there is taken out too.

    >>> url = "https://hooks.example/services/T0AB12CD3/B0XY45ZQ9/Xq7tokenAbCdEf"
    >>> scrub('{"error": "invalid_token", "token": "Xq7tokenAbCdEf"}', url)
    '{"error": "invalid_token", "token": "<redacted>"}'
    >>> scrub("no route for /services/T0AB12CD3/B0XY", url, cut_short=True)
    'no route for /services/<redacted>/<redacted>'
    """
    secrets = url_secrets(url)
    for secret in secrets:  # in any case (a hex token echoed upper-case)
        text = re.sub(re.escape(secret), REDACTED, text, flags=re.IGNORECASE)
    if cut_short:
        for secret in secrets:
            for n in range(len(secret) - 1, _PARTIAL_MIN_CHARS - 1, -1):
                if text.endswith(secret[:n]):
                    return text[:-n] + REDACTED
    return text


__all__ = [
    "CHANNEL",
    "DISABLED",
    "SIGNATURE_HEADER",
    "USER_AGENT",
    "WebhookConfig",
    "WebhookNotifier",
    "payload",
    "redact_url",
    "scrub",
    "sign",
    "url_secrets",
    "verify",
]
