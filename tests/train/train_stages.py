"""Test-only stage and run helpers of the training tests; importable as a recipe plugin (also inside SLURM jobs,
via PYTHONPATH)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from distillery.core.recipe import Recipe
from distillery.core.stage import Item, Outcome, RecordStage, ShardContext, register
from distillery.core.store import RunDir
from distillery.testing import finish_shard


@register
class FinishedTraces(RecordStage):
    """Stands in for the generate step: its shards are written by the test, never run."""

    name = "test_finished_traces"
    per_teacher = True

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        raise AssertionError("the test writes this step's shards; it never runs")


def recipe_dict(root: Path, steps: dict[str, Any], teacher: str = "t1", **top: Any) -> dict[str, Any]:
    return {"name": "train-test", "run_dir": str(root), "num_shards": 1, **top,
            "teachers": [{"name": teacher, "model": "replay.jsonl", "backend": "replay"}],
            "steps": {"traces": {"type": FinishedTraces.name}, **steps}}


def finish_traces(run: RunDir, recipe: Recipe, records: list[dict[str, Any]], teacher: str = "t1") -> None:
    """Write the stand-in `traces` step's shard and a manifest that planners and runners accept as done."""
    finish_shard(run, "traces", teacher, 0, records, recipe=recipe)
