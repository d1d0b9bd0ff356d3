"""Where student models come from: a Hugging Face folder, or `smollm2` for the embedded SmolLM2-135M-Instruct."""

from __future__ import annotations

from pathlib import Path

EMBEDDED = "smollm2"


def resolve_model_dir(name: str) -> Path:
    if name == EMBEDDED:
        from distillery.models.smollm2 import ensure_hf_folder

        return ensure_hf_folder()
    path = Path(name).expanduser()
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} is not a Hugging Face model folder (no config.json); use {EMBEDDED!r} "
                                "for the embedded student")
    return path
