"""The package imports only downward: no module imports (at run time, lazily or not) a module that leads back to
it, and no import points up a layer. `if TYPE_CHECKING:` imports do not count: they never run."""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import distillery

LAYERS: list[tuple[str, set[str]]] = [
    ("ground: the records every stage speaks, bundled models and data, the table of stage classes (names only: it "
     "imports nothing), what the machine computes with", {"schema", "models", "data", "stages", "hardware"}),
    ("framework: stage, runner, store, recipe", {"core"}),
    ("paper-shaped synthetic queries and teachers (the rehearsal's data)", {"synth"}),
    ("engines: chat models", {"llm"}),
    ("stage families, and the served teachers' replicas and clients", {"ingest", "prepare", "verify", "filters", "train", "serve"}),
    ("generation", {"generate"}),
    ("stages over generation", {"variants", "evaluate"}),
    ("executors", {"executors"}),
    ("commands over a run", {"ops"}),
    ("reports", {"analyze"}),
    ("the command line", {"cli", ""}),
    ("the test kit", {"testing"}),
]
"""Bottom first. A module may import its own package and any package of a lower layer, nothing else (packages
of one layer do not import each other). "" is `distillery/__init__.py`."""


def _modules() -> list[str]:
    names = ["distillery"]
    for module in pkgutil.walk_packages(distillery.__path__, "distillery."):
        names.append(module.name)
    return sorted(names)


def _package(module: str) -> str:
    """The top-level package (or module) of `distillery` that `module` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(module: str) -> int:
    package = _package(module)
    for index, (_, packages) in enumerate(LAYERS):
        if package in packages:
            return index
    raise AssertionError(f"{module}: package {package!r} is in no layer of LAYERS; give it one")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(module: str, known: set[str]) -> set[str]:
    """Modules of the package that `module` imports at run time (module level or inside functions)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    package = module if spec.submodule_search_locations else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if name in known and name != module}


def _graph() -> dict[str, set[str]]:
    known = set(_modules())
    return {module: _runtime_imports(module, known) for module in known}


def _reaches(graph: dict[str, set[str]], start: str, target: str) -> list[str] | None:
    """A path of imports from start to target, if any."""
    stack, seen = [(start, [start])], {start}
    while stack:
        node, path = stack.pop()
        for nxt in graph[node]:
            if nxt == target:
                return path + [nxt]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    graph = _graph()
    circles = []
    for module in sorted(graph):
        for imported in sorted(graph[module]):
            back = _reaches(graph, imported, module)
            if back is not None:
                circles.append(" -> ".join([module, *back]))
    assert circles == []


def test_no_import_points_up_a_layer_or_across_one() -> None:
    graph = _graph()
    wrong = [f"{module} ({LAYERS[_layer(module)][0]}) imports {imported} ({LAYERS[_layer(imported)][0]})"
             for module in sorted(graph) for imported in sorted(graph[module])
             if _package(imported) != _package(module) and _layer(imported) >= _layer(module)]
    assert wrong == []


def test_every_package_has_a_layer() -> None:
    for module in _modules():
        _layer(module)


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones() -> None:
    """The check would catch a circle hidden in a function body, as `core/stage.py` once had, and ignores the
    imports that only type checkers run (`core/stage.py` names `core.teachers` that way)."""
    graph = _graph()
    assert "distillery.core.store" in graph["distillery.core.stage"]
    assert "distillery.core.teachers" not in graph["distillery.core.stage"]
    assert "distillery.models.smollm2" in graph["distillery.models"]  # imported inside a function
    graph["distillery.core.store"] = graph["distillery.core.store"] | {"distillery.core.stage"}
    assert _reaches(graph, "distillery.core.store", "distillery.core.stage") is not None


def test_the_layer_rule_catches_an_upward_import() -> None:
    assert _layer("distillery.evaluate.stage") < _layer("distillery.analyze.report")
    assert _layer("distillery.schema.records") < _layer("distillery.core.stage") < _layer("distillery.llm.build")


def test_the_kernels_package_stands_alone() -> None:
    """`distillery_kernels` ships beside `distillery` and imports nothing of it (stages import the kernels)."""
    import distillery_kernels

    for module in pkgutil.walk_packages(distillery_kernels.__path__, "distillery_kernels."):
        assert not {name for name in _runtime_imports(module.name, set(_modules())) if name.startswith("distillery")}


@pytest.mark.parametrize("module", [m for m in _modules() if m.startswith(("distillery.core", "distillery.executors",
                                                                           "distillery.schema"))])
def test_each_module_imports_alone(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
