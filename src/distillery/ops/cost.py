"""What a recipe will cost before it is submitted: per step and teacher, GPU-hours, CPU core-hours, shard count
and duration, wall time at a given node count, and output size on disk.

The model is deliberately simple, so an operator can redo any cell by hand:
- records flow through the steps: each step's stage prices the records its input step kept (`Stage.price`, with
  the inputs of `distillery.core.pricing`): how many it keeps, their mean tokens (queries: `prompt_tokens`;
  traces: prompt plus the teacher's mean completion), its work in records or tokens over a throughput (per GPU
  for GPU steps, per task for CPU steps), its hours and disk (kept records x tokens x `bytes_per_token` x
  `record_overhead`, x `compression` when the recipe compresses, plus the uncompressed `rejected/` files);
  generation, pack, sft, eval and the variants say in their hooks how theirs differ;
- shards of a step run `concurrency` at a time: what fits on `nodes` nodes (GPUs or CPUs per node over the
  task's), at most the executor's array parallelism; wall = ceil(shards / concurrency) x shard duration; a
  generation shard lasts the longer of decoding and verifying.
Inputs come from `CostInputs` (its defaults are shaped like the paper's run), a YAML file of overrides, a run's
manifests (`calibrate`: measured throughputs, acceptance and keep rates replace the configured ones), or a
rehearsal's table (`calibrate_cpu_rates`: CPU steps at the rates `benchmarks/rehearsal.py` measured).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from distillery.core.plan import build_groups
from distillery.core.pricing import (
    CostInputs,
    Hardware,
    LengthBin,
    Priced,
    Pricing,
    mean_completion,
    task_gpus,
)
from distillery.core.recipe import Recipe, RecipeError, Resources
from distillery.core.stage import stage_type
from distillery.core.store import Manifest, RunDir

logger = logging.getLogger(__name__)


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
class StepEstimate(Priced):
    """A step's price for one lineage, with its schedule at a node count."""

    step: str = ""
    teacher: str | None = None
    shards: int = 0
    concurrency: int = 0
    wall_s: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.step}/{self.teacher}" if self.teacher else self.step


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
    """One estimate per step and teacher of the recipe, in step order: each step's stage prices the records its
    input step kept (`Stage.price`), then its shards are scheduled on the nodes."""
    limit = recipe.executor.array_parallelism if recipe.executor.kind == "slurm" else recipe.executor.workers
    main = _main_groups(recipe)
    flow: dict[tuple[str, str | None], tuple[float, float]] = {}
    rows: list[StepEstimate] = []
    for spec in recipe.steps:
        for teacher in recipe.teachers_of(spec.step):
            previous = recipe.previous_step(spec.step, teacher)
            if previous is None:
                records, tokens = float(inputs.queries), inputs.prompt_tokens
            else:
                sources = recipe.input_lineages(spec.step, teacher)
                records, tokens = flow[(previous, sources[0])] if len(sources) == 1 else _pooled(flow, previous)
            resources, shards = main[(spec.step, teacher)]
            stage = recipe.build_stage(spec.step, teacher)
            priced = stage.price(Pricing(inputs, spec.step, spec.type, resources, shards, recipe.compress,
                                         records, tokens))
            row = StepEstimate(**vars(priced), step=spec.step, teacher=teacher, shards=shards)
            if teacher is not None and not stage.serves_teacher and resources != spec.resources:
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
    if row.kind in ("remote", "served"):
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
        gpus = task_gpus(resources)
        kind = run_recipe.step(step).type
        stage = run_recipe.build_stage(step, teacher)
        predicted = by_key[(step, teacher)]
        if stage.serves_teacher and seen.attempts:
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
        if not predicted.rate_from_manifests:
            continue
        cost = inputs.step(step, kind)
        keep = seen.kept / seen.inputs
        update = {"keep": keep}
        rows.append(Comparison(step, teacher, "keep", cost.keep, keep))
        if stage.kind != "gpu" or gpus:
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


def render_comparison(rows: list[Comparison], title: str, empty: str) -> str:
    lines = [f"{title} (configured -> measured)",
             f"{'step':<28} {'quantity':<24} {'configured':>12} {'measured':>12} {'ratio':>7}"]
    for row in rows:
        key = f"{row.step}/{row.teacher}" if row.teacher else row.step
        ratio = row.measured / row.configured if row.configured else math.inf
        lines.append(f"{key:<28} {row.quantity:<24} {row.configured:>12.4g} {row.measured:>12.4g} {ratio:>7.2f}")
    if not rows:
        lines.append(empty)
    return "\n".join(lines)


@dataclass(frozen=True)
class Rehearsal:
    """What `benchmarks/rehearsal.py --json` measured at its larger size: per step, CPU-seconds per 1,000 input
    records and per million tokens (prompt tokens for the query steps, generated tokens after generation)."""

    path: Path
    cpu: str
    """The machine class: CPU model, its vector flags and architecture, as the benchmark described it."""
    queries: int
    stages: dict[str, dict[str, float]]
    """Step name -> `cpu_s_per_1k_records` and `cpu_s_per_m_tokens`."""

    @property
    def cpu_model(self) -> str:
        return self.cpu.split(" (")[0]


def load_rehearsal(path: Path) -> Rehearsal:
    """The larger size's rows of a rehearsal table; a file that is not one is a clear error."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        size = max(int(n) for n in data["sizes"])
        stages = {step: {key: float(row[key]) for key in ("cpu_s_per_1k_records", "cpu_s_per_m_tokens")}
                  for step, row in data["stages"][str(size)].items()}
        return Rehearsal(Path(path), str(data["cpu"]), size, stages)
    except (OSError, json.JSONDecodeError) as error:
        raise RecipeError(f"{path}: not a readable JSON file: {error}") from None
    except (KeyError, TypeError, ValueError) as error:
        raise RecipeError(f"{path}: not a table of benchmarks/rehearsal.py --json (expected sizes, cpu and per size "
                          f"stages with cpu_s_per_1k_records and cpu_s_per_m_tokens; {type(error).__name__}: "
                          f"{error})") from None


def calibrate_cpu_rates(
    inputs: CostInputs, recipe: Recipe, rehearsal: Rehearsal
) -> tuple[CostInputs, list[Comparison]]:
    """Inputs whose CPU steps (no GPU in any task of the step, not the teacher's) run at the rates the rehearsal
    measured for the step of the same name, else of the same type, and each configured rate next to it.

    A step that reads traces is priced per token (the rehearsal scales trace lengths down, so its per-record rate
    would not carry over to the paper's answers), a query step per record. A rate is per CPU-second: a task is
    taken to keep one core busy, so its wall is the measured CPU time and its CPU-hours charge all the cores the
    recipe gives it. Keep rates stay the configured ones."""
    main = _main_groups(recipe)
    by_key = {(row.step, row.teacher): row for row in estimate(recipe, inputs, nodes=1)}
    steps = dict(inputs.steps)
    rows: list[Comparison] = []
    for spec in recipe.steps:
        measured = rehearsal.stages.get(spec.step) or rehearsal.stages.get(spec.type)
        lineages = recipe.teachers_of(spec.step)
        stage = stage_type(spec.type)
        on_gpus = any(task_gpus(main[(spec.step, lineage)][0]) for lineage in lineages)
        if measured is None or stage.serves_teacher or on_gpus:
            continue
        if stage.per_teacher:
            unit, rate = "tokens", 1e6 / measured["cpu_s_per_m_tokens"] if measured["cpu_s_per_m_tokens"] else 0.0
        else:
            unit, rate = "records", 1e3 / measured["cpu_s_per_1k_records"] if measured["cpu_s_per_1k_records"] else 0.0
        if not rate:
            continue
        cost = inputs.step(spec.step, spec.type)
        configured = cost.rate  # shown in the measured unit, at the estimate's tokens per record
        if cost.unit != unit:
            tokens = by_key[(spec.step, lineages[0])].tokens_per_record
            configured = configured * tokens if unit == "tokens" else configured / tokens
        steps[spec.step] = cost.model_copy(update={"unit": unit, "rate": rate, "measured_on": rehearsal.cpu_model})
        rows.append(Comparison(spec.step, None, f"{unit}/s per task", configured, rate))
    return inputs.model_copy(update={"steps": steps}), rows


def cost_report(recipe: Recipe, inputs_path: Path | None, nodes: int, calibrate_from: Path | None = None) -> str:
    """`distillery plan --cost`, one section after another: the inputs, the estimate, and with something to
    calibrate from (a run directory, or a rehearsal's JSON table) the measurements beside the configured figures
    and the estimate redone with them. A remote teacher's rows price its server's GPU-hours; the total line
    counts them apart from this cluster's."""
    inputs = load_cost_inputs(inputs_path)
    sections = [f"inputs: {inputs_path or 'built-in defaults (the paper-shaped run, see distillery.core.pricing)'}",
                render_estimate(estimate(recipe, inputs, nodes), nodes)]
    if calibrate_from is None:
        return "\n\n".join(sections)
    if Path(calibrate_from).is_file():
        rehearsal = load_rehearsal(calibrate_from)
        calibrated, rows = calibrate_cpu_rates(inputs, recipe, rehearsal)
        sections.append(render_comparison(
            rows, f"CPU rates measured by the rehearsal {rehearsal.path} at {rehearsal.queries} queries on "
            f"{rehearsal.cpu}", "(the rehearsal measured no CPU step of this recipe)"))
    else:
        from distillery.core.runner import load_run_recipe

        run = RunDir(calibrate_from)
        calibrated, rows = calibrate(inputs, load_run_recipe(run), measure_run(run.root))
        sections.append(render_comparison(rows, f"measured in {run.root}", "(no done shards with elapsed time)"))
    return "\n\n".join([*sections, "calibrated " + render_estimate(estimate(recipe, calibrated, nodes), nodes)])
