"""A kit for tests and benchmarks: fake a finished step the way the runner would have finished it, build stages
and records outside a recipe, and drive a stage's phases in the runner's order. Test-only stages live in
`distillery.testing.stages` (a recipe plugin), the SLURM test helpers in `distillery.testing.slurm`.

`finish_shard` writes a shard's kept records, its rejected rows and a manifest written last, exactly as the
runner does; with a recipe, the manifest carries the header the runner would compute (config digest, input
digest), so planners and runners take the shard as done and fresh. One way to fake a step, used everywhere.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from distillery.schema.formats import query_from_messages
from distillery.core.recipe import Recipe
from distillery.schema.records import Attempt, Query, Trace, make_query
from distillery.core.inputs import task_context
from distillery.core.runner import build_manifest, input_digest, task_header
from distillery.core.stage import Item, Outcome, RecordStage, ShardContext, Stage, StageConfig, StepView, TwoPassStage
from distillery.core.store import Manifest, RunDir, ids_digest, jsonl_sink, write_json
from distillery.schema.keys import record_key
from distillery.core.teachers import TeacherConfig
from distillery.data import quickstart_queries
from distillery.llm.protocol import ChatModel, Completion, Conversation, Sampling

_LOGGER = logging.getLogger("distillery.testing")


def finish_shard(run: RunDir, step: str, teacher: str | None, shard_index: int, kept: Iterable[dict[str, Any]],
                 rejected: Iterable[tuple[dict[str, Any], str]] = (), *, recipe: Recipe | None = None,
                 num_shards: int = 1, compress: bool = False, elapsed_s: float = 0.0,
                 stats: dict[str, Any] | None = None,
                 key: Callable[[dict[str, Any]], str] = record_key) -> Manifest:
    """Write one shard of `step` as done: `kept` records, `rejected` (record, reason) pairs, then its manifest.

    With `recipe`, the shard count, compression and the manifest's config and input digests are the ones the
    runner would compute now (the step's input must be finished first); without, they are placeholders. `key`
    gives a record's id for records that are neither queries nor traces (eval samples: their input row's key).
    """
    header = {"step": step, "teacher": teacher, "shard_index": shard_index, "num_shards": num_shards,
              "config_digest": "test", "input_ids_digest": "external"}
    if recipe is not None:
        stage = recipe.build_stage(step, teacher)
        ctx = task_context(run, recipe, stage, teacher, shard_index, _LOGGER)
        header = task_header(stage, ctx, input_digest(stage, ctx))
        compress = recipe.compress
    paths = run.shard(step, teacher, shard_index, compress)
    keys: list[str] = []
    with jsonl_sink(paths.output, compress) as out:
        for record in kept:
            out.write(record)
            keys.append(key(record))
    with jsonl_sink(paths.rejected) as dropped:
        for position, (record, reason) in enumerate(rejected):
            dropped.write(Outcome.rejected(Item(position, key(record), record), reason).rejected_row())
    manifest = build_manifest(
        header, inputs=out.count + dropped.count, kept=out.count, rejected=dropped.count, quarantined=0,
        sha256=out.sha256, output_ids_digest=ids_digest(keys), elapsed_s=elapsed_s, stats=stats or {},
        size_bytes=paths.output.stat().st_size)
    manifest.save(paths.manifest)
    return manifest


def finish_markers(run: RunDir, step: str, teacher: str | None, shards: Iterable[int]) -> None:
    """Mark a two-pass step's scans and merge as done (for planners; their content is not read back)."""
    for shard_index in shards:
        write_json(run.scan_marker(step, teacher, shard_index), {})
    write_json(run.merge_marker(step, teacher), {})


StageT = TypeVar("StageT", bound=Stage)


def make_stage(cls: type[StageT], config: StageConfig, teacher: TeacherConfig | None = None, *, step: str | None = None,
               num_shards: int = 1, seed: int = 0, input_step: str | None = None) -> StageT:
    """A stage built outside a recipe, with the view a recipe would give it."""
    view = StepView(step=step or cls.name, config=config, teacher=teacher, num_shards=num_shards, seed=seed,
                    input_step=input_step)
    return cls(view)


def write_queries(path: Path, count: int) -> Path:
    """`count` plain math queries in the messages format, one per line."""
    with path.open("w") as handle:
        for index in range(count):
            handle.write(json.dumps({"category": "math", "messages": [{"role": "user", "content": f"What is {index} + 1?"}],
                                     "reference": {"answer": str(index + 1)}}) + "\n")
    return path


def make_trace(prompt: str, response: str, teacher: str = "alpha", category: str = "math",
               accepted: bool = True, score: float = 1.0) -> Trace:
    """A one-attempt trace of `teacher`, accepted or not."""
    query = make_query(category, [{"role": "user", "content": prompt}])
    attempt = Attempt(index=0, seed=0, response=response, score=score, passed=accepted,
                      completion_tokens=len(response.split()))
    return Trace(query=query, teacher=teacher, attempts=[attempt], accepted=0 if accepted else None,
                 response_tokens=len(response.split()))


def as_items(traces: Sequence[Trace]) -> list[Item]:
    return [Item(position=i, key=t.query.id, record=t.model_dump(mode="json"), where=f"test:{i}")
            for i, t in enumerate(traces)]


def shard_context(run: RunDir, step: str, shard_index: int = 0, num_shards: int = 1,
                  teacher: str | None = "alpha") -> ShardContext:
    """A task's context built by hand (no inputs resolved: the caller hands the stage its items)."""
    return ShardContext(run, step, teacher, shard_index, num_shards, logging.getLogger(f"test.{step}"))


def run_stage(stage: RecordStage, run: RunDir, shards: Sequence[Sequence[Item]],
              teacher: str | None = "alpha") -> list[list[Outcome]]:
    """Scan every shard, merge once, then process every shard (what the runner does for a two-pass stage);
    checks that each item gets exactly one outcome."""

    def context(shard_index: int) -> ShardContext:
        return shard_context(run, stage.step, shard_index, len(shards), teacher)

    if isinstance(stage, TwoPassStage):
        for index, items in enumerate(shards):
            ctx = context(index)
            ctx.global_dir.mkdir(parents=True, exist_ok=True)
            stage.scan(iter(items), ctx)
        stage.merge(context(0))
    results = []
    for index, items in enumerate(shards):
        outcomes = list(stage.process(iter(items), context(index)))
        if sorted(o.key for o in outcomes) != sorted(i.key for i in items):
            raise AssertionError(f"{stage.step} shard {index}: not one outcome per item")
        results.append(outcomes)
    return results


def quickstart_query_records(category: str | None = None) -> list[Query]:
    """The bundled quickstart sample as Query records (optionally one category)."""
    text = quickstart_queries().read_text(encoding="utf-8")
    queries = [query_from_messages(json.loads(line)) for line in text.splitlines() if line.strip()]
    return [q for q in queries if category is None or q.category == category]


@dataclass
class RecordingModel:
    """Passes every call to a real model and remembers what each call carried; `close` leaves the model open
    so one engine can serve a whole test module."""

    inner: ChatModel
    calls: list[tuple[list[Conversation], list[int] | None]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    def chat(self, conversations: list[Conversation], sampling: Sampling, seeds: list[int] | None = None) -> list[Completion]:
        self.calls.append((conversations, seeds))
        return self.inner.chat(conversations, sampling, seeds)

    def close(self) -> None:
        """The module fixture closes the real engine."""
