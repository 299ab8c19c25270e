"""An on-disk model registry: versioned artifacts, the active version, and how it got there.

Layout under ``root``::

    <tenant>/<model>/versions/<version>/model.joblib   the pickled model (none if external)
    <tenant>/<model>/versions/<version>/meta.json      ModelVersion, with the artifact's sha256
    <tenant>/<model>/active.json                       the serving version and the one before
    <tenant>/<model>/history.jsonl                     every switch, oldest first
    <tenant>/<model>/counter                           the last r<N> ever handed out

Tenant, model and version are path components, so each must be a safe name
(:func:`schemas.names.validate_name`: the rule the worker already applies to every event it
takes in; here it is the last line of defence, not the first).

Crash safety comes from the file system, not from a database: a version is assembled in a
temporary directory and appears with one ``rename``, ``active.json`` is swapped with one
``replace``, and everything is fsynced before it is published. A crash leaves at worst a
``.tmp-*`` entry, which readers never look at and :meth:`ModelRegistry.cleanup` removes.

One writer process per registry is assumed (the retrain worker); the operators' CLI may write
too, so writes of one (tenant, model) hold an exclusive ``flock`` on its ``.lock`` file.
Readers take no lock: every file they read is replaced atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped]

from schemas.names import validate_name

__all__ = ["ModelRegistry", "ModelVersion", "RegistryError", "importances_of", "validate_name"]

IMPORTANCES = "feature_importances"
"""Key in a version's ``extra``: feature -> importance (sum 1), as training recorded it."""

log = logging.getLogger(__name__)

ARTIFACT = "model.joblib"
META = "meta.json"
ACTIVE = "active.json"
HISTORY = "history.jsonl"
COUNTER = "counter"
LOCK = ".lock"
TMP_PREFIX = ".tmp-"
"""Names of entries that are not published yet; a crash may leave them behind."""
FORMAT = 1

_REGISTERED = re.compile(r"r([1-9][0-9]*)")
_TMP_VERSION = re.compile(re.escape(TMP_PREFIX) + r"r([1-9][0-9]*)-")


def importances_of(version: ModelVersion | None) -> dict[str, float]:
    """The feature importances training recorded for ``version`` (empty if none: an older or
    external version).

    >>> v = ModelVersion("acme", "fraud", "r1", 0.0, None, None, 1, {}, "", None,
    ...                  {"feature_importances": {"amount": 0.75, "age": 0.25}})
    >>> importances_of(v)
    {'amount': 0.75, 'age': 0.25}
    """
    if version is None:
        return {}
    raw = version.extra.get(IMPORTANCES)
    if not isinstance(raw, dict):
        return {}
    out: dict[str, float] = {}
    for k, v in raw.items():
        if isinstance(v, int | float) and math.isfinite(v) and v >= 0:
            out[str(k)] = float(v)
    return out


class RegistryError(Exception):
    """The registry cannot do what was asked: unknown version, bad checksum, no artifact."""


@dataclass(frozen=True)
class ModelVersion:
    tenant: str
    model: str
    version: str
    created_at: float
    parent: str | None
    """The version that was serving when this one was trained (what it was meant to beat)."""
    training_window: tuple[float, float] | None
    rows: int
    metrics: dict[str, float]
    sha256: str
    """Of ``model.joblib``; empty for an external version (no artifact)."""
    request_id: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def external(self) -> bool:
        return bool(self.extra.get("external"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "model": self.model,
            "version": self.version,
            "created_at": self.created_at,
            "parent": self.parent,
            "training_window": None if self.training_window is None else list(self.training_window),
            "rows": self.rows,
            "metrics": {k: v if math.isfinite(v) else None for k, v in self.metrics.items()},
            "sha256": self.sha256,
            "request_id": self.request_id,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelVersion:
        """The inverse of :meth:`to_dict`.

        >>> v = ModelVersion("acme", "fraud", "r1", 0.0, "v1", (1.0, 2.0), 10, {"pr_auc": 0.8},
        ...                  "ab", "req-1")
        >>> ModelVersion.from_dict(v.to_dict()) == v
        True
        """
        window = data.get("training_window")
        parent = data.get("parent")
        request_id = data.get("request_id")
        return cls(
            tenant=str(data["tenant"]),
            model=str(data["model"]),
            version=str(data["version"]),
            created_at=float(data["created_at"]),
            parent=None if parent is None else str(parent),
            training_window=None if window is None else (float(window[0]), float(window[1])),
            rows=int(data["rows"]),
            metrics={
                str(k): math.nan if v is None else float(v)
                for k, v in dict(data.get("metrics") or {}).items()
            },
            sha256=str(data.get("sha256") or ""),
            request_id=None if request_id is None else str(request_id),
            extra=dict(data.get("extra") or {}),
        )


class ModelRegistry:
    """Versions of each (tenant, model) stream's model, and which one is active."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ paths

    def _stream_dir(self, tenant: str, model: str) -> Path:
        return self.root / validate_name(tenant, "tenant") / validate_name(model, "model")

    def _version_dir(self, tenant: str, model: str, version: str) -> Path:
        return self._stream_dir(tenant, model) / "versions" / validate_name(version, "version")

    @contextlib.contextmanager
    def _locked(self, tenant: str, model: str) -> Iterator[Path]:
        """The stream's directory, created if need be, under its exclusive write lock."""
        directory = self._stream_dir(tenant, model)
        (directory / "versions").mkdir(parents=True, exist_ok=True)
        with open(directory / LOCK, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield directory
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    # ------------------------------------------------------------------ writing

    def register(
        self,
        tenant: str,
        model: str,
        artifact: Any,
        *,
        parent: str | None,
        training_window: tuple[float, float] | None,
        rows: int,
        metrics: dict[str, float],
        request_id: str | None = None,
        extra: dict[str, Any] | None = None,
        created_at: float | None = None,
    ) -> ModelVersion:
        """Store ``artifact`` as the next version ``r<N>``; it is not activated.

        Idempotent per ``request_id``: a retrain consumer that crashed after registering
        and redoes the request gets the version it made the first time, not a twin.
        """
        extra = dict(extra or {})
        json.dumps(extra)  # not JSON: fail before anything is written
        with self._locked(tenant, model) as directory:
            if request_id is not None:
                existing = self.find_request(tenant, model, request_id)
                if existing is not None:
                    return existing
            version = f"r{self._reserve_number(directory)}"
            tmp = directory / f"{TMP_PREFIX}{version}-{uuid.uuid4().hex}"
            try:
                tmp.mkdir()
                path = tmp / ARTIFACT
                joblib.dump(artifact, path)
                _fsync_file(path)
                meta = ModelVersion(
                    tenant=tenant,
                    model=model,
                    version=version,
                    created_at=time.time() if created_at is None else float(created_at),
                    parent=parent,
                    training_window=None
                    if training_window is None
                    else (float(training_window[0]), float(training_window[1])),
                    rows=int(rows),
                    metrics={str(k): float(v) for k, v in metrics.items()},
                    sha256=_sha256(path.read_bytes()),
                    request_id=request_id,
                    extra=extra,
                )
                return self._publish(directory, tmp, meta)
            except BaseException:
                # Not a crash: tidy up now. The number stays used (see _reserve_number).
                shutil.rmtree(tmp, ignore_errors=True)
                raise

    def register_external(
        self,
        tenant: str,
        model: str,
        version: str,
        *,
        metrics: dict[str, float] | None = None,
        created_at: float | None = None,
    ) -> ModelVersion:
        """Record a version trained outside driftwatch (no artifact), so that it can be a
        parent and a rollback target. Registering the same name again returns the record.

        ``r<N>`` names are refused: they are the registry's own, and an outside ``r7`` would
        collide with the one it will hand out.
        """
        validate_name(version, "version")
        if _REGISTERED.fullmatch(version):
            raise RegistryError(f"{version!r}: r<N> names are reserved for registered versions")
        with self._locked(tenant, model) as directory:
            if (directory / "versions" / version / META).exists():
                return self.get(tenant, model, version)
            tmp = directory / f"{TMP_PREFIX}{version}-{uuid.uuid4().hex}"
            meta = ModelVersion(
                tenant=tenant,
                model=model,
                version=version,
                created_at=time.time() if created_at is None else float(created_at),
                parent=None,
                training_window=None,
                rows=0,
                metrics={str(k): float(v) for k, v in (metrics or {}).items()},
                sha256="",
                request_id=None,
                extra={"external": True},
            )
            try:
                tmp.mkdir()
                return self._publish(directory, tmp, meta)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise

    def _reserve_number(self, directory: Path) -> int:
        """The next r<N>, durably marked as used *before* anything is written with it, so a
        number is never handed out twice, whatever crashes or gets deleted afterwards."""
        used = [_read_counter(directory / COUNTER)]
        for entry in (directory / "versions").iterdir():
            match = _REGISTERED.fullmatch(entry.name)
            if match:
                used.append(int(match.group(1)))
        for entry in directory.iterdir():
            match = _TMP_VERSION.match(entry.name)
            if match:
                used.append(int(match.group(1)))
        number = max(used) + 1
        _atomic_write(directory / COUNTER, f"{number}\n".encode())
        return number

    def _publish(self, directory: Path, tmp: Path, meta: ModelVersion) -> ModelVersion:
        """Write ``meta.json`` into the assembled ``tmp`` and make it the version directory."""
        meta_path = tmp / META
        payload = {"format": FORMAT, **meta.to_dict()}
        meta_path.write_bytes(json.dumps(payload, indent=2, allow_nan=False).encode() + b"\n")
        _fsync_file(meta_path)
        _fsync_dir(tmp)
        final = directory / "versions" / meta.version
        os.rename(tmp, final)  # never merges: an existing version dir is not empty
        _fsync_dir(final.parent)
        return meta

    def activate(
        self,
        tenant: str,
        model: str,
        version: str,
        *,
        reason: str,
        at: float | None = None,
        request_id: str | None = None,
    ) -> ModelVersion:
        """Make ``version`` the serving one. Its artifact is verified first: a switch to a
        model that cannot be loaded would be an outage. ``request_id``: the request that
        asked for it, recorded (a request read again is then known as done).

        Activating the version that is already active changes nothing (and records
        nothing), so :meth:`previous_active` keeps pointing at a real rollback target.
        """
        self.get(tenant, model, version)  # unknown: fail before creating anything
        with self._locked(tenant, model) as directory:
            target = self.get(tenant, model, version)
            if not target.external:
                self._read_artifact(target)  # raises RegistryError on a bad checksum
            current = _read_json(directory / ACTIVE)
            previous = None if current is None else current.get("version")
            if previous == version:
                return target
            record = {
                "version": version,
                "previous": previous,
                "reason": str(reason),
                "at": time.time() if at is None else float(at),
            }
            if request_id is not None:
                record["request_id"] = request_id
            line = json.dumps(record, separators=(",", ":"))
            _atomic_write(directory / ACTIVE, line.encode() + b"\n")
            # After the switch: a crash in between loses an audit line, never the switch.
            with open(directory / HISTORY, "ab") as f:
                f.write(line.encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
            return target

    def cleanup(self) -> int:
        """Remove what interrupted writes left (``.tmp-*`` entries); how many were removed."""
        removed = 0
        for tenant, model in self._stream_dirs():
            with self._locked(tenant, model) as directory:
                for parent in (directory, directory / "versions"):
                    for entry in parent.iterdir():
                        if not entry.name.startswith(TMP_PREFIX):
                            continue
                        if entry.is_dir() and not entry.is_symlink():
                            shutil.rmtree(entry)
                        else:
                            entry.unlink()
                        removed += 1
                        log.info("registry: removed leftover %s", entry)
        return removed

    # ------------------------------------------------------------------ reading

    def versions(self, tenant: str, model: str) -> list[ModelVersion]:
        """Complete versions, oldest first (by ``created_at``, then by ``r<N>``)."""
        directory = self._stream_dir(tenant, model) / "versions"
        if not directory.is_dir():
            return []
        out = []
        for entry in directory.iterdir():
            if entry.name.startswith(".") or not (entry / META).is_file():
                continue
            try:
                out.append(self._read_meta(entry))
            except RegistryError as exc:
                log.warning("registry: skipping %s: %s", entry, exc)
        return sorted(out, key=lambda v: (v.created_at, *_version_key(v.version)))

    def get(self, tenant: str, model: str, version: str) -> ModelVersion:
        directory = self._version_dir(tenant, model, version)
        if not (directory / META).is_file():
            raise RegistryError(f"{tenant}/{model} has no version {version!r}")
        return self._read_meta(directory)

    def find_request(self, tenant: str, model: str, request_id: str) -> ModelVersion | None:
        for v in self.versions(tenant, model):
            if v.request_id == request_id:
                return v
        return None

    def active(self, tenant: str, model: str) -> ModelVersion | None:
        record = _read_json(self._stream_dir(tenant, model) / ACTIVE)
        if record is None:
            return None
        return self.get(tenant, model, str(record["version"]))

    def last_switch(self, tenant: str, model: str) -> dict[str, Any] | None:
        """The last activation (``version``, ``previous``, ``reason``, ``at``), as
        ``active.json`` holds it: replaced atomically, never behind (the history file is
        appended after it, and a crash in between leaves the history one switch short)."""
        return _read_json(self._stream_dir(tenant, model) / ACTIVE)

    def switch_for(self, tenant: str, model: str, request_id: str) -> dict[str, Any] | None:
        """The switch made for ``request_id``, if one was (the last one is read from
        ``active.json`` too: a crash can leave the history one switch short)."""
        last = self.last_switch(tenant, model) or {}
        if last.get("request_id") == request_id:
            return last
        return next(
            (r for r in self.history(tenant, model) if r.get("request_id") == request_id), None
        )

    def previous_active(self, tenant: str, model: str) -> ModelVersion | None:
        """The version active before the current one: the rollback target."""
        record = _read_json(self._stream_dir(tenant, model) / ACTIVE)
        if record is None or record.get("previous") is None:
            return None
        return self.get(tenant, model, str(record["previous"]))

    def history(self, tenant: str, model: str) -> list[dict[str, Any]]:
        """Every activation, oldest first. A line torn by a crash is skipped."""
        path = self._stream_dir(tenant, model) / HISTORY
        if not path.is_file():
            return []
        out = []
        for line in path.read_bytes().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    def load(self, tenant: str, model: str, version: str) -> Any:
        """Unpickle a version's artifact, after checking it is the one that was registered:
        unpickling runs code, so a file that changed since must never get that far."""
        meta = self.get(tenant, model, version)
        data = self._read_artifact(meta)
        return joblib.load(io.BytesIO(data))

    def streams(self) -> list[tuple[str, str]]:
        """(tenant, model) pairs with at least one version or an active one, sorted."""
        out = []
        for tenant, model in self._stream_dirs():
            directory = self.root / tenant / model
            if (directory / ACTIVE).is_file() or self.versions(tenant, model):
                out.append((tenant, model))
        return out

    # ------------------------------------------------------------------ internals

    def _stream_dirs(self) -> list[tuple[str, str]]:
        out = []
        for tenant_dir in sorted(self.root.iterdir()):
            if not tenant_dir.is_dir() or not _is_name(tenant_dir.name):
                continue
            for model_dir in sorted(tenant_dir.iterdir()):
                if model_dir.is_dir() and _is_name(model_dir.name):
                    out.append((tenant_dir.name, model_dir.name))
        return out

    def _read_meta(self, directory: Path) -> ModelVersion:
        try:
            data = json.loads((directory / META).read_bytes())
            meta = ModelVersion.from_dict(data)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise RegistryError(f"unreadable {directory / META}: {exc}") from exc
        if meta.version != directory.name:
            raise RegistryError(f"{directory / META} describes {meta.version!r}")
        return meta

    def _read_artifact(self, meta: ModelVersion) -> bytes:
        """The artifact's bytes, read once and checked against the recorded sha256, so what
        is verified is exactly what gets unpickled."""
        if meta.external or not meta.sha256:
            raise RegistryError(
                f"{meta.tenant}/{meta.model} {meta.version} has no artifact (external version)"
            )
        path = self._version_dir(meta.tenant, meta.model, meta.version) / ARTIFACT
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RegistryError(f"cannot read {path}: {exc}") from exc
        digest = _sha256(data)
        if digest != meta.sha256:
            raise RegistryError(
                f"checksum mismatch for {path}: sha256 {digest}, registered {meta.sha256}"
            )
        return data


# --- helpers ---------------------------------------------------------------------------------


def _is_name(name: str) -> bool:
    try:
        validate_name(name)
    except ValueError:
        return False
    return True


def _version_key(version: str) -> tuple[int, str]:
    match = _REGISTERED.fullmatch(version)
    return (int(match.group(1)), "") if match else (0, version)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_counter(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except FileNotFoundError:
        return 0
    except ValueError as exc:
        raise RegistryError(f"corrupt version counter {path}") from exc


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise RegistryError(f"unreadable {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise RegistryError(f"unreadable {path}: not a JSON object")
    return data


def _atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` all at once: a temporary file, fsync, rename, fsync."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (a directory entry is data of the directory)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
