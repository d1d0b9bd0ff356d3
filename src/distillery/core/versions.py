"""What a shard's manifest records about the code and config that made it."""

from __future__ import annotations

import functools
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from distillery.core.store import config_digest

if TYPE_CHECKING:
    from distillery.core.stage import Stage


@functools.cache
def code_version() -> str:
    """Package version plus the git commit when running from a checkout (e.g. `0.1.0+g1a2b3c4`)."""
    try:
        base = version("distillery")
    except PackageNotFoundError:
        base = "0+unknown"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return base
    return f"{base}+g{commit}"


def stage_config_digest(stage: Stage) -> str:
    """Digest of everything that decides a step's output besides its input: type, config, teacher, seed.
    Cached on the stage object: status computes it for every shard."""
    cached = getattr(stage, "_config_digest", None)
    if cached is not None:
        return cached
    stage._config_digest = config_digest({
        "type": stage.name,
        "config": stage.config.model_dump(mode="json"),
        "teacher": stage.teacher.model_dump(mode="json") if stage.teacher else None,
        "seed": stage.recipe.seed,
    })
    return stage._config_digest
