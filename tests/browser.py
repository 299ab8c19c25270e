"""Headless Chromium for the report's browser test and benchmark.

CI runs on a clean Debian machine as root, so ``ensure_chromium`` installs Debian's
``chromium`` package itself when it is missing. Every run gets a fresh profile directory and
the flags that keep Chromium from reaching out to the network: without
``--disable-background-networking`` and friends it waits on connections that a closed network
never answers, and hangs.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
INSTALL_TIMEOUT_SECONDS = 900.0
RUN_TIMEOUT_SECONDS = 120.0

BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def ensure_chromium() -> str:
    """Path of a Chromium binary; installs Debian's ``chromium`` package if there is none."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env, timeout=INSTALL_TIMEOUT_SECONDS)
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
        check=True,
        env=env,
        timeout=INSTALL_TIMEOUT_SECONDS,
    )
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"installed the chromium package but {CHROMIUM} is missing")
    return CHROMIUM


def run_chromium(
    args: list[str],
    *,
    javascript: bool = True,
    virtual_time_budget_ms: int | None = 5000,
    timeout: float = RUN_TIMEOUT_SECONDS,
) -> subprocess.CompletedProcess[bytes]:
    """Run headless Chromium once with a fresh profile; ``args`` go after the base flags.

    ``--virtual-time-budget`` lets the page finish loading (and any script run) before a dump or
    screenshot is taken, without a wall-clock sleep.
    """
    binary = ensure_chromium()
    profile = tempfile.mkdtemp(prefix="dw-chromium-")
    try:
        cmd = [binary, *BASE_FLAGS, f"--user-data-dir={profile}"]
        if virtual_time_budget_ms is not None:
            cmd.append(f"--virtual-time-budget={virtual_time_budget_ms}")
        if not javascript:
            cmd.append("--blink-settings=scriptEnabled=false")
        cmd.extend(args)
        return subprocess.run(cmd, capture_output=True, timeout=timeout, check=True)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _url(html_path: str | Path) -> str:
    return Path(html_path).resolve().as_uri()


def screenshot(
    html_path: str | Path,
    png_path: str | Path,
    width: int,
    height: int,
    *,
    javascript: bool = True,
) -> None:
    """Save a ``width`` x ``height`` PNG of the page (the top of it, if it is taller)."""
    out = Path(png_path).resolve()
    out.unlink(missing_ok=True)
    run_chromium(
        [
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--screenshot={out}",
            _url(html_path),
        ],
        javascript=javascript,
    )
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot to {out}")


def dump_dom(html_path: str | Path, *, javascript: bool = True) -> str:
    """The page's DOM after loading, serialised as HTML.

    With JavaScript on this is ``--dump-dom``. That switch serialises the DOM by running a
    script in the page, so with ``scriptEnabled=false`` it prints nothing; then the DOM is read
    through the DevTools protocol instead (``DOM.getOuterHTML``, native, no page script).
    """
    if javascript:
        done = run_chromium(["--dump-dom", _url(html_path)])
        return done.stdout.decode("utf-8", errors="replace")
    return _devtools_outer_html(_url(html_path), javascript=False)


class _Pipe:
    """The DevTools protocol over ``--remote-debugging-pipe``: JSON messages ending in NUL,
    commands to the browser on fd 3, replies and events from it on fd 4."""

    def __init__(self, write_fd: int, read_fd: int, deadline: float) -> None:
        self._w, self._r, self._deadline = write_fd, read_fd, deadline
        self._buf = b""
        self._next_id = 0

    def _message(self) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = self._deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("no answer from chromium over the DevTools pipe")
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        msg: dict[str, Any] = json.loads(raw)
        return msg

    def send(self, method: str, session: str | None = None, **params: Any) -> int:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        return self._next_id

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        sent = self.send(method, session, **params)
        while True:
            msg = self._message()
            if msg.get("id") == sent:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result

    def wait_event(self, method: str, session: str) -> None:
        while True:
            msg = self._message()
            if msg.get("method") == method and msg.get("sessionId") == session:
                return


def _devtools_outer_html(
    url: str, *, javascript: bool, timeout: float = RUN_TIMEOUT_SECONDS
) -> str:
    binary = ensure_chromium()
    profile = tempfile.mkdtemp(prefix="dw-chromium-")
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()
    # above the numbers the child needs, so the dup2s below never clobber each other
    child_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
    child_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)
    for fd in (to_chrome_r, from_chrome_w):
        os.close(fd)

    def wire() -> None:  # in the child: fd 3 = commands in, fd 4 = answers out
        os.dup2(child_r, 3)
        os.dup2(child_w, 4)

    cmd = [binary, *BASE_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"]
    if not javascript:
        cmd.append("--blink-settings=scriptEnabled=false")
    proc = subprocess.Popen(
        [*cmd, "about:blank"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=wire,  # only os.dup2: safe in the child
        close_fds=False,
    )
    os.close(child_r)
    os.close(child_w)
    try:
        pipe = _Pipe(to_chrome_w, from_chrome_r, time.monotonic() + timeout)
        target = pipe.call("Target.createTarget", url="about:blank")["targetId"]
        session = pipe.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        pipe.call("Page.enable", session)
        pipe.call("Page.navigate", session, url=url)
        pipe.wait_event("Page.loadEventFired", session)
        root = pipe.call("DOM.getDocument", session)["root"]["nodeId"]
        html: str = pipe.call("DOM.getOuterHTML", session, nodeId=root)["outerHTML"]
        pipe.send("Browser.close")
        return html
    finally:
        os.close(to_chrome_w)
        os.close(from_chrome_r)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def decode_png(png_path: str | Path) -> tuple[int, int, int, bytes]:
    """``(width, height, channels, pixels)`` of an 8-bit RGB/RGBA PNG, with the standard
    library only (no PIL in the venv): enough to tell a rendered page from a blank one."""
    data = Path(png_path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{png_path} is not a PNG")
    pos, idat = 8, bytearray()
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or colour not in (2, 6) or interlace:
                raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour}")
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(bytes(idat))
    stride = width * channels
    out = bytearray(height * stride)
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        ftype = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        if ftype == 1:  # Sub
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif ftype == 2:  # Up
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif ftype == 3:  # Average
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:  # Paeth
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b = prev[i]
                c = prev[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        elif ftype != 0:
            raise ValueError(f"bad PNG filter type {ftype} in row {y}")
        out[y * stride : (y + 1) * stride] = line
        prev = line
    return width, height, channels, bytes(out)
