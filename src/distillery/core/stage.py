"""The stage interface and its registry.

A stage is a pure function of (config, input shard) -> output shard. It is told its shard index and the
shard count (its rank and world size); it never reads SLURM variables, only executors do.

Two shapes:
- `RecordStage`: one outcome per input item (kept, rejected, quarantined). The framework journals each
  outcome, so a killed shard resumes at its next unfinished item. A record stage may need a corpus-wide view
  first (exact dedup, n-gram counts, perplexity percentiles): it then implements `scan` (per shard) and
  `merge` (once), and `process` reads what `merge` wrote.
- `TaskStage`: a whole-shard job that is not a record map (packing, training, reports); it keeps its own
  checkpoints and returns statistics for the manifest.

A stage never sees the recipe. It is built from a `StepView` (its step's name, typed config, teacher, shard count
and seed) and, per task, gets a `ShardContext` whose `inputs` the runner resolved: the kept records of its input
step (this shard's or all of them) and the digests that key its output. The hooks a stage may implement are
declared here: `read_inputs`, `input_digest`, `scan`, `merge`.
"""

from __future__ import annotations

import functools
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, NamedTuple, Protocol, TypeVar

from distillery.core.config import StrictModel
from distillery.core.lineage import Lineage
from distillery.core.registry import LazyRegistry
from distillery.core.store import JsonlSink, RunDir, config_digest, jsonl_sink
from distillery.stages import STAGE_CLASSES

if TYPE_CHECKING:
    from distillery.core.pricing import Priced, Pricing
    from distillery.core.teachers import Resources, TeacherConfig

OutcomeKind = Literal["kept", "rejected", "quarantined"]

class StageConfig(StrictModel):
    """Base of every stage's typed config: unknown fields are errors, not silently ignored."""


ConfigT = TypeVar("ConfigT", bound=StageConfig)
StageT = TypeVar("StageT", bound="Stage")


@dataclass(frozen=True)
class StepView(Generic[ConfigT]):
    """What a stage knows of its step: never the whole recipe."""

    step: str
    """This step's name in the recipe (one stage type may appear under several names)."""
    config: ConfigT
    teacher: TeacherConfig | None
    """The teacher of a per-teacher step; None otherwise."""
    num_shards: int
    """The run's shard count (a stage may use fewer: see `Stage.num_shards`)."""
    seed: int
    compress: bool = False
    input_step: str | None = None
    """The step whose kept records feed this one by default (the previous step); None for the first."""
    variant: str | None = None
    """The dataset variant of this lineage ("<teacher>+<variant>"); None for a teacher's own data."""

    @property
    def lineage(self) -> str | None:
        """Whose data this step runs on: the teacher's name, "<teacher>+<variant>", or None (not per teacher)."""
        if self.teacher is None:
            return None
        return str(Lineage(self.teacher.name, self.variant))


@dataclass(frozen=True)
class Item:
    """One input item of a shard: its position in the shard, a stable key, and the parsed record.

    A malformed input (a bad JSON line) arrives with `record=None` and `problem` saying what is wrong.
    """

    position: int
    key: str
    record: dict[str, Any] | None
    where: str = ""
    problem: str = ""
    raw: str = ""


@dataclass(frozen=True)
class Outcome:
    position: int
    key: str
    kind: OutcomeKind
    record: dict[str, Any] | None = None
    reason: str = ""
    where: str = ""
    raw: str = ""

    @classmethod
    def kept(cls, item: Item, record: dict[str, Any]) -> Outcome:
        return cls(item.position, item.key, "kept", record)

    @classmethod
    def rejected(cls, item: Item, reason: str, record: dict[str, Any] | None = None) -> Outcome:
        return cls(item.position, item.key, "rejected", record if record is not None else item.record, reason, item.where)

    @classmethod
    def quarantined(cls, item: Item, reason: str) -> Outcome:
        return cls(item.position, item.key, "quarantined", item.record, reason, item.where, item.raw)

    def rejected_row(self) -> dict[str, Any]:
        """The row written to `rejected/`."""
        return {"key": self.key, "reason": self.reason, "where": self.where, "record": self.record}

    def quarantine_row(self) -> dict[str, Any]:
        """The row written to `quarantine/`: the raw input too, since the record may not have parsed."""
        return {"key": self.key, "reason": self.reason, "where": self.where, "raw": self.raw, "record": self.record}

    def to_journal(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in ("", None)}

    @classmethod
    def from_journal(cls, entry: dict[str, Any]) -> Outcome:
        return cls(**entry)


def reason_kind(reason: str) -> str:
    """A reject reason with its numbers and quoted parts masked, so reasons of one kind count together (in the
    manifests' `reject_reasons`, in `status` and in the report)."""
    return _NUMBER.sub("#", _QUOTED.sub("'...'", reason))[:120]


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?")


@dataclass
class TaskResult:
    """What a whole-shard task did, for its manifest."""

    inputs: int
    kept: int
    rejected: int = 0
    quarantined: int = 0
    sha256: str = ""
    """Of what the task wrote, if it is one file."""
    output_ids_digest: str | None = None
    """What downstream steps key on; None: the task's input and config (its output is made from nothing else)."""
    stats: dict[str, Any] = field(default_factory=dict)
    """The stage's own figures, kept in the manifest."""


class StepInputs(Protocol):
    """The runner's answer to "what is this task made from": implemented in `distillery.core.inputs`."""

    step: str | None
    """The input step; None for a step that reads external input."""

    def shard(self, shard_index: int, step: str | None = None) -> Iterator[Item]:
        """Kept records of one shard of the input step (or of an earlier `step` of this lineage)."""
        ...

    def dropped(self, step: str, shard_index: int) -> Iterator[dict[str, Any]]:
        """Rejected rows (key, reason, where, record) of one shard of an earlier step of this lineage."""
        ...

    def steps_after(self, step: str) -> list[str]:
        """The steps this lineage's input went through after an earlier `step`, in order, up to the input step."""
        ...

    def config(self, step: str) -> StageConfig:
        """The config of an earlier step."""
        ...

    def everything(self) -> Iterator[Item]:
        """Kept records of every shard of the input step, positions numbered across shards."""
        ...

    def digest(self, step: str | None = None, shard_index: int | range | None = None) -> str:
        """Digest of the output ids of `step` (default: the input step): one shard, a range of them, or all."""
        ...

    def num_shards(self, step: str | None = None) -> int:
        """How many shards `step` (default: the input step) has."""
        ...


class ScreenEntry(NamedTuple):
    """A record to re-screen: `item` comes back with its fate, `record` goes through `steps[start:]`."""

    item: Item
    record: dict[str, Any]
    start: int


@dataclass(frozen=True)
class Screened:
    """A re-screened entry's fate: kept (`record` as the last step left it) or rejected by `step` for `reason`."""

    item: Item
    record: dict[str, Any] | None
    step: str | None = None
    reason: str = ""


class Rescreen(Protocol):
    """The runner's service for a stage that sends records of its own through earlier record steps again, as those
    steps ran for this lineage's data (their config, their merged corpus-wide summaries, one stage object per step
    and task so a reference model loads once). Implemented in `distillery.core.inputs`."""

    def screen(self, steps: Sequence[str], entries: Iterable[ScreenEntry]) -> Iterator[Screened]:
        """Each entry's record through `steps[entry.start:]` in order, until one rejects it; one `Screened` per
        entry, in any order. Streams: holds one window of entries at a time."""
        ...


@dataclass
class ShardContext:
    """What a stage knows about the task it runs in."""

    run: RunDir
    stage: str
    lineage: str | None
    """Whose data this task runs on (`distillery.core.lineage`); None for a step that is not per teacher."""
    shard_index: int
    num_shards: int
    logger: logging.Logger
    inputs: StepInputs | None = None
    """Set by the runner (None only in a context built by hand)."""
    stats: dict[str, Any] = field(default_factory=dict)
    rank: int = 0
    world_size: int = 1
    """Ranks of a multi-task job (MPI, torch.distributed) inside this shard; 0/1 for a single task."""
    rescreen: Rescreen | None = None
    """Set by the runner: re-screening through earlier record steps (see `Rescreen`)."""

    @contextmanager
    def task_output(self) -> Iterator[tuple[JsonlSink, JsonlSink]]:
        """Sinks for a task stage's dropped and malformed inputs (`Outcome.rejected_row`, `quarantine_row`), written
        where a record stage's go, for a stage that streams them."""
        paths = self.run.shard(self.stage, self.lineage, self.shard_index)
        with jsonl_sink(paths.rejected) as rejected_out, jsonl_sink(paths.quarantine) as quarantine_out:
            yield rejected_out, quarantine_out

    def publish_task_output(self, rejected: Iterable[Outcome], quarantined: Iterable[Outcome]) -> dict[str, int]:
        """A task stage's dropped and malformed inputs, written where a record stage's go; returns their counts
        for the stats (`rejected`, `quarantined`)."""
        with self.task_output() as (rejected_out, quarantine_out):
            for outcome in rejected:
                rejected_out.write(outcome.rejected_row())
            for outcome in quarantined:
                quarantine_out.write(outcome.quarantine_row())
        return {"rejected": rejected_out.count, "quarantined": quarantine_out.count}

    @property
    def upstream(self) -> StepInputs:
        if self.inputs is None:
            raise ValueError(f"step {self.stage!r}: no inputs in this context")
        return self.inputs

    @property
    def global_dir(self) -> Path:
        return self.run.global_dir(self.stage, self.lineage)

    def summary_file(self, kind: str, shard_index: int, suffix: str = ".json") -> Path:
        """Where a two-pass stage leaves one shard's summary of `kind` (`RunDir.shard_summary`)."""
        return self.run.shard_summary(self.stage, self.lineage, kind, shard_index, suffix)

    def summary_files(self, kind: str) -> list[Path]:
        """Every shard's summary of `kind` written so far, in shard order."""
        return self.run.shard_summaries(self.stage, self.lineage, kind)

    def step_file(self, name: str) -> Path:
        """A file about this two-pass step as a whole (`RunDir.step_file`)."""
        return self.run.step_file(self.stage, self.lineage, name)

    @property
    def work_dir(self) -> Path:
        """Scratch and checkpoint space of this shard, kept across requeues."""
        return self.run.work_dir(self.stage, self.lineage, self.shard_index)


Phase = Literal["scan", "merge", "process", "task"]


class PhaseRunner(Protocol):
    """How the runner does each phase (`distillery.core.runner`); a stage kind calls the ones it has."""

    def scan(self, stage: TwoPassStage, ctx: ShardContext) -> dict[str, Any]: ...

    def merge(self, stage: TwoPassStage, ctx: ShardContext) -> dict[str, Any]: ...

    def process(self, stage: RecordStage, ctx: ShardContext) -> dict[str, Any]: ...

    def task(self, stage: TaskStage, ctx: ShardContext) -> dict[str, Any]: ...


class Stage(ABC, Generic[ConfigT]):
    """Common base: a registered name, a typed config, and its place in the run."""

    phases: ClassVar[tuple[Phase, ...]] = ()
    """The phases of a step of this kind, in order; each is a task group (scan array, merge, process array)."""

    name: ClassVar[str]
    Config: ClassVar[type[StageConfig]] = StageConfig
    per_teacher: ClassVar[bool] = False
    """Runs once per teacher (generation and everything after it)."""
    kind: ClassVar[str] = "cpu"
    """Job kind for cluster profiles (cpu, gpu, mpi) of the phases that run the stage's model."""
    model_phases: ClassVar[tuple[Phase, ...]] = ("scan", "process", "task")
    """The phases that run the stage's model and take its `kind` and resources; the others (every merge) are light
    cpu work: on a cluster they ask for one task without GPUs, and a local run does them in its own process."""
    serves_teacher: ClassVar[bool] = False
    """Runs the teacher's model (generation): its tasks take the teacher's `resources` instead of the step's."""

    @classmethod
    def derived_lineages(cls, config: StageConfig, teachers: list[str]) -> list[str] | None:
        """Hook for a stage that derives datasets of its own (`variants`): the lineages ("<teacher>+<variant>") it
        makes, which it and every later per-teacher step run for besides the teachers. None (the default): none."""
        return None

    @classmethod
    def check_placement(cls, config: StageConfig, steps_before: list[tuple[str, str]],
                        teachers: list[str]) -> list[str]:
        """Hook: what is wrong with this step's place in the recipe, given the (name, type) of the steps before it
        and the teacher names; checked before anything is submitted. Empty (the default): nothing."""
        return []

    def __init__(self, view: StepView[ConfigT]) -> None:
        self.view = view
        self.step = view.step
        self.config: ConfigT = view.config
        self.teacher = view.teacher

    @functools.cached_property
    def config_digest(self) -> str:
        """Digest of everything that decides the step's output besides its input: type, config, teacher, seed.
        Cached: status computes it for every shard."""
        return config_digest({
            "type": self.name,
            "config": self.config.model_dump(mode="json"),
            "teacher": self.teacher.model_dump(mode="json") if self.teacher else None,
            "seed": self.view.seed,
        })

    def preload(self) -> tuple[str, ...]:
        """Hook: the modules this step's model phases import before their first record (vLLM, torch,
        sentence-transformers): a local run imports them once, in the process its model tasks are forked from,
        instead of once a task (several seconds each on 2 cores). Empty (the default): none."""
        return ()

    def phase_kind(self, phase: str) -> str | None:
        """The job kind of a phase: None for a light one (see `model_phases`), else the stage's `kind`."""
        return self.kind if phase in self.model_phases else None

    def num_shards(self) -> int:
        """How many shards this stage has; by default the run's shard count."""
        return self.view.num_shards

    def input_step(self) -> str | None:
        """The step whose kept records feed this one; None for a stage that reads external input."""
        return self.view.input_step

    def plan_report(self, resources: Resources, input_config: StageConfig | None) -> str:
        """Hook: what `distillery plan` should print about this step (e.g. a training step's per-GPU memory), given
        its resources and its input step's config; empty by default."""
        return ""

    def price(self, pricing: Pricing) -> Priced:
        """Hook: this step's work for `distillery plan --cost` (`distillery.core.pricing`), given the records that
        reach it. By default a record map at the step's configured throughput, per record or per token."""
        return pricing.record_map()

    def input_digest(self, ctx: ShardContext) -> str | None:
        """Hook: what keys this task's output besides its config. None (the default): the output ids of the input
        step's shard (record stages) or of the whole input step (task stages)."""
        return None

    reads_one_shard: ClassVar[bool] = False
    """A task reads the same shard of its input step (record stages), not the whole step (task stages)."""

    def run_phase(self, phase: str, runner: PhaseRunner, ctx: ShardContext) -> dict[str, Any]:
        """Do `phase` of this step through the runner's way of doing it."""
        raise ValueError(f"step {self.step!r} ({type(self).__name__}) has no phase {phase!r}; it has {self.phases}")


class RecordStage(Stage[ConfigT]):
    phases = ("process",)
    reads_one_shard = True

    def run_phase(self, phase: str, runner: PhaseRunner, ctx: ShardContext) -> dict[str, Any]:
        if phase == "process":
            return runner.process(self, ctx)
        return super().run_phase(phase, runner, ctx)

    def read_inputs(self, ctx: ShardContext) -> Iterator[Item]:
        """Hook: the items of this shard; by default the kept records of the same shard of the input step."""
        yield from ctx.upstream.shard(ctx.shard_index)

    @abstractmethod
    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        """Yield exactly one outcome per item, in any order."""


class TwoPassStage(RecordStage[ConfigT]):
    """A record stage that needs a corpus-wide view first: scan every shard, merge once, then process."""

    phases = ("scan", "merge", "process")

    def run_phase(self, phase: str, runner: PhaseRunner, ctx: ShardContext) -> dict[str, Any]:
        if phase == "scan":
            return runner.scan(self, ctx)
        if phase == "merge":
            return runner.merge(self, ctx)
        return super().run_phase(phase, runner, ctx)

    @abstractmethod
    def scan(self, items: Iterable[Item], ctx: ShardContext) -> None:
        """Write this shard's partial summary under `ctx.global_dir`."""

    @abstractmethod
    def merge(self, ctx: ShardContext) -> dict[str, Any]:
        """Combine every shard's summary into what `process` reads; return statistics for the manifest."""


class TaskStage(Stage[ConfigT]):
    phases = ("task",)

    def run_phase(self, phase: str, runner: PhaseRunner, ctx: ShardContext) -> dict[str, Any]:
        if phase == "task":
            return runner.task(self, ctx)
        return super().run_phase(phase, runner, ctx)

    @abstractmethod
    def run(self, ctx: ShardContext) -> TaskResult:
        """Do the whole shard; return what it did for the manifest. Must be safe to call again after a kill."""


STAGES: LazyRegistry[type[Stage]] = LazyRegistry("stage type", STAGE_CLASSES)


def register(cls: type[StageT]) -> type[StageT]:
    """Class decorator: register a stage type under its `name` (built-in stages are also listed in
    `distillery.stages`, so they load lazily)."""
    STAGES.add(cls.name, cls)
    return cls


def stage_type(name: str) -> type[Stage]:
    """The stage class registered under `name`, importing its module on first use."""
    return STAGES.get(name)


def stage_names() -> list[str]:
    return STAGES.names()


def stage_types() -> dict[str, type[Stage]]:
    """Every stage class (imports every stage module: for `explain` and tests, not for running)."""
    return {name: stage_type(name) for name in stage_names()}
