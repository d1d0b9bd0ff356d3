"""Runs one task of a step: a shard's scan, the merge, a shard's process, or a whole-shard task.

`run_task` is the one importable entry point every executor calls with plain arguments (no pickled closures):
the run directory, the step, the lineage, the phase and the shard index, plus the rank and world size that only
executors read from their environment. Everything else comes from the recipe snapshot in the run directory.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml

from distillery.core.console import LOG_ONLY, task_output
from distillery.core.inputs import InputNotReady, task_context
from distillery.core.integrity import size_mismatch
from distillery.core.recipe import Recipe, parse_recipe
from distillery.core.stage import (
    Item,
    Outcome,
    RecordStage,
    ShardContext,
    Stage,
    TaskStage,
    TwoPassStage,
    reason_kind,
)
from distillery.core.store import Journal, Manifest, RunDir, ids_digest, jsonl_sink, read_json, write_json
from distillery.core.task_usage import start_task, task_usage
from distillery.core.versions import code_version
from distillery.hardware import dtype_stats, forget_choices

PHASES = ("scan", "merge", "process", "task")

def load_run_recipe(run: RunDir) -> Recipe:
    if not run.recipe.exists():
        raise FileNotFoundError(f"{run.recipe} does not exist: is {run.root} a distillery run directory?")
    text = run.recipe.read_text(encoding="utf-8")
    return parse_recipe(yaml.safe_load(text), source=str(run.recipe), check_paths=False, text=text)


def task_log_path(run: RunDir, step: str, lineage: str | None, name: str) -> Path:
    """<run>/logs/<step>[/<lineage>]/<name>.log: everything one task wrote."""
    return run.log_dir(step, lineage) / f"{name}.log"


def shard_logger(run: RunDir, step: str, lineage: str | None, name: str) -> tuple[logging.Logger, logging.Handler]:
    """A logger that also writes to the task's log file (`task_log_path`)."""
    log_path = task_log_path(run, step, lineage, name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(f"distillery.task.{step}.{lineage or '-'}.{name}")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger, handler


def run_task(run_dir: str, step: str, lineage: str | None, phase: str, shard_index: int,
             rank: int = 0, world_size: int = 1) -> dict[str, Any]:
    """Run one task; idempotent: a task whose manifest is present and fresh returns it without work.

    On a quiet console (`core.console`) everything the task and its libraries print goes to its log file."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    run = RunDir(run_dir)
    suffix = f".rank{rank}" if world_size > 1 else ""
    name = f"shard-{shard_index:05d}.{phase}{suffix}" if phase != "merge" else "merge"
    with task_output(task_log_path(run, step, lineage, name)):
        return _run_task(run, step, lineage, phase, shard_index, rank, world_size, name)


def _run_task(run: RunDir, step: str, lineage: str | None, phase: str, shard_index: int, rank: int,
              world_size: int, name: str) -> dict[str, Any]:
    recipe = load_run_recipe(run)
    stage = recipe.build_stage(step, lineage)
    logger, handler = shard_logger(run, step, lineage, name)
    forget_choices()
    ctx = task_context(run, recipe, stage, lineage, shard_index, logger, rank, world_size)
    started = time.time()
    start_task()
    logger.info("start %s %s teacher=%s shard %d/%d rank %d/%d", phase, step, lineage, shard_index, ctx.num_shards,
                rank, world_size)
    try:
        if rank != 0 and phase in ("process", "merge"):
            # Only scans and whole-shard tasks use several ranks; a journal has one writer.
            logger.info("rank %d has no work in phase %s", rank, phase)
            return {}
        result = stage.run_phase(phase, PHASE_RUNNER, ctx)
        logger.info("done %s in %.1fs: %s", phase, time.time() - started,
                    {k: v for k, v in result.items() if k in ("inputs", "kept", "rejected", "quarantined")})
        return result
    except Exception:
        logger.exception("failed %s", phase, extra=LOG_ONLY)  # the executor tells the terminal, with this log's path
        raise
    finally:
        logger.removeHandler(handler)
        handler.close()


def machine_stats() -> dict[str, Any]:
    """What the task's models ran in (device, dtype and why), for its manifest; empty for tasks without a model."""
    choices = dtype_stats()
    return {"dtype": choices} if choices else {}


def input_digest(stage: Stage, ctx: ShardContext) -> str:
    """The stage's own digest hook, else the output ids of its input step (this shard's, or all for tasks)."""
    own = stage.input_digest(ctx)
    if own is not None:
        return own
    if ctx.inputs is None or ctx.inputs.step is None:
        return "external"
    return ctx.inputs.digest(shard_index=ctx.shard_index if stage.reads_one_shard else None)


def task_header(stage: Stage, ctx: ShardContext, digest: str) -> dict[str, Any]:
    return {
        "step": ctx.stage,
        "teacher": ctx.lineage,
        "shard_index": ctx.shard_index,
        "num_shards": ctx.num_shards,
        "config_digest": stage.config_digest,
        "input_ids_digest": digest,
    }


def why_stale(manifest: Manifest, header: dict[str, Any]) -> str | None:
    """Why a finished task's manifest no longer matches what the task would be made from now; None when it does."""
    if manifest.num_shards != header["num_shards"]:
        return f"shard count changed ({manifest.num_shards} -> {header['num_shards']})"
    if manifest.config_digest != header["config_digest"]:
        return "stage config changed"
    if manifest.input_ids_digest != header["input_ids_digest"]:
        return "input shard changed"
    return None


def _process(stage: RecordStage, ctx: ShardContext) -> dict[str, Any]:
    paths = ctx.run.shard(ctx.stage, ctx.lineage, ctx.shard_index, stage.view.compress)
    header = task_header(stage, ctx, input_digest(stage, ctx))
    if paths.manifest.exists():
        manifest = Manifest.load(paths.manifest)
        stale = why_stale(manifest, header) or size_mismatch(paths, manifest)
        if stale is None:
            ctx.logger.info("already done (%s)", paths.manifest)
            paths.journal.unlink(missing_ok=True)  # a kill between the manifest and the journal's removal
            return manifest.__dict__
        ctx.logger.warning("rerunning stale shard: %s", stale)
        paths.manifest.unlink()
    if "merge" in stage.phases:
        merged = ctx.run.merge_marker(ctx.stage, ctx.lineage)
        if not merged.exists():
            raise InputNotReady(f"{merged} is missing: the merge of {ctx.stage} has not finished")
    started = time.time()
    journal = Journal(paths.journal, header)
    done = journal.keys
    resumed = len(done)
    if resumed:
        ctx.logger.info("resuming from journal: %d items already done", resumed)
    seen: set[str] = set()

    def pending() -> Iterator[Item]:
        for item in stage.read_inputs(ctx):
            if item.key in seen:
                raise ValueError(f"{ctx.stage} shard {ctx.shard_index}: duplicate input key {item.key!r} ({item.where})")
            seen.add(item.key)
            if item.key not in done:
                yield item

    try:
        for outcome in stage.process(pending(), ctx):
            if outcome.key in done:
                raise RuntimeError(f"{ctx.stage}: two outcomes for item {outcome.key!r}")
            journal.append(outcome.to_journal())
    finally:
        journal.close()
    if len(done) != len(seen) or not done <= seen:
        raise RuntimeError(f"{ctx.stage} shard {ctx.shard_index}: {len(seen)} inputs but {len(done)} outcomes")
    return _finalise(stage, ctx, paths, header, journal, started, resumed)


def _finalise(stage: RecordStage, ctx: ShardContext, paths: Any, header: dict[str, Any], journal: Journal,
              started: float, resumed: int) -> dict[str, Any]:
    """Write the shard's kept, rejected and quarantined records in input order, streaming from the journal."""
    counts = {"kept": 0, "rejected": 0, "quarantined": 0}
    reasons: Counter[str] = Counter()
    kept_keys: list[str] = []
    with ExitStack() as stack:
        kept = stack.enter_context(jsonl_sink(paths.output, stage.view.compress))
        rejected = stack.enter_context(jsonl_sink(paths.rejected))
        quarantined = stack.enter_context(jsonl_sink(paths.quarantine))
        for entry in journal.entries_by("position"):
            outcome = Outcome.from_journal(entry)
            counts[outcome.kind] += 1
            if outcome.kind == "kept":
                kept.write(outcome.record or {})
                kept_keys.append(outcome.key)
            elif outcome.kind == "rejected":
                rejected.write(outcome.rejected_row())
                reasons[reason_kind(outcome.reason)] += 1
            else:
                quarantined.write(outcome.quarantine_row())
    manifest = build_manifest(
        header, inputs=sum(counts.values()), kept=counts["kept"], rejected=counts["rejected"],
        quarantined=counts["quarantined"], sha256=kept.sha256, output_ids_digest=ids_digest(kept_keys),
        elapsed_s=round(time.time() - started, 3), resumed_items=resumed,
        stats={**ctx.stats, "reject_reasons": dict(reasons.most_common(20)), **machine_stats(), **task_usage()},
        size_bytes=paths.output.stat().st_size,
    )
    manifest.save(paths.manifest)
    journal.remove()
    return manifest.__dict__


def _scan(stage: TwoPassStage, ctx: ShardContext) -> dict[str, Any]:
    """A scan's marker holds its header (what it was made from) plus its elapsed time and item count, so that
    `status` reports a scan's real throughput."""
    marker = ctx.run.scan_marker(ctx.stage, ctx.lineage, ctx.shard_index)
    header = task_header(stage, ctx, input_digest(stage, ctx))
    if marker.exists():
        done = read_json(marker)
        if scan_is_fresh(done, header):
            return done
    if ctx.rank == 0:
        marker.unlink(missing_ok=True)
        ctx.run.merge_marker(ctx.stage, ctx.lineage).unlink(missing_ok=True)
        ctx.global_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    counted = [0]

    def counting(items: Iterator[Item]) -> Iterator[Item]:
        for item in items:
            counted[0] += 1
            yield item

    stage.scan(counting(stage.read_inputs(ctx)), ctx)
    result = {**header, "inputs": counted[0], "elapsed_s": round(time.time() - started, 3),
              "stats": {**ctx.stats, **machine_stats(), **task_usage()}}
    if ctx.rank == 0:
        write_json(marker, result)
    return result


def scan_is_fresh(marker: dict[str, Any], header: dict[str, Any]) -> bool:
    """A finished scan's marker was made from what the scan would be made from now."""
    return {key: marker.get(key) for key in header} == header


def merge_key(stage: TwoPassStage, num_shards: int, scans: list[dict[str, Any]]) -> dict[str, Any]:
    """What a merge is made from: the stage's config and every scan's input (a new scan makes it stale)."""
    return {"config_digest": stage.config_digest, "num_shards": num_shards,
            "scans": ids_digest(s["input_ids_digest"] + str(s["shard_index"]) for s in scans)}


def _merge(stage: TwoPassStage, ctx: ShardContext) -> dict[str, Any]:
    marker = ctx.run.merge_marker(ctx.stage, ctx.lineage)
    scans = [read_json(p) for p in ctx.run.scan_markers(ctx.stage, ctx.lineage)]
    key = merge_key(stage, ctx.num_shards, scans)
    if len(scans) != ctx.num_shards:
        raise InputNotReady(f"{ctx.stage}: {len(scans)} of {ctx.num_shards} scans are done")
    if marker.exists() and read_json(marker).get("key") == key:
        return read_json(marker)
    started = time.time()
    stats = stage.merge(ctx)
    result = {"key": key, "stats": {**stats, **task_usage()}, "inputs": sum(int(s.get("inputs", 0)) for s in scans),
              "elapsed_s": round(time.time() - started, 3)}
    write_json(marker, result)
    return result


def _task(stage: TaskStage, ctx: ShardContext) -> dict[str, Any]:
    paths = ctx.run.shard(ctx.stage, ctx.lineage, ctx.shard_index)
    header = task_header(stage, ctx, input_digest(stage, ctx))
    if paths.manifest.exists():
        manifest = Manifest.load(paths.manifest)
        if why_stale(manifest, header) is None:
            return manifest.__dict__
        if ctx.rank == 0:
            paths.manifest.unlink()
    started = time.time()
    result = stage.run(ctx)
    if ctx.rank != 0:
        return result.stats
    manifest = build_manifest(
        header, inputs=result.inputs, kept=result.kept, rejected=result.rejected, quarantined=result.quarantined,
        sha256=result.sha256, elapsed_s=round(time.time() - started, 3),
        stats={**result.stats, **machine_stats(), **task_usage()},
        output_ids_digest=result.output_ids_digest or ids_digest([header["input_ids_digest"], header["config_digest"]]),
    )
    manifest.save(paths.manifest)
    return manifest.__dict__


def build_manifest(header: dict[str, Any], *, inputs: int, kept: int, rejected: int, quarantined: int, sha256: str,
                   output_ids_digest: str, elapsed_s: float, stats: dict[str, Any], resumed_items: int = 0,
                   size_bytes: int | None = None) -> Manifest:
    """The manifest of a finished task, made from its header (`task_header`: what it was made from) and what it
    wrote. The one place a Manifest is made."""
    return Manifest(
        stage=header["step"], teacher=header["teacher"], shard_index=header["shard_index"],
        num_shards=header["num_shards"], inputs=inputs, kept=kept, rejected=rejected, quarantined=quarantined,
        sha256=sha256, input_ids_digest=header["input_ids_digest"], output_ids_digest=output_ids_digest,
        config_digest=header["config_digest"], code_version=code_version(), elapsed_s=elapsed_s,
        resumed_items=resumed_items, stats=stats, size_bytes=size_bytes)


class _PhaseRunner:
    """The runner's `PhaseRunner`: what each stage kind's `run_phase` calls."""

    scan = staticmethod(_scan)
    merge = staticmethod(_merge)
    process = staticmethod(_process)
    task = staticmethod(_task)


PHASE_RUNNER = _PhaseRunner()

