"""Every client over TLS + SASL, against an endpoint that really requires both.

The endpoint is the embedded broker (Tansu) behind :class:`SecureFront` (TLS from a
throw-away CA, SASL PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512 checked per login); see
``tests/integration/secure_kafka.py`` for why Tansu cannot serve TLS or SCRAM logins itself.
One test also puts Tansu's own ``--authentication`` (its real SASL code) behind TLS, so a
refusal comes from the broker itself.

Shown here, with real processes over TCP:

* the stream worker (Faust/aiokafka, and its confluent-kafka clients: watchdog, probes, the
  API's aiokafka catalog), the retrain worker (confluent-kafka) and the CLI (``flags``,
  ``simulate``) log in with SCRAM-SHA-512 over TLS, process, and publish;
* a wrong password and an untrusted certificate end each of them within 10 s with one line
  naming the broker's reason, and a non-zero exit: no hang, no stack trace;
* the password appears in no log, no metrics page, no dead letter, no command line and no
  environment (it is read from a file).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.retrain_e2e import RetrainWorker, Tail, confirming_drift, send
from driftwatch.devbroker import DevBroker, free_port
from retrain.worker import read_topic
from runtime.kafka_connection import SECURITY_VARIABLES, confluent_config
from runtime.settings import Settings
from tests.conftest import KAFKA_BOOTSTRAP_ENV
from tests.integration.secure_kafka import (
    CLIENT_KEY_PASSWORD,
    Pki,
    SecureFront,
    make_pki,
    server_context,
)
from tests.integration.worker_harness import WorkerProcess, produce_recorded

PASSWORD = "Dw-s3cret-7Qx9-never-logged"
USER = "driftwatch-svc"
FAIL_FAST_SECONDS = 10.0

pytestmark = pytest.mark.skipif(
    bool(os.environ.get(KAFKA_BOOTSTRAP_ENV, "").strip()),
    reason="runs its own TLS + SASL endpoint in front of an embedded broker",
)


@dataclass
class SecureCluster:
    bootstrap: str
    pki: Pki
    password_file: Path
    front: SecureFront
    workdir: Path

    def env(self, **overrides: str) -> dict[str, str]:
        """The security settings as a process gets them (overrides by variable name)."""
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": USER,
            "KAFKA_SASL_PASSWORD_FILE": str(self.password_file),
            "KAFKA_SSL_CA_LOCATION": str(self.pki.ca_cert),
        }
        env.update(overrides)
        return env

    def config(self) -> dict[str, Any]:
        return confluent_config(Settings.from_env(self.env()))


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in SECURITY_VARIABLES}


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureCluster]:
    workdir = tmp_path_factory.mktemp("secure-kafka")
    pki = make_pki(workdir / "pki")
    password_file = workdir / "kafka-password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    port = free_port()
    broker = DevBroker(0, log_path=workdir / "tansu.log", advertised=f"localhost:{port}")
    broker.start()
    front = SecureFront(
        port, ("127.0.0.1", broker.port), server_ssl=server_context(pki), users={USER: PASSWORD}
    )
    front.start()
    try:
        yield SecureCluster(f"localhost:{port}", pki, password_file, front, workdir)
    finally:
        front.stop()
        broker.stop()


def _cli(
    args: list[str], env: dict[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftwatch.cli", *args],
        env={**_clean_environ(), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


@pytest.mark.timeout(240)
def test_worker_retrain_worker_and_cli_over_sasl_ssl(secure: SecureCluster, tmp_path: Path) -> None:
    prefix = f"sec-{os.getpid()}-"
    sec_env = secure.env()
    common = {
        "DRIFTWATCH_TOPIC_PREFIX": prefix,
        "DRIFTWATCH_APP_ID": f"{prefix}app",
        "DRIFTWATCH_PARTITIONS": "2",
    }
    logins_before = len(secure.front.logins)

    # The CLI: a flag through retrain-control (creates the topic, over SASL_SSL).
    flags = _cli(["flags", "--auto-retrain", "off"], {**sec_env, **common})
    assert flags.returncode == 0, flags.stderr

    retrain_metrics = free_port()
    retrain = RetrainWorker(
        secure.bootstrap,
        prefix,
        tmp_path / "retrain",
        {
            **_clean_environ(),
            **sec_env,
            "DRIFTWATCH_AUTO_RETRAIN": "false",
            "DRIFTWATCH_RETRAIN_METRICS_PORT": str(retrain_metrics),
        },
    )
    worker = WorkerProcess(
        bootstrap=secure.bootstrap,
        prefix=prefix,
        data_dir=tmp_path / "state",
        log_path=tmp_path / "worker.log",
        extra_env={**sec_env, "DRIFTWATCH_JOIN_OUTCOMES": "false"},
    )
    retrain.start()
    worker.start()
    kafka = secure.config()
    tail = Tail(kafka, [prefix + "retrain-events"])
    try:
        # The worker made its topics (metrics are served after that); then traffic.
        deadline = time.monotonic() + 60
        while not worker.metrics() and time.monotonic() < deadline:
            worker.assert_alive()
            time.sleep(0.25)
        # The CLI again: simulated traffic into the worker's input (acme/fraud, 3 days).
        simulate = _cli(
            ["simulate", "--days", "3", "--rate", "40", "--tenants", "acme", "--models", "fraud"],
            {**sec_env, **common},
        )
        assert simulate.returncode == 0, simulate.stderr
        assert "produced 120 predictions" in simulate.stderr
        # A message that must be dead-lettered (its original bytes are kept there).
        produce_recorded(kafka, prefix + "predictions", [(b"acme:fraud", b"{not json")])
        worker.wait_processed(120, timeout=120)

        # The retrain worker decides on a drift event and publishes its decision.
        send(
            kafka,
            prefix + "drift-events",
            b"acme:fraud",
            confirming_drift("acme", drift_id="sec").to_json(),
        )
        decided = tail.wait_for(lambda t, v: v.get("drift_id") == "sec", 90, retrain)
        assert decided["tenant"] == "acme"

        dead: list[bytes] = []
        deadline = time.monotonic() + 60
        while not dead and time.monotonic() < deadline:
            dead = [
                m.value() or b"" for m in read_topic(kafka, prefix + "dead-letters", timeout=20)
            ]
            time.sleep(0.5)
        assert dead, "nothing was dead-lettered"
        originals = [base64.b64decode(json.loads(d)["original_b64"]) for d in dead]
        assert b"{not json" in originals, dead

        # No secret anywhere it could leak.
        assert worker.proc is not None and retrain.proc is not None
        texts = {
            "worker metrics": _metrics_text(worker.metrics_port),
            "retrain metrics": _metrics_text(retrain_metrics),
            "dead letters": b"\n".join(dead).decode(errors="replace"),
            "cli output": flags.stdout + flags.stderr + simulate.stdout + simulate.stderr,
        }
        for proc, name in ((worker.proc, "worker"), (retrain.proc, "retrain worker")):
            texts[f"{name} command line"] = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
            texts[f"{name} environment"] = Path(f"/proc/{proc.pid}/environ").read_bytes().decode()
        config = _cli(
            ["config"], {**sec_env, "KAFKA_SASL_PASSWORD_FILE": "", "KAFKA_SASL_PASSWORD": PASSWORD}
        )
        texts["driftwatch config"] = config.stdout + config.stderr
        assert '"sasl_password": "***"' in config.stdout
    finally:
        tail.close()
        retrain.stop()
        worker.stop()
    texts["worker log"] = worker.log_path.read_text(errors="replace")
    texts["retrain log"] = retrain.log_tail(100_000)
    for where, text in texts.items():
        assert PASSWORD not in text, f"the password appears in the {where}"
    assert "SASL_SSL, SCRAM-SHA-512 as 'driftwatch-svc'" in texts["worker log"]

    logins = secure.front.logins[logins_before:]
    assert logins and all(m == "SCRAM-SHA-512" and u == USER and ok for m, u, ok in logins), logins


CASES = {
    "wrong password": (
        {"KAFKA_SASL_PASSWORD_FILE": "", "KAFKA_SASL_PASSWORD": "not-the-password"},
        "SASL authentication error: Authentication failed during authentication due to invalid "
        "credentials with SASL mechanism SCRAM-SHA-512",
    ),
    "untrusted certificate": (
        {"KAFKA_SSL_CA_LOCATION": "{other_ca}"},
        "SSL handshake failed",
    ),
}
COMMANDS = {
    "worker": ["worker"],
    "retrain-worker": ["retrain-worker"],
    "simulate": ["simulate", "--days", "1", "--rate", "5"],
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_connection_fails_fast_with_the_reason(
    secure: SecureCluster, tmp_path: Path, case: str, command: str
) -> None:
    overrides, reason = CASES[case]
    env = secure.env(
        **{k: v.format(other_ca=secure.pki.other_ca_cert) for k, v in overrides.items()}
    )
    env.update(
        {
            "DRIFTWATCH_TOPIC_PREFIX": f"refused-{command}-",
            "DRIFTWATCH_DATA_DIR": str(tmp_path / "state"),
            "DRIFTWATCH_REGISTRY_DIR": str(tmp_path / "registry"),
            "DRIFTWATCH_METRICS_PORT": "0",
            "DRIFTWATCH_RETRAIN_METRICS_PORT": "0",
            "DRIFTWATCH_API_PORT": "0",
        }
    )
    started = time.monotonic()
    done = _cli(COMMANDS[command], env, timeout=45)
    elapsed = time.monotonic() - started
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert elapsed < FAIL_FAST_SECONDS, f"{elapsed:.1f}s"
    assert "Traceback" not in done.stderr, done.stderr
    last = lines[-1]
    assert last.startswith(f"driftwatch: cannot connect to Kafka at {secure.bootstrap}: "), last
    assert reason in last, last
    assert PASSWORD not in done.stderr + done.stdout


@pytest.mark.timeout(60)
def test_tansus_own_authentication_refuses_over_tls(tmp_path: Path) -> None:
    """Tansu's real SASL code behind TLS: this build stores no SCRAM users, so it refuses
    every login; the CLI reports the broker's refusal at once."""
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    broker = DevBroker(0, log_path=tmp_path / "tansu.log", advertised=f"localhost:{port}",
                       authentication=True)  # fmt: skip
    with broker, SecureFront(port, ("127.0.0.1", broker.port), server_ssl=server_context(pki),
                             users=None):  # fmt: skip
        password = tmp_path / "pw"
        password.write_text("whatever\n")
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": f"localhost:{port}",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "nobody",
            "KAFKA_SASL_PASSWORD_FILE": str(password),
            "KAFKA_SSL_CA_LOCATION": str(pki.ca_cert),
        }
        started = time.monotonic()
        done = _cli(["flags", "--auto-retrain", "on"], env, timeout=45)
        elapsed = time.monotonic() - started
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and elapsed < FAIL_FAST_SECONDS, (elapsed, done.stderr)
    assert "Traceback" not in done.stderr
    assert last.startswith(f"driftwatch: cannot connect to Kafka at localhost:{port}: "), last
    assert "SASL authentication error" in last, last


@pytest.mark.timeout(60)
def test_mutual_tls_with_an_encrypted_client_key(tmp_path: Path) -> None:
    """A listener that demands a client certificate (MSK's TLS client authentication):
    confluent-kafka (the CLI) and aiokafka (the worker's client library) present ours, with
    its key decrypted by the password from KAFKA_SSL_KEY_PASSWORD_FILE; without it, refused."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    from runtime.kafka_connection import aiokafka_options

    pki = make_pki(tmp_path / "pki")
    key_password = tmp_path / "key-password"
    key_password.write_text(CLIENT_KEY_PASSWORD + "\n")
    port = free_port()
    with (
        DevBroker(0, log_path=tmp_path / "tansu.log", advertised=f"localhost:{port}") as broker,
        SecureFront(
            port,
            ("127.0.0.1", broker.port),
            server_ssl=server_context(pki, require_client_cert=True),
            users=None,
        ),
    ):
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": f"localhost:{port}",
            "KAFKA_SECURITY_PROTOCOL": "SSL",
            "KAFKA_SSL_CA_LOCATION": str(pki.ca_cert),
            "KAFKA_SSL_CERTIFICATE_LOCATION": str(pki.client_cert),
            "KAFKA_SSL_KEY_LOCATION": str(pki.client_key),
            "KAFKA_SSL_KEY_PASSWORD_FILE": str(key_password),
            "DRIFTWATCH_TOPIC_PREFIX": "mtls-",
        }
        done = _cli(["flags", "--auto-retrain", "on"], env)
        assert done.returncode == 0, done.stderr

        async def aiokafka_topics() -> set[str]:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
                **aiokafka_options(Settings.from_env(env)),
            )
            await consumer.start()
            try:
                return set(await consumer.topics())
            finally:
                await consumer.stop()

        assert "mtls-retrain-control" in asyncio.run(aiokafka_topics())

        without = {k: v for k, v in env.items() if "CERTIFICATE" not in k and "KEY" not in k}
        started = time.monotonic()
        refused = _cli(["flags", "--auto-retrain", "on"], without)
        elapsed = time.monotonic() - started
    assert refused.returncode == 1 and elapsed < FAIL_FAST_SECONDS, (elapsed, refused.stderr)
    assert "Traceback" not in refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(f"driftwatch: cannot connect to Kafka at localhost:{port}: "), last
    assert "the broker closed every connection at once" in last, last
    assert "does the listener require a client certificate" in last, last


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_demo_runs_end_to_end_over_sasl_ssl(secure: SecureCluster, tmp_path: Path) -> None:
    """Issue 13's target: the demo (workers, retrain worker, producers, the API, reports)
    against a cluster that requires TLS and SCRAM-SHA-512, shorter than the default run.
    In ``make bench``: it takes minutes."""
    logins_before = len(secure.front.logins)
    env = {
        **secure.env(),
        "DRIFTWATCH_TOPIC_PREFIX": f"demo-{os.getpid()}-",
        "DRIFTWATCH_APP_ID": f"demo-{os.getpid()}-app",
    }
    done = _cli(["demo"], env, timeout=840)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "every injected drift was found" in done.stdout
    logins = secure.front.logins[logins_before:]
    assert logins and all(ok for _, _, ok in logins)
    assert {m for m, _, _ in logins} == {"SCRAM-SHA-512"}
    assert PASSWORD not in done.stdout + done.stderr
