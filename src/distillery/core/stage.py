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
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from distillery.core.store import RunDir

if TYPE_CHECKING:
    from distillery.core.recipe import Recipe, TeacherConfig

OutcomeKind = Literal["kept", "rejected", "quarantined"]


class StageConfig(BaseModel):
    """Base of every stage's typed config: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


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

    def to_journal(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in ("", None)}

    @classmethod
    def from_journal(cls, entry: dict[str, Any]) -> Outcome:
        return cls(**entry)


@dataclass
class ShardContext:
    """What a stage knows about the task it runs in."""

    run: RunDir
    stage: str
    teacher: str | None
    shard_index: int
    num_shards: int
    logger: logging.Logger
    stats: dict[str, Any] = field(default_factory=dict)
    rank: int = 0
    world_size: int = 1
    """Ranks of a multi-task job (MPI, torch.distributed) inside this shard; 0/1 for a single task."""

    @property
    def global_dir(self) -> Path:
        return self.run.global_dir(self.stage, self.teacher)

    @property
    def work_dir(self) -> Path:
        """Scratch and checkpoint space of this shard, kept across requeues."""
        return self.run.stage_dir(self.stage, self.teacher) / "_work" / f"shard-{self.shard_index:05d}"


class Stage(ABC):
    """Common base: a registered name, a typed config, and its place in the run."""

    name: ClassVar[str]
    Config: ClassVar[type[StageConfig]] = StageConfig
    per_teacher: ClassVar[bool] = False
    """Runs once per teacher (generation and everything after it)."""
    kind: ClassVar[str] = "cpu"
    """Job kind for cluster profiles: cpu, gpu, mpi."""

    def __init__(self, step: str, config: StageConfig, recipe: Recipe, teacher: TeacherConfig | None = None) -> None:
        self.step = step
        """This stage's name in the recipe (one stage type may appear under several names)."""
        self.config = config
        self.recipe = recipe
        self.teacher = teacher

    def num_shards(self) -> int:
        """How many shards this stage has; by default the run's shard count."""
        return self.recipe.num_shards

    def input_step(self) -> str | None:
        """The recipe step whose kept records feed this one; None for a stage that reads external input."""
        return self.recipe.previous_step(self.step)


class RecordStage(Stage):
    def read_inputs(self, ctx: ShardContext) -> Iterator[Item]:
        """Items of this shard; by default the kept records of the same shard of the input step."""
        from distillery.core.inputs import read_step_shard

        source = self.input_step()
        if source is None:
            raise ValueError(f"step {self.step!r} is first in the recipe but does not read external input")
        yield from read_step_shard(ctx.run, self.recipe, source, ctx.teacher, ctx.shard_index)

    @abstractmethod
    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        """Yield exactly one outcome per item, in any order."""


class TwoPassStage(RecordStage):
    """A record stage that needs a corpus-wide view first: scan every shard, merge once, then process."""

    @abstractmethod
    def scan(self, items: Iterable[Item], ctx: ShardContext) -> None:
        """Write this shard's partial summary under `ctx.global_dir`."""

    @abstractmethod
    def merge(self, ctx: ShardContext) -> dict[str, Any]:
        """Combine every shard's summary into what `process` reads; return statistics for the manifest."""


class TaskStage(Stage):
    @abstractmethod
    def run(self, ctx: ShardContext) -> dict[str, Any]:
        """Do the whole shard; return statistics for the manifest. Must be safe to call again after a kill."""


_REGISTRY: dict[str, type[Stage]] = {}


def register(cls: type[Stage]) -> type[Stage]:
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"stage name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def stage_type(name: str) -> type[Stage]:
    """The stage class registered under `name`, importing its module on first use (see distillery.stages)."""
    if name not in _REGISTRY:
        from distillery.stages import STAGE_MODULES

        module = STAGE_MODULES.get(name)
        if module is None:
            raise KeyError(name)
        importlib.import_module(module)
        if name not in _REGISTRY:
            raise KeyError(f"{module} does not register a stage named {name!r}")
    return _REGISTRY[name]


def stage_names() -> list[str]:
    from distillery.stages import STAGE_MODULES

    return sorted(set(STAGE_MODULES) | set(_REGISTRY))


def stage_types() -> dict[str, type[Stage]]:
    """Every stage class (imports every stage module: for `explain` and tests, not for running)."""
    return {name: stage_type(name) for name in stage_names()}
