"""The `structure` filter: one well-formed think block, then one answer block, and at most 32k tokens.

A trace is kept when its accepted response is exactly `<think>T</think>` followed by `<answer>A</answer>`
(whitespace around them allowed, nothing else), each tag once, T and A non-empty. For teachers whose format
has no answer tags, `require_answer_tags: false` takes everything after `</think>` as the answer. The length
cap is measured with the student's tokenizer on the whole training conversation (chat template of prompt and
response), since that is what packing and SFT will see.

Teachers that write `<think>T</think>` and a plain answer (R1, Qwen3) belong behind a `normalise` step, which
adds the tags. A set that would still mix layouts (tagged answers beside plain ones, say with
`require_answer_tags: false`) is refused, never trained on silently: the scan pass counts the layouts of the
traces every shard would keep, and the merge fails with those counts unless `mixed_layouts: report`, which
keeps them and records the mix in the step's statistics. Each kept trace says its layout in `metadata.layout`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from distillery.schema.records import Trace
from distillery.schema.responses import ParsedResponse, parse_response
from distillery.core.stage import Item, Outcome, ShardContext, StageConfig, TwoPassStage, register
from distillery.core.store import read_json, write_json
from distillery.filters.traces import accepted_traces, screen_traces
from distillery.models import load_tokenizer


class StructureConfig(StageConfig):
    require_think: bool = Field(True, description="The response must open with a <think> block (false: a response with no think tags is kept whole as the answer).")
    require_answer_tags: bool = Field(True, description="The answer must be wrapped in <answer> tags (false: the text after </think>; for R1/Qwen3 teachers prefer a `normalise` step).")
    max_tokens: int = Field(32768, ge=1, description="Most tokens of the chat-templated conversation, with the student's tokenizer.")
    tokenizer: str = Field("smollm2", description="Student tokenizer: a model folder or hub id, or 'smollm2' (the embedded SmolLM2-135M-Instruct).")
    batch_size: int = Field(256, ge=1, description="Traces tokenised together.")
    mixed_layouts: Literal["refuse", "report"] = Field("refuse", description="A teacher's kept traces in more than one layout (tagged, untagged, plain): fail the step, or keep them and report the counts.")


Layout = Literal["tagged", "untagged", "plain"]
"""`<think>T</think><answer>A</answer>`; `<think>T</think>A`; a response with no think block, kept whole."""


class MixedLayoutsError(ValueError):
    """A teacher's traces would enter one SFT set in more than one layout."""


def check_structure(response: str, require_answer_tags: bool = True, require_think: bool = True) -> ParsedResponse | str:
    """The parsed response when it is well formed with non-empty parts, else what is wrong with it."""
    if not require_think and "<think>" not in response and "</think>" not in response:
        answer = response.strip()
        return ParsedResponse(think="", answer=answer, well_formed=True, problem="") if answer else "empty response"
    parsed = parse_response(response)
    if not parsed.well_formed:
        return parsed.problem
    if response.split("<think>", 1)[0].strip():
        return "text before <think>"
    if not parsed.think:
        return "empty <think> block"
    if require_answer_tags and "<answer>" not in response:
        return "no <answer> block"
    return parsed


def layout_of(response: str, parts: ParsedResponse) -> Layout:
    """The layout of a response that passed `check_structure`."""
    if "</think>" not in response:
        return "plain"
    return "tagged" if "<answer>" in response else "untagged"


def _layouts_path(ctx: ShardContext, shard_index: int) -> Path:
    return ctx.summary_file("layouts", shard_index)


@register
class StructureStage(TwoPassStage[StructureConfig]):
    name = "structure"
    Config = StructureConfig
    per_teacher = True
    config: StructureConfig

    @property
    def tokenizer(self) -> Any:
        return load_tokenizer(self.config.tokenizer)

    def conversation_tokens(self, traces: list[Trace]) -> list[int]:
        """Token counts of each trace's training conversation (prompt and response, chat template)."""
        texts = [
            self.tokenizer.apply_chat_template(
                [m.model_dump() for m in trace.query.messages] + [{"role": "assistant", "content": trace.response}],
                tokenize=False,
            )
            for trace in traces
        ]
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _parts(self, trace: Trace) -> ParsedResponse | str:
        parts = check_structure(trace.response, self.config.require_answer_tags, self.config.require_think)
        return f"malformed structure: {parts}" if isinstance(parts, str) else parts

    def scan(self, items: Iterable[Item], ctx: ShardContext) -> None:
        """Count the layouts of the traces this shard would keep (before the length cap)."""
        counts: Counter[str] = Counter()
        for _, trace in accepted_traces(items):
            parts = self._parts(trace)
            if not isinstance(parts, str):
                counts[layout_of(trace.response, parts)] += 1
        write_json(_layouts_path(ctx, ctx.shard_index), dict(counts))

    def merge(self, ctx: ShardContext) -> dict[str, Any]:
        """Refuse a teacher's set that mixes layouts (unless `mixed_layouts: report`)."""
        counts: Counter[str] = Counter()
        for index in range(ctx.num_shards):
            counts.update(read_json(_layouts_path(ctx, index)))
        layouts = dict(sorted(counts.items()))
        if len(layouts) > 1:
            message = (f"teacher {ctx.lineage!r}: the traces {ctx.stage!r} keeps mix layouts {layouts}; add a `normalise` "
                       f"step with this teacher's layout before it, or set `mixed_layouts: report` to train on the mix")
            if self.config.mixed_layouts == "refuse":
                raise MixedLayoutsError(message)
            ctx.logger.warning("%s", message)
        return {"layouts": layouts, "mixed": len(layouts) > 1}

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        batch: list[tuple[Item, Trace, ParsedResponse]] = []
        for entry in screen_traces(items):
            if isinstance(entry, Outcome):
                yield entry
                continue
            item, trace = entry
            parts = self._parts(trace)
            if isinstance(parts, str):
                yield Outcome.rejected(item, parts)
                continue
            batch.append((item, trace, parts))
            if len(batch) >= self.config.batch_size:
                yield from self._cap(batch)
                batch = []
        yield from self._cap(batch)

    def _cap(self, batch: list[tuple[Item, Trace, ParsedResponse]]) -> Iterator[Outcome]:
        if not batch:
            return
        counts = self.conversation_tokens([trace for _, trace, _ in batch])
        for (item, trace, parts), tokens in zip(batch, counts):
            trace.metadata["student_tokens"] = tokens
            trace.metadata["layout"] = layout_of(trace.response, parts)
            record = trace.model_dump(mode="json")
            if tokens > self.config.max_tokens:
                yield Outcome.rejected(item, f"{tokens} tokens with the student's tokenizer, over the cap of {self.config.max_tokens}", record)
            else:
                yield Outcome.kept(item, record)
