"""The on-disk model registry: round trips, checksums, version numbering across crashes,
idempotency, activation history and rollback targets, and hostile names."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrain.registry import TMP_PREFIX, ModelRegistry, ModelVersion, RegistryError

WINDOW = (1_767_225_600.0, 1_768_435_200.0)


def register(reg: ModelRegistry, artifact: Any = None, **overrides: Any) -> ModelVersion:
    kwargs: dict[str, Any] = {
        "parent": "v1",
        "training_window": WINDOW,
        "rows": 1000,
        "metrics": {"pr_auc": 0.8, "brier": 0.04},
    } | overrides
    payload = {"weights": np.arange(5.0)} if artifact is None else artifact
    return reg.register("acme", "fraud", payload, **kwargs)


def stream_dir(root: Path) -> Path:
    return root / "acme" / "fraud"


def test_register_versions_get_and_load_round_trip(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    assert reg.versions("acme", "fraud") == [] and reg.streams() == []
    v = register(reg, {"weights": np.array([1.0, 2.0])}, request_id="req-1", extra={"k": [1]})
    assert (v.version, v.parent, v.training_window, v.rows) == ("r1", "v1", WINDOW, 1000)
    assert v.metrics == {"pr_auc": 0.8, "brier": 0.04} and v.extra == {"k": [1]}
    artifact = stream_dir(tmp_path) / "versions" / "r1" / "model.joblib"
    assert v.sha256 == hashlib.sha256(artifact.read_bytes()).hexdigest()
    meta = json.loads((artifact.parent / "meta.json").read_text())
    assert meta["sha256"] == v.sha256 and meta["request_id"] == "req-1"
    assert reg.get("acme", "fraud", "r1") == v
    assert reg.versions("acme", "fraud") == [v]
    loaded = reg.load("acme", "fraud", "r1")
    assert np.array_equal(loaded["weights"], [1.0, 2.0])
    assert reg.streams() == [("acme", "fraud")]
    assert ModelRegistry(tmp_path).get("acme", "fraud", "r1") == v  # a fresh reader agrees
    with pytest.raises(RegistryError):
        reg.get("acme", "fraud", "r2")
    with pytest.raises(RegistryError):
        reg.load("acme", "conflict", "r1")


def test_a_tampered_artifact_is_neither_loaded_nor_activated(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    register(reg)
    register(reg)
    reg.activate("acme", "fraud", "r1", reason="first")
    artifact = stream_dir(tmp_path) / "versions" / "r2" / "model.joblib"
    data = bytearray(artifact.read_bytes())
    data[-3] ^= 0xFF
    artifact.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="checksum"):
        reg.load("acme", "fraud", "r2")
    with pytest.raises(RegistryError, match="checksum"):
        reg.activate("acme", "fraud", "r2", reason="promote")
    assert reg.active("acme", "fraud").version == "r1"  # type: ignore[union-attr]
    assert len(reg.history("acme", "fraud")) == 1
    artifact.unlink()
    with pytest.raises(RegistryError, match="cannot read"):
        reg.load("acme", "fraud", "r2")


def test_versions_count_up_and_are_never_reused_after_a_failed_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = ModelRegistry(tmp_path)
    assert [register(reg).version for _ in range(3)] == ["r1", "r2", "r3"]

    def broken_rename(src: Any, dst: Any) -> None:
        raise OSError("disk on fire")

    with monkeypatch.context() as m:
        m.setattr(os, "rename", broken_rename)
        with pytest.raises(OSError, match="disk on fire"):
            register(reg)
    assert [v.version for v in reg.versions("acme", "fraud")] == ["r1", "r2", "r3"]
    assert register(reg).version == "r5"  # r4 was handed out, so it is burnt
    # Deleting the newest version by hand does not free its number either.
    for f in (stream_dir(tmp_path) / "versions" / "r5").iterdir():
        f.unlink()
    (stream_dir(tmp_path) / "versions" / "r5").rmdir()
    assert register(reg).version == "r6"
    # Nor does losing the counter: the versions on disk still count.
    (stream_dir(tmp_path) / "counter").unlink()
    assert register(reg).version == "r7"


def _crash_while_registering(root: str) -> None:
    """In a child process: die (no cleanup, no exception handling) at the final rename."""

    def crash(src: Any, dst: Any) -> None:
        os._exit(3)

    os.rename = crash  # type: ignore[assignment]
    register(ModelRegistry(root))


def test_a_crash_mid_register_leaves_an_invisible_temp_dir_that_cleanup_removes(
    tmp_path: Path,
) -> None:
    reg = ModelRegistry(tmp_path)
    register(reg)
    child = multiprocessing.get_context("fork").Process(
        target=_crash_while_registering, args=(str(tmp_path),)
    )
    child.start()
    child.join(30)
    assert child.exitcode == 3
    leftovers = [p for p in stream_dir(tmp_path).iterdir() if p.name.startswith(TMP_PREFIX)]
    assert len(leftovers) == 1 and (leftovers[0] / "model.joblib").is_file()
    assert leftovers[0].name.startswith(f"{TMP_PREFIX}r2-")
    # A hand-made leftover, as an older crash might have left, also reserves its number.
    (stream_dir(tmp_path) / f"{TMP_PREFIX}r9-deadbeef").mkdir()
    (stream_dir(tmp_path) / "versions" / f"{TMP_PREFIX}stray").write_text("half")
    assert [v.version for v in reg.versions("acme", "fraud")] == ["r1"]
    assert reg.streams() == [("acme", "fraud")]
    assert register(reg).version == "r10"
    assert reg.cleanup() == 3
    assert reg.cleanup() == 0
    names = {p.name for p in stream_dir(tmp_path).iterdir()}
    assert not any(n.startswith(TMP_PREFIX) for n in names)
    assert [v.version for v in reg.versions("acme", "fraud")] == ["r1", "r10"]
    assert register(reg).version == "r11"


def test_request_id_makes_register_idempotent(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    first = register(reg, request_id="drift-42")
    again = register(reg, {"something": "else"}, request_id="drift-42", rows=5)
    assert again == first
    assert reg.find_request("acme", "fraud", "drift-42") == first
    assert reg.find_request("acme", "fraud", "drift-43") is None
    assert register(reg, request_id="drift-43").version == "r2"
    assert register(reg).version == "r3" and register(reg).version == "r4"  # None: no dedup
    assert len(reg.versions("acme", "fraud")) == 4


def test_activation_history_and_rollback_target(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    assert reg.active("acme", "fraud") is None and reg.previous_active("acme", "fraud") is None
    v1 = reg.register_external("acme", "fraud", "v1", metrics={"pr_auc": 0.79}, created_at=1.0)
    assert v1.external and v1.sha256 == "" and v1.extra == {"external": True}
    assert reg.register_external("acme", "fraud", "v1") == v1  # already there
    with pytest.raises(RegistryError, match="no artifact"):
        reg.load("acme", "fraud", "v1")
    with pytest.raises(RegistryError, match="reserved"):
        reg.register_external("acme", "fraud", "r7")

    reg.activate("acme", "fraud", "v1", reason="serving before the first retrain", at=10.0)
    r1 = register(reg, parent="v1", created_at=2.0)
    reg.activate("acme", "fraud", "r1", reason="promoted", at=20.0)
    assert reg.active("acme", "fraud") == r1
    assert reg.previous_active("acme", "fraud") == v1
    r2 = register(reg, parent="r1", created_at=3.0)
    assert reg.active("acme", "fraud") == r1  # registering does not activate
    reg.activate("acme", "fraud", "r2", reason="promoted again", at=30.0)
    reg.activate("acme", "fraud", "r2", reason="twice", at=31.0)  # a no-op
    assert reg.active("acme", "fraud") == r2
    assert reg.previous_active("acme", "fraud") == r1
    assert [v.version for v in reg.versions("acme", "fraud")] == ["v1", "r1", "r2"]
    assert reg.history("acme", "fraud") == [
        {
            "version": "v1",
            "previous": None,
            "reason": "serving before the first retrain",
            "at": 10.0,
        },
        {"version": "r1", "previous": "v1", "reason": "promoted", "at": 20.0},
        {"version": "r2", "previous": "r1", "reason": "promoted again", "at": 30.0},
    ]
    reg.activate("acme", "fraud", "r1", reason="rollback: PR-AUC fell", at=40.0)
    assert reg.active("acme", "fraud") == r1
    assert reg.previous_active("acme", "fraud") == r2
    assert reg.history("acme", "fraud")[-1]["previous"] == "r2"
    with pytest.raises(RegistryError):
        reg.activate("acme", "fraud", "r9", reason="no such version")
    # A torn last history line (a crash mid-append) does not break reading it.
    with open(stream_dir(tmp_path) / "history.jsonl", "a") as f:
        f.write('{"version": "r')
    assert len(reg.history("acme", "fraud")) == 4
    assert reg.streams() == [("acme", "fraud")]


@pytest.mark.parametrize(
    ("tenant", "model", "version"),
    [
        ("../etc", "fraud", "r1"),
        ("acme", "..", "r1"),
        ("acme/evil", "fraud", "r1"),
        ("", "fraud", "r1"),
        ("acme", "fraud", "../../x"),
        ("acme", "fraud", ".tmp-r1-x"),
        ("acme", "fraud", "a" * 129),
        ("acme\x00", "fraud", "r1"),
    ],
)
def test_unsafe_names_are_rejected(tmp_path: Path, tenant: str, model: str, version: str) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    with pytest.raises(ValueError):
        reg.get(tenant, model, version)
    with pytest.raises(ValueError):
        reg.activate(tenant, model, version, reason="x")
    if version == "r1":
        with pytest.raises(ValueError):
            reg.register(tenant, model, {}, parent=None, training_window=None, rows=0, metrics={})
    else:
        with pytest.raises(ValueError):
            reg.register_external(tenant, model, version)
    assert list((tmp_path / "reg").rglob("*")) == []  # nothing was written anywhere
    assert list(tmp_path.iterdir()) == [tmp_path / "reg"]


def test_metadata_round_trips_through_json(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    v = register(reg, metrics={"pr_auc": 0.8, "undefined": float("nan")}, training_window=None)
    again = reg.get("acme", "fraud", v.version)
    assert again.training_window is None and again.metrics["pr_auc"] == 0.8
    assert np.isnan(again.metrics["undefined"])
    assert ModelVersion.from_dict(json.loads(json.dumps(again.to_dict()))).version == "r1"
    with pytest.raises(TypeError):
        register(reg, extra={"not json": object()})
    assert [x.version for x in reg.versions("acme", "fraud")] == ["r1"]
