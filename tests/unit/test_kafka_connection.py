"""runtime.kafka_connection: one security configuration, checked, for every client."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import faust
import pytest

from runtime.kafka_connection import (
    ErrorWatch,
    KafkaConfigError,
    KafkaConnectError,
    aiokafka_options,
    check_connection,
    client_config,
    confluent_config,
    faust_credentials,
    security,
)
from runtime.settings import Settings

SECRET = "hunter2-not-in-repr"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    pw = tmp_path / "password"
    pw.write_text(SECRET + "\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("not parsed here\n")
    return {"pw": pw, "ca": ca, "dir": tmp_path}


def settings(**env: str) -> Settings:
    return Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "b1:9093,b2:9093", **env})


def sasl_ssl(files: dict[str, Path], **env: str) -> Settings:
    base = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "svc",
        "KAFKA_SASL_PASSWORD_FILE": str(files["pw"]),
        "KAFKA_SSL_CA_LOCATION": str(files["ca"]),
    }
    return settings(**{**base, **env})


def test_plaintext_by_default() -> None:
    s = settings()
    assert confluent_config(s) == {
        "bootstrap.servers": "b1:9093,b2:9093",
        "security.protocol": "plaintext",
    }
    assert faust_credentials(s) is None
    assert aiokafka_options(s) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_scram_confluent_config(files: dict[str, Path]) -> None:
    conf = confluent_config(sasl_ssl(files), **{"linger.ms": 0})
    assert conf == {
        "bootstrap.servers": "b1:9093,b2:9093",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": SECRET,  # read from the file, trailing newline dropped
        "ssl.ca.location": str(files["ca"]),
        "ssl.endpoint.identification.algorithm": "https",
        "linger.ms": 0,
    }


def test_confluent_cloud_style_plain_uses_the_system_trust_store(files: dict[str, Path]) -> None:
    s = settings(
        KAFKA_SECURITY_PROTOCOL="sasl_ssl",  # case does not matter
        KAFKA_SASL_MECHANISM="plain",
        KAFKA_SASL_USERNAME="API_KEY",
        KAFKA_SASL_PASSWORD="api-secret",
    )
    conf = confluent_config(s)
    assert conf["sasl.mechanism"] == "PLAIN" and conf["sasl.password"] == "api-secret"
    assert conf["ssl.ca.location"] == "probe"


def test_mutual_tls_and_hostname_check_off(files: dict[str, Path]) -> None:
    cert, key = files["dir"] / "c.pem", files["dir"] / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    keypw = files["dir"] / "keypw"
    keypw.write_text("kp")
    s = settings(
        KAFKA_SECURITY_PROTOCOL="SSL",
        KAFKA_SSL_CERTIFICATE_LOCATION=str(cert),
        KAFKA_SSL_KEY_LOCATION=str(key),
        KAFKA_SSL_KEY_PASSWORD_FILE=str(keypw),
        KAFKA_SSL_CHECK_HOSTNAME="false",
    )
    conf = confluent_config(s)
    assert conf["security.protocol"] == "ssl"
    assert conf["ssl.certificate.location"] == str(cert)
    assert conf["ssl.key.location"] == str(key)
    assert conf["ssl.key.password"] == "kp"
    assert conf["ssl.endpoint.identification.algorithm"] == "none"
    assert "sasl.mechanism" not in conf


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL='TLS': expected one of"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u"},
            "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_MECHANISM",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"},
            "KAFKA_SASL_MECHANISM='GSSAPI': expected one of",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN"},
            "needs KAFKA_SASL_USERNAME",
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_MECHANISM": "PLAIN",
                "KAFKA_SASL_USERNAME": "u",
            },
            "needs KAFKA_SASL_PASSWORD_FILE",
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_MECHANISM": "PLAIN",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD_FILE": "/nonexistent/kafka-password",
            },
            "KAFKA_SASL_PASSWORD_FILE: file /nonexistent/kafka-password does not exist",
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_MECHANISM": "PLAIN",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD_FILE": "{pw}",
                "KAFKA_SASL_PASSWORD": "also",
            },
            "set only one of KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE",
        ),
        ({"KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_USERNAME set but KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_SSL_CA_LOCATION": "{ca}"}, "does not use TLS"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_LOCATION": "/nonexistent/ca.pem"},
            "KAFKA_SSL_CA_LOCATION: file /nonexistent/ca.pem does not exist",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTIFICATE_LOCATION": "{ca}"},
            "needs both KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEY_PASSWORD_FILE": "{pw}"},
            "KAFKA_SSL_KEY_PASSWORD_FILE set without KAFKA_SSL_KEY_LOCATION",
        ),
    ],
)
def test_combinations_are_checked(
    files: dict[str, Path], env: dict[str, str], message: str
) -> None:
    env = {k: v.format(pw=files["pw"], ca=files["ca"]) for k, v in env.items()}
    with pytest.raises(KafkaConfigError) as caught:
        security(settings(**env))
    assert message in str(caught.value)
    assert SECRET not in str(caught.value) and "also" not in str(caught.value).split(":")[-1]


def test_empty_password_file_is_refused(files: dict[str, Path]) -> None:
    files["pw"].write_text("\n")
    with pytest.raises(KafkaConfigError, match="is empty"):
        security(sasl_ssl(files))


def test_secrets_stay_out_of_repr_and_config_output(files: dict[str, Path]) -> None:
    ca = _real_ca(files["dir"])
    s = sasl_ssl(
        files,
        KAFKA_SASL_PASSWORD_FILE="",
        KAFKA_SASL_PASSWORD=SECRET,
        KAFKA_SSL_CA_LOCATION=str(ca),
    )
    sec = security(s)
    assert SECRET not in repr(sec) and SECRET not in repr(s)
    assert SECRET not in sec.describe()
    assert sec.describe().startswith("SASL_SSL, SCRAM-SHA-512 as 'svc'")
    assert s.as_dict(redact=True)["sasl_password"] == "***"
    assert s.as_dict()["sasl_password"] == SECRET  # the API front's copy is redacted instead
    creds = faust_credentials(s)
    assert creds is not None and SECRET not in repr(creds)


def _real_ca(directory: Path) -> Path:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", "k.pem", "-out", "ca.pem", "-days", "1", "-subj", "/CN=t"],
        cwd=directory, check=True, capture_output=True,
    )  # fmt: skip
    return directory / "ca.pem"


def test_faust_and_aiokafka_get_the_same_security(files: dict[str, Path]) -> None:
    ca = _real_ca(files["dir"])
    s = sasl_ssl(files, KAFKA_SSL_CA_LOCATION=str(ca))
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-512"
    assert (creds.username, creds.password) == ("svc", SECRET)
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    assert creds.ssl_context.check_hostname and creds.ssl_context.verify_mode == ssl.CERT_REQUIRED
    opts = aiokafka_options(s)
    assert opts["security_protocol"] == "SASL_SSL" and opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert opts["sasl_plain_username"] == "svc" and opts["sasl_plain_password"] == SECRET

    tls_only = settings(KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CA_LOCATION=str(ca),
                        KAFKA_SSL_CHECK_HOSTNAME="no")  # fmt: skip
    ssl_creds = faust_credentials(tls_only)
    assert isinstance(ssl_creds, faust.SSLCredentials)
    assert ssl_creds.context.check_hostname is False

    sasl_plain = settings(
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
        KAFKA_SASL_USERNAME="u",
        KAFKA_SASL_PASSWORD="p",
    )
    plain_creds = faust_credentials(sasl_plain)
    assert isinstance(plain_creds, faust.SASLCredentials)
    assert plain_creds.protocol.value == "SASL_PLAINTEXT" and plain_creds.ssl_context is None


def test_a_ca_file_without_a_certificate_is_a_configuration_error(files: dict[str, Path]) -> None:
    with pytest.raises(KafkaConfigError, match=r"KAFKA_SSL_CA_LOCATION: .* holds no usable PEM"):
        faust_credentials(sasl_ssl(files))


def test_client_config_takes_a_bootstrap_string_or_a_config() -> None:
    assert client_config("h:1", acks=1) == {"bootstrap.servers": "h:1", "acks": 1}
    base: dict[str, Any] = {"bootstrap.servers": "h:2", "security.protocol": "ssl"}
    assert client_config(base, acks=1) == {**base, "acks": 1}


class _Err:
    def __init__(self, code: int, text: str) -> None:
        self._code, self._text = code, text

    def code(self) -> int:
        return self._code

    def __str__(self) -> str:
        return self._text

    str = __str__  # KafkaError.str()


def test_error_watch_keeps_the_first_fatal_error() -> None:
    from confluent_kafka import KafkaError

    watch = ErrorWatch()
    watch(_Err(KafkaError._TRANSPORT, "Connection refused"))
    watch.raise_if_fatal("h:1", "SASL_SSL")  # not fatal: retried
    watch(_Err(KafkaError._AUTHENTICATION, "SASL authentication error:\n  bad  creds"))
    watch(_Err(KafkaError._SSL, "later"))
    with pytest.raises(KafkaConnectError) as caught:
        watch.raise_if_fatal("h:1", "SASL_SSL")
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith("cannot connect to Kafka at h:1: SASL authentication error: bad creds")


def test_no_broker_is_reported_after_the_timeout() -> None:
    from driftwatch.devbroker import free_port

    with pytest.raises(KafkaConnectError, match=r"within 1s"):
        check_connection(f"127.0.0.1:{free_port()}", timeout=1.0)


def test_a_broker_that_closes_every_connection_at_once_is_a_refusal() -> None:
    from runtime.kafka_connection import REFUSALS

    watch = ErrorWatch()
    closed = (
        "ssl://h:1/bootstrap: Disconnected: SSL connection closed by peer "
        "(after 0ms in state APIVERSION_QUERY)"
    )
    refused = "ssl://h:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"
    for _ in range(REFUSALS - 1):
        watch.log(6, "%s [%s] %s", "FAIL", "rdkafka#producer-1", f"[thrd:x]: {closed}")
    watch.log(3, "%s [%s] %s", "FAIL", "rdkafka#producer-1", f"[thrd:x]: {refused}")
    watch.log(7, "%s [%s] %s", "BROKER", "rdkafka#producer-1", "[thrd:x]: not a failure")
    watch.raise_if_fatal("h:1", "SSL")  # a broker still starting: refused, not closed
    for _ in range(REFUSALS):
        watch.log(6, "%s [%s] %s", "FAIL", "rdkafka#producer-1", f"[thrd:x]: {closed}")
    with pytest.raises(KafkaConnectError, match="closed every connection at once") as caught:
        watch.raise_if_fatal("h:1", "SSL")
    assert "client certificate" in str(caught.value)
