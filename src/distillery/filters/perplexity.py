"""The `perplexity` stage: score each trace's accepted response under a reference model, drop the outliers.

The paper scores every response with a 32B reference model and drops high-perplexity ones. Scoring is the
expensive part, so it happens once, in the scan pass (a sharded GPU job on clusters): each shard's scores go
to `_global/scores/shard-NNNNN.jsonl`, checkpointed per chunk so a requeued scan continues where it stopped.
`merge` turns the corpus-wide scores into a cutoff when the threshold is a percentile; `process` only
looks scores up, sets `Trace.ppl` (the AM format's `ppl`) and keeps or rejects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from distillery.schema.records import Trace
from distillery.core.stage import Item, Outcome, ShardContext, StageConfig, TwoPassStage, register
from distillery.core.store import iter_jsonl, read_json, write_json, write_jsonl
from distillery.filters.traces import accepted_traces, screen_traces
from distillery.models import resolve_model

if TYPE_CHECKING:  # torch is imported when a scan scores, not when a recipe is loaded
    from distillery.filters.scoring import Document, PackedScorer


class PerplexityConfig(StageConfig):
    model: str = Field("smollm2", description="Reference model folder or hub id, or 'smollm2' (the embedded SmolLM2-135M-Instruct).")
    device: str = Field("auto", description="Torch device: auto (cuda when present), cpu, cuda, cuda:1, ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weights and activations dtype; auto: bfloat16 on GPUs and on CPUs with native bf16, else float32.")
    tokens_per_pass: int = Field(8192, ge=16, description="Tokens packed into one forward pass (longer traces get a pass alone).")
    logits_chunk: int = Field(512, ge=1, description="CPU path: response tokens whose logits exist at once (chunk x vocab x 8 bytes); GPU: unused.")
    condition_on_prompt: bool = Field(True, description="Score the response after the chat-templated prompt (else alone).")
    max_response_tokens: int = Field(32768, ge=1, description="Response tokens scored at most; longer ones are scored on their start.")
    chunk_traces: int = Field(256, ge=1, description="Traces scored per checkpoint of the scan.")
    max_ppl: float | None = Field(None, gt=0, description="Absolute cutoff: drop traces with a higher perplexity.")
    max_percentile: float | None = Field(None, gt=0, le=100, description="Corpus-wide cutoff: drop traces above this percentile of the teacher's perplexities.")


def _scores_path(ctx: ShardContext, shard_index: int) -> Path:
    return ctx.summary_file("scores", shard_index, ".jsonl")


def _threshold_path(ctx: ShardContext) -> Path:
    return ctx.step_file("threshold.json")


SCORER_IMPORTS = ("distillery.filters.scoring", "transformers")
"""What scoring traces under the reference model imports (torch, the kernels, transformers)."""


@register
class PerplexityStage(TwoPassStage[PerplexityConfig]):
    name = "perplexity"
    Config = PerplexityConfig
    per_teacher = True
    kind = "gpu"
    model_phases = ("scan",)  # process looks scores up (it scores only what a scan missed, a re-screen's attempts)
    config: PerplexityConfig

    def preload(self) -> tuple[str, ...]:
        return SCORER_IMPORTS

    @cached_property
    def model_dir(self) -> str:
        return resolve_model(self.config.model)

    @cached_property
    def scorer(self) -> PackedScorer:
        from distillery.filters.scoring import PackedScorer

        return PackedScorer(self.model_dir, self.config.device, self.config.dtype,
                            self.config.tokens_per_pass, self.config.logits_chunk)

    @cached_property
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.model_dir)

    def document(self, trace: Trace) -> Document:
        """The token ids scored for a trace: its prompt (chat template, unscored) then its response."""
        context: list[int] = []
        if self.config.condition_on_prompt:
            messages = [m.model_dump() for m in trace.query.messages]
            prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            context = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target = self.tokenizer(trace.response, add_special_tokens=False)["input_ids"][: self.config.max_response_tokens]
        from distillery.filters.scoring import Document

        return Document(tuple(context), tuple(target))

    def score_traces(self, traces: list[Trace]) -> dict[str, dict[str, Any]]:
        results = self.scorer.score([self.document(trace) for trace in traces])
        return {score_key(trace): {"id": score_key(trace), "ppl": result.ppl if result.tokens else None,
                                   "tokens": result.tokens}
                for trace, result in zip(traces, results)}

    def scan(self, items: Iterable[Item], ctx: ShardContext) -> None:
        """Score every accepted response of the shard, checkpointing each chunk in the shard's work dir."""
        checkpoint = ctx.work_dir / "perplexity-scan.jsonl"
        done: dict[str, dict[str, Any]] = {}
        if checkpoint.exists():
            done = {row["id"]: row for row in _complete_lines(checkpoint)}
            ctx.logger.info("perplexity scan resumes with %d traces already scored", len(done))
        pending = (trace for _, trace in accepted_traces(items) if score_key(trace) not in done)
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        scored = 0
        with checkpoint.open("a", encoding="utf-8") as journal:
            while batch := list(islice(pending, self.config.chunk_traces)):
                chunk = self.score_traces(batch)
                journal.write("".join(json.dumps(row) + "\n" for row in chunk.values()))
                journal.flush()
                done.update(chunk)
                scored += len(chunk)
                ctx.logger.info("perplexity scan: %d new traces scored", scored)
        write_jsonl(_scores_path(ctx, ctx.shard_index), done.values())
        checkpoint.unlink()

    def merge(self, ctx: ShardContext) -> dict[str, Any]:
        """Summarise the teacher's perplexities; with a percentile threshold, fix the cutoff it means."""
        values = np.array([row["ppl"] for path in ctx.summary_files("scores")
                           for row in iter_jsonl(path) if row["tokens"] > 0], dtype=np.float64)
        cutoff = self.config.max_ppl
        stats: dict[str, Any] = {"scored": int(values.size)}
        if values.size:
            stats["quantiles"] = {f"p{q}": float(np.percentile(values, q)) for q in (5, 25, 50, 75, 95)}
        if self.config.max_percentile is not None and values.size:
            percentile_cutoff = float(np.percentile(values, self.config.max_percentile))
            cutoff = percentile_cutoff if cutoff is None else min(cutoff, percentile_cutoff)
        stats["cutoff"] = cutoff
        write_json(_threshold_path(ctx), stats)
        return stats

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        scores_file = _scores_path(ctx, ctx.shard_index)
        scores = {row["id"]: row for row in iter_jsonl(scores_file)} if scores_file.exists() else {}
        cutoff = read_json(_threshold_path(ctx))["cutoff"] if _threshold_path(ctx).exists() else self.config.max_ppl
        batch: list[tuple[Item, Trace]] = []
        for entry in screen_traces(items, "no accepted response to score"):
            if isinstance(entry, Outcome):
                yield entry
            else:
                batch.append(entry)
                if len(batch) >= self.config.chunk_traces:
                    yield from self._decide(batch, scores, cutoff)
                    batch = []
        yield from self._decide(batch, scores, cutoff)

    def _decide(self, batch: list[tuple[Item, Trace]], scores: dict[str, dict[str, Any]], cutoff: float | None) -> Iterator[Outcome]:
        missing = [trace for _, trace in batch if score_key(trace) not in scores]
        if missing:
            scores.update(self.score_traces(missing))
        for item, trace in batch:
            score = scores[score_key(trace)]
            trace.ppl = score["ppl"]
            trace.metadata["ppl_tokens"] = score["tokens"]
            trace.metadata["ppl_model"] = self.config.model
            record = trace.model_dump(mode="json")
            if score["tokens"] == 0:
                yield Outcome.rejected(item, "empty response: nothing to score", record)
            elif cutoff is not None and score["ppl"] > cutoff:
                yield Outcome.rejected(item, f"perplexity {score['ppl']:.3f} above the cutoff {cutoff:.3f}", record)
            else:
                yield Outcome.kept(item, record)


def score_key(trace: Trace) -> str:
    """What a score belongs to: one attempt of one trace (a dataset variant may take another attempt of it)."""
    return f"{trace.id}#{trace.accepted}"


def _complete_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of an append-only checkpoint; a last line cut short by a kill is cut off the file too, so that
    appending after a resume starts on a fresh line."""
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with path.open("r+b") as handle:
            handle.truncate(len(complete))
    for line in complete.decode("utf-8").splitlines():
        yield json.loads(line)
