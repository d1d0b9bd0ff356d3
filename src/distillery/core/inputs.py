"""Reading a step's kept records back as the items of the next step."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from distillery.core.recipe import Recipe
from distillery.core.stage import Item
from distillery.core.store import RunDir, open_text


def record_key(record: dict[str, Any]) -> str:
    """A record's stable key: a query's id, or the id of the query a trace answers."""
    if "id" in record:
        return str(record["id"])
    return str(record["query"]["id"])


def read_step_shard(run: RunDir, recipe: Recipe, step: str, teacher: str | None, shard_index: int) -> Iterator[Item]:
    """Kept records of one shard of `step`, for `teacher` if that step runs per teacher."""
    src_teacher = teacher if teacher in recipe.teachers_of(step) else None
    path = run.shard(step, src_teacher, shard_index, recipe.compress).output
    with open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            record = json.loads(line)
            yield Item(position=line_number - 1, key=record_key(record), record=record, where=f"{path}:{line_number}")


def read_step_all(run: RunDir, recipe: Recipe, step: str, teacher: str | None) -> Iterator[Item]:
    """Kept records of every shard of `step` (for whole-step tasks such as packing)."""
    stage = recipe.build_stage(step, teacher if teacher in recipe.teachers_of(step) else None)
    position = 0
    for shard_index in range(stage.num_shards()):
        for item in read_step_shard(run, recipe, step, teacher, shard_index):
            yield Item(position, item.key, item.record, item.where)
            position += 1
