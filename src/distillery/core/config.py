"""Config building blocks: the one strict base (every typed config - recipes, stage configs, verifier settings,
cluster profiles - rejects unknown fields instead of silently ignoring a misspelt key) and the path types."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, ValidationInfo


class StrictModel(BaseModel):
    """A pydantic model whose unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


PLAN_ANYWAY = "to plan on a machine without the data: distillery plan RECIPE --no-path-check"
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Environment variables expanded, relative to the working directory. Without the path check (planning where
    the data is not mounted) an unset variable becomes a visible placeholder and a warning, not an error."""
    context = info.context or {}
    base = Path(context.get("base_dir", "."))
    expanded = os.path.expandvars(str(value))
    unset = _VARIABLE.findall(expanded)
    if unset:
        if context.get("check_paths", True):
            raise ValueError(f"environment variable {', '.join(unset)} is not set (used in {value}); set it, or "
                             f"{PLAN_ANYWAY}")
        expanded = _VARIABLE.sub(lambda match: f"/<unset {match.group(1)}>", expanded).replace("//", "/")
        for variable in unset:
            context.setdefault("unset_variables", {}).setdefault(variable, []).append(str(value))
    path = Path(expanded).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _existing(value: Path, info: ValidationInfo) -> Path:
    path = _resolve_path(value, info)
    if (info.context or {}).get("check_paths", True) and not path.exists():
        raise ValueError(f"path does not exist: {path}; {PLAN_ANYWAY}")
    return path


InputPath = Annotated[Path, AfterValidator(_existing)]
"""A path that must exist when the recipe is loaded; relative paths are taken from the working directory."""
OutputPath = Annotated[Path, AfterValidator(_resolve_path)]
"""A path the run will create; made absolute at load time so every task agrees on it."""


def yaml_line_index(text: str) -> dict[tuple[Any, ...], int]:
    """Map each YAML node's path (keys and list indices) to its 1-based line, for error messages."""
    lines: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                lines[path + (key.value,)] = key.start_mark.line + 1
                walk(value, path + (key.value,))
        elif isinstance(node, yaml.SequenceNode):
            for index, value in enumerate(node.value):
                walk(value, path + (index,))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return lines


def format_validation_error(source: str, error: ValidationError, prefix: tuple[Any, ...] = (),
                            lines: dict[tuple[Any, ...], int] | None = None) -> str:
    """One line per error: `file:line: field.path: what was expected (got ...)`; the one formatter of config errors."""
    lines = lines or {}
    messages = []
    for item in error.errors():
        loc = prefix + tuple(item["loc"])
        field = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")
        line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), None)
        where = f"{source}:{line}" if line else source
        expected = item["msg"]
        if item["type"] == "extra_forbidden":
            expected = "unknown field (check the spelling; see `distillery explain`)"
        messages.append(f"{where}: {field or '<top>'}: {expected} (got {item.get('input')!r:.80})")
    return "\n".join(messages)


def read_yaml(path: Path, what: str, error: type[Exception]) -> tuple[Any, str]:
    """A YAML file's data and text; a missing file or invalid YAML raises `error` naming the file."""
    if not path.exists():
        raise error(f"{path}: {what} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        return yaml.safe_load(text), text
    except yaml.YAMLError as problem:
        raise error(f"{path}: not valid YAML: {problem}") from None
