"""The `structure` filter: one well-formed think block, then one answer block, and at most 32k tokens.

A trace is kept when its accepted response is exactly `<think>T</think>` followed by `<answer>A</answer>`
(whitespace around them allowed, nothing else), each tag once, T and A non-empty. For teachers whose format
has no answer tags, `require_answer_tags: false` takes everything after `</think>` as the answer. The length
cap is measured with the student's tokenizer on the whole training conversation (chat template of prompt and
response), since that is what packing and SFT will see.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import Field

from distillery.core.records import Trace
from distillery.core.responses import ParsedResponse, parse_response
from distillery.core.stage import Item, Outcome, RecordStage, ShardContext, StageConfig, register
from distillery.filters.traces import screen_traces
from distillery.models import load_tokenizer


class StructureConfig(StageConfig):
    require_think: bool = Field(True, description="The response must open with a <think> block (false: a response with no think tags is kept whole as the answer).")
    require_answer_tags: bool = Field(True, description="The answer must be wrapped in <answer> tags (false: the text after </think>).")
    max_tokens: int = Field(32768, ge=1, description="Most tokens of the chat-templated conversation, with the student's tokenizer.")
    tokenizer: str = Field("smollm2", description="Student tokenizer: a model folder or hub id, or 'smollm2' (the embedded SmolLM2-135M-Instruct).")
    batch_size: int = Field(256, ge=1, description="Traces tokenised together.")


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


@register
class StructureStage(RecordStage[StructureConfig]):
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

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        batch: list[tuple[Item, Trace, ParsedResponse]] = []
        for entry in screen_traces(items):
            if isinstance(entry, Outcome):
                yield entry
                continue
            item, trace = entry
            parts = check_structure(trace.response, self.config.require_answer_tags, self.config.require_think)
            if isinstance(parts, str):
                yield Outcome.rejected(item, f"malformed structure: {parts}")
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
            trace.think = trace.think or parts.think
            trace.answer = trace.answer or parts.answer
            trace.metadata["student_tokens"] = tokens
            record = trace.model_dump(mode="json")
            if tokens > self.config.max_tokens:
                yield Outcome.rejected(item, f"{tokens} tokens with the student's tokenizer, over the cap of {self.config.max_tokens}", record)
            else:
                yield Outcome.kept(item, record)
