"""One Kafka connection configuration for every client: TLS and SASL from the settings.

The settings (``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*``, ``KAFKA_SSL_*``; see
:mod:`runtime.settings`) are read and checked once, by :func:`security`, into a
:class:`KafkaSecurity`. From it:

* :func:`confluent_config` — the confluent-kafka (librdkafka) configuration: the retrain
  worker, the CLI tools, topic administration, the watchdog's and the API's own clients;
* :func:`faust_credentials` — Faust's ``broker_credentials`` (aiokafka underneath);
* :func:`aiokafka_options` — keyword arguments for a bare ``AIOKafkaConsumer``.

:func:`check_connection` connects once at start-up and turns what librdkafka would otherwise
retry for ever (a refused password, an untrusted certificate) into one clear
:class:`KafkaConnectError` within seconds.

Secrets: the password comes from ``KAFKA_SASL_PASSWORD_FILE`` (preferred: it never appears
in ``ps`` or an environment listing) or ``KAFKA_SASL_PASSWORD``; it is read when a client is
configured, is not part of any ``repr`` and is never logged. Error messages name files and
settings, never their contents.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

    from runtime.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SECURITY_VARIABLES = (
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SASL_PASSWORD_FILE",
    "KAFKA_SSL_CA_LOCATION",
    "KAFKA_SSL_CERTIFICATE_LOCATION",
    "KAFKA_SSL_KEY_LOCATION",
    "KAFKA_SSL_KEY_PASSWORD_FILE",
    "KAFKA_SSL_CHECK_HOSTNAME",
)
"""The environment variables of the connection security (a plaintext child process, such
as one talking to the embedded broker, is started without them)."""

KafkaTarget = str | Mapping[str, Any]
"""What the Kafka helpers accept: ``host:port,...`` (plaintext, e.g. the embedded broker) or
a complete confluent-kafka configuration from :func:`confluent_config`."""


class KafkaConfigError(ValueError):
    """The Kafka connection settings do not fit together (found before connecting)."""


class KafkaConnectError(RuntimeError):
    """The broker refused us (authentication, TLS) or could not be reached in time. Its
    message is one line, fit for an operator: what failed, where, and the broker's reason."""


@dataclass(frozen=True)
class KafkaSecurity:
    """Checked connection security. ``password`` and ``key_password`` hold the secrets
    themselves (read from their files) and are left out of ``repr``."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_location: str | None = None
    certificate_location: str | None = None
    key_location: str | None = None
    key_password: str | None = field(default=None, repr=False)
    check_hostname: bool = True

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def describe(self) -> str:
        """A one-line summary without secrets, for logs: ``SASL_SSL SCRAM-SHA-512 as 'u'``."""
        parts = [self.protocol]
        if self.uses_sasl:
            parts.append(f"{self.mechanism} as {self.username!r}")
        if self.uses_tls:
            parts.append(f"CA {self.ca_location or '(system)'}")
            if self.certificate_location:
                parts.append(f"client certificate {self.certificate_location}")
            if not self.check_hostname:
                parts.append("host name not checked")
        return ", ".join(parts)


def _read_secret(path: str, setting: str) -> str:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KafkaConfigError(f"{setting}: file {path} does not exist") from None
    except IsADirectoryError:
        raise KafkaConfigError(f"{setting}: {path} is a directory, not a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise KafkaConfigError(f"{setting}: cannot read {path}: {reason}") from None
    secret = text.rstrip("\r\n")  # a file written by `echo` ends with a newline
    if not secret:
        raise KafkaConfigError(f"{setting}: file {path} is empty")
    return secret


def _readable_file(path: str, setting: str) -> str:
    p = Path(path)
    if not p.exists():
        raise KafkaConfigError(f"{setting}: file {path} does not exist")
    if not p.is_file():
        raise KafkaConfigError(f"{setting}: {path} is not a file")
    try:
        with p.open("rb"):
            pass
    except OSError as exc:
        raise KafkaConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    return path


def security(settings: Settings) -> KafkaSecurity:
    """The connection security the settings describe, checked: raises
    :class:`KafkaConfigError` with the setting to fix when they do not fit together."""
    protocol = (settings.security_protocol or "PLAINTEXT").strip().upper()
    if protocol not in PROTOCOLS:
        raise KafkaConfigError(
            f"KAFKA_SECURITY_PROTOCOL={settings.security_protocol!r}: expected one of "
            + ", ".join(PROTOCOLS)
        )
    sasl = protocol in ("SASL_PLAINTEXT", "SASL_SSL")
    tls = protocol in ("SSL", "SASL_SSL")
    mechanism = (settings.sasl_mechanism or "").strip().upper() or None
    username = settings.sasl_username or None
    password: str | None = None
    if sasl:
        if mechanism is None:
            raise KafkaConfigError(
                f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_MECHANISM "
                f"({', '.join(MECHANISMS)})"
            )
        if mechanism not in MECHANISMS:
            raise KafkaConfigError(
                f"KAFKA_SASL_MECHANISM={settings.sasl_mechanism!r}: expected one of "
                + ", ".join(MECHANISMS)
            )
        if not username:
            raise KafkaConfigError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME")
        if settings.sasl_password and settings.sasl_password_file:
            raise KafkaConfigError(
                "set only one of KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE"
            )
        if settings.sasl_password_file:
            password = _read_secret(settings.sasl_password_file, "KAFKA_SASL_PASSWORD_FILE")
        elif settings.sasl_password:
            password = settings.sasl_password
        else:
            raise KafkaConfigError(
                f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_PASSWORD_FILE "
                "(or KAFKA_SASL_PASSWORD)"
            )
    else:
        given = [
            name
            for name, value in (
                ("KAFKA_SASL_MECHANISM", settings.sasl_mechanism),
                ("KAFKA_SASL_USERNAME", settings.sasl_username),
                ("KAFKA_SASL_PASSWORD", settings.sasl_password),
                ("KAFKA_SASL_PASSWORD_FILE", settings.sasl_password_file),
            )
            if value
        ]
        if given:
            raise KafkaConfigError(
                f"{', '.join(given)} set but KAFKA_SECURITY_PROTOCOL={protocol} does not use "
                "SASL (SASL_SSL or SASL_PLAINTEXT do)"
            )
    ca = cert = key = key_password = None
    if tls:
        if settings.ssl_ca_location:
            ca = _readable_file(settings.ssl_ca_location, "KAFKA_SSL_CA_LOCATION")
        if settings.ssl_certificate_location or settings.ssl_key_location:
            if not (settings.ssl_certificate_location and settings.ssl_key_location):
                raise KafkaConfigError(
                    "a client certificate needs both KAFKA_SSL_CERTIFICATE_LOCATION and "
                    "KAFKA_SSL_KEY_LOCATION"
                )
            cert = _readable_file(
                settings.ssl_certificate_location, "KAFKA_SSL_CERTIFICATE_LOCATION"
            )
            key = _readable_file(settings.ssl_key_location, "KAFKA_SSL_KEY_LOCATION")
        if settings.ssl_key_password_file:
            if key is None:
                raise KafkaConfigError(
                    "KAFKA_SSL_KEY_PASSWORD_FILE set without KAFKA_SSL_KEY_LOCATION"
                )
            key_password = _read_secret(
                settings.ssl_key_password_file, "KAFKA_SSL_KEY_PASSWORD_FILE"
            )
    else:
        given = [
            name
            for name, value in (
                ("KAFKA_SSL_CA_LOCATION", settings.ssl_ca_location),
                ("KAFKA_SSL_CERTIFICATE_LOCATION", settings.ssl_certificate_location),
                ("KAFKA_SSL_KEY_LOCATION", settings.ssl_key_location),
                ("KAFKA_SSL_KEY_PASSWORD_FILE", settings.ssl_key_password_file),
            )
            if value
        ]
        if given:
            raise KafkaConfigError(
                f"{', '.join(given)} set but KAFKA_SECURITY_PROTOCOL={protocol} does not use "
                "TLS (SSL or SASL_SSL do)"
            )
    return KafkaSecurity(
        protocol=protocol,
        mechanism=mechanism if sasl else None,
        username=username if sasl else None,
        password=password,
        ca_location=ca,
        certificate_location=cert,
        key_location=key,
        key_password=key_password,
        check_hostname=settings.ssl_check_hostname,
    )


def confluent_security(sec: KafkaSecurity) -> dict[str, Any]:
    """The security part of a librdkafka configuration (no bootstrap servers)."""
    conf: dict[str, Any] = {"security.protocol": sec.protocol.lower()}
    if sec.uses_sasl:
        conf["sasl.mechanism"] = sec.mechanism
        conf["sasl.username"] = sec.username
        conf["sasl.password"] = sec.password
    if sec.uses_tls:
        # No CA given: the system's trust store (public CAs: Confluent Cloud, MSK).
        conf["ssl.ca.location"] = sec.ca_location or "probe"
        if sec.certificate_location:
            conf["ssl.certificate.location"] = sec.certificate_location
            conf["ssl.key.location"] = sec.key_location
            if sec.key_password is not None:
                conf["ssl.key.password"] = sec.key_password
        conf["ssl.endpoint.identification.algorithm"] = "https" if sec.check_hostname else "none"
    return conf


def confluent_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """``bootstrap.servers`` and security for a confluent-kafka client, plus ``extra``."""
    return {
        "bootstrap.servers": settings.bootstrap,
        **confluent_security(security(settings)),
        **extra,
    }


def client_config(target: KafkaTarget, **extra: Any) -> dict[str, Any]:
    """A confluent-kafka configuration from a :data:`KafkaTarget`, plus ``extra``."""
    if isinstance(target, str):
        return {"bootstrap.servers": target, **extra}
    return {**target, **extra}


def bootstrap_of(target: KafkaTarget) -> str:
    """The bootstrap servers of a :data:`KafkaTarget` (for messages)."""
    return target if isinstance(target, str) else str(target.get("bootstrap.servers", "?"))


def ssl_context(sec: KafkaSecurity) -> ssl.SSLContext:
    """The client TLS context for aiokafka / Faust: the given CA (else the system's), the
    client certificate if any, host name checked unless turned off."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=sec.ca_location)
    except ssl.SSLError as exc:
        raise KafkaConfigError(
            f"KAFKA_SSL_CA_LOCATION: {sec.ca_location} holds no usable PEM certificate "
            f"({exc.reason or exc})"
        ) from None
    if sec.certificate_location and sec.key_location:
        try:
            ctx.load_cert_chain(
                sec.certificate_location, sec.key_location, password=sec.key_password
            )
        except ssl.SSLError as exc:
            raise KafkaConfigError(
                f"KAFKA_SSL_CERTIFICATE_LOCATION / KAFKA_SSL_KEY_LOCATION: "
                f"{sec.certificate_location} and {sec.key_location} are not a PEM certificate "
                f"and its key, or the key password is wrong ({exc.reason or exc})"
            ) from None
    ctx.check_hostname = sec.check_hostname
    return ctx


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for the settings (None for PLAINTEXT)."""
    import faust

    sec = security(settings)
    if sec.protocol == "PLAINTEXT":
        return None
    if sec.protocol == "SSL":
        return faust.SSLCredentials(ssl_context(sec))
    creds = faust.SASLCredentials(
        username=sec.username,
        password=sec.password,
        ssl_context=ssl_context(sec) if sec.uses_tls else None,
        mechanism=sec.mechanism,
    )
    return creds


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Security keyword arguments for an aiokafka client."""
    sec = security(settings)
    opts: dict[str, Any] = {"security_protocol": sec.protocol}
    if sec.uses_tls:
        opts["ssl_context"] = ssl_context(sec)
    if sec.uses_sasl:
        opts["sasl_mechanism"] = sec.mechanism
        opts["sasl_plain_username"] = sec.username
        opts["sasl_plain_password"] = sec.password
    return opts


# librdkafka error codes that retrying will not fix: report them at once.
_FATAL_NAMES = ("_AUTHENTICATION", "_SSL", "SASL_AUTHENTICATION_FAILED", "_INVALID_ARG")


def _is_summary(err: Any) -> bool:
    from confluent_kafka import KafkaError

    try:
        return bool(err.code() == KafkaError._ALL_BROKERS_DOWN)
    except AttributeError:
        return False


def fatal_connection_error(err: Any) -> str | None:
    """The one-line reason if ``err`` (a ``KafkaError`` from an ``error_cb``) is an
    authentication or TLS failure, else None."""
    from confluent_kafka import KafkaError

    codes = {getattr(KafkaError, name) for name in _FATAL_NAMES if hasattr(KafkaError, name)}
    try:
        code = err.code()
    except AttributeError:
        return None
    if code not in codes:
        return None
    return _one_line(err.str() if hasattr(err, "str") else str(err))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _hint(protocol: str, reason: str) -> str:
    low = reason.lower()
    if "ssl" in low and ("verify" in low or "certificate" in low):
        return (
            " (check KAFKA_SSL_CA_LOCATION: it must hold the CA that signed the broker's "
            "certificate)"
        )
    if "authentication" in low or "sasl" in low:
        return " (check KAFKA_SASL_USERNAME, the password and KAFKA_SASL_MECHANISM)"
    if "closed every connection" in low and protocol == "SSL":
        return (
            " (does the listener require a client certificate, KAFKA_SSL_CERTIFICATE_LOCATION, "
            "or SASL, KAFKA_SECURITY_PROTOCOL=SASL_SSL?)"
        )
    if protocol in ("PLAINTEXT", "SASL_PLAINTEXT") and (
        "disconnect" in low or "transport" in low or "closed" in low
    ):
        return " (the broker may require TLS or SASL: check KAFKA_SECURITY_PROTOCOL)"
    return ""


REFUSALS = 6
"""Connections a broker closes right after accepting them before :class:`ErrorWatch` calls
it a refusal (librdkafka retries every 100 ms at first: about a second)."""


class ErrorWatch:
    """An ``error_cb`` for confluent-kafka clients that remembers the first fatal
    (authentication, TLS) error and the last other one."""

    def __init__(self) -> None:
        self.fatal: str | None = None
        self.last: str | None = None
        self.refusals = 0

    def __call__(self, err: Any) -> None:
        reason = fatal_connection_error(err)
        if reason is not None:
            if self.fatal is None:
                self.fatal = reason
        elif not _is_summary(err) or self.last is None:
            # "N/N brokers are down" says less than the error that took them down.
            self.last = _one_line(err.str() if hasattr(err, "str") else str(err))

    def note(self, text: str) -> None:
        """A failed request's error, kept unless a connection error already says more."""
        if self.last is None:
            self.last = _one_line(text)

    def log(self, level: int, fmt: str, *args: Any) -> None:
        """librdkafka's log lines (the client's ``logger``): connection failures are noted,
        the rest dropped (they would reach stderr after our one line, from its threads). A
        broker that accepts the connection and closes it at once, again and again, is
        refusing us (a TLS listener that wants a client certificate, a SASL or TLS listener
        reached with the wrong protocol): after :data:`REFUSALS` of those it counts as fatal."""
        try:
            line = fmt % args if args else fmt
        except TypeError:
            line = " ".join(str(a) for a in (fmt, *args))
        if "FAIL" not in line:
            return
        reason = _one_line(line.split("]: ", 1)[-1])
        self.last = reason
        early = ("state APIVERSION_QUERY", "state SSL_HANDSHAKE", "state AUTH")
        if "closed by peer" in reason and any(state in reason for state in early):
            self.refusals += 1
            if self.refusals >= REFUSALS and self.fatal is None:
                self.fatal = f"the broker closed every connection at once: {reason}"
        elif "Connection refused" in reason or "state CONNECT" in reason:
            self.refusals = 0

    def raise_if_fatal(self, bootstrap: str, protocol: str) -> None:
        if self.fatal is not None:
            raise KafkaConnectError(
                f"cannot connect to Kafka at {bootstrap}: {self.fatal}"
                + _hint(protocol, self.fatal)
            )


def make_client(cls: Any, conf: dict[str, Any]) -> Any:
    """``cls(conf)`` (a confluent-kafka client class), with librdkafka's refusal of the
    configuration (a CA or key file it cannot load, ...) as a :class:`KafkaConfigError`."""
    from confluent_kafka import KafkaException

    try:
        return cls(conf)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        text = err.str() if hasattr(err, "str") else str(err)
        raise KafkaConfigError(
            f"the Kafka client refused its configuration: {_one_line(text)}"
        ) from None


def check_connection(target: KafkaTarget, timeout: float = 10.0) -> None:
    """Connect and fetch the cluster metadata once. Raises :class:`KafkaConnectError` as
    soon as the broker refuses the credentials or the TLS handshake fails, or when no broker
    answered within ``timeout`` seconds."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    conf = client_config(target)
    bootstrap = bootstrap_of(target)
    protocol = str(conf.get("security.protocol", "plaintext")).upper()
    watch = ErrorWatch()
    admin_conf: dict[str, Any] = {
        **conf,
        "error_cb": watch,
        # What goes wrong is reported once, by error_cb and our message; librdkafka's own
        # log lines come to the watch instead of stderr (served by poll()).
        "logger": watch,
        "log.queue": True,
        "socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000)),
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1000,
    }
    admin = make_client(AdminClient, admin_conf)
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
        except KafkaException as exc:
            err = exc.args[0] if exc.args else exc
            watch.note(err.str() if hasattr(err, "str") else str(err))
        else:
            admin.poll(0)
            watch.raise_if_fatal(bootstrap, protocol)
            return
        admin.poll(0)
        watch.raise_if_fatal(bootstrap, protocol)
        if time.monotonic() >= deadline:
            last = watch.last or "no answer"
            raise KafkaConnectError(
                f"cannot connect to Kafka at {bootstrap} within {timeout:.0f}s: {last}"
                + _hint(protocol, last)
            )
