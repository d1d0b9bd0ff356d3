"""`normalise`: rewrite each teacher's answer layout into the pipeline's `<think>T</think><answer>A</answer>`.

Teachers do not all write the layout the default system prompt asks for. DeepSeek-R1 and Qwen3 write
`<think>T</think>` and then a plain answer with no `<answer>` tag, and when their chat template puts the
opening `<think>` into the prompt (R1's updated template, Qwen3's thinking-2507 models) the output starts
straight with the reasoning and only `</think>` is left. The structure filter would drop all of them.

The recipe names each teacher's layout (`layouts: {deepseek-r1: r1, am-thinking-v1: tagged}`, or `default` for the
teachers it does not name):
- `tagged`: already in the pipeline's form; nothing is rewritten (a trace that is not is left for the
  structure filter to reject, with the problem recorded).
- `r1`, `qwen3`: the same think-then-plain-answer layout (the name is recorded for provenance): the missing
  opening `<think>` is put back and the text after `</think>` is wrapped in `<answer>` tags. A response that
  already has answer tags (the teacher followed the system prompt) is left as it is.

Every attempt keeps its original text in `details["normalised"]["original"]`, with the layout and the list of
changes (a second run leaves a normalised attempt alone); the trace records `metadata["normalised"] = {layout, changes[, problem]}` of its accepted attempt.
The verdicts stay valid: only tags are added, the answer text is the one that was verified.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from distillery.schema.records import Attempt, Trace
from distillery.schema.responses import parse_response
from distillery.core.stage import Item, Outcome, RecordStage, ShardContext, StageConfig, StepView, register
from distillery.filters.traces import parse_trace

Layout = Literal["tagged", "r1", "qwen3"]

ADDED_THINK_OPEN = "added the opening <think> tag"
WRAPPED_ANSWER = "wrapped the text after </think> in <answer> tags"


@dataclass(frozen=True)
class Normalised:
    text: str
    changes: list[str] = field(default_factory=list)
    problem: str = ""


def _tagged(text: str) -> Normalised:
    parsed = parse_response(text)
    if not parsed.well_formed:
        return Normalised(text, problem=parsed.problem)
    if "<answer>" not in text:
        return Normalised(text, problem="no <answer> block")
    return Normalised(text)


def _think_then_answer(text: str) -> Normalised:
    if "<answer>" in text or "</answer>" in text:
        return _tagged(text)
    closes = text.count("</think>")
    if closes != 1:
        return Normalised(text, problem="no </think>" if closes == 0 else "more than one </think>")
    head, answer = text.split("</think>", 1)
    changes = []
    opens = head.count("<think>")
    if opens > 1 or "<think>" in answer:
        return Normalised(text, problem="more than one <think>")
    if opens == 0:
        head = "<think>\n" + head
        changes.append(ADDED_THINK_OPEN)
    if not answer.strip():
        return Normalised(text, problem="nothing after </think>")
    changes.append(WRAPPED_ANSWER)
    return Normalised(f"{head}</think>\n<answer>\n{answer.strip()}\n</answer>", changes)


_NORMALISERS = {"tagged": _tagged, "r1": _think_then_answer, "qwen3": _think_then_answer}


def normalise_response(text: str, layout: Layout) -> Normalised:
    """The response rewritten from `layout` into `<think>T</think><answer>A</answer>`, and what changed."""
    return _NORMALISERS[layout](text)


class NormaliseConfig(StageConfig):
    layouts: dict[str, Layout] = Field(default_factory=dict, description="Teacher name -> the layout it writes: tagged (<think>/<answer>), r1 or qwen3 (<think>...</think> then a plain answer).")
    default: Layout | None = Field(None, description="Layout of the teachers `layouts` does not name; unset, every teacher must be named (a misspelt name is an error, not a silent default).")


@register
class NormaliseStage(RecordStage[NormaliseConfig]):
    name = "normalise"
    Config = NormaliseConfig
    per_teacher = True

    def __init__(self, view: StepView[NormaliseConfig]) -> None:
        super().__init__(view)
        if self.teacher is None:
            raise ValueError(f"step {self.step!r} runs per teacher but was built without one")
        if self.teacher.name not in self.config.layouts and self.config.default is None:
            raise ValueError(f"step {self.step!r}: teacher {self.teacher.name!r} has no layout: name it in `layouts` "
                             f"(which names {sorted(self.config.layouts)}) or set `default`")
        self.layout: Layout = self.config.layouts.get(self.teacher.name) or self.config.default  # type: ignore[assignment]

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        layout = self.layout
        counts: Counter[str] = Counter()
        for item in items:
            trace = parse_trace(item)
            if isinstance(trace, str):
                yield Outcome.quarantined(item, trace)
                continue
            summary = normalise_trace(trace, layout)
            counts.update(summary.get("changes", []))
            counts["problem" if "problem" in summary else ("changed" if summary.get("changes") else "unchanged")] += 1
            ctx.stats["normalise"] = {"layout": layout, **dict(sorted(counts.items()))}
            yield Outcome.kept(item, trace.model_dump(mode="json"))


def normalise_trace(trace: Trace, layout: Layout) -> dict[str, Any]:
    """Rewrite every attempt of `trace` in place; returns (and records in its metadata) what happened to the
    accepted attempt."""
    summaries = [_normalise_attempt(attempt, layout) for attempt in trace.attempts]
    if trace.accepted is None:
        summary: dict[str, Any] = {"layout": layout, "changes": []}
    else:
        summary = summaries[trace.accepted]
    trace.metadata["normalised"] = summary
    return summary


def _normalise_attempt(attempt: Attempt, layout: Layout) -> dict[str, Any]:
    if "normalised" in attempt.details:
        return {k: v for k, v in attempt.details["normalised"].items() if k != "original"}
    result = normalise_response(attempt.response, layout)
    summary: dict[str, Any] = {"layout": layout, "changes": result.changes}
    if result.problem:
        summary["problem"] = result.problem
    if result.text != attempt.response:
        attempt.details["normalised"] = {**summary, "original": attempt.response}
        attempt.response = result.text
    return summary

