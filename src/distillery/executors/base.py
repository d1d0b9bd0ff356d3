"""The executor boundary: run or submit task groups. Only executors read SLURM (or MPI launcher) variables."""

from __future__ import annotations

from abc import ABC, abstractmethod

from distillery.core.plan import TaskGroup
from distillery.core.recipe import Recipe
from distillery.core.store import RunDir


class Executor(ABC):
    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        self.recipe = recipe
        self.run = run

    @abstractmethod
    def execute(self, groups: list[TaskGroup]) -> bool:
        """Run (local, blocking) or submit (slurm, returns once queued) the groups in dependency order.
        Returns True when every task finished (local) or was queued (slurm)."""


def build_executor(recipe: Recipe, run: RunDir, kind: str | None = None) -> Executor:
    kind = kind or recipe.executor.kind
    if kind == "local":
        from distillery.executors.local import LocalExecutor

        return LocalExecutor(recipe, run)
    if kind == "slurm":
        from distillery.executors.slurm import SlurmExecutor

        return SlurmExecutor(recipe, run)
    raise ValueError(f"unknown executor kind {kind!r}; expected local or slurm")
