"""Where student models come from: a local Hugging Face folder (training needs the weights on disk)."""

from __future__ import annotations

from pathlib import Path

from distillery.models import EMBEDDED, resolve_model


def resolve_model_dir(name: str) -> Path:
    """`smollm2` or a folder -> the folder, checked to hold a Hugging Face model."""
    path = Path(resolve_model(name)).expanduser()
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} is not a Hugging Face model folder (no config.json); use {EMBEDDED!r} "
                                "for the embedded student")
    return path
