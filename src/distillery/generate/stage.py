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

import math
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from typing import TYPE_CHECKING, Literal

from pydantic import Field, ValidationError, field_validator

from distillery.schema.records import Query, Trace
from distillery.core.pricing import Priced, Pricing, attempts_per_query, mean_completion
from distillery.core.stage import Item, Outcome, RecordStage, ShardContext, StageConfig, register
from distillery.generate.loop import LoopSettings, RegenerationLoop
from distillery.generate.progress import GenerationProgress
from distillery.generate.strategy import check_strategy_table, strategy_for
from distillery.generate.streaming import StreamingLoop, StreamingSettings
from distillery.generate.token_count import with_counting_tokenizer
from distillery.generate.verification import VerificationLanes
from distillery.llm.build import HEAVY_IMPORTS, build_chat_model
from distillery.llm.protocol import ChatModel, StreamingChatModel
from distillery.serve.cost import server_gpu_hours, serving_gpus
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

    def preload(self) -> tuple[str, ...]:
        assert self.teacher is not None
        return HEAVY_IMPORTS.get(self.teacher.backend, ())

    def price(self, pricing: Pricing) -> Priced:
        """Generated tokens: a query is retried until an attempt passes, at most `max_attempts` times; with
        per-attempt acceptance p, attempts per query = (1 - (1-p)^k) / p and the kept share 1 - (1-p)^k. An
        attempt's tokens are the mean of the length histogram (times the teacher's `length_scale`), each capped at
        the teacher's `max_tokens`. Verification runs beside the engine on the task's CPUs (the scheduler takes
        the longer of the two per shard); a remote teacher's GPU-hours are its server's."""
        assert self.teacher is not None
        inputs, resources, shards = pricing.inputs, pricing.resources, pricing.shards
        cost = inputs.teacher(self.teacher.name)
        max_attempts = self.config.max_attempts if self.config.verification else 1
        attempts = attempts_per_query(cost.acceptance, max_attempts)
        completion = mean_completion(inputs.lengths, cost.length_scale, self.teacher.sampling.max_tokens)
        work = pricing.records_in * attempts * completion
        kept = pricing.records_in * (1 - (1 - cost.acceptance) ** max_attempts)
        tokens = pricing.tokens_in + completion
        start_s = (cost.startup_s + inputs.task_overhead_s) * shards
        verify_s = pricing.records_in * attempts / (inputs.verify_per_s_per_cpu * resources.cpus_per_task)
        priced = Priced(pricing.records_in, kept, tokens, "gpu" if pricing.gpus else "cpu",
                        cpu_hours=verify_s * resources.cpus_per_task / 3600)
        if self.teacher.backend == "openai":
            priced.kind = "served" if self.teacher.serve is not None else "remote"
            gpus = serving_gpus(self.teacher) or cost.serving_gpus or 0
            if not gpus:
                priced.notes.append("set serving_gpus for a remote teacher")
            priced.gpu_hours = work / cost.tokens_per_s_per_gpu / 3600
            decode_s = work / cost.tokens_per_s_per_gpu / gpus if gpus else math.inf
            if self.teacher.serve is not None:  # distillery's replica jobs: every GPU held from load to the end
                priced.gpu_hours = server_gpu_hours(self.teacher, decode_s, cost.startup_s)
                priced.notes.append(f"served here: {gpus} GPUs in {self.teacher.serve.replicas} replica jobs")
        elif pricing.gpus:
            priced.gpu_hours = (work / cost.tokens_per_s_per_gpu + start_s * pricing.gpus) / 3600  # held while loading
            decode_s = priced.gpu_hours * 3600 / pricing.gpus
        else:  # an engine on the task's CPUs: the rate is per task
            decode_s = work / cost.tokens_per_s_per_gpu + start_s
            priced.cpu_hours = decode_s * resources.cpus_per_task / 3600
        priced.shard_s = decode_s / shards  # the scheduler adds verification (and a remote server's sharing)
        priced.verify_shard_s = verify_s / shards + cost.startup_s + inputs.task_overhead_s
        priced.disk_bytes = (pricing.text_bytes(kept, tokens, pricing.compress)
                             + pricing.text_bytes(pricing.records_in - kept, pricing.tokens_in, False))
        priced.notes.append(f"{attempts:.2f} attempts/query, {completion:.0f} tokens/attempt")
        priced.rate_from_manifests = False
        return priced

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
                verifier.warm_up(query for _, query in valid)
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
