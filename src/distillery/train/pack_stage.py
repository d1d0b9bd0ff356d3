"""The `pack` stage: every accepted trace of one teacher, tokenized and packed into fixed-capacity bins."""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field, ValidationError
from distillery.core.console import progress_bar
from distillery.core.pricing import Priced, Pricing

from distillery.core.stage import Item, Outcome, ShardContext, StageConfig, TaskResult, TaskStage, register
from distillery.core.store import file_sha256, ids_digest
from distillery.train.binpack import best_fit_decreasing, packing_efficiency
from distillery.train.chat_tokens import (
    NO_TRAINED_TOKENS,
    TemplateError,
    render_conversation,
    tokenize_rendered,
    trace_messages,
)
from distillery.train.models import resolve_model_dir
from distillery.train.packed_file import write_packed


class PackConfig(StageConfig):
    student: str = Field("smollm2", description="Student model folder whose tokenizer and chat template are used.")
    max_tokens: int = Field(32768, ge=8, description="Samples over this many tokens are dropped (as rejected).")
    bin_tokens: int | None = Field(None, ge=8, description="Bin capacity in tokens; defaults to max_tokens.")
    tokenize_batch: int = Field(512, ge=1, description="Traces tokenized per batch (threaded by the tokenizer).")


@register
class PackStage(TaskStage[PackConfig]):
    name = "pack"
    Config = PackConfig
    per_teacher = True

    def num_shards(self) -> int:
        return 1

    def price(self, pricing: Pricing) -> Priced:
        """The kept traces' tokens at the tokenizer's rate, into bins filled to `pack_fill` of their capacity; the
        packed file holds `pack_bytes_per_token` a token."""
        tokens = pricing.kept() * pricing.tokens_in
        filled = (self.config.bin_tokens or self.config.max_tokens) * pricing.inputs.pack_fill
        return pricing.at_rate(tokens, math.ceil(tokens / filled) if tokens else 0,
                               tokens * pricing.inputs.pack_bytes_per_token, tokens_per_record=filled)

    def run(self, ctx: ShardContext) -> TaskResult:
        from transformers import AutoTokenizer

        config = self.config
        capacity = config.bin_tokens or config.max_tokens
        if capacity < config.max_tokens:
            raise ValueError(f"bin_tokens ({capacity}) must be >= max_tokens ({config.max_tokens})")
        source = self.input_step()
        if source is None:
            raise ValueError(f"step {self.step!r} needs an input step of traces")
        model_dir = resolve_model_dir(config.student)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        docs: list[tuple[str, np.ndarray, np.ndarray]] = []
        rejected: list[Outcome] = []
        quarantined: list[Outcome] = []
        pending: list[tuple[Item, tuple[str, int]]] = []
        over_cap = 0

        def tokenize_pending() -> None:
            nonlocal over_cap
            for (item, _), sample in zip(pending, tokenize_rendered(tokenizer, [r for _, r in pending])):
                if len(sample) > config.max_tokens:
                    over_cap += 1
                    rejected.append(Outcome.rejected(item, f"{len(sample)} tokens > max_tokens {config.max_tokens}"))
                elif not sample.loss_mask.any():
                    rejected.append(Outcome.rejected(item, NO_TRAINED_TOKENS))
                else:
                    docs.append((item.key, sample.tokens, sample.loss_mask))
            pending.clear()

        inputs = 0
        for item in progress_bar(ctx.upstream.everything(), desc="tokenize", unit="trace"):
            inputs += 1
            try:
                pending.append((item, render_conversation(tokenizer, trace_messages(item.record or {}))))
            except ValidationError as error:
                quarantined.append(Outcome.quarantined(item, f"not a trace: {error.errors()[0]['msg']}"))
            except TemplateError as error:
                rejected.append(Outcome.rejected(item, str(error)))
            if len(pending) >= config.tokenize_batch:
                tokenize_pending()
        tokenize_pending()
        lengths = [len(tokens) for _, tokens, _ in docs]
        bins = best_fit_decreasing(lengths, capacity)
        efficiency = packing_efficiency(lengths, bins, capacity)
        output = ctx.run.packed(ctx.stage, ctx.lineage)
        total = write_packed(output, docs, bins, capacity,
                             {"efficiency": efficiency, "tokenizer": str(model_dir), "max_tokens": config.max_tokens})
        dropped = ctx.publish_task_output(rejected, quarantined)
        ctx.logger.info("packed %d of %d traces into %d bins of %d tokens: efficiency %.4f, %d over the cap",
                        len(docs), inputs, len(bins), capacity, efficiency, over_cap)
        sha = file_sha256(output)
        return TaskResult(
            inputs=inputs, kept=len(docs), rejected=dropped["rejected"], quarantined=dropped["quarantined"], sha256=sha,
            # the bins' content, not only which traces: a new bin size or tokenizer makes the training stale
            output_ids_digest=ids_digest([ids_digest(key for key, _, _ in docs), sha]),
            stats={"over_cap": over_cap, "bins": len(bins), "tokens": total,
                   "loss_tokens": int(sum(int(mask.sum()) for _, _, mask in docs)), "capacity": capacity,
                   "efficiency": round(efficiency, 6), "path": str(output)})
