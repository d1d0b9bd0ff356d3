"""`generate`: one teacher answers every query of a shard, verified and regenerated until it scores >= 0.9.

Runs once per teacher (one job array per teacher on a cluster). Input: the Query records of the previous
step. Output: one Trace per accepted query, with every attempt's verdict; a query no attempt passed goes to
`rejected/` with its full trace, so the teacher comparison can count failures too.

Loops. `streaming` (default, for backends with `submit`: vllm, openai, replay) keeps `max_in_flight` requests
in the engine and verifies off its path (`generate.streaming`); `batch` sends `batch_size` requests, waits
for the longest, verifies them while the engine idles. Either way a query is journaled once final, and the
shard's output is written in input order, so the output does not depend on completion order.

Regeneration strategy (`strategy`, per teacher and category; `generate.strategy`): `sequential` generates
attempt k+1 only after attempt k failed; `parallel(n)` generates n attempts of a query at once. Both accept
the lowest passing attempt index with the same per-attempt seeds, so they accept the same answers; they differ
in cost and in how many rounds a query takes. With max_attempts 4, sequential spends (1-(1-p)^4)/p
generations per query at pass rate p (p=0.3: 2.5; p=0.8: 1.25), parallel(4) always 4: per accepted trace
parallel(4) costs ~1.6x at p=0.3 and ~3.2x at p=0.8 once the engine is full (benchmarks/bench_generation.py
part 3 measures it). Recommended defaults:
- pass rate >= 0.5 (most math and instruction following with a strong teacher): `sequential`.
- pass rate 0.2-0.5 (hard math, code): `sequential` on shards with many more queries than `max_in_flight`
  (the usual case: other queries keep the engine full while one waits for its verdict); `parallel(2)` when a
  shard has few queries per engine slot, where it finishes in fewer rounds at ~1.2x the generations.
- pass rate < 0.2: `parallel(2)`-`parallel(4)`, since nearly every attempt is generated anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from typing import TYPE_CHECKING, Literal

from pydantic import Field, ValidationError, field_validator

from distillery.schema.records import Query, Trace
from distillery.core.stage import Item, Outcome, RecordStage, ShardContext, StageConfig, register
from distillery.generate.loop import LoopSettings, RegenerationLoop
from distillery.generate.progress import GenerationProgress
from distillery.generate.strategy import check_strategy_table, strategy_for
from distillery.generate.streaming import StreamingLoop, StreamingSettings
from distillery.generate.token_count import with_counting_tokenizer
from distillery.generate.verification import VerificationLanes
from distillery.llm.build import build_chat_model
from distillery.llm.protocol import ChatModel, StreamingChatModel
from distillery.verify import VerifyConfig, build_verifier

if TYPE_CHECKING:
    from distillery.core.teachers import TeacherConfig


class GenerateConfig(StageConfig):
    verify: VerifyConfig = Field(default_factory=VerifyConfig, description="Verifiers per category and the pass threshold (the paper: 0.9).")
    verification: bool = Field(True, description="Off: keep each query's first answer unscored (throughput runs, raw replay).")
    max_attempts: int = Field(4, ge=1, description="Most generations per query before it is rejected.")
    loop: Literal["streaming", "batch"] = Field("streaming", description=(
        "streaming: keep up to max_in_flight requests in the engine, verify off its path; batch: engine calls of "
        "batch_size, verified between calls (used anyway for backends without a streaming interface)."))
    max_in_flight: int = Field(288, ge=1, description=(
        "Streaming: requests kept in the engine. A little above vLLM's max_num_seqs (default 256) keeps the engine's "
        "queue non-empty, so a finished sequence is replaced in the same scheduler step."))
    max_verify_queue: int = Field(1024, ge=1, description=(
        "Streaming: answers waiting for verdicts before new queries stop being admitted (back-pressure)."))
    strategy: dict[str, str] = Field(default_factory=lambda: {"default": "sequential"}, description=(
        "Regeneration per teacher and category: sequential or parallel(n); keys default, <category>, "
        "<teacher>/<category>, <teacher>/default (the most specific wins). Streaming loop only."))
    batch_size: int = Field(64, ge=1, description="Batch loop: requests per engine call; the most work a preempted shard loses.")
    replay_tokenizer: str = Field("smollm2", description="Model whose tokenizer counts a replay teacher's answer tokens when its options name none: the student's (a released file has no counts).")

    @field_validator("strategy")
    @classmethod
    def _check_strategy(cls, table: dict[str, str]) -> dict[str, str]:
        return check_strategy_table(table)


@register
class GenerateStage(RecordStage[GenerateConfig]):
    name = "generate"
    Config = GenerateConfig
    per_teacher = True
    kind = "gpu"
    serves_teacher = True

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        config = self.config
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
        with ExitStack() as cleanup:
            cleanup.callback(lambda: ctx.stats.update(progress.stats()))
            verifier = build_verifier(config.verify) if config.verification else None
            if verifier is not None:
                cleanup.callback(verifier.close)
            if teacher.serve is not None:  # distillery's own servers of this teacher (SLURM jobs beside this one)
                from distillery.serve.client import ServedChatModel

                model: ChatModel = ServedChatModel(ctx.run, teacher)
            else:
                model = build_chat_model(teacher)
            cleanup.callback(model.close)
            if config.loop == "streaming" and isinstance(model, StreamingChatModel):
                lanes = VerificationLanes(verifier, lambda q: config.verify.verifiers[q.category],
                                          threads={"code": config.verify.code.parallelism}) if verifier else None
                if lanes is not None:
                    cleanup.callback(lanes.close)
                ctx.logger.info("generate: teacher %s (%s %s) on %d queries, streaming %d in flight, up to %d attempts, "
                                "strategy %s", teacher.name, teacher.backend, teacher.model, len(valid),
                                config.max_in_flight, config.max_attempts, config.strategy)
                settings = StreamingSettings(
                    teacher=teacher.name, sampling=teacher.sampling, system_prompt=teacher.system_prompt,
                    base_seed=self.view.seed, threshold=config.verify.threshold, max_attempts=config.max_attempts,
                    max_in_flight=config.max_in_flight, max_verify_queue=config.max_verify_queue,
                    strategy=config.strategy)
                traces = StreamingLoop(model, lanes, settings, progress, ctx.logger).run(valid)
            else:
                self._warn_batch(config, teacher, ctx)
                batch_settings = LoopSettings(
                    teacher=teacher.name, sampling=teacher.sampling, system_prompt=teacher.system_prompt,
                    base_seed=self.view.seed, threshold=config.verify.threshold, max_attempts=config.max_attempts,
                    batch_size=config.batch_size)
                traces = RegenerationLoop(model, verifier, batch_settings, progress, ctx.logger).run(valid)
            for item, trace in traces:
                ctx.stats.update(progress.stats())
                yield self._outcome(item, trace, config, teacher)

    def _warn_batch(self, config: GenerateConfig, teacher: TeacherConfig, ctx: ShardContext) -> None:
        ctx.logger.info("generate: teacher %s (%s %s), batch loop of %d, up to %d attempts", teacher.name,
                        teacher.backend, teacher.model, config.batch_size, config.max_attempts)
        if config.loop == "streaming":
            ctx.logger.info("generate: the %s backend has no streaming interface: using the batch loop", teacher.backend)
        if any(strategy_for(config.strategy, teacher.name, c).samples > 1 for c in config.verify.verifiers):
            ctx.logger.warning("generate: parallel(n) strategies need the streaming loop; the batch loop is sequential")

    def _outcome(self, item: Item, trace: Trace, config: GenerateConfig, teacher: TeacherConfig) -> Outcome:
        trace.metadata.update({"model": teacher.model, "backend": teacher.backend})
        if teacher.backend == "replay":
            trace.metadata["tokens_counted_with"] = teacher.options["tokenizer"]
        record = trace.model_dump(mode="json")
        if trace.accepted is not None:
            return Outcome.kept(item, record)
        if not trace.attempts:
            return Outcome.rejected(item, f"the {teacher.backend} backend has no answer for this query", record)
        return Outcome.rejected(item, f"no attempt reached {config.verify.threshold:g} after {len(trace.attempts)} attempts", record)
