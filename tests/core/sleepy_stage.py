"""A test-only stage (loaded as a recipe plugin): it sleeps per item so a test can kill it mid-shard."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from pydantic import Field

from distillery.core.stage import Item, Outcome, RecordStage, ShardContext, StageConfig, register


class SleepyConfig(StageConfig):
    delay_s: float = Field(0.0, ge=0, description="Seconds to sleep per item.")
    reject_every: int = Field(0, ge=0, description="Reject every n-th item by position (0 = never).")
    tag: str = Field("x", description="Written into every kept record, so a config change changes the output.")


@register
class Sleepy(RecordStage):
    name = "test_sleepy"
    Config = SleepyConfig

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        for item in items:
            time.sleep(self.config.delay_s)
            if self.config.reject_every and item.position % self.config.reject_every == 0:
                yield Outcome.rejected(item, f"position {item.position} is a multiple of {self.config.reject_every}")
            else:
                yield Outcome.kept(item, {**item.record, "tag": self.config.tag, "shard": ctx.shard_index})
