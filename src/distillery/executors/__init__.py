"""The executor boundary: the only code that knows where tasks run. Only executors read SLURM (or MPI launcher)
variables; the CLI asks an executor to run, describe or report on task groups and never branches on its kind."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from distillery.core.plan import TaskGroup
from distillery.core.recipe import Recipe
from distillery.core.registry import LazyRegistry
from distillery.core.store import RunDir
from distillery.executors.handles import JobHandle

SchedulerStates = dict[tuple[str, int], str]
"""(group key, shard index) -> the scheduler's state of that task (PENDING, RUNNING, REQUEUED, ...)."""


class Executor(ABC):
    blocking: ClassVar[bool]
    """True when `execute` returns once every task has run (local); False when it returns once queued."""
    exclusive: ClassVar[bool]
    """No other process writes the run's shards while this executor runs them (a local run): resume may then remove
    every temporary file a killed writer left, not only those beside finished shards."""

    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        self.recipe = recipe
        self.run = run
        self.timings: dict[str, float] = {}
        """Wall-clock seconds per group key of the last `execute` (blocking executors)."""

    @abstractmethod
    def execute(self, groups: list[TaskGroup]) -> list[JobHandle]:
        """Run (blocking) or submit (returns once queued) the groups in dependency order; a handle per group run
        or job array submitted, to show their tasks' states and wait for them (a blocking executor's are
        finished)."""

    def describe(self, groups: list[TaskGroup]) -> str:
        """What `execute` would do for these groups, for `distillery plan` (e.g. the exact job scripts)."""
        return ""

    def states(self) -> SchedulerStates:
        """The scheduler's view of the run's submitted tasks; empty for executors without a queue."""
        return {}

    @classmethod
    def has_submitted(cls, run: RunDir) -> bool:
        """Whether this kind of executor has submitted tasks of the run (so `states` can say something)."""
        return False


def render_timings(timings: dict[str, float]) -> str:
    """Wall time per step (its groups summed: scan, merge, process; every teacher) and in total."""
    per_step: dict[str, float] = {}
    for key, seconds in timings.items():
        step = key.split(":")[0].split("/")[0]
        per_step[step] = per_step.get(step, 0.0) + seconds
    total = sum(per_step.values()) or 1.0
    lines = [f"{'step':<20} {'wall':>9} {'share':>6}"]
    lines += [f"{step:<20} {seconds:>8.1f}s {seconds / total:>6.0%}" for step, seconds in per_step.items()]
    lines.append(f"{'total':<20} {sum(per_step.values()):>8.1f}s")
    return "\n".join(lines)


EXECUTORS: LazyRegistry[type[Executor]] = LazyRegistry("executor", {
    "local": "distillery.executors.local:LocalExecutor",
    "slurm": "distillery.executors.slurm:SlurmExecutor",
})


def build_executor(recipe: Recipe, run: RunDir, kind: str | None = None) -> Executor:
    """The recipe's executor, or the named kind (`distillery submit` asks for slurm)."""
    return EXECUTORS.get(kind or recipe.executor.kind)(recipe, run)


def executor_of_run(recipe: Recipe, run: RunDir) -> Executor:
    """The executor whose submissions a run holds (so `status` can show queue states), else the recipe's."""
    for kind in EXECUTORS.names():
        if EXECUTORS.get(kind).has_submitted(run):
            return build_executor(recipe, run, kind)
    return build_executor(recipe, run)
