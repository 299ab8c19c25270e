"""Static checks of docker-compose.yml, the Dockerfile and the deploy/ files they mount (Docker
itself is not available here).

They catch the mistakes that otherwise only show up at ``docker compose up``: a worker pointed
at a listener Kafka does not advertise, a KRaft quorum naming an undefined listener, a package
missing from the image, a worker started before Kafka is healthy, two workers sharing a state
volume or an advertised URL, a mounted file that is not in the repository, two services on
one host port, a metrics endpoint Prometheus does not scrape.
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from runtime.settings import env_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"

WORKERS = ("worker-1", "worker-2")
EXPECTED_SERVICES = {
    "kafka",
    *WORKERS,
    "retrain-worker",
    "prometheus",
    "alertmanager",
    "grafana",
}
# Environment variables that name a metrics port, and the services that set them.
METRICS_PORT_VARS = ("DRIFTWATCH_METRICS_PORT", "DRIFTWATCH_RETRAIN_METRICS_PORT")


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


# --- helpers ---------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}")


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` interpolation with every variable unset: the default.

    A bare ``${VAR}`` (or ``${VAR:?err}``) would need the variable set: the stack must start
    without an .env file, so those fail here.
    """

    def replace(m: re.Match[str]) -> str:
        if m.group("op") in (":-", "-"):
            return m.group("default")
        raise AssertionError(f"{m.group(0)} has no default: the stack needs it set")

    return _INTERPOLATION.sub(replace, value)


def _env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a str -> str dict (compose allows a mapping or a list)."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.split("=", 1) for item in raw)
        return {k: v for k, v in pairs}
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


@dataclass(frozen=True)
class Mount:
    source: str  # a named volume, or a host path (interpolated) for a bind mount
    target: str
    read_only: bool

    @property
    def is_bind(self) -> bool:
        return self.source.startswith((".", "/", "~"))


def _mounts(service: dict[str, Any]) -> list[Mount]:
    mounts = []
    for vol in service.get("volumes", []):
        if isinstance(vol, str):
            parts = _interpolate(vol).split(":")
            assert len(parts) in (2, 3), f"unexpected volume spec {vol!r}"
            mode = parts[2] if len(parts) == 3 else "rw"
            mounts.append(Mount(parts[0], parts[1], "ro" in mode.split(",")))
        else:
            source = _interpolate(str(vol["source"]))
            mounts.append(Mount(source, vol["target"], bool(vol.get("read_only", False))))
    return mounts


def _mount_at(service: dict[str, Any], target: str) -> Mount:
    found = [m for m in _mounts(service) if m.target == target]
    assert found, f"nothing mounted at {target}"
    return found[0]


def _host_file(mount: Mount, container_path: str) -> Path:
    """The repository file a container path maps to through a bind mount (file or dir)."""
    assert mount.is_bind, f"{mount.target} is not a bind mount"
    rel = Path(container_path).relative_to(mount.target) if container_path != mount.target else None
    base = (REPO_ROOT / mount.source).resolve()
    return base / rel if rel else base


def _published(service: dict[str, Any]) -> dict[int, int]:
    """Published ports {host port: container port} (short syntax ``[ip:]host:container``)."""
    out: dict[int, int] = {}
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out[int(p["published"])] = int(p["target"])
            continue
        parts = str(p).split("/")[0].split(":")
        assert len(parts) >= 2, f"port {p!r} is not published on a fixed host port"
        out[int(parts[-2])] = int(parts[-1])
    return out


def _container_ports(service: dict[str, Any]) -> set[int]:
    ports = set(_published(service).values())
    ports |= {int(str(p).split("/")[0]) for p in service.get("expose", [])}
    return ports


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


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def _flag(service: dict[str, Any], name: str) -> str:
    for arg in _command(service):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"no --{name}= in {service.get('command')}")


def _prometheus_config(services: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    prom = services["prometheus"]
    config_path = _flag(prom, "config.file")
    host = _host_file(_mount_at(prom, config_path), config_path)
    config = yaml.safe_load(host.read_text())
    assert isinstance(config, dict)
    return config, host


def _scrape_targets(config: dict[str, Any]) -> dict[str, str]:
    """{``host:port``: job name} of every static scrape target."""
    targets: dict[str, str] = {}
    for job in config.get("scrape_configs", []):
        for static in job.get("static_configs", []):
            for target in static.get("targets", []):
                targets[str(target)] = str(job["job_name"])
    return targets


# --- Kafka -----------------------------------------------------------------------------------


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
    assert set(host_listeners) <= set(_published(kafka))


# --- the stack as a whole --------------------------------------------------------------------


def test_the_stack_has_every_service(services: dict[str, Any]) -> None:
    assert set(services) == EXPECTED_SERVICES


def test_images_are_pinned(services: dict[str, Any]) -> None:
    built = {s["image"] for s in services.values() if "build" in s and "image" in s}
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image"
        if image in built:
            continue  # built from this repository's Dockerfile
        repo, _, tag = str(image).rpartition(":")
        assert repo and tag and tag != "latest" and "/" not in tag, f"{name}: pin {image!r}"


def test_every_bind_mount_exists_in_the_repo_and_named_volumes_are_declared(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    declared = set(compose.get("volumes") or {})
    used: set[str] = set()
    for name, service in services.items():
        for mount in _mounts(service):
            if mount.is_bind:
                host = (REPO_ROOT / mount.source).resolve()
                assert host.is_relative_to(REPO_ROOT), f"{name}: {mount.source} is outside the repo"
                assert host.exists(), f"{name}: {mount.source} does not exist in the repository"
                # configuration goes in read-only
                assert mount.read_only, f"{name}: mount {mount.source} read-only (:ro)"
            else:
                assert mount.source in declared, f"{name}: volume {mount.source!r} not declared"
                used.add(mount.source)
    assert used == declared, f"declared but unused volumes: {sorted(declared - used)}"


def test_host_ports_do_not_collide(services: dict[str, Any]) -> None:
    seen: dict[int, str] = {}
    for name, service in services.items():
        for host_port in _published(service):
            assert host_port not in seen, f"{name} and {seen[host_port]} both publish {host_port}"
            seen[host_port] = name
    # the ports deploy/README.md promises
    assert {6066: "worker-1", 6067: "worker-2", 9090: "prometheus"}.items() <= seen.items()
    assert seen[9093] == "alertmanager" and seen[3000] == "grafana" and seen[9094] == "kafka"


def test_every_service_restarts_and_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        test = check["test"]
        assert isinstance(test, list) and test[0] in {"CMD", "CMD-SHELL"}, name


def test_driftwatch_environment_names_real_settings(services: dict[str, Any]) -> None:
    known = {spec.env for spec in env_settings()}
    for name, service in services.items():
        if name == "kafka":
            continue
        for var in _env(service):
            if var.startswith(("DRIFTWATCH_", "KAFKA_")):
                assert var in known, f"{name}: {var} is not a driftwatch setting"


@pytest.mark.parametrize("name", (*WORKERS, "retrain-worker"))
def test_driftwatch_logs_in_on_the_secured_listener(services: dict[str, Any], name: str) -> None:
    """The services use the SASL listener, with the protocol and mechanism Kafka serves
    there, as a user the broker knows, with the password from a mounted file (never the
    environment), and that file holds the password the broker expects by default."""
    kafka_env = _env(_kafka(services))
    env = _env(services[name])
    host, port = env["KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)
    advertised = _listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    listener = next(n for n, hp in advertised.items() if hp == (host, int(port)))
    protocols = dict(
        item.strip().split(":", 1)
        for item in kafka_env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert protocols[listener] == env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert listener != kafka_env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    mechanisms = kafka_env[f"KAFKA_LISTENER_NAME_{listener}_SASL_ENABLED_MECHANISMS"]
    assert env["KAFKA_SASL_MECHANISM"] in mechanisms.split(",")
    jaas = kafka_env[
        f"KAFKA_LISTENER_NAME_{listener}_{env['KAFKA_SASL_MECHANISM']}_SASL_JAAS_CONFIG"
    ]
    assert jaas.startswith("org.apache.kafka.common.security.plain.PlainLoginModule required")
    assert jaas.rstrip().endswith(";")
    users = dict(re.findall(r'user_(\w+)="([^"]*)"', _interpolate(jaas)))
    assert env["KAFKA_SASL_USERNAME"] in users
    assert "KAFKA_SASL_PASSWORD" not in env
    secret = _mount_at(services[name], env["KAFKA_SASL_PASSWORD_FILE"])
    assert secret.read_only
    password = _host_file(secret, env["KAFKA_SASL_PASSWORD_FILE"]).read_text().rstrip("\n")
    assert password == users[env["KAFKA_SASL_USERNAME"]]


# --- workers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WORKERS)
def test_worker_points_at_internal_listener(services: dict[str, Any], name: str) -> None:
    kafka = _kafka(services)
    env = _env(services[name])
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    advertised = _listeners(_env(kafka)["KAFKA_ADVERTISED_LISTENERS"])
    servers = {(h, int(p)) for h, p in (s.strip().rsplit(":", 1) for s in bootstrap.split(","))}
    assert servers <= set(advertised.values()), f"{bootstrap} is not an advertised listener"
    kafka_names = {"kafka", kafka.get("hostname", "kafka")}
    assert all(host in kafka_names for host, _ in servers), "worker must use the in-network name"


@pytest.mark.parametrize("name", WORKERS)
def test_worker_waits_for_healthy_kafka_and_restarts(services: dict[str, Any], name: str) -> None:
    worker = services[name]
    depends = worker["depends_on"]
    assert isinstance(depends, dict), "depends_on needs the long form to require health"
    assert depends["kafka"]["condition"] == "service_healthy"
    assert worker["restart"] == "unless-stopped"


def test_workers_share_the_app_id_but_not_state_or_urls(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    envs = {name: _env(services[name]) for name in WORKERS}
    app_ids = {env.get("DRIFTWATCH_APP_ID") for env in envs.values()}
    assert len(app_ids) == 1 and None not in app_ids, f"app ids differ or are unset: {app_ids}"

    data_volumes = []
    urls = []
    for name, env in envs.items():
        worker = services[name]
        assert env["DRIFTWATCH_DATA_DIR"] == "/data"
        data = _mount_at(worker, env["DRIFTWATCH_DATA_DIR"])
        assert not data.is_bind and data.source in (compose.get("volumes") or {})
        data_volumes.append(data.source)

        url = urlsplit(env["DRIFTWATCH_API_ADVERTISED_URL"])
        assert url.scheme == "http" and url.path in ("", "/")
        # reachable from the other workers: its service name (or hostname) and its API port
        assert url.hostname in {name, worker.get("hostname")}, url
        assert url.port == int(env["DRIFTWATCH_API_PORT"])
        urls.append(url.geturl())
    assert len(set(data_volumes)) == len(WORKERS), f"workers share a state volume: {data_volumes}"
    assert len(set(urls)) == len(WORKERS), f"workers share an advertised URL: {urls}"


@pytest.mark.parametrize("name", WORKERS)
def test_worker_serves_api_and_metrics(services: dict[str, Any], name: str) -> None:
    worker = services[name]
    env = _env(worker)
    assert env["DRIFTWATCH_API_PORT"] == "6066"
    assert env["DRIFTWATCH_METRICS_PORT"] == "9108"
    assert int(env["DRIFTWATCH_API_PORT"]) in _published(worker).values(), "API not published"
    assert 9108 in _container_ports(worker)
    assert worker["command"] == ["worker"]


@pytest.mark.parametrize("name", WORKERS)
def test_worker_healthcheck_gets_healthz_on_the_api_port(
    services: dict[str, Any], name: str
) -> None:
    worker = services[name]
    test = worker["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], "the image has no curl: use python -c"
    code = test[3]
    ast.parse(code)  # valid Python
    m = re.search(r"urlopen\('(http://[^']+)'", code)
    assert m, code
    url = urlsplit(m.group(1))
    assert url.hostname in {"127.0.0.1", "localhost"}
    assert url.port == int(_env(worker)["DRIFTWATCH_API_PORT"])
    assert url.path == "/healthz"
    assert "timeout=" in code, "a hung API must fail the check, not hang it"


@pytest.mark.parametrize("name", WORKERS)
def test_worker_tokens_file_is_mounted_read_only(services: dict[str, Any], name: str) -> None:
    worker = services[name]
    path = _env(worker)["DRIFTWATCH_API_TOKENS_FILE"]
    assert path == "/etc/driftwatch/tokens.json"
    mount = _mount_at(worker, path)
    assert mount.read_only
    # The default (no DRIFTWATCH_TOKENS_FILE set) is the shipped example, in the contract's
    # format, with a placeholder hash.
    example = _host_file(mount, path)
    assert example == REPO_ROOT / "deploy" / "driftwatch" / "tokens.example.json"
    tokens = json.loads(example.read_text())["tokens"]
    assert tokens
    for entry in tokens:
        assert set(entry) == {"name", "sha256", "tenants", "scopes"}
        assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
        assert entry["tenants"] and set(entry["scopes"]) <= {"read", "write"}


def test_worker_image_runs_driftwatch_worker(services: dict[str, Any]) -> None:
    built = [s for s in services.values() if "build" in s]
    assert len(built) == 1, "one service builds the image, the others reuse it"
    builder = built[0]
    build = builder["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (REPO_ROOT / context / dockerfile).resolve() == DOCKERFILE
    assert DOCKERFILE.is_file()
    for name in (*WORKERS, "retrain-worker"):
        assert services[name]["image"] == builder["image"], f"{name} runs another image"

    for name in WORKERS:
        worker = services[name]
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


def test_dockerfile_installs_every_package() -> None:
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


def test_non_editable_install_includes_every_subpackage() -> None:
    """``pip install .`` (the image) installs only the packages pyproject lists: a new
    subpackage (a directory with Python modules) that is not listed is missing from the image."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    found = set()
    for top in {p.split(".")[0] for p in listed}:
        for module in (REPO_ROOT / top).rglob("*.py"):
            rel = module.parent.relative_to(REPO_ROOT)
            if "__pycache__" not in rel.parts:
                found.add(".".join(rel.parts))
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_dockerfile_exposes_api_and_metrics_and_owns_its_volumes(
    services: dict[str, Any],
) -> None:
    text = DOCKERFILE.read_text()
    exposed = {int(p) for line in re.findall(r"^EXPOSE\s+(.+)$", text, re.M) for p in line.split()}
    assert {6066, 9108} <= exposed
    # Fresh named volumes inherit the image directory's owner: the unprivileged user must own
    # every directory a driftwatch service mounts a named volume on.
    m = re.search(r"chown\s+driftwatch:driftwatch\s+([^\n\\]+)", text)
    assert m, "the Dockerfile must chown the volume directories"
    owned = set(m.group(1).split())
    for name in (*WORKERS, "retrain-worker"):
        for mount in _mounts(services[name]):
            if not mount.is_bind:
                assert mount.target in owned, f"{name}: {mount.target} not owned by driftwatch"


def test_retrain_worker_has_a_registry_volume_and_starts_switched_off(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    retrain = services["retrain-worker"]
    assert retrain["command"] == ["retrain-worker"]
    env = _env(retrain)
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == _env(services["worker-1"])["KAFKA_BOOTSTRAP_SERVERS"]
    assert env["DRIFTWATCH_AUTO_RETRAIN"] == "false"
    registry = _mount_at(retrain, env["DRIFTWATCH_REGISTRY_DIR"])
    assert not registry.is_bind and registry.source in compose["volumes"]
    assert retrain["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert int(env["DRIFTWATCH_RETRAIN_METRICS_PORT"]) in _container_ports(retrain)


# --- monitoring ------------------------------------------------------------------------------


def test_prometheus_scrapes_every_service_that_exports_metrics(services: dict[str, Any]) -> None:
    config, _ = _prometheus_config(services)
    targets = _scrape_targets(config)
    exporters = {}
    for name, service in services.items():
        env = _env(service)
        for var in METRICS_PORT_VARS:
            if var in env and env[var] != "0":
                exporters[f"{name}:{env[var]}"] = name
                assert int(env[var]) in _container_ports(service), f"{name}: expose {env[var]}"
    assert set(exporters) >= {"worker-1:9108", "worker-2:9108", "retrain-worker:9109"}
    missing = set(exporters) - set(targets)
    assert not missing, f"prometheus.yml does not scrape {sorted(missing)}"
    # every target names a service of the stack (or Prometheus itself)
    for target in targets:
        host = target.rsplit(":", 1)[0]
        assert host in services or host == "localhost", f"scrape target {target} is no service"
    # the two workers are one job: the rules and the dashboard aggregate over it
    assert targets["worker-1:9108"] == targets["worker-2:9108"] == "driftwatch-worker"


def test_prometheus_loads_the_rules_and_alerts_alertmanager(services: dict[str, Any]) -> None:
    config, host_config = _prometheus_config(services)
    prom = services["prometheus"]
    container_dir = Path(_flag(prom, "config.file")).parent
    rule_files = config["rule_files"]
    assert rule_files
    for rule_file in rule_files:
        in_container = str(container_dir / rule_file)  # relative to the config file
        host = _host_file(_mount_at(prom, in_container), in_container)
        assert host.is_file(), f"{rule_file} is not mounted from an existing file"
        assert host.parent == host_config.parent
    assert (REPO_ROOT / "deploy/prometheus/rules.yml").resolve() in {
        (host_config.parent / f).resolve() for f in rule_files
    }
    # storage on a named volume
    assert not _mount_at(prom, _flag(prom, "storage.tsdb.path")).is_bind

    alertmanagers = [
        t
        for am in config["alerting"]["alertmanagers"]
        for static in am["static_configs"]
        for t in static["targets"]
    ]
    assert alertmanagers == ["alertmanager:9093"]
    am = services["alertmanager"]
    assert 9093 in _container_ports(am)
    am_config = _flag(am, "config.file")
    assert _host_file(_mount_at(am, am_config), am_config) == (
        REPO_ROOT / "deploy/alertmanager/alertmanager.yml"
    )


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(
    services: dict[str, Any],
) -> None:
    grafana = services["grafana"]
    env = _env(grafana)
    provisioning = _mount_at(grafana, "/etc/grafana/provisioning")
    assert _host_file(provisioning, "/etc/grafana/provisioning") == (
        REPO_ROOT / "deploy/grafana/provisioning"
    )
    # anonymous viewers, or an admin password from the environment
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert "GRAFANA_ADMIN_PASSWORD" in str(grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"])

    datasources = yaml.safe_load(
        (REPO_ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    (prometheus,) = [d for d in datasources if d["type"] == "prometheus"]
    url = urlsplit(prometheus["url"])
    assert url.hostname == "prometheus" and url.port in _container_ports(services["prometheus"])

    providers = yaml.safe_load(
        (REPO_ROOT / "deploy/grafana/provisioning/dashboards/driftwatch.yml").read_text()
    )["providers"]
    for provider in providers:
        path = provider["options"]["path"]
        host_dir = _host_file(_mount_at(grafana, path), path)
        assert host_dir == REPO_ROOT / "deploy/grafana/dashboards"
        assert list(host_dir.glob("*.json")), "no dashboard in the provisioned directory"
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    home_mount = next(m for m in _mounts(grafana) if home.startswith(m.target + "/"))
    assert _host_file(home_mount, home).is_file()
