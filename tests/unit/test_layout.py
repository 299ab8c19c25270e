"""The layering the README describes, checked on the source: pure code knows no Kafka client,
and only ``agents/faust_compat/`` reaches into Faust's (or aiokafka's) private internals."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KAFKA_CLIENTS = ("faust", "mode", "aiokafka", "confluent_kafka", "rocksdict")
ALLOWED_PRIVATE = {
    "os._exit": "the standard library's immediate exit",
    "KafkaError._PARTITION_EOF": "confluent-kafka's public error code",
    "KafkaError._ALL_BROKERS_DOWN": "confluent-kafka's public error code",
    "store._reload": "agents.api.auth's own token store",
}
"""Private-looking attributes read on objects other than ``self`` (whole expressions), and
why they are fine. Names built at run time (``getattr(x, name)``, ``vars(x)``) are not
seen by these checks: a reviewer's job."""


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


def client_subclasses(tree: ast.Module) -> set[ast.AST]:
    """Nodes inside classes derived from a Kafka client's classes (``faust.Sensor``): their
    ``self`` is Faust's object, whose private attributes are Faust's."""
    client_names = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in KAFKA_CLIENTS
        for alias in node.names
    } | set(KAFKA_CLIENTS)
    inside: set[ast.AST] = set()
    for cls in ast.walk(tree):
        if isinstance(cls, ast.ClassDef) and any(
            ast.unparse(base).split(".")[0] in client_names for base in cls.bases
        ):
            inside.update(ast.walk(cls))
    return inside


def private_attributes(tree: ast.Module) -> list[str]:
    """Reads of private attributes on objects other than ``self`` / ``cls`` (or on ``self``
    in a subclass of a Kafka client's class), but for :data:`ALLOWED_PRIVATE`."""
    found = []
    in_client_class = client_subclasses(tree)
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
        if not attr.startswith("_") or attr.startswith("__"):
            continue
        if f"{ast.unparse(owner)}.{attr}" in ALLOWED_PRIVATE:
            continue
        own = isinstance(owner, ast.Name) and owner.id in {"self", "cls"}
        if own and node not in in_client_class:
            continue
        found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def outside_the_adapter() -> Iterator[tuple[Path, ast.Module]]:
    for path, tree in modules("agents", "runtime", "driftwatch", "retrain", "bench"):
        if "faust_compat" not in path.parts:
            yield path, tree


def test_the_scan_reads_the_code_outside_the_adapter() -> None:
    scanned = {str(path) for path, _ in outside_the_adapter()}
    assert {"agents/processor.py", "agents/app.py", "driftwatch/worker.py"} <= scanned
    assert len(scanned) > 40


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
        "class S(faust.Sensor):\n"
        "    def on(self):\n"
        "        return self._app, os._exit, other._exit\n"
    )
    assert private_imports(tree) == [
        "from faust.streams import _current_event",
        "import faust._private",
    ]
    assert private_attributes(tree) == [
        "4: app.consumer._thread",
        "6: getattr(app, '_consumer', None)",
        "9: self._app",
        "9: other._exit",
    ]
    adapter = [tree for path, tree in modules("agents/faust_compat")]
    assert sum(len(private_attributes(t)) for t in adapter) > 20
    assert any(private_imports(t) for t in adapter)
