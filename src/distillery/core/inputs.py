"""What a task is made from: the runner's answers to a stage's questions about its input (`RunInputs`, the
`StepInputs` of `distillery.core.stage`) and its re-screen service (`RunRescreen`), and the task context that
carries both. Stages never see the recipe: these read it for them.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from distillery.core.integrity import size_mismatch
from distillery.core.recipe import Recipe
from distillery.core.stage import Item, RecordStage, ScreenEntry, Screened, ShardContext, Stage, StageConfig
from distillery.core.store import Manifest, RunDir, ids_digest, open_text, read_json
from distillery.schema.keys import record_key

DigestCache = dict[tuple[str, "str | None", int], str]
"""Output digests of manifests already read, by (step, lineage, shard): one status or resume pass shares one."""


class InputNotReady(RuntimeError):
    """An input shard this task needs has no manifest yet (its producer has not finished)."""


class RunInputs:
    """The runner's `StepInputs`: resolves a step's input step, its lineage and its shards in the run directory,
    so stages never see the recipe."""

    def __init__(self, run: RunDir, recipe: Recipe, step: str | None, lineage: str | None,
                 known_digests: DigestCache | None = None) -> None:
        self.run = run
        self.recipe = recipe
        self.step = step
        self.lineage = lineage
        self.known_digests: DigestCache = known_digests if known_digests is not None else {}
        """Status and resume share one across all groups: a downstream check reads no upstream manifest twice."""

    def _lineage_of(self, step: str) -> str | None:
        """The lineage of `step` that holds this lineage's data (a variant reads its teacher's earlier steps)."""
        return self.recipe.source_lineage(step, self.lineage)

    def num_shards(self, step: str | None = None) -> int:
        step = step or self._source()
        return self.recipe.build_stage(step, self._lineage_of(step)).num_shards()

    def _source(self) -> str:
        if self.step is None:
            raise ValueError("this step reads no input step (it is first in the recipe, or reads external input)")
        return self.step

    def _finished(self, step: str, shard_index: int) -> tuple[Any, Manifest]:
        paths = self.run.shard(step, self._lineage_of(step), shard_index, self.recipe.compress)
        if not paths.manifest.exists():
            raise InputNotReady(f"input {paths.manifest} is missing: step {step!r} shard {shard_index} has not "
                                "finished")
        manifest = Manifest.load(paths.manifest)
        problem = size_mismatch(paths, manifest)
        if problem is not None:
            raise InputNotReady(f"input {paths.output} does not match its manifest ({problem}): rerun {step!r}")
        return paths, manifest

    def shard(self, shard_index: int, step: str | None = None) -> Iterator[Item]:
        """The shard's kept records (of the input step, or of an earlier `step` of this lineage), read only if the
        file still matches its manifest (size before reading, record count after)."""
        step = step or self._source()
        paths, manifest = self._finished(step, shard_index)
        count = 0
        with open_text(paths.output) as handle:
            for count, line in enumerate(handle, start=1):
                record = json.loads(line)
                yield Item(position=count - 1, key=record_key(record), record=record, where=f"{paths.output}:{count}")
        if count != manifest.kept:
            raise InputNotReady(f"input {paths.output} holds {count} records, its manifest says {manifest.kept}: "
                                f"rerun {step!r}")

    def dropped(self, step: str, shard_index: int) -> Iterator[dict[str, Any]]:
        """The rows a finished shard of an earlier `step` of this lineage set aside as rejected (key, reason, where,
        record)."""
        paths, _ = self._finished(step, shard_index)
        if paths.rejected.exists():
            with open_text(paths.rejected) as handle:
                for line in handle:
                    yield json.loads(line)

    def steps_after(self, step: str) -> list[str]:
        steps: list[str] = []
        current = self.step
        while current is not None and current != step:
            steps.insert(0, current)
            current = self.recipe.previous_step(current, self._lineage_of(current))
        if current is None:
            raise ValueError(f"step {step!r} is not before {self.step!r} in this lineage's steps")
        return steps

    def config(self, step: str) -> StageConfig:
        return self.recipe.step(step).config

    def everything(self) -> Iterator[Item]:
        position = 0
        for shard_index in range(self.num_shards()):
            for item in self.shard(shard_index):
                yield Item(position, item.key, item.record, item.where)
                position += 1

    def digest(self, step: str | None = None, shard_index: int | range | None = None) -> str:
        step = step or self._source()
        lineage = self._lineage_of(step)
        shards = (range(self.num_shards(step)) if shard_index is None
                  else [shard_index] if isinstance(shard_index, int) else shard_index)
        digests = []
        for index in shards:
            known = self.known_digests.get((step, lineage, index))
            if known is None:
                manifest = self.run.shard(step, lineage, index, self.recipe.compress).manifest
                if not manifest.exists():
                    raise InputNotReady(f"input {manifest} is missing: step {step!r} shard {index} has not finished")
                known = self.known_digests[(step, lineage, index)] = read_json(manifest)["output_ids_digest"]
            digests.append(known)
        return digests[0] if len(digests) == 1 else ids_digest(digests)


class RunRescreen:
    """The runner's `Rescreen` for one task: earlier record steps as they ran for this lineage's data, each built
    once per task (so a reference model loads once), called in windows of `window` entries."""

    def __init__(self, run: RunDir, recipe: Recipe, lineage: str | None, shard_index: int,
                 known_digests: DigestCache, window: int = 256) -> None:
        self.run, self.recipe, self.lineage, self.shard_index = run, recipe, lineage, shard_index
        self.known_digests = known_digests
        self.window = window
        self._built: dict[str, tuple[RecordStage, ShardContext]] = {}

    def _stage(self, step: str) -> tuple[RecordStage, ShardContext]:
        if step not in self._built:
            lineage = self.recipe.source_lineage(step, self.lineage)
            stage = self.recipe.build_stage(step, lineage)
            if not isinstance(stage, RecordStage):
                raise ValueError(f"step {step!r} is not a record stage: it cannot re-screen records")
            ctx = task_context(self.run, self.recipe, stage, lineage, self.shard_index,
                               logging.getLogger(f"distillery.rescreen.{step}"), known_digests=self.known_digests)
            self._built[step] = stage, ctx
        return self._built[step]

    def screen(self, steps: Sequence[str], entries: Iterable[ScreenEntry]) -> Iterator[Screened]:
        pending = iter(entries)
        while window := list(itertools.islice(pending, self.window)):
            by_start: dict[int, list[ScreenEntry]] = {}
            for entry in window:
                by_start.setdefault(entry.start, []).append(entry)
            for start, group in by_start.items():
                yield from self._through(steps[start:], group)

    def _through(self, steps: Sequence[str], group: list[ScreenEntry]) -> Iterator[Screened]:
        """One group of entries through `steps`, each step over the survivors of the one before."""
        entries = {entry.item.key: entry for entry in group}
        current = [Item(n, entry.item.key, entry.record, entry.item.where) for n, entry in enumerate(group)]
        for step in steps:
            if not current:
                break
            stage, ctx = self._stage(step)
            survivors = []
            for outcome in stage.process(current, ctx):
                if outcome.kind == "kept":
                    survivors.append(Item(len(survivors), outcome.key, outcome.record, entries[outcome.key].item.where))
                else:
                    yield Screened(entries[outcome.key].item, None, step, outcome.reason)
            current = survivors
        for item in current:
            yield Screened(entries[item.key].item, item.record)


def task_context(run: RunDir, recipe: Recipe, stage: Stage, lineage: str | None, shard_index: int,
                 logger: logging.Logger, rank: int = 0, world_size: int = 1,
                 known_digests: DigestCache | None = None) -> ShardContext:
    known = known_digests if known_digests is not None else {}
    inputs = RunInputs(run, recipe, stage.input_step(), lineage, known)
    return ShardContext(run, stage.step, lineage, shard_index, stage.num_shards(), logger, inputs,
                        rank=rank, world_size=world_size,
                        rescreen=RunRescreen(run, recipe, lineage, shard_index, known))
