"""Fixtures of the core tests: a query file and a recipe of ingest plus the test-only `test_sleepy` stage."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import pytest
import yaml

from distillery.testing import write_queries
from distillery.testing.stages import PLUGIN


class RecipeWriter(Protocol):
    def __call__(self, path: Path, run_dir: Path, inputs: Path, num_shards: int = 2, delay_s: float = 0.0,
                 tag: str = "x", **extra: object) -> Path: ...


def _write_recipe(path: Path, run_dir: Path, inputs: Path, num_shards: int = 2, delay_s: float = 0.0,
                  tag: str = "x", **extra: object) -> Path:
    recipe = {
        "name": "core-test", "run_dir": str(run_dir), "num_shards": num_shards, "plugins": [PLUGIN],
        "steps": {"ingest": {"inputs": [{"path": str(inputs)}]},
                  "sleepy": {"type": "test_sleepy", "delay_s": delay_s, "tag": tag, "reject_every": 7}},
        **extra,
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def write_recipe() -> RecipeWriter:
    """write_recipe(path, run_dir, inputs, num_shards=2, delay_s=0, tag="x"): ingest, then the sleepy stage."""
    return _write_recipe


@pytest.fixture
def queries(tmp_path: Path) -> Path:
    return write_queries(tmp_path / "queries.jsonl", 60)
