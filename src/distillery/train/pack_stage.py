"""The `pack` stage: every accepted trace of one lineage, tokenized and packed into fixed-capacity bins.

Sharded: a lineage packs in ceil(input shards / `input_shards_per_task`) tasks, task i over a contiguous share
of its input step's shards (`binpack.share`), each writing its own packed file (`RunDir.packed`), so the paper's
corpus packs in parallel and a lost task is all that reruns; `sft` reads the files as one dataset in shard order.
Each task's last window is partly empty: the utilisation this costs is in each manifest's `efficiency`
(benchmarks/bench_packing.py compares whole-corpus, one-task and sharded packing on the same lengths).

Each task streams: traces are tokenized a batch at a time and packed in windows of `window_tokens` tokens
(`binpack.WindowedPacker`), each window's bins appended to the packed file as it closes, and dropped traces go
straight to their files; the task holds one window of tokens, never the corpus (a window's last bins are filled
from that window only: the utilisation this costs is in the manifest's `efficiency`).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from pydantic import Field, ValidationError

from distillery.core.console import progress_bar
from distillery.core.pricing import Priced, Pricing
from distillery.core.stage import Item, Outcome, ShardContext, StageConfig, TaskResult, TaskStage, register
from distillery.core.store import file_sha256, ids_digest
from distillery.train.binpack import WindowedPacker, share
from distillery.train.chat_tokens import (
    NO_TRAINED_TOKENS,
    TemplateError,
    render_conversation,
    tokenize_rendered,
    trace_messages,
)
from distillery.train.models import resolve_model_dir
from distillery.train.packed_file import PackedWriter


class PackConfig(StageConfig):
    student: str = Field("smollm2", description="Student model folder whose tokenizer and chat template are used.")
    max_tokens: int = Field(32768, ge=8, description="Samples over this many tokens are dropped (as rejected).")
    bin_tokens: int | None = Field(None, ge=8, description="Bin capacity in tokens; defaults to max_tokens.")
    tokenize_batch: int = Field(512, ge=1, description="Traces tokenized per batch (threaded by the tokenizer).")
    window_bins: int = Field(256, ge=1, description="Traces are packed in windows of this many bins' worth of "
                                                    "tokens: the memory the task holds (256 bins of 32k tokens: "
                                                    "~8M tokens, ~40 MB) against at most one partly empty bin per "
                                                    "window.")
    input_shards_per_task: int = Field(16, ge=1, description="Input shards packed per task: a lineage packs in "
                                                             "ceil(input shards / this) tasks, each its own file.")


@register
class PackStage(TaskStage[PackConfig]):
    name = "pack"
    Config = PackConfig
    per_teacher = True

    def num_shards(self) -> int:
        """From the run's shard count, which its input (a per-teacher record step) has."""
        return math.ceil(self.view.num_shards / self.config.input_shards_per_task)

    def input_shards(self, ctx: ShardContext) -> range:
        """The input step's shards this task packs."""
        return share(ctx.upstream.num_shards(), ctx.num_shards, ctx.shard_index)

    def input_digest(self, ctx: ShardContext) -> str:
        """The output ids of this task's input shards only: a rerun upstream shard reruns only its pack task."""
        return ctx.upstream.digest(shard_index=self.input_shards(ctx))

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
        if self.input_step() is None:
            raise ValueError(f"step {self.step!r} needs an input step of traces")
        model_dir = resolve_model_dir(config.student)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        output = ctx.run.packed(ctx.stage, ctx.lineage, ctx.shard_index)
        shards = self.input_shards(ctx)
        packer = WindowedPacker(capacity, config.window_bins * capacity)
        window: list[tuple[str, np.ndarray, np.ndarray]] = []
        pending: list[tuple[Item, tuple[str, int]]] = []
        keys = hashlib.sha256()
        counts = {"inputs": 0, "over_cap": 0, "loss_tokens": 0}

        with PackedWriter(output, capacity) as writer, ctx.task_output() as (rejected, quarantined):
            def reject(item: Item, reason: str) -> None:
                rejected.write(Outcome.rejected(item, reason).rejected_row())

            def tokenize_pending() -> None:
                for (item, _), sample in zip(pending, tokenize_rendered(tokenizer, [r for _, r in pending])):
                    if len(sample) > config.max_tokens:
                        counts["over_cap"] += 1
                        reject(item, f"{len(sample)} tokens > max_tokens {config.max_tokens}")
                    elif not sample.loss_mask.any():
                        reject(item, NO_TRAINED_TOKENS)
                    else:
                        window.append((item.key, sample.tokens, sample.loss_mask))
                        keys.update(item.key.encode() + b"\n")
                        counts["loss_tokens"] += int(sample.loss_mask.sum())
                        bins = packer.add(len(sample.tokens))
                        if bins is not None:
                            writer.add(window, bins)
                            window.clear()
                pending.clear()

            items = (item for shard in shards for item in ctx.upstream.shard(shard))
            for item in progress_bar(items, desc="tokenize", unit="trace"):
                counts["inputs"] += 1
                try:
                    pending.append((item, render_conversation(tokenizer, trace_messages(item.record or {}))))
                except ValidationError as error:
                    quarantined.write(Outcome.quarantined(item, f"not a trace: {error.errors()[0]['msg']}")
                                      .quarantine_row())
                except TemplateError as error:
                    reject(item, str(error))
                if len(pending) >= config.tokenize_batch:
                    tokenize_pending()
            tokenize_pending()
            writer.add(window, packer.flush())
            efficiency = writer.tokens / (writer.bins * capacity) if writer.bins else 1.0
            writer.attrs.update({"efficiency": efficiency, "tokenizer": str(model_dir),
                                 "max_tokens": config.max_tokens})
        ctx.logger.info("packed %d of %d traces of input shards %d-%d into %d bins of %d tokens: efficiency %.4f, "
                        "%d over the cap", writer.documents, counts["inputs"], shards.start, shards.stop - 1,
                        writer.bins, capacity, efficiency, counts["over_cap"])
        sha = file_sha256(output)
        return TaskResult(
            inputs=counts["inputs"], kept=writer.documents, rejected=rejected.count, quarantined=quarantined.count,
            sha256=sha,
            # the bins' content, not only which traces: a new bin size or tokenizer makes the training stale
            output_ids_digest=ids_digest([keys.hexdigest(), sha]),
            stats={"over_cap": counts["over_cap"], "bins": writer.bins, "tokens": writer.tokens,
                   "loss_tokens": counts["loss_tokens"], "capacity": capacity, "window_bins": config.window_bins,
                   "input_shards": [shards.start, shards.stop], "efficiency": round(efficiency, 6),
                   "path": str(output)})
