"""What a stage needs to price its own work for `distillery plan --cost` (`Stage.price`): the cost model's inputs
(`CostInputs`: queries, lengths, teachers, throughputs per stage type, sizes), the step and the records that reach
it (`Pricing`), and what the stage answers (`Priced`). `distillery.ops.cost` walks the recipe, passes each step
the records its input step kept, schedules the shards on the nodes, sums and renders.

A step's work is records, or tokens, divided by a throughput (per GPU for GPU steps, per task for CPU steps);
`Pricing.at_rate` turns work into hours, shard duration and disk. The defaults are shaped like the paper's run:
1.89M queries, three teachers, ~1.3 attempts per query, ~4k-token answers, 32B models.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from distillery.core.config import StrictModel
from distillery.core.recipe import RecipeError
from distillery.core.teachers import Resources


class LengthBin(StrictModel):
    tokens: float = Field(gt=0, description="Completion tokens of the answers in this bin.")
    share: float = Field(gt=0, le=1, description="Fraction of answers in this bin.")


class TeacherCost(StrictModel):
    tokens_per_s_per_gpu: float = Field(
        1500, gt=0, description="Generated tokens/s per GPU at full batch, prefill included (per task on CPUs).")
    acceptance: float = Field(0.75, gt=0, le=1, description="Probability that one attempt passes verification.")
    length_scale: float = Field(1.0, gt=0, description="The teacher's answer length relative to `lengths`.")
    serving_gpus: int | None = Field(
        None, ge=1, description="GPUs of a remote server (openai backend): where its GPU-hours are spent.")
    startup_s: float = Field(
        300, ge=0, description="Seconds a shard spends loading the engine (inside its manifest's elapsed time).")


class StepCost(StrictModel):
    unit: Literal["records", "tokens"] = Field("records", description="What `rate` counts.")
    rate: float = Field(gt=0, description="Units per second per GPU (GPU steps) or per task (CPU steps).")
    keep: float = Field(1.0, ge=0, le=1, description="Fraction of input records kept.")
    startup_s: float = Field(
        0, ge=0, description="Seconds a shard spends loading a model (inside its manifest's elapsed time).")
    measured_on: str | None = Field(
        None, description="Where `rate` was measured (a rehearsal's CPU); None: an assumption. Shown in the table.")


class Hardware(StrictModel):
    gpus_per_node: int = Field(8, ge=1, description="GPUs of one cluster node.")
    cpus_per_node: int = Field(96, ge=1, description="CPU cores of one cluster node.")


DEFAULT_LENGTHS = [
    LengthBin(tokens=400, share=0.25), LengthBin(tokens=1200, share=0.25), LengthBin(tokens=3000, share=0.22),
    LengthBin(tokens=6000, share=0.15), LengthBin(tokens=12000, share=0.09), LengthBin(tokens=24000, share=0.04),
]
"""Mean 4,000 tokens with a long tail, the shape of long-reasoning answers; replace it with a run's histogram."""

DEFAULT_TEACHERS = {
    "am-thinking-v1": TeacherCost(tokens_per_s_per_gpu=1500, acceptance=0.76),
    "qwen3-235b-a22b": TeacherCost(tokens_per_s_per_gpu=1200, acceptance=0.75),
    "deepseek-r1": TeacherCost(tokens_per_s_per_gpu=600, acceptance=0.74, serving_gpus=16, startup_s=0),
}
"""The paper's teachers: a 32B dense model on 4 GPUs, a 22B-active MoE on 8, R1 (671B) served on two nodes.
Acceptance near 0.75 gives the ~1.3 attempts per query of the paper's regeneration loop."""

DEFAULT_STEPS = {
    "ingest": StepCost(rate=4000),
    "clean": StepCost(rate=3000, keep=0.99),
    "dedup": StepCost(rate=20000, keep=0.97),
    "near_dedup": StepCost(rate=800, keep=0.98),
    "decontaminate": StepCost(rate=2000, keep=0.995, startup_s=60),  # bge-m3 texts/s per GPU at ~300 tokens
    "perplexity": StepCost(unit="tokens", rate=6000, keep=0.99, startup_s=180),  # 2 x 32e9 FLOP/token at ~400 TFLOP/s
    "ngram": StepCost(rate=1500, keep=0.98),
    "normalise": StepCost(rate=5000),  # a regular-expression rewrite of each attempt
    "structure": StepCost(rate=800, keep=0.97),
    "variants": StepCost(rate=1000, startup_s=180),  # reads the attempt log; rescores only attempts no filter saw
    "pack": StepCost(unit="tokens", rate=2_000_000, keep=0.999),  # a fast tokenizer on 32 cores
    "sft": StepCost(unit="tokens", rate=1800, startup_s=600),  # 6 x 32e9 FLOP/token at 35% MFU of 989 TFLOP/s
    "eval": StepCost(unit="tokens", rate=1500, startup_s=300),
}
"""Throughputs per stage type; a recipe's step is looked up by its name, then by its type."""


class CostInputs(StrictModel):
    """Everything the estimate assumes; every field is documented and overridable from YAML."""

    queries: int = Field(1_890_000, ge=1, description="Queries in the recipe's input files.")
    prompt_tokens: float = Field(300, gt=0, description="Mean tokens of a query.")
    lengths: list[LengthBin] = Field(
        default_factory=lambda: list(DEFAULT_LENGTHS), description="Answer length histogram.")
    teachers: dict[str, TeacherCost] = Field(
        default_factory=lambda: dict(DEFAULT_TEACHERS), description="Per teacher name.")
    default_teacher: TeacherCost = Field(default_factory=TeacherCost, description="A teacher not named in `teachers`.")
    steps: dict[str, StepCost] = Field(
        default_factory=lambda: dict(DEFAULT_STEPS), description="Per step name or type.")
    verify_per_s_per_cpu: float = Field(
        10, gt=0, description="Verifications per second per CPU core (mix of categories).")
    task_overhead_s: float = Field(
        20, ge=0, description="Scheduling and process start of every shard task, outside its manifest's elapsed time.")
    bytes_per_token: float = Field(4.0, gt=0, description="UTF-8 bytes per token of text.")
    record_overhead: float = Field(1.25, ge=1, description="JSON keys, ids and verdicts per byte of text.")
    compression: float = Field(0.3, gt=0, le=1, description="gzip output size over input size, for compress: true.")
    pack_fill: float = Field(0.95, gt=0, le=1, description="Fraction of a packed bin filled with tokens.")
    pack_bytes_per_token: float = Field(9, gt=0, description="Bytes per packed token (token id, label, mask).")
    student_params_b: float = Field(32, gt=0, description="Student parameters, billions.")
    checkpoint_bytes_per_param: float = Field(12, gt=0, description=(
        "A mid-plan checkpoint: fp32 weights and two fp32 AdamW moments (bf16 runs under autocast; no second copy)."))
    eval_items: dict[str, int] = Field(
        default_factory=lambda: {"aime24": 30, "aime25": 30, "math500": 500, "livecodebench": 279},
        description="Problems per benchmark (the packaged copies).")
    eval_completion_tokens: float = Field(12000, gt=0, description="Mean tokens of an eval answer.")
    hardware: Hardware = Field(default_factory=Hardware)

    def teacher(self, name: str) -> TeacherCost:
        return self.teachers.get(name, self.default_teacher)

    def step(self, name: str, kind: str) -> StepCost:
        if name in self.steps:
            return self.steps[name]
        if kind in self.steps:
            return self.steps[kind]
        raise RecipeError(
            f"cost inputs: no throughput for step {name!r} (type {kind!r}); add steps.{name} to the cost inputs")


def attempts_per_query(acceptance: float, max_attempts: int) -> float:
    """Expected attempts when each passes with probability `acceptance` and a query stops at its first pass."""
    return (1 - (1 - acceptance) ** max_attempts) / acceptance


def mean_completion(lengths: Iterable[LengthBin], scale: float, max_tokens: int) -> float:
    bins = list(lengths)
    total = sum(b.share for b in bins)
    return sum(b.share * min(b.tokens * scale, max_tokens) for b in bins) / total


def task_gpus(resources: Resources) -> int:
    """GPUs of one task (0: a CPU task)."""
    return resources.gpus_per_node * resources.nodes


@dataclass
class Priced:
    """A step's work for one lineage as its stage prices it: the records it reads and keeps, their mean tokens,
    the hours it spends, one shard's duration, and what it leaves on disk (wall time is the scheduler's)."""

    records_in: float
    records_out: float
    tokens_per_record: float
    kind: str = "cpu"
    """gpu, cpu, remote (a client of a server elsewhere: its GPU-hours are not this cluster's) or served (a client
    of distillery's own replica jobs on this cluster: their GPU-hours are)."""
    gpu_hours: float = 0.0
    cpu_hours: float = 0.0
    shard_s: float = 0.0
    disk_bytes: float = 0.0
    notes: list[str] = field(default_factory=list)
    verify_shard_s: float = 0.0
    """Generation: seconds of verification per shard, on the task's CPUs beside the engine."""
    rate_from_manifests: bool = True
    """Whether a run's manifests (inputs, kept, elapsed) measure this step's keep and rate (sft counts bins and
    eval samples, generation attempts: they calibrate otherwise or not at all)."""


@dataclass(frozen=True)
class Pricing:
    """What a stage's pricing hook is given: the cost inputs, the step (name and type: its throughput is looked up
    by either), the resources and shard count `plan` submits it with, and the records its input step kept."""

    inputs: CostInputs
    step: str
    type: str
    resources: Resources
    shards: int
    compress: bool
    records_in: float
    tokens_in: float
    """Mean tokens of an input record (queries: the prompt; traces: prompt plus the teacher's completion)."""

    @property
    def gpus(self) -> int:
        return task_gpus(self.resources)

    @property
    def rate(self) -> StepCost:
        return self.inputs.step(self.step, self.type)

    def text_bytes(self, records: float, tokens: float, compress: bool) -> float:
        """Records of `tokens` tokens as JSON lines, gzipped when `compress`."""
        inputs = self.inputs
        return records * tokens * inputs.bytes_per_token * inputs.record_overhead * (
            inputs.compression if compress else 1)

    def at_rate(self, work: float, records_out: float, disk_bytes: float, *, records_in: float | None = None,
                tokens_per_record: float | None = None) -> Priced:
        """`work` units at the step's rate (per GPU, or per task on CPUs), each shard paying its model start and
        the scheduler's task overhead."""
        rate, gpus, shards, resources = self.rate, self.gpus, self.shards, self.resources
        task_s = work / (rate.rate * (gpus or 1)) + (rate.startup_s + self.inputs.task_overhead_s) * shards
        priced = Priced(
            self.records_in if records_in is None else records_in, records_out,
            self.tokens_in if tokens_per_record is None else tokens_per_record, "gpu" if gpus else "cpu",
            gpu_hours=task_s * gpus / 3600, cpu_hours=task_s * resources.cpus_per_task * resources.nodes / 3600,
            shard_s=task_s / shards, disk_bytes=disk_bytes)
        if rate.measured_on:
            priced.notes.append(f"rate measured on {rate.measured_on}")
        return priced

    def record_map(self, share: float = 1.0) -> Priced:
        """A record stage: keeps `keep` of its input (times `share`, a part it keeps by construction), works per
        record or per token at its rate, writes the kept records (gzipped when the recipe compresses) and the
        rejected ones."""
        kept = self.kept() * share
        work = self.records_in * (self.tokens_in if self.rate.unit == "tokens" else 1)
        disk = (self.text_bytes(kept, self.tokens_in, self.compress)
                + self.text_bytes(self.records_in - kept, self.tokens_in, False))
        return self.at_rate(work, kept, disk)

    def kept(self) -> float:
        """Input records the step keeps at its configured keep rate."""
        return self.records_in * self.rate.keep
