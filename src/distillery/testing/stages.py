"""Test-only stages, registered when a recipe names this module as a plugin (`plugins: [distillery.testing.stages]`);
importable in any process, including SLURM array tasks, with no path set up. They never appear in the built-in
stage table."""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import Field

from distillery.core.console import PROGRESS
from distillery.core.stage import Item, Outcome, RecordStage, ShardContext, StageConfig, TaskResult, TaskStage, register

PLUGIN = __name__
"""The module name to list under a recipe's `plugins:`."""


class SleepyConfig(StageConfig):
    delay_s: float = Field(0.0, ge=0, description="Seconds to sleep per item.")
    reject_every: int = Field(0, ge=0, description="Reject every n-th item by position (0 = never).")
    tag: str = Field("x", description="Written into every kept record, so a config change changes the output.")


@register
class Sleepy(RecordStage[SleepyConfig]):
    name = "test_sleepy"
    Config = SleepyConfig

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        for item in items:
            time.sleep(self.config.delay_s)
            if self.config.reject_every and item.position % self.config.reject_every == 0:
                yield Outcome.rejected(item, f"position {item.position} is a multiple of {self.config.reject_every}")
            else:
                yield Outcome.kept(item, {**item.record, "tag": self.config.tag, "shard": ctx.shard_index})


class NoisyConfig(StageConfig):
    fail: bool = Field(False, description="Raise after the noise, as a library error would.")


@register
class Noisy(RecordStage[NoisyConfig]):
    """Keeps every record and makes the noise third-party code makes: bytes written straight to file descriptors 1
    and 2 (C libraries, engine processes), a Python warning, a library logger's info, plus one progress report."""

    name = "test_noisy"
    Config = NoisyConfig

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        os.write(1, b"NOISE-FD1 from a C library\n")
        os.write(2, b"NOISE-FD2 from an engine process\n")
        warnings.warn("NOISE-WARNING from a library", UserWarning, stacklevel=1)
        logging.getLogger("some.library").info("NOISE-LIBRARY-INFO")
        ctx.logger.info("noisy: working on shard %d", ctx.shard_index, extra=PROGRESS)
        for item in items:
            yield Outcome.kept(item, item.record)
        if self.config.fail:
            raise RuntimeError("NOISE-FAILURE: the library gave up")


class SlowCopyConfig(StageConfig):
    delay_s: float = Field(0.0, ge=0, description="Seconds to sleep per item, so a test can interrupt a shard.")
    items_per_shard: int = Field(0, ge=0, description="0: read the previous step; >0: make this many items per shard.")


@register
class SlowCopy(RecordStage[SlowCopyConfig]):
    """Keeps every record, slowly, adding its shard index."""

    name = "test_slurm_slow"
    Config = SlowCopyConfig

    def input_step(self) -> str | None:
        return None if self.config.items_per_shard else super().input_step()

    def read_inputs(self, ctx: ShardContext) -> Iterator[Item]:
        if not self.config.items_per_shard:
            yield from super().read_inputs(ctx)
            return
        for position in range(self.config.items_per_shard):
            key = f"s{ctx.shard_index}-{position}"
            yield Item(position, key, {"id": key, "square": position * position})

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        for item in items:
            time.sleep(self.config.delay_s)
            yield Outcome.kept(item, {**item.record, "shard": ctx.shard_index})


class ForkedConfig(StageConfig):
    preload: list[str] = Field(default_factory=list, description="Modules the step asks the local run to preload.")
    variable: str = Field("DISTILLERY_TEST_MARK", description="Environment variable each kept record reports.")


@register
class Forked(RecordStage[ForkedConfig]):
    """A model-kind step (a process of its own locally) whose records say how its process started: which of its
    `preload` modules it found imported, and the value of an environment variable."""

    name = "test_forked"
    Config = ForkedConfig
    kind = "gpu"

    def preload(self) -> tuple[str, ...]:
        return tuple(self.config.preload)

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        found = sorted(name for name in self.config.preload if name in sys.modules)
        for item in items:
            yield Outcome.kept(item, {**item.record, "preloaded": found, "pid": os.getpid(),
                                      "variable": os.environ.get(self.config.variable)})


@register
class MpiWorld(TaskStage):
    """Reports what MPI and the executor told each rank; rank 0's answer lands in the manifest's stats."""

    name = "test_slurm_mpi"
    kind = "mpi"

    def input_step(self) -> str | None:
        return None

    def run(self, ctx: ShardContext) -> TaskResult:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        seen = comm.gather({"mpi_rank": comm.Get_rank(), "ctx_rank": ctx.rank, "ctx_world_size": ctx.world_size,
                            "master": f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"})
        return TaskResult(inputs=0, kept=0, stats={"mpi_world_size": comm.Get_size(), "ranks": seen})


@register
class FinishedTraces(RecordStage[StageConfig]):
    """Stands in for the generate step: its shards are written by the test (`finish_shard`), never run."""

    name = "test_finished_traces"
    per_teacher = True

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        raise AssertionError("the test writes this step's shards; it never runs")


def trace_recipe(root: Path, steps: dict[str, Any], teacher: str = "t1", **top: Any) -> dict[str, Any]:
    """A recipe whose first step (`traces`) stands in for generation, followed by `steps` (pack, sft, ...)."""
    return {"name": "train-test", "run_dir": str(root), "num_shards": 1, "plugins": [PLUGIN], **top,
            "teachers": [{"name": teacher, "model": "replay.jsonl", "backend": "replay"}],
            "steps": {"traces": {"type": FinishedTraces.name}, **steps}}
