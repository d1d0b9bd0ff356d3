"""Config building blocks: the one strict base (every typed config - recipes, stage configs, verifier settings,
cluster profiles - rejects unknown fields instead of silently ignoring a misspelt key) and the path types."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo


class StrictModel(BaseModel):
    """A pydantic model whose unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = Path((info.context or {}).get("base_dir", "."))
    expanded = os.path.expandvars(str(value))
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
    if unset:
        raise ValueError(f"environment variable {', '.join(unset)} is not set (used in {value})")
    path = Path(expanded).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _existing(value: Path, info: ValidationInfo) -> Path:
    path = _resolve_path(value, info)
    if (info.context or {}).get("check_paths", True) and not path.exists():
        raise ValueError(f"path does not exist: {path}")
    return path


InputPath = Annotated[Path, AfterValidator(_existing)]
"""A path that must exist when the recipe is loaded; relative paths are taken from the working directory."""
OutputPath = Annotated[Path, AfterValidator(_resolve_path)]
"""A path the run will create; made absolute at load time so every task agrees on it."""
