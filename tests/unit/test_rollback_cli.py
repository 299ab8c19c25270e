"""``driftwatch rollback`` with Kafka out of reach: the registry rolls back, and the command
says the announcement did not go out (exit 3) instead of reporting success. A real client,
no broker: librdkafka's own delivery report decides."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftwatch import retrain_cli
from driftwatch.cli import main
from retrain.registry import ModelRegistry


def test_a_rollback_no_one_heard_of_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    for version in ("v1", "v2"):
        registry.register_external("acme", "fraud", version)
        registry.activate("acme", "fraud", version, reason="test")
    monkeypatch.setenv("DRIFTWATCH_REGISTRY_DIR", str(tmp_path / "registry"))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens there
    monkeypatch.setattr(retrain_cli, "ROLLBACK_DELIVERY_MS", 1500)
    code = main(["rollback", "--tenant", "acme", "--model", "fraud", "--by", "ops"])
    out, err = capfd.readouterr()
    assert code == 3, (out, err)
    assert out.strip() == "acme/fraud: v2 -> v1"
    assert "rolled back, but model-events was not reachable" in err and "tell serving" in err
    assert "%3|" not in err, "librdkafka's own lines stay off the terminal"
    active = ModelRegistry(tmp_path / "registry").active("acme", "fraud")
    assert active is not None and active.version == "v1"
    # To the version already active: refused, nothing switched or announced.
    code = main(["rollback", "--tenant", "acme", "--model", "fraud", "--to", "v1"])
    out, err = capfd.readouterr()
    assert code == 1 and out == "" and "v1 is already the active version" in err
