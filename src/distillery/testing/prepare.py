"""Helpers of the query-preparation tests: build queries, run recipes through the real runner, read outputs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from distillery.cli import main
from distillery.schema.records import make_query
from distillery.core.stage import Item, ShardContext
from distillery.core.store import RunDir, iter_jsonl


def query_row(text: str, category: str = "math", **metadata: Any) -> dict[str, Any]:
    """An ingest 'messages' row for one user prompt."""
    return {"category": category, "messages": [{"role": "user", "content": text}], "metadata": metadata}


def query_record(text: str, category: str = "math") -> dict[str, Any]:
    return make_query(category, [{"role": "user", "content": text}]).model_dump(mode="json")


def items_of(records: Iterable[dict[str, Any] | None]) -> list[Item]:
    return [Item(position=i, key=(r or {}).get("id", f"bad-{i}") if isinstance(r, dict) else f"bad-{i}", record=r)
            for i, r in enumerate(records)]


def query_context(tmp_path: Path, stage: str, shard_index: int = 0, num_shards: int = 1) -> ShardContext:
    return ShardContext(RunDir(tmp_path / "run"), stage, None, shard_index, num_shards, logging.getLogger("test"))


def write_rows(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def run_recipe(tmp_path: Path, name: str, inputs: Path, steps: dict[str, Any], num_shards: int) -> RunDir:
    """Ingest `inputs` then run `steps` with the local executor; returns the run directory."""
    run_dir = tmp_path / name
    recipe = {"name": name, "run_dir": str(run_dir), "num_shards": num_shards,
              "steps": {"ingest": {"inputs": [{"path": str(inputs)}]}, **steps}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert main(["run", str(path)]) == 0
    return RunDir(run_dir)


def kept_ids(run: RunDir, step: str) -> list[str]:
    return sorted(r["id"] for p in sorted(run.stage_dir(step).glob("shard-*.jsonl")) for r in iter_jsonl(p))


def rejected(run: RunDir, step: str) -> dict[str, str]:
    return {r["key"]: r["reason"] for p in sorted((run.stage_dir(step) / "rejected").glob("shard-*.jsonl"))
            for r in iter_jsonl(p)}


MATH_BENCHMARKS = [{"name": "aime24"}, {"name": "aime25"}, {"name": "math500"}]


def decontaminate_step(benchmarks_dir: Path, cache: Path, **extra: Any) -> dict[str, Any]:
    """A decontaminate step against the math benchmarks, on the CPU, with a shared embedding cache."""
    return {"benchmarks": MATH_BENCHMARKS, "benchmarks_dir": str(benchmarks_dir), "cache_dir": str(cache),
            "device": "cpu", **extra}


def math_query_id(text: str) -> str:
    return make_query("math", [{"role": "user", "content": text}]).id


def read_audit(run: RunDir) -> list[dict[str, Any]]:
    return list(iter_jsonl(run.audit("decontaminate")))
