"""The `variants` stage: datasets derived from a teacher's attempt log and filter outputs, without regenerating.

Each rule of the step makes one lineage "<teacher>+<variant>" per teacher, which this step and every later step
(pack, sft, eval) run for as their own job arrays, next to the teacher's own data. A rule selects attempts; the
teacher's filter verdicts are reused for the attempt they judged, and any other attempt goes through the same
filter steps again, with the cutoffs and corpus counts those steps fixed for the teacher (perplexity scores a new
attempt with the reference model; nothing is generated). Rules:

- `threshold: t`: the first attempt scoring >= t (what the loop would have accepted at t). Above the run's
  threshold some queries have no such attempt although the loop would have tried again: they are set aside as
  needing new attempts and counted (`needs_new_attempts` in the manifest), not silently dropped.
- `keep_all: true`: every attempt, correct or not, each a record with its score.
- `length: uniform | diverse`: a length-controlled sample of the teacher's final data, `fraction` of each
  category (equal size and category mix for both shapes; `distillery.variants.rules.length_sample`).
- `no_filter: [step, ...]`: the data as it was before those filter steps (combinable with threshold/keep_all).
"""

from __future__ import annotations

import functools
import itertools
import re
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from distillery.core.config import StrictModel
from distillery.schema.records import Trace
from distillery.core.lineage import Lineage
from distillery.core.pricing import Priced, Pricing
from distillery.core.stage import (
    Item,
    Outcome,
    ScreenEntry,
    ShardContext,
    StageConfig,
    TwoPassStage,
    register,
)
from distillery.core.store import config_digest, iter_jsonl, read_json, write_json, write_jsonl
from distillery.filters.perplexity import SCORER_IMPORTS
from distillery.filters.traces import parse_trace
from distillery.generate.stage import GenerateConfig
from distillery.variants.rules import at_threshold, length_sample, tie_break

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class VariantRule(StrictModel):
    threshold: float | None = Field(None, gt=0, le=1, description="Accept the first attempt scoring at least this.")
    keep_all: bool = Field(False, description="Every attempt, correct or not, with its score.")
    length: Literal["uniform", "diverse"] | None = Field(None, description=(
        "A length-controlled sample of the teacher's final data: uniform (closest to the median) or diverse "
        "(evenly spread over the length ranks)."))
    fraction: float = Field(0.5, gt=0, le=1, description="Length variants: share of each category kept.")
    no_filter: list[str] = Field(default_factory=list, description="Filter steps this variant's data skips.")
    teachers: list[str] | None = Field(None, description="Teachers this variant is made for (default: all).")

    @field_validator("no_filter", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_rule(self) -> VariantRule:
        chosen = [name for name, on in (("threshold", self.threshold is not None), ("keep_all", self.keep_all),
                                        ("length", self.length is not None)) if on]
        if len(chosen) > 1:
            raise ValueError(f"a variant takes one of threshold, keep_all, length; got {chosen}")
        if not chosen and not self.no_filter:
            raise ValueError("a variant needs a rule: threshold, keep_all, length or no_filter")
        if self.length is not None and self.no_filter:
            raise ValueError("a length variant samples the teacher's filtered data: it cannot also skip filters")
        return self

    def describe(self) -> str:
        parts = [f"threshold {self.threshold:g}" if self.threshold is not None else "",
                 "keep all attempts" if self.keep_all else "",
                 f"{self.length} lengths, {self.fraction:g} of each category" if self.length else "",
                 f"without {', '.join(self.no_filter)}" if self.no_filter else ""]
        return "; ".join(p for p in parts if p)


class VariantsConfig(StageConfig):
    attempts_from: str = Field("generate", description="The generation step whose attempts the variants select from.")
    rules: dict[str, VariantRule] = Field(min_length=1, description="Variant name -> its rule.")

    @field_validator("rules")
    @classmethod
    def _names(cls, rules: dict[str, VariantRule]) -> dict[str, VariantRule]:
        bad = [name for name in rules if not _NAME.match(name)]
        if bad:
            raise ValueError(f"variant names may hold letters, digits, '_', '.', '-' only, got {bad}")
        return rules


@register
class VariantsStage(TwoPassStage[VariantsConfig]):
    name = "variants"
    Config = VariantsConfig
    per_teacher = True
    kind = "gpu"
    """A rule that picks attempts the filters never saw scores them with the perplexity filter's reference model."""
    model_phases = ("process",)  # that re-screen; scan and merge read lengths

    def preload(self) -> tuple[str, ...]:
        return SCORER_IMPORTS

    @classmethod
    def derived_lineages(cls, config: StageConfig, teachers: list[str]) -> list[str]:
        assert isinstance(config, VariantsConfig)
        return [str(Lineage(teacher, name)) for teacher in teachers for name, rule in config.rules.items()
                if rule.teachers is None or teacher in rule.teachers]

    @classmethod
    def check_placement(cls, config: StageConfig, steps_before: list[tuple[str, str]],
                        teachers: list[str]) -> list[str]:
        assert isinstance(config, VariantsConfig)
        names = [name for name, _ in steps_before]
        if config.attempts_from not in names:
            return [f"attempts_from: {config.attempts_from!r} is not a step before this one; steps before: {names}"]
        if dict(steps_before)[config.attempts_from] != "generate":
            return [f"attempts_from: {config.attempts_from!r} is not a generate step"]
        filters = names[names.index(config.attempts_from) + 1:]
        problems = []
        for name, rule in config.rules.items():
            unknown = [step for step in rule.no_filter if step not in filters]
            if unknown:
                problems.append(f"rules.{name}.no_filter: {unknown} are not steps between "
                                f"{config.attempts_from!r} and this one ({filters})")
            strangers = [t for t in rule.teachers or [] if t not in teachers]
            if strangers:
                problems.append(f"rules.{name}.teachers: unknown teachers {strangers}; the recipe has {teachers}")
        return problems

    @functools.cached_property
    def config_digest(self) -> str:
        """Only this lineage's rule keys its output: editing or adding another variant leaves it fresh."""
        rule = self.rule.model_dump(mode="json") if self.view.variant else None
        return config_digest({"type": self.name, "attempts_from": self.config.attempts_from, "rule": rule,
                              "teacher": self.teacher.model_dump(mode="json") if self.teacher else None,
                              "seed": self.view.seed})

    @property
    def rule(self) -> VariantRule:
        if self.view.variant is None:
            raise ValueError(f"step {self.step!r} runs only for variant lineages ('<teacher>+<variant>')")
        return self.config.rules[self.view.variant]

    def price(self, pricing: Pricing) -> Priced:
        """A record map at the step's rate; a length variant keeps its `fraction` of the teacher's data."""
        return pricing.record_map(self.rule.fraction if self.rule.length is not None else 1.0)

    def input_digest(self, ctx: ShardContext) -> str:
        """Keyed by the attempt log and every filter step's shard, not only the last one."""
        steps = [self.config.attempts_from, *ctx.upstream.steps_after(self.config.attempts_from)]
        return config_digest([ctx.upstream.digest(step, ctx.shard_index) for step in steps])

    def read_inputs(self, ctx: ShardContext) -> Iterator[Item]:
        """A length variant's candidates are the teacher's final traces; any other rule's are the attempt log:
        every query the teacher answered, accepted or not (for keep_all, one item per attempt)."""
        if self.rule.length is not None:
            yield from ctx.upstream.shard(ctx.shard_index)
            return
        step = self.config.attempts_from
        accepted = (item.record for item in ctx.upstream.shard(ctx.shard_index, step))
        refused = (row["record"] for row in ctx.upstream.dropped(step, ctx.shard_index) if row.get("record"))
        position = 0
        for record in itertools.chain(accepted, refused):
            if not self.rule.keep_all:
                yield Item(position, record["query"]["id"], record, f"{step} shard {ctx.shard_index}")
                position += 1
                continue
            for index in range(len(record.get("attempts", []))):
                key = f"{record['query']['id']}#{index}"
                yield Item(position, key, {**record, "accepted": index}, f"{step} shard {ctx.shard_index}")
                position += 1

    def scan(self, items: Iterable[Item], ctx: ShardContext) -> None:
        """Length variants: each final trace's category and length (other rules read nothing here)."""
        if self.rule.length is None:
            return
        traces = ((item, parse_trace(item)) for item in items)
        write_jsonl(ctx.summary_file("lengths", ctx.shard_index, ".jsonl"),
                    ({"key": item.key, "category": trace.query.category, "tokens": _tokens(trace)}
                     for item, trace in traces if isinstance(trace, Trace)))

    def merge(self, ctx: ShardContext) -> dict[str, Any]:
        """Length variants: draw the sample over every shard at once, from 20 bytes a trace (category code, length,
        tie-break hash), then write each shard's chosen keys in a second pass over its lengths file."""
        rule = self.rule
        if rule.length is None:
            return {"variant": self.view.variant, "rule": rule.describe()}
        names: dict[str, int] = {}
        codes, lengths, ties = array("i"), array("q"), array("Q")
        for index in range(ctx.num_shards):
            for row in iter_jsonl(ctx.summary_file("lengths", index, ".jsonl")):
                codes.append(names.setdefault(row["category"], len(names)))
                lengths.append(int(row["tokens"]))
                ties.append(tie_break(row["key"], self.view.seed))
        tokens = np.frombuffer(lengths, dtype=np.int64)
        chosen = length_sample(np.frombuffer(codes, dtype=np.int32), tokens, np.frombuffer(ties, dtype=np.uint64),
                               rule.length, rule.fraction)
        position = 0
        for index in range(ctx.num_shards):
            keys = []
            for row in iter_jsonl(ctx.summary_file("lengths", index, ".jsonl")):
                if chosen[position]:
                    keys.append(row["key"])
                position += 1
            write_json(ctx.summary_file("selected", index), sorted(keys))
        kept = np.sort(tokens[chosen])
        picked = Counter(np.frombuffer(codes, dtype=np.int32)[chosen].tolist())
        return {"variant": self.view.variant, "rule": rule.describe(), "size": int(chosen.sum()), "of": len(tokens),
                "categories": {name: picked[code] for name, code in names.items() if picked[code]},
                "tokens": {"min": int(kept[0]), "median": int(kept[len(kept) // 2]), "max": int(kept[-1])}
                if len(kept) else {}}

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        rule = self.rule
        counts: Counter[str] = Counter()
        ctx.stats.update({"variant": self.view.variant, "rule": rule.describe()})
        if rule.length is not None:
            selected = set(read_json(ctx.summary_file("selected", ctx.shard_index)))
            for item in items:
                if item.key in selected:
                    yield Outcome.kept(item, self.label(item.record or {}, None))
                else:
                    yield Outcome.rejected(item, f"not drawn for the {rule.length} length sample")
            return
        screen = _Screen(self, ctx)
        generation = ctx.upstream.config(self.config.attempts_from)
        assert isinstance(generation, GenerateConfig)
        pending: list[tuple[Item, Trace]] = []
        for item in items:
            trace = parse_trace(item)
            if isinstance(trace, str):
                yield Outcome.quarantined(item, trace)
                continue
            if rule.threshold is not None:
                choice = at_threshold(trace, rule.threshold, generation.max_attempts)
                if choice.attempt is None:
                    counts["needs_new_attempts" if choice.needs_new_attempts else "exhausted"] += 1
                    yield Outcome.rejected(item, (
                        f"no recorded attempt reaches {rule.threshold:g} and the loop would try again: needs new "
                        "attempts" if choice.needs_new_attempts else
                        f"none of the {generation.max_attempts} attempts the loop allows reaches {rule.threshold:g}"))
                    continue
                if choice.attempt != trace.accepted:
                    counts["other_attempt"] += 1
                trace.accepted = choice.attempt
            elif trace.accepted is None:
                yield Outcome.rejected(item, f"{self.config.attempts_from}: no attempt was accepted")
                continue
            pending.append((item, trace))
            if len(pending) >= 256:
                yield from screen.decide(pending, counts)
                pending = []
        yield from screen.decide(pending, counts)
        ctx.stats.update(counts)

    def label(self, record: dict[str, Any], trace: Trace | None) -> dict[str, Any]:
        """The variant's mark on a record it keeps: its name, and for keep_all the attempt and its score."""
        mark: dict[str, Any] = {"name": self.view.variant}
        if trace is not None and trace.verdict is not None:
            mark.update({"attempt": trace.accepted, "score": trace.verdict.score})
            if self.rule.keep_all:
                mark["key"] = f"{trace.query.id}#{trace.accepted}"
        return {**record, "metadata": {**record.get("metadata", {}), "variant": mark}}


class _Screen:
    """The teacher's filters, as the variant applies them to one shard: an attempt a filter already judged keeps
    its verdict; any other attempt (and what a skipped filter dropped) goes through the remaining filter steps again,
    by the runner's re-screen service."""

    def __init__(self, stage: VariantsStage, ctx: ShardContext) -> None:
        self.stage = stage
        if ctx.rescreen is None:
            raise ValueError(f"step {ctx.stage!r}: no re-screen service in this context")
        self.rescreen = ctx.rescreen
        self.steps = ctx.upstream.steps_after(stage.config.attempts_from)
        self.screened = [step for step in self.steps if step not in stage.rule.no_filter]
        self.verdicts = _TeacherVerdicts(ctx, stage.config.attempts_from, self.steps)

    def _judged(self, trace: Trace) -> tuple[str, str, dict[str, Any]] | dict[str, Any] | None:
        """The teacher's filters' verdict on this very attempt: its final record, (step, reason, record) when a
        filter dropped it, or None when they never saw it."""
        final, fate = self.verdicts.of(trace.query.id)
        if final is not None:
            return final if final.get("accepted") == trace.accepted else None
        if fate is not None and fate[2].get("accepted") == trace.accepted:
            return fate
        return None

    def decide(self, batch: list[tuple[Item, Trace]], counts: Counter[str]) -> Iterator[Outcome]:
        rescreen: list[ScreenEntry] = []
        for item, trace in batch:
            judged = self._judged(trace)
            if isinstance(judged, dict):  # kept by every filter: skipping some changes nothing
                counts["reused_verdicts"] += 1
                yield Outcome.kept(item, self.stage.label(judged, trace))
            elif isinstance(judged, tuple) and judged[0] not in self.stage.rule.no_filter:
                counts["reused_verdicts"] += 1
                yield Outcome.rejected(item, f"{judged[0]}: {judged[1]}")
            else:
                # never judged: from the first filter on; dropped by a skipped filter: from the one after it
                after, record = ((self.steps.index(judged[0]) + 1, judged[2]) if isinstance(judged, tuple)
                                 else (0, trace.model_dump(mode="json")))
                counts["rescreened"] += 1
                start = sum(1 for step in self.steps[:after] if step not in self.stage.rule.no_filter)
                rescreen.append(ScreenEntry(item, record, start))
        for fate in self.rescreen.screen(self.screened, rescreen):
            if fate.record is None:
                yield Outcome.rejected(fate.item, f"{fate.step}: {fate.reason}")
            else:
                yield Outcome.kept(fate.item, self.stage.label(fate.record, Trace.model_validate(fate.record)))


class _Cursor:
    """One stream of an earlier step's records of this shard, read in step with the attempt log."""

    def __init__(self, rows: Iterator[dict[str, Any]], record: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.rows = rows
        self.record = record
        self.head = next(self.rows, None)

    def qid(self) -> str | None:
        return None if self.head is None else self.record(self.head)["query"]["id"]

    def take(self, qid: str) -> dict[str, Any] | None:
        """The head row if it is `qid`'s (and moves past it), else None."""
        if self.head is None or self.qid() != qid:
            return None
        row, self.head = self.head, next(self.rows, None)
        return row


class _TeacherVerdicts:
    """What the teacher's filters did with each accepted attempt, streamed: every filter step keeps and drops records
    in its input's order, so each is a subsequence of the attempt log's accepted records. Walking the attempt log's
    query ids as a clock, each filter's output and drops are read alongside, one row of each held at a time."""

    def __init__(self, ctx: ShardContext, attempts_from: str, steps: list[str]) -> None:
        self.clock = (item.record["query"]["id"] for item in ctx.upstream.shard(ctx.shard_index, attempts_from)
                      if item.record is not None)
        self.final = _Cursor((item.record for item in ctx.upstream.shard(ctx.shard_index) if item.record is not None),
                             lambda record: record)
        self.dropped = [(step, _Cursor((row for row in ctx.upstream.dropped(step, ctx.shard_index)
                                        if row.get("record") and "query" in row["record"]),
                                       lambda row: row["record"])) for step in steps]
        self.current: str | None = None
        self.found: tuple[dict[str, Any] | None, tuple[str, str, dict[str, Any]] | None] = (None, None)

    def of(self, qid: str) -> tuple[dict[str, Any] | None, tuple[str, str, dict[str, Any]] | None]:
        """(the final record, (step, reason, record as dropped)) of query `qid`'s accepted attempt, either None.
        Queries must come in the attempt log's order (several attempts of one query in a row)."""
        if qid != self.current:
            self.current, self.found = qid, (None, None)
            for key in self.clock:  # a refused query is not in the log's accepted records: the clock runs out
                taken = self._take(key)
                if key == qid:
                    self.found = taken
                    break
        return self.found

    def _take(self, key: str) -> tuple[dict[str, Any] | None, tuple[str, str, dict[str, Any]] | None]:
        """Move every stream past query `key`; what they held for it."""
        final = self.final.take(key)
        fate = None
        for step, cursor in self.dropped:
            row = cursor.take(key)
            if row is not None:
                fate = (step, row["reason"], row["record"])
        return final, fate


def _tokens(trace: Trace) -> int:
    """A trace's response length in tokens: the student's count when a filter recorded it, else the teacher's."""
    return int(trace.metadata.get("student_tokens") or trace.response_tokens or len(trace.response.split()))
