from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))


def write_queries(path: Path, count: int) -> Path:
    with path.open("w") as handle:
        for index in range(count):
            handle.write(json.dumps({"category": "math", "messages": [{"role": "user", "content": f"What is {index} + 1?"}],
                                     "reference": {"answer": str(index + 1)}}) + "\n")
    return path


def write_recipe(path: Path, run_dir: Path, inputs: Path, num_shards: int = 2, delay_s: float = 0.0,
                 tag: str = "x", **extra: object) -> Path:
    recipe = {
        "name": "core-test", "run_dir": str(run_dir), "num_shards": num_shards, "plugins": ["sleepy_stage"],
        "steps": {"ingest": {"inputs": [{"path": str(inputs)}]},
                  "sleepy": {"type": "test_sleepy", "delay_s": delay_s, "tag": tag, "reject_every": 7}},
        **extra,
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def queries(tmp_path: Path) -> Path:
    return write_queries(tmp_path / "queries.jsonl", 60)
