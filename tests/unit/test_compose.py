"""Static checks of docker-compose.yml and the Dockerfile (Docker itself is not available here).

They catch the mistakes that otherwise only show up at ``docker compose up``: the worker pointed
at a listener Kafka does not advertise, a KRaft quorum naming an undefined listener, a package
missing from the image, the worker started before Kafka is healthy.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    svc = compose["services"]
    assert isinstance(svc, dict)
    return svc


def _env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a str -> str dict (compose allows a mapping or a list)."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.split("=", 1) for item in raw)
        return {k: v for k, v in pairs}
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def _listeners(spec: str) -> dict[str, tuple[str, int]]:
    """Parse ``NAME://host:port,...`` into {NAME: (host, port)}."""
    result: dict[str, tuple[str, int]] = {}
    for item in spec.split(","):
        m = re.fullmatch(r"\s*([A-Za-z0-9_]+)://([^:]*):(\d+)\s*", item)
        assert m, f"malformed listener {item!r}"
        result[m.group(1)] = (m.group(2), int(m.group(3)))
    return result


def _kafka(services: dict[str, Any]) -> dict[str, Any]:
    kafka = services.get("kafka")
    assert kafka is not None, "compose file has no 'kafka' service"
    assert isinstance(kafka, dict)
    return kafka


def _dockerfile_exec_form(instruction: str) -> list[str]:
    """The JSON array of the last ENTRYPOINT/CMD instruction in the Dockerfile."""
    found: list[str] | None = None
    for line in DOCKERFILE.read_text().splitlines():
        m = re.match(rf"\s*{instruction}\s+(.*)$", line, flags=re.IGNORECASE)
        if m:
            value = json.loads(m.group(1))
            assert isinstance(value, list), f"{instruction} must use the exec (JSON) form"
            found = [str(v) for v in value]
    assert found is not None, f"Dockerfile has no {instruction}"
    return found


def test_kafka_is_apache_kafka_in_kraft_mode(services: dict[str, Any]) -> None:
    kafka = _kafka(services)
    assert str(kafka["image"]).startswith("apache/kafka:")
    env = _env(kafka)
    roles = {r.strip() for r in env["KAFKA_PROCESS_ROLES"].split(",")}
    assert roles == {"broker", "controller"}
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env

    node_id = int(env["KAFKA_NODE_ID"])
    listeners = _listeners(env["KAFKA_LISTENERS"])
    controller_names = {n.strip() for n in env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")}
    assert controller_names <= set(listeners)

    voters = [v.strip() for v in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")]
    assert len(voters) == 1
    m = re.fullmatch(r"(\d+)@([^:]+):(\d+)", voters[0])
    assert m, f"malformed quorum voter {voters[0]!r}"
    assert int(m.group(1)) == node_id
    assert m.group(2) in {"kafka", kafka.get("hostname", "kafka")}
    controller_ports = {listeners[name][1] for name in controller_names}
    assert int(m.group(3)) in controller_ports

    # Every listener has a security protocol; the controller listener is not advertised.
    protocol_map = dict(
        item.strip().split(":", 1)
        for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(listeners) <= set(protocol_map)
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    assert not controller_names & set(advertised)
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"]), "CLUSTER_ID must be a base64 UUID"


def test_kafka_topics_and_healthcheck(services: dict[str, Any]) -> None:
    kafka = _kafka(services)
    env = _env(kafka)
    assert env["KAFKA_NUM_PARTITIONS"] == "4"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].lower() == "false"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"  # single node

    test = kafka["healthcheck"]["test"]
    command = " ".join(test) if isinstance(test, list) else str(test)
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in command
    m = re.search(r"--bootstrap-server\s+(\S+):(\d+)", command)
    assert m, "healthcheck needs --bootstrap-server host:port"
    listeners = _listeners(env["KAFKA_LISTENERS"])
    assert int(m.group(2)) in {port for _, port in listeners.values()}


def test_host_can_reach_kafka(services: dict[str, Any]) -> None:
    kafka = _kafka(services)
    advertised = _listeners(_env(kafka)["KAFKA_ADVERTISED_LISTENERS"])
    host_listeners = [port for host, port in advertised.values() if host == "localhost"]
    assert host_listeners, "no listener advertised as localhost for clients on the host"
    published = {str(p).split(":")[-1] for p in kafka.get("ports", [])}
    assert {str(p) for p in host_listeners} <= published


def test_worker_points_at_internal_listener(services: dict[str, Any]) -> None:
    kafka = _kafka(services)
    worker = services["worker"]
    env = _env(worker)
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    advertised = _listeners(_env(kafka)["KAFKA_ADVERTISED_LISTENERS"])
    servers = {(h, int(p)) for h, p in (s.strip().rsplit(":", 1) for s in bootstrap.split(","))}
    assert servers <= set(advertised.values()), f"{bootstrap} is not an advertised listener"
    kafka_names = {"kafka", kafka.get("hostname", "kafka")}
    assert all(host in kafka_names for host, _ in servers), "worker must use the in-network name"


def test_worker_waits_for_healthy_kafka_and_restarts(services: dict[str, Any]) -> None:
    worker = services["worker"]
    depends = worker["depends_on"]
    assert isinstance(depends, dict), "depends_on needs the long form to require health"
    assert depends["kafka"]["condition"] == "service_healthy"
    assert worker["restart"] == "unless-stopped"


def test_worker_data_volume_and_metrics(compose: dict[str, Any], services: dict[str, Any]) -> None:
    worker = services["worker"]
    env = _env(worker)
    assert env["DRIFTWATCH_DATA_DIR"] == "/data"
    mounts: dict[str, str] = {}
    for vol in worker.get("volumes", []):
        if isinstance(vol, str):
            src, target = vol.split(":")[:2]
        else:
            src, target = vol["source"], vol["target"]
        mounts[target] = src
    data_volume = mounts.get("/data")
    assert data_volume, "worker has no volume on /data"
    declared = compose.get("volumes") or {}
    assert data_volume in declared, f"named volume {data_volume!r} is not declared"

    port = env["DRIFTWATCH_METRICS_PORT"]
    assert port == "9108"
    exposed = {str(p).split(":")[-1] for p in worker.get("ports", []) + worker.get("expose", [])}
    assert port in exposed


def test_worker_image_runs_driftwatch_worker(services: dict[str, Any]) -> None:
    worker = services["worker"]
    build = worker["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (REPO_ROOT / context / dockerfile).resolve() == DOCKERFILE
    assert DOCKERFILE.is_file()

    entrypoint = worker.get("entrypoint", _dockerfile_exec_form("ENTRYPOINT"))
    command = worker.get("command", _dockerfile_exec_form("CMD"))
    if isinstance(entrypoint, str):
        entrypoint = entrypoint.split()
    if isinstance(command, str):
        command = command.split()
    assert [*entrypoint, *command] == ["driftwatch", "worker"]
    # The image's defaults alone also start the worker.
    assert _dockerfile_exec_form("ENTRYPOINT") + _dockerfile_exec_form("CMD") == [
        "driftwatch",
        "worker",
    ]

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert "driftwatch" in pyproject["project"]["scripts"]


def test_dockerfile_installs_every_package(services: dict[str, Any]) -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM\s+python:3\.11-slim\b", text, flags=re.MULTILINE)
    copied: set[str] = set()
    for m in re.finditer(r"^COPY\s+(?!--from)(.+)$", text, flags=re.MULTILINE):
        parts = [p for p in m.group(1).split() if not p.startswith("--")]
        copied.update(p.rstrip("/") for p in parts[:-1])
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]
    top_level = {p.split(".")[0] for p in packages}
    required = top_level | {"pyproject.toml", "constraints.txt", "README.md"}
    assert required <= copied, f"Dockerfile does not copy {sorted(required - copied)}"
    assert re.search(r"pip install\s+(?:\S+\s+)*-c\s+constraints\.txt\s+\.", text)
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}, "the image must not run as root"


def test_retrain_worker_has_a_registry_volume_and_starts_switched_off(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    retrain = services["retrain-worker"]
    assert retrain["command"] == ["retrain-worker"]
    assert retrain["image"] == services["worker"]["image"]
    env = retrain["environment"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["DRIFTWATCH_AUTO_RETRAIN"] == "false"
    volume, _, mount = retrain["volumes"][0].partition(":")
    assert mount == env["DRIFTWATCH_REGISTRY_DIR"] and volume in compose["volumes"]
    assert retrain["depends_on"]["kafka"]["condition"] == "service_healthy"
