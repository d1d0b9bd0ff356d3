"""`generate`: one teacher answers every query of a shard, verified and regenerated until it scores >= 0.9.

Runs once per teacher (one job array per teacher on a cluster). Input: the Query records of the previous
step. Output: one Trace per accepted query, with every attempt's verdict; a query no attempt passed goes to
`rejected/` with its full trace, so the teacher comparison can count failures too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from typing import TYPE_CHECKING

from pydantic import Field, ValidationError

from distillery.core.records import Query, Trace
from distillery.core.stage import Item, Outcome, RecordStage, ShardContext, StageConfig, register
from distillery.generate.loop import LoopSettings, RegenerationLoop
from distillery.generate.progress import GenerationProgress
from distillery.generate.token_count import with_counting_tokenizer
from distillery.llm.build import build_chat_model
from distillery.llm.protocol import ChatModel
from distillery.verify import VerifyConfig, build_verifier

if TYPE_CHECKING:
    from distillery.core.teachers import TeacherConfig


class GenerateConfig(StageConfig):
    verify: VerifyConfig = Field(default_factory=VerifyConfig, description="Verifiers per category and the pass threshold (the paper: 0.9).")
    verification: bool = Field(True, description="Off: keep each query's first answer unscored (throughput runs, raw replay).")
    max_attempts: int = Field(4, ge=1, description="Most generations per query before it is rejected.")
    batch_size: int = Field(64, ge=1, description="Requests per engine call; the most work a preempted shard loses.")
    replay_tokenizer: str = Field("smollm2", description="Model whose tokenizer counts a replay teacher's answer tokens when its options name none: the student's (a released file has no counts).")


@register
class GenerateStage(RecordStage):
    name = "generate"
    Config = GenerateConfig
    per_teacher = True
    kind = "gpu"
    serves_teacher = True

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        config: GenerateConfig = self.config  # type: ignore[assignment]
        if self.teacher is None:
            raise ValueError(f"step {self.step!r} runs per teacher but was built without one")
        teacher = with_counting_tokenizer(self.teacher, config.replay_tokenizer)
        valid: list[tuple[Item, Query]] = []
        for item in items:
            if item.record is None:
                yield Outcome.quarantined(item, item.problem or "unreadable input")
                continue
            try:
                valid.append((item, Query.model_validate(item.record)))
            except ValidationError as error:
                yield Outcome.quarantined(item, f"not a Query record: {error.errors()[0]['msg']}")
        if not valid:
            return
        progress = GenerationProgress(total=len(valid))
        if teacher.backend == "replay":
            ctx.stats["tokens_counted_with"] = teacher.options["tokenizer"]
        ctx.logger.info("generate: teacher %s (%s %s) on %d queries, batch %d, up to %d attempts", teacher.name,
                        teacher.backend, teacher.model, len(valid), config.batch_size, config.max_attempts)
        settings = LoopSettings(teacher=teacher.name, sampling=teacher.sampling, system_prompt=teacher.system_prompt,
                                base_seed=self.view.seed, threshold=config.verify.threshold,
                                max_attempts=config.max_attempts, batch_size=config.batch_size)
        with ExitStack() as cleanup:
            cleanup.callback(lambda: ctx.stats.update(progress.stats()))
            verifier = build_verifier(config.verify) if config.verification else None
            if verifier is not None:
                cleanup.callback(verifier.close)
            model: ChatModel = build_chat_model(teacher)
            cleanup.callback(model.close)
            for item, trace in RegenerationLoop(model, verifier, settings, progress, ctx.logger).run(valid):
                ctx.stats.update(progress.stats())
                yield self._outcome(item, trace, config, teacher)

    def _outcome(self, item: Item, trace: Trace, config: GenerateConfig, teacher: TeacherConfig) -> Outcome:
        trace.metadata.update({"model": teacher.model, "backend": teacher.backend})
        if teacher.backend == "replay":
            trace.metadata["tokens_counted_with"] = teacher.options["tokenizer"]
        record = trace.model_dump(mode="json")
        if trace.accepted is not None:
            return Outcome.kept(item, record)
        if not trace.attempts:
            return Outcome.rejected(item, f"the {self.teacher.backend} backend has no answer for this query", record)  # type: ignore[union-attr]
        return Outcome.rejected(item, f"no attempt reached {config.verify.threshold:g} after {len(trace.attempts)} attempts", record)
