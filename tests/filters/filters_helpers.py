"""Builders of Trace records and a driver that runs a stage's phases the way the runner orders them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from distillery.core.recipe import Recipe, TeacherConfig
from distillery.core.records import Attempt, Trace, make_query
from distillery.core.stage import Item, Outcome, RecordStage, ShardContext, TwoPassStage
from distillery.core.store import RunDir

TEACHER = "alpha"


def make_trace(prompt: str, response: str, teacher: str = TEACHER, category: str = "math",
               accepted: bool = True, score: float = 1.0) -> Trace:
    query = make_query(category, [{"role": "user", "content": prompt}])
    attempt = Attempt(index=0, seed=0, response=response, score=score, passed=accepted, completion_tokens=len(response.split()))
    return Trace(query=query, teacher=teacher, attempts=[attempt], accepted=0 if accepted else None,
                 response_tokens=len(response.split()))


def as_items(traces: Sequence[Trace]) -> list[Item]:
    return [Item(position=i, key=t.query.id, record=t.model_dump(mode="json"), where=f"test:{i}") for i, t in enumerate(traces)]


def context(run: RunDir, step: str, shard_index: int, num_shards: int) -> ShardContext:
    return ShardContext(run, step, TEACHER, shard_index, num_shards, logging.getLogger(f"test.{step}"))


def run_stage(stage: RecordStage, run: RunDir, shards: Sequence[Sequence[Item]]) -> list[list[Outcome]]:
    """Scan every shard, merge once, then process every shard (what the runner does for a two-pass stage)."""
    if isinstance(stage, TwoPassStage):
        for index, items in enumerate(shards):
            ctx = context(run, stage.step, index, len(shards))
            ctx.global_dir.mkdir(parents=True, exist_ok=True)
            stage.scan(iter(items), ctx)
        stage.merge(context(run, stage.step, 0, len(shards)))
    results = []
    for index, items in enumerate(shards):
        outcomes = list(stage.process(iter(items), context(run, stage.step, index, len(shards))))
        assert sorted(o.key for o in outcomes) == sorted(i.key for i in items), "one outcome per item"
        results.append(outcomes)
    return results


@pytest.fixture
def recipe(tmp_path: Path) -> Recipe:
    return Recipe(name="filters-test", run_dir=tmp_path / "run", teachers=[TeacherConfig(name=TEACHER, model="none")])


@pytest.fixture
def run(recipe: Recipe) -> RunDir:
    return RunDir(recipe.run_dir)
