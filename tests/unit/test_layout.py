"""The layering the README describes, checked on the source: pure code knows no Kafka client,
and only ``agents/faust_compat/`` reaches into Faust's (or aiokafka's) private internals."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KAFKA_CLIENTS = ("faust", "mode", "aiokafka", "confluent_kafka", "rocksdict")
ALLOWED_PRIVATE = {
    "_exit": "os._exit",
    "_PARTITION_EOF": "confluent-kafka's public error code",
    "_ALL_BROKERS_DOWN": "confluent-kafka's public error code",
    "_reload": "agents.api.auth's own token store",
}
"""Private-looking attributes read on objects other than ``self``, and why they are fine."""


def modules(*tops: str) -> Iterator[tuple[Path, ast.Module]]:
    for top in tops:
        for path in sorted((REPO / top).rglob("*.py")):
            yield path.relative_to(REPO), ast.parse(path.read_text())


def imported(tree: ast.Module) -> Iterator[tuple[str, str | None]]:
    """(module, name) of every import; name is None for ``import module``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                yield node.module, alias.name


def test_pure_code_imports_no_kafka_client() -> None:
    found = [
        f"{path}: {module}"
        for path, tree in modules("streams", "schemas")
        for module, _ in imported(tree)
        if module.split(".")[0] in KAFKA_CLIENTS
    ]
    assert not found, found


def private_imports(tree: ast.Module) -> list[str]:
    """Imports of a private name (or from a private module) of a Kafka client library."""
    return [
        f"from {module} import {name}" if name else f"import {module}"
        for module, name in imported(tree)
        if module.split(".")[0] in KAFKA_CLIENTS
        and ((name or "").startswith("_") or any(p.startswith("_") for p in module.split(".")))
    ]


def private_attributes(tree: ast.Module) -> list[str]:
    """Reads of private attributes on objects other than ``self`` / ``cls``, but for
    :data:`ALLOWED_PRIVATE`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner, attr = node.value, node.attr
        elif (  # getattr(x, "_name"), hasattr, setattr
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "hasattr", "setattr"}
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            owner, attr = node.args[0], node.args[1].value
        else:
            continue
        if not attr.startswith("_") or attr.startswith("__") or attr in ALLOWED_PRIVATE:
            continue
        if isinstance(owner, ast.Name) and owner.id in {"self", "cls"}:
            continue
        found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def outside_the_adapter() -> Iterator[tuple[Path, ast.Module]]:
    for path, tree in modules("agents", "runtime", "driftwatch", "retrain"):
        if "faust_compat" not in path.parts:
            yield path, tree


def test_only_faust_compat_imports_private_names_of_the_kafka_clients() -> None:
    found = [f"{path}: {x}" for path, tree in outside_the_adapter() for x in private_imports(tree)]
    assert not found, found


def test_only_faust_compat_reads_private_attributes_of_other_objects() -> None:
    found = [
        f"{path}:{x}" for path, tree in outside_the_adapter() for x in private_attributes(tree)
    ]
    assert not found, found


def test_the_checks_see_a_violation() -> None:
    """The scans above find what they look for (a check that finds nothing anywhere would
    pass on any code); and the adapter itself is full of what they look for."""
    tree = ast.parse(
        "from faust.streams import _current_event\n"
        "import faust._private\n"
        "from faust import App\n"
        "x = app.consumer._thread\n"
        "y = self._own\n"
        "z = getattr(app, '_consumer', None)\n"
    )
    assert private_imports(tree) == [
        "from faust.streams import _current_event",
        "import faust._private",
    ]
    assert private_attributes(tree) == [
        "4: app.consumer._thread",
        "6: getattr(app, '_consumer', None)",
    ]
    adapter = [tree for path, tree in modules("agents/faust_compat")]
    assert sum(len(private_attributes(t)) for t in adapter) > 20
    assert any(private_imports(t) for t in adapter)
