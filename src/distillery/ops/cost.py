"""What a recipe will cost before it is submitted: per step and teacher, GPU-hours, CPU core-hours, shard count
and duration, wall time at a given node count, and output size on disk.

The model is deliberately simple, so an operator can redo any cell by hand:
- records flow through the steps: each step keeps `keep` of its input (generation keeps the queries that some
  attempt passed); a record carries its mean token count (queries: `prompt_tokens`; traces: prompt plus the
  teacher's mean completion);
- a step's work is records, or tokens, divided by a throughput (per GPU for GPU steps, per task for CPU steps);
- generation: a query is retried until an attempt passes, at most `max_attempts` times; with per-attempt
  acceptance p, attempts per query = (1 - (1-p)^k) / p and the kept fraction is 1 - (1-p)^k. An attempt's tokens
  are the mean of the length distribution (times the teacher's `length_scale`), each capped at the teacher's
  `max_tokens`. Verification runs beside the engine: a shard lasts the longer of decoding and verifying;
- shards of a step run `concurrency` at a time: what fits on `nodes` nodes (GPUs or CPUs per node over the
  task's), at most the executor's array parallelism; wall = ceil(shards / concurrency) x shard duration;
- disk: kept records x tokens x `bytes_per_token` x `record_overhead` (x `compression` when the recipe
  compresses), plus the uncompressed `rejected/` files; pack writes `pack_bytes_per_token` per bin token, sft
  its checkpoints and the exported student.
Inputs come from `CostInputs` (the defaults below, shaped like the paper's run: 1.89M queries, three teachers,
~1.3 attempts per query, ~4k-token answers, 32B models), a YAML file of overrides, or a run's manifests
(`calibrate`), which measure throughputs, acceptance and keep rates and replace the configured ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError

from distillery.core.config import StrictModel
from distillery.core.plan import build_groups
from distillery.core.lineage import Lineage
from distillery.core.recipe import Recipe, RecipeError, Resources
from distillery.core.store import Manifest, RunDir

logger = logging.getLogger(__name__)


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
    checkpoint_bytes_per_param: float = Field(14, gt=0, description="bf16 weights + fp32 master + two Adam moments.")
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


def load_cost_inputs(path: Path | None) -> CostInputs:
    """The defaults, with a YAML file's fields laid over them (`teachers` and `steps` merge by name)."""
    if path is None:
        return CostInputs()
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise RecipeError(f"{path}: expected a mapping of cost inputs, got {type(data).__name__}")
        defaults = CostInputs()
        data["teachers"] = {**{k: v.model_dump() for k, v in defaults.teachers.items()}, **(data.get("teachers") or {})}
        data["steps"] = {**{k: v.model_dump() for k, v in defaults.steps.items()}, **(data.get("steps") or {})}
        return CostInputs.model_validate(data)
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {error}") from None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise RecipeError(f"{path}: {problems}") from None


def attempts_per_query(acceptance: float, max_attempts: int) -> float:
    """Expected attempts when each passes with probability `acceptance` and a query stops at its first pass."""
    return (1 - (1 - acceptance) ** max_attempts) / acceptance


def mean_completion(lengths: Iterable[LengthBin], scale: float, max_tokens: int) -> float:
    bins = list(lengths)
    total = sum(b.share for b in bins)
    return sum(b.share * min(b.tokens * scale, max_tokens) for b in bins) / total


def fit_length_scale(lengths: list[LengthBin], max_tokens: int, measured: float) -> float:
    """The scale of the length histogram whose mean, each answer capped at `max_tokens`, is `measured` (the
    capped mean grows with the scale, so bisection finds it; a mean at the cap gives the smallest scale there)."""
    low, high = 1e-6, 1e6
    for _ in range(200):
        middle = math.sqrt(low * high)
        if mean_completion(lengths, middle, max_tokens) < measured:
            low = middle
        else:
            high = middle
    return high


@dataclass
class StepEstimate:
    step: str
    teacher: str | None
    kind: str
    """gpu, cpu, or remote (a client of a server elsewhere: its GPU-hours are the server's)."""
    shards: int
    records_in: float
    records_out: float
    tokens_per_record: float
    gpu_hours: float
    cpu_hours: float
    shard_s: float
    concurrency: int
    wall_s: float
    disk_bytes: float
    notes: list[str] = field(default_factory=list)
    verify_shard_s: float = 0.0
    """Generation: seconds of verification per shard, on the task's CPUs beside the engine."""

    @property
    def key(self) -> str:
        return f"{self.step}/{self.teacher}" if self.teacher else self.step


def _task_gpus(resources: Resources) -> int:
    return resources.gpus_per_node * resources.nodes


def _concurrency(resources: Resources, gpu: bool, nodes: int, hardware: Hardware, limit: int, shards: int) -> int:
    """Tasks of this step that run at once on `nodes` nodes (0: one task does not fit)."""
    if resources.nodes > 1:
        per_node = 1
    elif gpu:
        per_node = hardware.gpus_per_node // resources.gpus_per_node
    else:
        per_node = hardware.cpus_per_node // resources.cpus_per_task
    return min((nodes // resources.nodes) * per_node, limit, shards)


def _main_groups(recipe: Recipe) -> dict[tuple[str, str | None], tuple[Resources, int]]:
    """(resources, shard count) per step and teacher, of the phase that does the work, as `plan` submits it."""
    return {(group.step, group.lineage): (group.resources, group.num_shards)
            for group in build_groups(recipe) if group.phase in ("process", "task")}


def estimate(recipe: Recipe, inputs: CostInputs, nodes: int) -> list[StepEstimate]:
    """One estimate per step and teacher of the recipe, in step order."""
    limit = recipe.executor.array_parallelism if recipe.executor.kind == "slurm" else recipe.executor.workers
    main = _main_groups(recipe)
    flow: dict[tuple[str, str | None], tuple[float, float]] = {}
    rows: list[StepEstimate] = []
    for spec in recipe.steps:
        for teacher in recipe.teachers_of(spec.step):
            previous = recipe.previous_step(spec.step, teacher)
            if previous is None:
                upstream = (float(inputs.queries), inputs.prompt_tokens)
            else:
                sources = recipe.input_lineages(spec.step, teacher)
                upstream = flow[(previous, sources[0])] if len(sources) == 1 else _pooled(flow, previous)
            resources, shards = main[(spec.step, teacher)]
            row = _estimate_step(recipe, spec.step, spec.type, teacher, upstream, resources, shards, inputs)
            if teacher is not None and spec.type != "generate" and resources != spec.resources:
                row.notes.append(f"plan gives it teacher {teacher}'s resources, not the step's")
            _schedule(row, resources, nodes, inputs.hardware, limit)
            flow[(spec.step, teacher)] = (row.records_out, row.tokens_per_record)
            rows.append(row)
    return rows


def _pooled(flow: dict[tuple[str, str | None], tuple[float, float]], step: str) -> tuple[float, float]:
    """A shared step after a per-teacher one reads every teacher's output."""
    parts = [value for (name, _), value in flow.items() if name == step]
    records = sum(r for r, _ in parts)
    return records, (sum(r * t for r, t in parts) / records if records else 0.0)


def _estimate_step(
    recipe: Recipe, step: str, kind: str, teacher: str | None, upstream: tuple[float, float], resources: Resources,
    shards: int, inputs: CostInputs,
) -> StepEstimate:
    """Work, hours, shard duration and disk of one step for one teacher (wall time comes from `_schedule`)."""
    records_in, tokens_in = upstream
    config = recipe.step(step).config
    gpus = _task_gpus(resources)
    row = StepEstimate(step, teacher, "gpu" if gpus else "cpu", shards, records_in, records_in, tokens_in,
                       0.0, 0.0, 0.0, 0, 0.0, 0.0)
    if kind == "generate" and teacher is not None:
        return _generate(recipe, row, config, teacher, resources, inputs)
    cost = inputs.step(step, kind)
    row.records_out = records_in * cost.keep * _variant_share(recipe, step, teacher)
    if kind == "pack":
        capacity = getattr(config, "bin_tokens", None) or getattr(config, "max_tokens", 32768)
        work = row.records_out * tokens_in
        row.records_out = math.ceil(work / (capacity * inputs.pack_fill)) if work else 0
        row.tokens_per_record = capacity * inputs.pack_fill
        out_bytes = work * inputs.pack_bytes_per_token
    elif kind == "sft":
        work = records_in * tokens_in * getattr(config, "epochs", 1)
        row.records_out = 0
        params = inputs.student_params_b * 1e9
        out_bytes = params * inputs.checkpoint_bytes_per_param * getattr(config, "keep_checkpoints", 1)
        out_bytes += params * 2 if getattr(config, "export_hf", False) else 0
    elif kind == "eval":
        samples = sum(min(inputs.eval_items.get(b.name, 0), b.limit or math.inf) * b.samples for b in config.benchmarks)
        unknown = [b.name for b in config.benchmarks if b.name not in inputs.eval_items]
        if unknown:
            row.notes.append(f"no item count for {unknown}: set eval_items")
        work = samples * inputs.eval_completion_tokens
        row.records_in = row.records_out = samples
        row.tokens_per_record = inputs.eval_completion_tokens
        out_bytes = work * inputs.bytes_per_token * inputs.record_overhead
    else:
        work = records_in * (tokens_in if cost.unit == "tokens" else 1)
        out_bytes = _text_bytes(row.records_out, tokens_in, inputs, recipe.compress)
        out_bytes += _text_bytes(records_in - row.records_out, tokens_in, inputs, False)
    task_s = work / (cost.rate * (gpus or 1)) + (cost.startup_s + inputs.task_overhead_s) * shards
    row.gpu_hours = task_s * gpus / 3600
    row.cpu_hours = task_s * resources.cpus_per_task * resources.nodes / 3600
    row.shard_s = task_s / shards
    row.disk_bytes = out_bytes
    return row


def _variant_share(recipe: Recipe, step: str, lineage: str | None) -> float:
    """The share of its input a variant keeps by construction (a length variant's `fraction`), else 1."""
    rules = getattr(recipe.step(step).config, "rules", None)
    variant = Lineage.parse(lineage).variant if lineage else None
    if rules is None or variant is None:
        return 1.0
    rule = rules[variant]
    return rule.fraction if rule.length is not None else 1.0


def _text_bytes(records: float, tokens: float, inputs: CostInputs, compress: bool) -> float:
    return records * tokens * inputs.bytes_per_token * inputs.record_overhead * (inputs.compression if compress else 1)


def _generate(recipe: Recipe, row: StepEstimate, config: object, teacher: str, resources: Resources,
              inputs: CostInputs) -> StepEstimate:
    spec, cost = recipe.teacher(teacher), inputs.teacher(teacher)
    max_attempts = getattr(config, "max_attempts", 1) if getattr(config, "verification", True) else 1
    attempts = attempts_per_query(cost.acceptance, max_attempts)
    completion = mean_completion(inputs.lengths, cost.length_scale, spec.sampling.max_tokens)
    work = row.records_in * attempts * completion
    row.records_out = row.records_in * (1 - (1 - cost.acceptance) ** max_attempts)
    row.tokens_per_record = row.tokens_per_record + completion
    gpus = _task_gpus(resources)
    start_s = (cost.startup_s + inputs.task_overhead_s) * row.shards
    verify_s = row.records_in * attempts / (inputs.verify_per_s_per_cpu * resources.cpus_per_task)
    row.cpu_hours = verify_s * resources.cpus_per_task / 3600
    if spec.backend == "openai":
        row.kind = "remote"
        gpus = cost.serving_gpus or 0
        if not gpus:
            row.notes.append("set serving_gpus for a remote teacher")
        row.gpu_hours = work / cost.tokens_per_s_per_gpu / 3600
        decode_s = work / cost.tokens_per_s_per_gpu / gpus if gpus else math.inf
    elif gpus:
        row.gpu_hours = (work / cost.tokens_per_s_per_gpu + start_s * gpus) / 3600  # GPUs held while loading
        decode_s = row.gpu_hours * 3600 / gpus
    else:  # an engine on the task's CPUs: the rate is per task
        decode_s = work / cost.tokens_per_s_per_gpu + start_s
        row.cpu_hours = decode_s * resources.cpus_per_task / 3600
    row.shard_s = decode_s / row.shards  # `_schedule` adds verification (and a remote server's sharing)
    row.verify_shard_s = verify_s / row.shards + cost.startup_s + inputs.task_overhead_s
    row.disk_bytes = _text_bytes(row.records_out, row.tokens_per_record, inputs, recipe.compress)
    row.disk_bytes += _text_bytes(row.records_in - row.records_out, row.tokens_per_record - completion, inputs, False)
    row.notes.append(f"{attempts:.2f} attempts/query, {completion:.0f} tokens/attempt")
    return row


def _schedule(row: StepEstimate, resources: Resources, nodes: int, hardware: Hardware, limit: int) -> None:
    """Concurrency and wall time at `nodes` nodes. A remote teacher's clients share one server: together they
    decode at its rate however many run, so the wall time is its GPU-hours over its GPUs."""
    gpu = row.kind == "gpu"
    if gpu and resources.gpus_per_node > hardware.gpus_per_node:
        row.notes.append(f"a task asks {resources.gpus_per_node} GPUs per node; nodes have {hardware.gpus_per_node}")
        row.wall_s = math.inf
        return
    row.concurrency = _concurrency(resources, gpu, nodes, hardware, limit, row.shards)
    if row.concurrency == 0:
        row.notes.append(f"needs {resources.nodes} nodes")
        row.wall_s = math.inf
        return
    if row.kind == "remote":
        row.shard_s *= row.concurrency  # each client gets 1/concurrency of the server
    if row.verify_shard_s > row.shard_s:
        row.notes.append("verification is the bottleneck")
        row.shard_s = row.verify_shard_s
    row.wall_s = math.ceil(row.shards / row.concurrency) * row.shard_s
    if row.shard_s > resources.time_min * 60:
        row.notes.append(f"shard > time limit {resources.time_min} min: it checkpoints and requeues")


@dataclass
class Measured:
    """What a run's manifests say about one step and teacher."""

    step: str
    teacher: str | None
    shards: int = 0
    inputs: int = 0
    kept: int = 0
    elapsed_s: float = 0.0
    attempts: int = 0
    accepted: int = 0
    completion_tokens: int = 0


def measure_run(run_root: Path) -> dict[tuple[str, str | None], Measured]:
    """Sum the done manifests of every step (and teacher) of a run directory."""
    measured: dict[tuple[str, str | None], Measured] = {}
    for path in RunDir(run_root).manifests():
        try:
            manifest = Manifest.load(path)
        except (ValueError, TypeError) as error:
            logger.warning("%s: not a shard manifest (%s); skipped", path, error)
            continue
        entry = measured.setdefault((manifest.stage, manifest.teacher), Measured(manifest.stage, manifest.teacher))
        entry.shards += 1
        entry.inputs += manifest.inputs
        entry.kept += manifest.kept
        entry.elapsed_s += manifest.elapsed_s
        entry.attempts += int(manifest.stats.get("attempts") or 0)
        entry.accepted += int(manifest.stats.get("accepted") or 0)
        entry.completion_tokens += int(manifest.stats.get("completion_tokens") or 0)
    return measured


@dataclass
class Comparison:
    step: str
    teacher: str | None
    quantity: str
    configured: float
    measured: float


def calibrate(
    inputs: CostInputs, run_recipe: Recipe, measured: dict[tuple[str, str | None], Measured]
) -> tuple[CostInputs, list[Comparison]]:
    """Inputs with the run's measured throughputs, acceptance, lengths and keep rates in place of the configured
    ones, and each configured figure next to its measurement (the run's own shard durations included: the
    estimate for the records those shards really had, without `task_overhead_s`, which manifests do not see).
    Measured rates leave out the configured `startup_s` of each shard (none is derived when startup would take
    the whole time). A GPU stage that ran without GPUs (a
    CPU pilot) calibrates its keep rate only: its speed says nothing about a GPU; a CPU step's rate is per task.
    Token counts of steps other than generation are the model's, not measured."""
    main = _main_groups(run_recipe)
    by_key = {(row.step, row.teacher): row for row in estimate(run_recipe, inputs, nodes=1)}
    teachers, steps = dict(inputs.teachers), dict(inputs.steps)
    rows: list[Comparison] = []
    for (step, teacher), seen in sorted(measured.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        if (step, teacher) not in main or not seen.inputs or seen.elapsed_s <= 0:
            continue
        resources, _ = main[(step, teacher)]
        gpus = _task_gpus(resources)
        kind = run_recipe.step(step).type
        predicted = by_key[(step, teacher)]
        if kind == "generate" and teacher is not None and seen.attempts:
            cost = inputs.teacher(teacher)
            spec = run_recipe.teacher(teacher)
            acceptance = seen.accepted / seen.attempts
            per_attempt = seen.completion_tokens / seen.attempts
            scale = fit_length_scale(inputs.lengths, spec.sampling.max_tokens, per_attempt)
            update: dict[str, float] = {"acceptance": acceptance, "length_scale": scale}
            max_attempts = getattr(run_recipe.step(step).config, "max_attempts", 1)
            configured_tokens = mean_completion(inputs.lengths, cost.length_scale, spec.sampling.max_tokens)
            rows += [Comparison(step, teacher, "acceptance per attempt", cost.acceptance, acceptance),
                     Comparison(step, teacher, "queries kept", 1 - (1 - cost.acceptance) ** max_attempts,
                                seen.kept / seen.inputs),
                     Comparison(step, teacher, "tokens per attempt", configured_tokens, per_attempt)]
            if spec.backend != "openai":  # a CPU engine's shards are compared, its per-task rate not reused
                busy = seen.elapsed_s - seen.shards * cost.startup_s
                per_shard = seen.completion_tokens / seen.shards
                configured_s = per_shard / (cost.tokens_per_s_per_gpu * (gpus or 1)) + cost.startup_s
                rows.append(Comparison(step, teacher, "s per shard", configured_s, seen.elapsed_s / seen.shards))
                if busy > 0 and gpus:
                    update["tokens_per_s_per_gpu"] = seen.completion_tokens / busy / gpus
                    rows.append(Comparison(step, teacher, "tokens/s per GPU", cost.tokens_per_s_per_gpu,
                                           update["tokens_per_s_per_gpu"]))
            teachers[teacher] = cost.model_copy(update=update)
            continue
        if kind in ("sft", "eval", "generate"):
            continue  # their manifests count items, not tokens
        cost = inputs.step(step, kind)
        keep = seen.kept / seen.inputs
        update = {"keep": keep}
        rows.append(Comparison(step, teacher, "keep", cost.keep, keep))
        if run_recipe.build_stage(step, teacher).kind != "gpu" or gpus:
            work = seen.inputs * (predicted.tokens_per_record if cost.unit == "tokens" else 1.0)
            configured_s = work / seen.shards / (cost.rate * (gpus or 1)) + cost.startup_s
            rows.append(Comparison(step, teacher, "s per shard", configured_s, seen.elapsed_s / seen.shards))
            busy = seen.elapsed_s - seen.shards * cost.startup_s
            if busy > 0:
                update["rate"] = work / busy / (gpus or 1)
                rows.append(Comparison(step, teacher, f"{cost.unit}/s per {'GPU' if gpus else 'task'}", cost.rate,
                                       update["rate"]))
        steps[step] = cost.model_copy(update=update)
    return inputs.model_copy(update={"teachers": teachers, "steps": steps}), rows


def _duration(seconds: float) -> str:
    if math.isinf(seconds):
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 4 * 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _count(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f}{unit}"
    return f"{value:.0f}"


def render_estimate(rows: list[StepEstimate], nodes: int) -> str:
    width = max([28, *(len(row.key) + 1 for row in rows)])
    header = (f"{'step':<{width}} {'kind':<6} {'shards':>6} {'in':>8} {'out':>8} {'GPU-h':>9} {'CPU-h':>9} "
              f"{'shard':>7} {'at once':>7} {'wall':>7} {'disk GB':>8}  notes")
    lines = [f"cost estimate at {nodes} nodes", header]
    for row in rows:
        lines.append(f"{row.key:<{width}} {row.kind:<6} {row.shards:>6} {_count(row.records_in):>8} "
                     f"{_count(row.records_out):>8} {row.gpu_hours:>9.1f} {row.cpu_hours:>9.1f} "
                     f"{_duration(row.shard_s):>7} {row.concurrency:>7} {_duration(row.wall_s):>7} "
                     f"{row.disk_bytes / 1e9:>8.1f}  {'; '.join(row.notes)}")
    local = [row for row in rows if row.kind != "remote"]
    remote_hours = sum(r.gpu_hours for r in rows if r.kind == "remote")
    by_step: dict[str, float] = {}
    for row in rows:
        by_step[row.step] = max(by_step.get(row.step, 0.0), row.wall_s)
    lines.append(f"{'total':<{width}} {'':<6} {sum(r.shards for r in rows):>6} {'':>8} {'':>8} "
                 f"{sum(r.gpu_hours for r in local):>9.1f} {sum(r.cpu_hours for r in rows):>9.1f} {'':>7} {'':>7} "
                 f"{_duration(sum(r.wall_s for r in rows)):>7} {sum(r.disk_bytes for r in rows) / 1e9:>8.1f}  "
                 f"GPU-h on this cluster (remote servers add {remote_hours:.1f}); "
                 f"wall with every step and teacher in turn on all nodes; {_duration(sum(by_step.values()))} "
                 "with the teachers side by side (node contention ignored)")
    return "\n".join(lines)


def render_comparison(rows: list[Comparison], run_root: Path) -> str:
    lines = [f"measured in {run_root} (configured -> measured)",
             f"{'step':<28} {'quantity':<24} {'configured':>12} {'measured':>12} {'ratio':>7}"]
    for row in rows:
        key = f"{row.step}/{row.teacher}" if row.teacher else row.step
        ratio = row.measured / row.configured if row.configured else math.inf
        lines.append(f"{key:<28} {row.quantity:<24} {row.configured:>12.4g} {row.measured:>12.4g} {ratio:>7.2f}")
    if not rows:
        lines.append("(no done shards with elapsed time)")
    return "\n".join(lines)


def cost_report(recipe: Recipe, inputs_path: Path | None, nodes: int, calibrate_run: Path | None = None) -> str:
    """`distillery plan --cost`: the estimate, and with a run to calibrate from, its measurements and the
    estimate redone with them."""
    inputs = load_cost_inputs(inputs_path)
    sections = [f"inputs: {inputs_path or 'built-in defaults (the paper-shaped run, see distillery.ops.cost)'}",
                render_estimate(estimate(recipe, inputs, nodes), nodes)]
    if calibrate_run is not None:
        from distillery.core.runner import load_run_recipe

        run = RunDir(calibrate_run)
        calibrated, rows = calibrate(inputs, load_run_recipe(run), measure_run(run.root))
        calibrated_rows = estimate(recipe, calibrated, nodes)
        sections += [render_comparison(rows, run.root), "calibrated " + render_estimate(calibrated_rows, nodes)]
    return "\n\n".join(sections)
