"""Who may call the API: bearer tokens kept as SHA-256 hashes, per-tenant scopes, rate limits.

The tokens file (``DRIFTWATCH_API_TOKENS_FILE``) holds no secrets, only hashes::

    {"tokens": [{"name": "acme-ops", "sha256": "<hex>", "tenants": ["acme"],
                 "scopes": ["read", "write"]}]}

``tenants: ["*"]`` is every tenant. ``driftwatch token`` makes a token and prints it once. A
presented token is hashed and compared with every entry in constant time, so neither the
token nor its position in the file leaks through timing. The file is re-read when it
changes, so tokens can be added and revoked without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.settings import Settings

log = logging.getLogger(__name__)

SCOPES = frozenset({"read", "write"})
ALL_TENANTS = "*"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    name: str
    tenants: frozenset[str]
    scopes: frozenset[str]

    def sees(self, tenant: str) -> bool:
        return ALL_TENANTS in self.tenants or tenant in self.tenants

    def can(self, scope: str) -> bool:
        return scope in self.scopes


ANONYMOUS = Principal("anonymous (auth off)", frozenset({ALL_TENANTS}), SCOPES)
"""The caller when ``DRIFTWATCH_API_AUTH=off``."""


class TokenFileError(ValueError):
    pass


class ApiConfigError(RuntimeError):
    pass


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh token: 32 random bytes, URL-safe, with a prefix that says what it is."""
    return "dw_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    digest: bytes


def parse_tokens(text: str) -> list[_Entry]:
    """Parse and check a tokens file.

    >>> parse_tokens('{"tokens": [{"name": "a", "sha256": "' + "0" * 64 + '", '
    ...              '"tenants": ["acme"], "scopes": ["read"]}]}')[0].principal.name
    'a'
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise TokenFileError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
        raise TokenFileError('expected {"tokens": [...]}')
    out: list[_Entry] = []
    names: set[str] = set()
    for i, item in enumerate(data["tokens"]):
        where = f"tokens[{i}]"
        if not isinstance(item, dict):
            raise TokenFileError(f"{where}: not an object")
        name, digest = item.get("name"), item.get("sha256")
        tenants, scopes = item.get("tenants"), item.get("scopes")
        if not isinstance(name, str) or not name or name in names:
            raise TokenFileError(f"{where}: a unique non-empty name is needed")
        if not isinstance(digest, str) or len(digest) != 64:
            raise TokenFileError(f"{where}: sha256 must be 64 hex digits (the token's hash)")
        try:
            raw = bytes.fromhex(digest)
        except ValueError:
            raise TokenFileError(f"{where}: sha256 is not hex") from None
        if (
            not isinstance(tenants, list)
            or not tenants
            or not all(isinstance(t, str) and t for t in tenants)
        ):
            raise TokenFileError(f'{where}: tenants must be a list of names, or ["*"]')
        if not isinstance(scopes, list) or not scopes or not set(scopes) <= SCOPES:
            raise TokenFileError(f'{where}: scopes must be ["read"] or ["read", "write"]')
        names.add(name)
        scope_set = frozenset(scopes) | ({"read"} if "write" in scopes else set())
        out.append(_Entry(Principal(name, frozenset(tenants), scope_set), raw))
    return out


@dataclass
class TokenStore:
    """The tokens file, re-read when its content changes.

    Every ``check_every`` seconds the file is read whole and its SHA-256 compared with the
    content loaded: its modification time (even with size and inode) misses a rewrite within
    one tick of the filesystem's clock, and a file moved in with an older one (``cp -p``,
    ``rsync -t``), which kept a revoked token valid until the next visible change. The file
    is small (a line a token), so reading it every few seconds costs nothing.
    """

    path: Path
    check_every: float = 2.0
    clock: Callable[[], float] = time.monotonic
    _entries: list[_Entry] = field(default_factory=list)
    _digest: bytes | None = None
    """SHA-256 of the content loaded."""
    _refused: bytes | None = None
    """SHA-256 of the last content refused as invalid: logged once, not at every check."""
    _checked: float = -1e18

    @classmethod
    def load(cls, path: str | Path) -> TokenStore:
        store = cls(Path(path))
        store._reload(force=True)
        return store

    def _reload(self, force: bool = False) -> None:
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            if force:
                raise TokenFileError(f"cannot read {self.path}: {exc.strerror}") from None
            log.error("tokens file %s unreadable (%s): keeping the tokens loaded before",
                      self.path, exc.strerror)  # fmt: skip
            return
        digest = hashlib.sha256(raw).digest()
        if not force and digest in (self._digest, self._refused):
            return
        try:
            entries = parse_tokens(raw.decode("utf-8"))
        except (TokenFileError, UnicodeDecodeError) as exc:
            if force:
                raise TokenFileError(f"{self.path}: {exc}") from None
            self._refused = digest
            log.error("tokens file %s is invalid (%s): keeping the tokens loaded before",
                      self.path, exc)  # fmt: skip
            return
        self._entries, self._digest, self._refused = entries, digest, None
        log.info("API tokens: %d loaded from %s", len(entries), self.path)

    def authenticate(self, token: str) -> Principal | None:
        now = self.clock()
        if now - self._checked >= self.check_every:
            self._checked = now
            self._reload()
        # A header's bytes that are not text reach here as surrogate escapes: such a token
        # matches none (encoding it strictly raised, a 500 before any check).
        presented = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found: Principal | None = None
        for entry in self._entries:  # every entry compared: no early exit to time
            if hmac.compare_digest(presented, entry.digest):
                found = entry.principal
        return found

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class RateLimiter:
    """A token bucket per caller: ``rate`` requests a second, bursts of ``burst``."""

    rate: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def acquire(self, who: str) -> float:
        """0 when the request may go ahead; otherwise seconds until it could."""
        now = self.clock()
        tokens, last = self._buckets.get(who, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[who] = (tokens - 1.0, now)
            return 0.0
        self._buckets[who] = (tokens, now)
        return (1.0 - tokens) / self.rate if self.rate > 0 else 60.0


def load_tokens(settings: Settings, announce: bool = True) -> TokenStore | None:
    """The token store; None when auth is explicitly off. Refuses to run open by accident.
    ``announce``: log that auth is off (the worker does; its API front need not repeat it)."""
    if settings.api_auth.strip().lower() == "off":
        if announce:
            log.warning(
                "API AUTHENTICATION IS OFF (DRIFTWATCH_API_AUTH=off): anyone who reaches port %d "
                "can read every tenant's models and act on their retraining",
                settings.api_port,
            )
        return None
    if not settings.api_tokens_file:
        raise ApiConfigError(
            "the API needs tokens: set DRIFTWATCH_API_TOKENS_FILE (see `driftwatch token`), "
            "set DRIFTWATCH_API_PORT=0 to turn the API off, or DRIFTWATCH_API_AUTH=off to run "
            "it without authentication"
        )
    try:
        return TokenStore.load(settings.api_tokens_file)
    except TokenFileError as exc:
        raise ApiConfigError(f"DRIFTWATCH_API_TOKENS_FILE: {exc}") from None
