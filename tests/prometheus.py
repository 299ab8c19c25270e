"""Prometheus for tests: the Debian tools (``promtool``, ``prometheus``, ``amtool``), installed on
first use, and a real ``prometheus`` server run as a context manager.

CI runs on a clean machine, so the tests install what they need themselves:
``ensure_prometheus()`` runs ``apt-get update`` and ``apt-get install -y
--no-install-recommends prometheus`` (as root) when the binaries are missing, once per machine
(a file lock keeps concurrent test processes from running apt-get twice). Debian's package
would start a system service on port 9090; while installing, a ``policy-rc.d`` that forbids
starting services is put in place when the machine has none, and the servers started here
listen on free ports of their own anyway.

``PrometheusServer`` starts ``prometheus`` with its own temporary storage on
``127.0.0.1:<free port>``, scraping the given targets every second and evaluating the given
rule files every second, waits for ``/-/ready`` and offers ``query``, ``alerts`` and
``targets`` helpers over the HTTP API::

    with PrometheusServer(["127.0.0.1:9108"], rule_files=[RULES]) as prom:
        prom.wait_for(lambda: prom.query("up") != [], timeout=30)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
METRICS_DOC = REPO_ROOT / "docs" / "metrics.md"

# Debian installs the binaries in /usr/bin; look there too in case PATH is minimal.
_EXTRA_BIN_DIRS = ("/usr/bin", "/usr/local/bin", "/usr/sbin")
_LOCK_FILE = Path(tempfile.gettempdir()) / "driftwatch-prometheus-install.lock"
_POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
_APT_TIMEOUT_SECONDS = 600


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in _EXTRA_BIN_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    with _LOCK_FILE.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _services_not_started() -> Iterator[None]:
    """Forbid ``invoke-rc.d`` to start services while a package installs (Debian's
    ``policy-rc.d`` protocol: exit 101 = action forbidden), unless a policy already exists."""
    if _POLICY_RC_D.exists():
        yield
        return
    _POLICY_RC_D.write_text("#!/bin/sh\n# driftwatch tests: do not start services\nexit 101\n")
    _POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        _POLICY_RC_D.unlink(missing_ok=True)


def _run(command: list[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=_APT_TIMEOUT_SECONDS,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {result.returncode}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )


def _ensure_debian_tools(package: str, binaries: Sequence[str]) -> list[str]:
    """Paths of ``binaries``, installing Debian's ``package`` first if any is missing."""

    def find() -> list[str] | None:
        paths = [_which(b) for b in binaries]
        return None if None in paths else [p for p in paths if p is not None]

    found = find()
    if found:
        return found
    with _install_lock():
        found = find()  # another process may have installed it meanwhile
        if found:
            return found
        if shutil.which("apt-get") is None:
            raise RuntimeError(f"{', '.join(binaries)} not found and there is no apt-get")
        if os.geteuid() != 0:
            raise RuntimeError(
                f"{', '.join(binaries)} not found; install Debian's {package!r} package "
                "(apt-get install prometheus) or run the tests as root"
            )
        with _services_not_started():
            _run(["apt-get", "update"])
            _run(["apt-get", "install", "-y", "--no-install-recommends", package])
        found = find()
    if not found:
        raise RuntimeError(f"installed {package!r} but {', '.join(binaries)} is still missing")
    return found


def ensure_prometheus() -> tuple[str, str]:
    """Paths of ``promtool`` and ``prometheus``; installs Debian's package when missing."""
    promtool, prometheus = _ensure_debian_tools("prometheus", ["promtool", "prometheus"])
    return promtool, prometheus


def ensure_amtool() -> str:
    """Path of Alertmanager's ``amtool``; installs Debian's ``prometheus-alertmanager``."""
    (amtool,) = _ensure_debian_tools("prometheus-alertmanager", ["amtool"])
    return amtool


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    """Poll ``predicate`` until it is true (returns True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class PrometheusServer:
    """A real ``prometheus`` on 127.0.0.1 with temporary storage, for the duration of a
    ``with`` block.

    ``targets`` are ``host:port`` strings scraped (at ``/metrics``) as job ``job_name``, or a
    mapping job name -> targets. Scrapes and rule evaluations run every ``interval``.
    """

    def __init__(
        self,
        targets: Sequence[str] | Mapping[str, Sequence[str]],
        rule_files: Sequence[str | os.PathLike[str]] = (),
        *,
        job_name: str = "driftwatch-worker",
        interval: str = "1s",
        binary: str | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.jobs: dict[str, list[str]] = (
            {job: list(t) for job, t in targets.items()}
            if isinstance(targets, Mapping)
            else {job_name: list(targets)}
        )
        self.rule_files = [str(Path(f).resolve()) for f in rule_files]
        self.interval = interval
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.port = 0
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    # -- lifecycle ---------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The prometheus.yml this server runs with."""
        return {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": self.rule_files,
            "scrape_configs": [
                {
                    "job_name": job,
                    "scrape_interval": self.interval,
                    "scrape_timeout": self.interval,
                    "static_configs": [{"targets": targets}],
                }
                for job, targets in self.jobs.items()
            ],
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self._dir is not None, "server not started"
        return self._dir / "prometheus.log"

    def log_text(self) -> str:
        """What the server wrote to stdout/stderr so far (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except (AssertionError, OSError):
            return ""

    def __enter__(self) -> PrometheusServer:
        binary = self.binary or ensure_prometheus()[1]
        self._dir = Path(tempfile.mkdtemp(prefix="driftwatch-prometheus-"))
        config_path = self._dir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        try:
            for _attempt in range(3):  # the free port may be taken before prometheus binds it
                self.port = free_port()
                self._start(binary, config_path)
                if self._wait_ready():
                    return self
                self._stop()
            raise RuntimeError(f"prometheus did not become ready:\n{self.log_text()[-4000:]}")
        except BaseException:
            self._cleanup()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._cleanup()

    def _start(self, binary: str, config_path: Path) -> None:
        assert self._dir is not None
        storage = self._dir / f"data-{self.port}"
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={storage}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=info",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self._dir,
        )

    def _wait_ready(self) -> bool:
        def ready() -> bool:
            assert self._process is not None
            if self._process.poll() is not None:
                raise _Exited()
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        try:
            return wait_for(ready, self.startup_timeout, interval=0.1)
        except _Exited:
            return False

    def _stop(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(timeout=15)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _cleanup(self) -> None:
        self._stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # -- HTTP API ----------------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data`` (raises on an error status)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"/api/v1/{path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result: ``[{"metric": {...}, "value": [ts, "v"]}, ...]``."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else []
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Active (pending or firing) alerts: ``[{"labels": ..., "state": ...}, ...]``."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets with their ``health`` and ``lastError``."""
        targets: list[dict[str, Any]] = self.api("targets")["activeTargets"]
        return targets

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        return wait_for(predicate, timeout)


class _Exited(Exception):
    """prometheus exited before it became ready."""


# -- docs/metrics.md and PromQL ---------------------------------------------------------------


@dataclass(frozen=True)
class DocumentedMetric:
    name: str
    type: str  # counter, gauge, histogram
    labels: frozenset[str]


_METRIC_ROW = re.compile(
    r"^\|\s*`((?:driftwatch|process)_[a-z0-9_]+)`\s*\|\s*(\w+)\s*\|([^|]*)\|", re.M
)


def documented_metrics(path: Path = METRICS_DOC) -> dict[str, DocumentedMetric]:
    """The metric tables of docs/metrics.md: name -> type and label names."""
    metrics: dict[str, DocumentedMetric] = {}
    for m in _METRIC_ROW.finditer(path.read_text()):
        name, kind, labels = m.group(1), m.group(2), m.group(3)
        # `kind` (`statistical`, `performance`): the parenthesis lists values, not labels
        names = re.findall(r"`([a-z_][a-z0-9_]*)`", re.sub(r"\([^)]*\)", "", labels))
        metrics[name] = DocumentedMetric(name, kind, frozenset(names))
    return metrics


def exposed_series(metrics: Mapping[str, DocumentedMetric]) -> dict[str, frozenset[str]]:
    """Series names Prometheus stores for the documented metrics -> their label names.

    A histogram ``x`` is stored as ``x_bucket`` (with ``le``), ``x_sum`` and ``x_count``; there
    is no series named ``x`` itself."""
    series: dict[str, frozenset[str]] = {}
    for metric in metrics.values():
        if metric.type == "histogram":
            series[f"{metric.name}_bucket"] = metric.labels | {"le"}
            series[f"{metric.name}_sum"] = metric.labels
            series[f"{metric.name}_count"] = metric.labels
        else:
            series[metric.name] = metric.labels
    return series


# Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})

_PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
     "offset", "bool", "atan2", "inf", "nan", "Inf", "NaN", "start", "end"}
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_CLAUSE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a lexical approximation that is exact for
    the expressions in this repository: no metric-less selectors, no ``__name__`` matchers)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _CLAUSE.sub(" ", text)  # by (...), on (...), ...
    names = set()
    for m in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        word, call = m.group(1), m.group(2)
        if call or word in _PROMQL_KEYWORDS:
            continue  # a function or an aggregation, or a keyword
        names.add(word)
    return names


def selector_labels(expr: str) -> list[tuple[str, set[str]]]:
    """``(metric, {label names matched})`` for every ``metric{...}`` selector in ``expr``."""
    text = _STRING.sub('""', expr)
    out = []
    for m in _SELECTOR.finditer(text):
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", m.group(2)))
        out.append((m.group(1), labels))
    return out
