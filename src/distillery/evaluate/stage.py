"""`eval`: a student answers every benchmark problem k times; each answer is scored and its length kept.

Runs once per teacher: the student evaluated for teacher T is the model fine-tuned on T's traces (`from_step: sft`:
the Hugging Face export of that step for T), a named model (`model`), or the teacher's own model when neither is set.
The items are (benchmark, problem, sample) triples, dealt round-robin to the shards, so a shard mixes easy and
hard problems; each sample's seed comes from (recipe seed, benchmark, problem, sample) and not from the student,
so every student answers under the same seeds. The framework journals every scored sample: a preempted
shard resumes at its next unscored sample. Output records are `EvalSample`s, summarised by
`distillery.analyze.eval_summary`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from distillery.core.pricing import Priced, Pricing
from distillery.core.recipe import InputPath, TeacherConfig
from distillery.schema.records import Query
from distillery.core.stage import Item, Outcome, RecordStage, ShardContext, StageConfig, register
from distillery.core.store import RunDir, ids_digest
from distillery.data import benchmarks_dir
from distillery.evaluate.benchmarks import BUILTIN, BenchmarkRow, BenchmarkSpec, load_benchmark
from distillery.evaluate.samples import VERIFIER_ERRORS, EvalSample
from distillery.generate.prompts import build_conversation
from distillery.llm.build import HEAVY_IMPORTS, build_chat_model
from distillery.llm.protocol import ChatModel, Sampling
from distillery.models import resolve_model
from distillery.verify import Verifier, VerifyConfig, build_verifier
from distillery.verify.verdict import Verdict

PAPER_SAMPLING = Sampling(temperature=0.6, top_p=0.95, max_tokens=49152)

EVAL_VERIFY_DEFAULTS: dict[str, Any] = {"code": {"max_tests": 1000}, "math": {"hard_timeout_s": 60, "fallbacks": ["boxed"]}}
"""Where scoring differs from generation's verification: every test of a code problem runs (not the first 10),
a math item gets a minute before it counts as a timeout (scored 0), since a cold worker's start on a busy
node counts against that clock, and only a `\\boxed{}` answer is read (every benchmark prompt asks for one):
the other extractors are opt-in (`verify: {math: {fallbacks: [...]}}`) and the answers they read are counted
in the tables. A recipe's `verify:` is laid over these, not over the generation defaults."""

CUT_OFF = "cut at the token limit before a final answer"
"""A response that hit max_tokens has only a boxed answer read: "the answer is 12" in a cut-off response is a
claim made on the way, not the final answer it never reached."""


def cut_off_policy(verdict: Verdict, finish_reason: str | None) -> Verdict:
    """The verdict, or no answer when the response was cut at the token limit and its answer was not boxed."""
    source = verdict.details.get("answer_source")
    if finish_reason != "length" or source in (None, "boxed"):
        return verdict
    return Verdict.unanswered(verdict.verifier, CUT_OFF, answer_source=source, claimed=verdict.details.get("prediction"))


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        nested = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merged(base[key], value) if nested else value
    return merged


class EvalConfig(StageConfig):
    benchmarks: list[BenchmarkSpec] = Field(
        default_factory=lambda: [BenchmarkSpec(name=n) for n in BUILTIN],
        description="Benchmarks to run (names of built-ins, or specs overriding them).")
    benchmarks_dir: InputPath | None = Field(
        None, description="Folder that relative benchmark files are read from; default $DISTILLERY_BENCHMARKS, else "
                          "the copy packaged with distillery.")
    from_step: str | None = Field(
        None, description="Evaluate the Hugging Face export of this step (e.g. sft) for the same teacher; a retrained "
                          "student makes the eval stale.")
    model: str | None = Field(
        None, description="Model to evaluate instead: HF folder, served name, or 'smollm2' (embedded); unset and no "
                          "from_step: the teacher's model.")
    backend: Literal["vllm", "openai", "transformers"] | None = Field(
        None, description="Generation backend; unset: the teacher's.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Backend options, over the teacher's (tensor_parallel_size, base_url, ...).")
    sampling: Sampling = Field(default_factory=lambda: PAPER_SAMPLING.model_copy(),
                               description="Sampling (the paper: temperature 0.6, top-p 0.95, 49,152 tokens).")
    system_prompt: str = Field(
        "", description="System prompt before every problem; empty for none (the problem prompt asks for \\boxed{}).")
    verify: VerifyConfig = Field(default_factory=lambda: VerifyConfig.model_validate(EVAL_VERIFY_DEFAULTS),
                                 description="How answers are scored (math verifier, code sandbox).")
    pass_score: float = Field(
        1.0, ge=0, le=1, description="An answer counts as correct at this score (1.0: equal answer, all tests pass).")
    batch_size: int = Field(256, ge=1, description="Samples per engine call; the most work a preempted shard loses.")
    shards: int | None = Field(
        None, ge=1, description="Shards of this step (default: the run's num_shards). Each shard loads the student "
                                "once: few shards when the benchmarks are small.")

    @field_validator("verify", mode="before")
    @classmethod
    def _eval_verify_defaults(cls, value: Any) -> Any:
        return _merged(EVAL_VERIFY_DEFAULTS, value) if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _check_benchmarks(self, info: ValidationInfo) -> EvalConfig:
        if self.from_step and self.model:
            raise ValueError("set `from_step` or `model`, not both")
        names = [spec.name for spec in self.benchmarks]
        if len(set(names)) != len(names):
            raise ValueError(f"benchmarks: names must be unique, got {names}")
        if (info.context or {}).get("check_paths", True):
            folder = benchmarks_dir(self.benchmarks_dir)
            missing = [str(spec.local_path(folder)) for spec in self.benchmarks
                       if not spec.hf_dataset and not spec.local_path(folder).exists()]
            if missing:
                raise ValueError(f"benchmark files do not exist: {missing} (set benchmarks_dir or each file)")
        return self


def sample_seed(base_seed: int, benchmark: str, problem_id: str, sample: int) -> int:
    """A 31-bit seed fixed by (recipe seed, benchmark, problem, sample), the same for every student."""
    digest = hashlib.sha256(f"{base_seed}\x00{benchmark}\x00{problem_id}\x00{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@register
class EvalStage(RecordStage[EvalConfig]):
    name = "eval"
    Config = EvalConfig
    per_teacher = True
    kind = "gpu"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rows: dict[str, list[BenchmarkRow]] = {}

    def input_step(self) -> str | None:
        return None

    def price(self, pricing: Pricing) -> Priced:
        """The student answers each benchmark's problems (`eval_items`, up to `limit`) `samples` times, each answer
        `eval_completion_tokens` long, at the step's rate."""
        inputs = pricing.inputs
        benchmarks = self.config.benchmarks
        samples = sum(min(inputs.eval_items.get(b.name, 0), b.limit or math.inf) * b.samples for b in benchmarks)
        tokens = inputs.eval_completion_tokens
        priced = pricing.at_rate(samples * tokens, samples, pricing.text_bytes(samples, tokens, False),
                                 records_in=samples, tokens_per_record=tokens)
        unknown = [b.name for b in benchmarks if b.name not in inputs.eval_items]
        if unknown:
            priced.notes.append(f"no item count for {unknown}: set eval_items")
        priced.rate_from_manifests = False
        return priced

    def num_shards(self) -> int:
        return self.config.shards or self.view.num_shards

    def model_path(self, run: RunDir) -> str:
        """The model this step evaluates for its lineage (`from_step`: that step's export for the lineage)."""
        if self.config.from_step:
            return str(run.hf_export(self.config.from_step, self.view.lineage))
        model = self.config.model or (self.teacher.model if self.teacher else "")
        if not model:
            raise ValueError(f"step {self.step!r}: set `from_step` or `model` (no teacher to take it from)")
        return resolve_model(model)

    @property
    def backend(self) -> str:
        """The student's generation backend: the step's, else its teacher's."""
        return self.config.backend or (self.teacher.backend if self.teacher else "vllm")

    def preload(self) -> tuple[str, ...]:
        return HEAVY_IMPORTS.get(self.backend, ())

    def student_config(self, run: RunDir) -> TeacherConfig:
        """The student as a `TeacherConfig`, which is what the backend factory builds a `ChatModel` from."""
        teacher = self.teacher
        return TeacherConfig(
            name=teacher.name if teacher else self.step,
            model=self.model_path(run),
            backend=self.backend,
            sampling=self.config.sampling,
            system_prompt=self.config.system_prompt,
            options={**(teacher.options if teacher else {}), **self.config.options},
        )

    def benchmark_rows(self, spec: BenchmarkSpec) -> list[BenchmarkRow]:
        """The problems of one benchmark, read once per stage object (the digest and the items both need them)."""
        if spec.name not in self._rows:
            self._rows[spec.name] = load_benchmark(spec, benchmarks_dir(self.config.benchmarks_dir))
        return self._rows[spec.name]

    def _items(self, ctx: ShardContext) -> Iterator[tuple[Item, str]]:
        """This shard's items, with the query id each key stands for (for the input digest)."""
        index = position = 0
        for spec in self.config.benchmarks:
            for row in self.benchmark_rows(spec):
                samples = spec.samples if row.query is not None else 1
                # Items are dealt round-robin by global index; jump straight to this shard's samples of the row
                # (walking every sample of every shard made `status` quadratic in the shard count).
                for sample in range((ctx.shard_index - index) % ctx.num_shards, samples, ctx.num_shards):
                    key = f"{spec.name}:{row.problem_id}:{sample}"
                    if row.query is None:
                        item = Item(position, key, None, row.where, row.problem, row.raw)
                    else:
                        record = {"benchmark": spec.name, "problem_id": row.problem_id, "sample": sample,
                                  "query": row.query.model_dump(mode="json")}
                        item = Item(position, key, record, row.where)
                    yield item, row.query.id if row.query else ""
                    position += 1
                index += samples

    def read_inputs(self, ctx: ShardContext) -> Iterator[Item]:
        for item, _ in self._items(ctx):
            yield item

    def input_digest(self, ctx: ShardContext) -> str:
        """Keyed by the shard's (benchmark, problem, sample) keys and the content ids of their queries, and by
        the step whose export it evaluates: a retrained student makes the eval stale."""
        keys = [f"{item.key}={query_id}" for item, query_id in self._items(ctx)]
        if self.config.from_step:
            keys.append("after=" + ctx.upstream.digest(step=self.config.from_step))
        return ids_digest(keys)

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        config = self.config
        specs = {spec.name: spec for spec in config.benchmarks}
        student = self.student_config(ctx.run)
        model: ChatModel | None = None
        verifier: Verifier | None = None
        totals = {"samples": 0, "correct": 0, "no_answer": 0, "by_fallback": 0, "completion_tokens": 0,
                  "generate_s": 0.0, "verifier_errors": 0}
        iterator = iter(items)
        try:
            while batch := list(islice(iterator, config.batch_size)):
                for item in batch:
                    if item.record is None:
                        yield Outcome.quarantined(item, item.problem or "unreadable benchmark row")
                valid = [item for item in batch if item.record is not None]
                if not valid:
                    continue
                if model is None:
                    ctx.logger.info("eval: %s (%s %s) on %s", student.name, student.backend, student.model,
                                    ", ".join(f"{s.name} x{s.samples}" for s in config.benchmarks))
                    verifier = build_verifier(config.verify)
                    first_of = {item.record["benchmark"]: item for item in reversed(valid)}  # one query per benchmark
                    verifier.warm_up(Query.model_validate(item.record["query"]) for item in first_of.values())
                    model = build_chat_model(student)
                # One engine call per token budget, not per benchmark: a small benchmark after a large one would
                # otherwise decode alone, a few sequences a step, for as many steps as the large one.
                by_budget: dict[int | None, list[Item]] = {}
                for item in valid:
                    by_budget.setdefault(specs[item.record["benchmark"]].max_tokens, []).append(item)
                for budget, group in by_budget.items():
                    yield from self._score(group, budget, model, verifier, totals, ctx)
                ctx.stats.update(totals)
                scored = max(totals["samples"], 1)
                ctx.logger.info("eval: %d samples scored, %.1f%% correct, %.1f%% with no final answer, %.0f generated "
                                "tokens/s", totals["samples"], 100 * totals["correct"] / scored,
                                100 * totals["no_answer"] / scored,
                                totals["completion_tokens"] / max(totals["generate_s"], 1e-9))
        finally:
            if model is not None:
                model.close()
            if verifier is not None:
                verifier.close()

    def _score(self, group: list[Item], max_tokens: int | None, model: ChatModel, verifier: Verifier,
               totals: dict[str, Any], ctx: ShardContext) -> Iterator[Outcome]:
        """Generate, verify and yield the part of a batch whose benchmarks share a token budget (`max_tokens`, None:
        the step's sampling)."""
        config = self.config
        sampling = config.sampling
        if max_tokens:
            sampling = sampling.model_copy(update={"max_tokens": max_tokens})
        records: list[dict[str, Any]] = [item.record for item in group if item.record is not None]
        queries = [Query.model_validate(record["query"]) for record in records]
        seeds = [sample_seed(self.view.seed, r["benchmark"], r["problem_id"], r["sample"]) for r in records]
        started = time.perf_counter()
        completions = model.chat([build_conversation(q, config.system_prompt) for q in queries], sampling, seeds)
        totals["generate_s"] += time.perf_counter() - started
        verdicts = [cut_off_policy(verdict, completion.finish_reason) for verdict, completion
                    in zip(verifier.verify_batch([(q, c.text) for q, c in zip(queries, completions)]), completions)]
        answers = zip(group, records, queries, seeds, completions, verdicts)
        for item, record, query, seed, completion, verdict in answers:
            passed = verdict.score >= config.pass_score
            if verdict.details.get("reason") in VERIFIER_ERRORS:
                totals["verifier_errors"] += 1
                ctx.logger.warning("eval: %s scored 0 because the verifier failed: %s", item.key,
                                   verdict.details["reason"])
            totals["samples"] += 1
            totals["correct"] += passed
            totals["completion_tokens"] += completion.completion_tokens
            sample = EvalSample(
                benchmark=record["benchmark"], problem_id=record["problem_id"], query_id=query.id, sample=record["sample"],
                seed=seed, model=model.name, response=completion.text, completion_tokens=completion.completion_tokens,
                prompt_tokens=completion.prompt_tokens, finish_reason=completion.finish_reason,
                latency_s=round(completion.latency_s, 4), score=verdict.score, passed=passed,
                verifier=verdict.verifier, details=verdict.details,
            )
            totals["no_answer"] += sample.no_answer
            totals["by_fallback"] += sample.by_fallback
            yield Outcome.kept(item, sample.model_dump(mode="json"))
