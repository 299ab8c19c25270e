"""The API front (:mod:`agents.api.front`) as a child of the worker.

Started when the worker's internal web server starts, stopped when it stops, started again
(with a growing pause if it keeps failing) when it exits on its own. The front dies with the
worker: it asks the kernel for SIGTERM when its parent thread dies, and that thread is this
module's, which lives as long as the front does. Its request counts come back on its stdout
and go into the worker's metrics, so /metrics still counts every API request.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

from agents.api.front import Record
from agents.metrics import WorkerMetrics
from runtime.settings import Settings

log = logging.getLogger(__name__)

RESTART_PAUSE = (0.5, 30.0)
"""First and longest pause before starting a front that exited again (doubling)."""
HEALTHY_RUN_SECONDS = 60.0
"""A front that ran this long starts the pauses over."""


def free_local_port() -> int:
    """A port free on 127.0.0.1 now (the internal server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def apply_report(metrics: WorkerMetrics, report: dict[str, Any]) -> None:
    """A front's counts (:meth:`agents.api.front.Tally.take`) into the worker's metrics."""
    for route, method, status, n in report.get("requests", []):
        metrics.api_requests.labels(route, method, str(status)).inc(n)
    for route, values in report.get("seconds", {}).items():
        histogram = metrics.api_seconds.labels(route)
        for value in values:
            histogram.observe(value)


def record_into(metrics: WorkerMetrics) -> Record:
    """A front ``record`` callback counting straight into ``metrics`` (a front in-process)."""

    def record(route: str, method: str, status: int, seconds: float) -> None:
        metrics.api_requests.labels(route, method, str(status)).inc()
        metrics.api_seconds.labels(route).observe(seconds)

    return record


@dataclass
class FrontProcess:
    settings: Settings
    upstream: str
    secret: str
    metrics: WorkerMetrics
    argv: list[str] = field(default_factory=lambda: [sys.executable, "-m", "agents.api.front"])
    restart_pause: tuple[float, float] = RESTART_PAUSE
    starts: int = 0
    """How many fronts were started (restarts are ``starts - 1``)."""
    _proc: subprocess.Popen[bytes] | None = None
    _thread: threading.Thread | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return None if proc is None or proc.poll() is not None else proc.pid

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._supervise, name="api-front", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the front (SIGTERM, then SIGKILL after ``timeout``) and do not restart it."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("API front (pid %d) did not stop in %.0f s: killed", proc.pid, timeout)
                proc.kill()
                proc.wait()
            log.info("API front (pid %d) stopped", proc.pid)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _payload(self) -> bytes:
        return json.dumps({
            "settings": self.settings.as_dict(redact=True), "upstream": self.upstream,
            "secret": self.secret, "parent": os.getpid(),
        }).encode()  # fmt: skip

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        # Spawned from this thread, which outlives the front: PR_SET_PDEATHSIG is about the
        # thread that started the child, not the process.
        with self._lock:
            if self._stopping.is_set():
                return None
            proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True
            )
            self._proc = proc
            self.starts += 1
        assert proc.stdin is not None
        try:  # settings and the secret on stdin: never in the environment or argv (ps)
            proc.stdin.write(self._payload())
            proc.stdin.close()
        except OSError as exc:
            log.error("API front (pid %d) did not take its settings: %r", proc.pid, exc)
        log.info("API front started (pid %d)", proc.pid)
        return proc

    def _supervise(self) -> None:
        pause = self.restart_pause[0]
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                proc = self._spawn()
            except OSError as exc:
                log.error("API front could not be started (%r): trying again in %.1f s", exc,
                          pause)  # fmt: skip
            else:
                if proc is None:
                    return
                assert proc.stdout is not None
                with proc.stdout:
                    self._read_reports(proc.stdout)
                code = proc.wait()
                if self._stopping.is_set():
                    return
                ran = time.monotonic() - started
                if ran >= HEALTHY_RUN_SECONDS:
                    pause = self.restart_pause[0]
                log.error("API front (pid %d) exited (%s) after %.1f s: starting it again in "
                          "%.1f s", proc.pid, _exit_status(code), ran, pause)  # fmt: skip
            if self._stopping.wait(pause):
                return
            pause = min(pause * 2, self.restart_pause[1])

    def _read_reports(self, stream: IO[bytes]) -> None:
        for line in stream:  # until the front exits
            try:
                apply_report(self.metrics, json.loads(line))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                log.debug("API front: not a report: %r (%r)", line[:200], exc)


def _exit_status(code: int) -> str:
    """How a child ended, from ``Popen.returncode``.

    >>> _exit_status(-9), _exit_status(3)
    ('signal SIGKILL', 'code 3')
    """
    if code >= 0:
        return f"code {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"
