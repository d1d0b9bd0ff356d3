"""No import circles in the core or the executors: every module imports alone, and no module imports (at run time,
lazily or not) a module that leads back to it."""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import distillery

PACKAGES = ("distillery.core", "distillery.executors")


def _modules() -> list[str]:
    names = []
    for module in pkgutil.walk_packages(distillery.__path__, "distillery."):
        names.append(module.name)
    return sorted(names)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(module: str, known: set[str]) -> set[str]:
    """Modules of the package that `module` imports at run time (module level or inside functions)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
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


def test_no_core_or_executor_module_imports_a_module_that_imports_it_back() -> None:
    graph = _graph()
    circles = []
    for module in sorted(graph):
        if not module.startswith(PACKAGES):
            continue
        for imported in sorted(graph[module]):
            back = _reaches(graph, imported, module)
            if back is not None:
                circles.append(" -> ".join([module, *back]))
    assert circles == []


def test_the_graph_sees_lazy_imports(tmp_path: Path) -> None:
    """The check would catch a circle hidden in a function body, as `core/stage.py` once had."""
    graph = _graph()
    assert "distillery.core.store" in graph["distillery.core.stage"]
    graph["distillery.core.store"] = graph["distillery.core.store"] | {"distillery.core.stage"}
    assert _reaches(graph, "distillery.core.store", "distillery.core.stage") is not None


@pytest.mark.parametrize("module", [m for m in _modules() if m.startswith(PACKAGES)])
def test_each_module_imports_alone(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
