"""Runs one task of a step: a shard's scan, the merge, a shard's process, or a whole-shard task.

`run_task` is the one importable entry point every executor calls with plain arguments (no pickled closures):
the run directory, the step, the teacher, the phase and the shard index, plus the rank and world size that only
executors read from their environment. Everything else comes from the recipe snapshot in the run directory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import yaml

from distillery.core.recipe import Recipe, parse_recipe
from distillery.core.stage import Item, Outcome, RecordStage, ShardContext, Stage, TaskStage, TwoPassStage
from distillery.core.store import Journal, Manifest, RunDir, ids_digest, read_json, write_json, write_jsonl
from distillery.core.versions import code_version, stage_config_digest

PHASES = ("scan", "merge", "process", "task")


class InputNotReady(RuntimeError):
    """An input shard this task needs has no manifest yet (its producer has not finished)."""


def load_run_recipe(run: RunDir) -> Recipe:
    if not run.recipe.exists():
        raise FileNotFoundError(f"{run.recipe} does not exist: is {run.root} a distillery run directory?")
    text = run.recipe.read_text(encoding="utf-8")
    return parse_recipe(yaml.safe_load(text), source=str(run.recipe), check_paths=False, text=text)


def shard_logger(run: RunDir, step: str, teacher: str | None, name: str) -> tuple[logging.Logger, logging.Handler]:
    """A logger that also writes to <run>/logs/<step>[/<teacher>]/<name>.log, one file per task."""
    log_dir = run.log_dir(step, teacher)
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / f"{name}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(f"distillery.task.{step}.{teacher or '-'}.{name}")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger, handler


def run_task(run_dir: str, step: str, teacher: str | None, phase: str, shard_index: int,
             rank: int = 0, world_size: int = 1) -> dict[str, Any]:
    """Run one task; idempotent: a task whose manifest is present and fresh returns it without work."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    run = RunDir(run_dir)
    recipe = load_run_recipe(run)
    stage = recipe.build_stage(step, teacher)
    suffix = f".rank{rank}" if world_size > 1 else ""
    name = f"shard-{shard_index:05d}.{phase}{suffix}" if phase != "merge" else "merge"
    logger, handler = shard_logger(run, step, teacher, name)
    ctx = ShardContext(run, step, teacher, shard_index, stage.num_shards(), logger, rank=rank, world_size=world_size)
    started = time.time()
    logger.info("start %s %s teacher=%s shard %d/%d rank %d/%d", phase, step, teacher, shard_index, ctx.num_shards,
                rank, world_size)
    try:
        if rank != 0 and phase in ("process", "merge"):
            # Only scans and whole-shard tasks use several ranks; a journal has one writer.
            logger.info("rank %d has no work in phase %s", rank, phase)
            return {}
        if phase == "process":
            assert isinstance(stage, RecordStage), f"{step} is not a record stage"
            result = _process(stage, ctx)
        elif phase == "scan":
            assert isinstance(stage, TwoPassStage), f"{step} is not a two-pass stage"
            result = _scan(stage, ctx)
        elif phase == "merge":
            assert isinstance(stage, TwoPassStage), f"{step} is not a two-pass stage"
            result = _merge(stage, ctx)
        else:
            assert isinstance(stage, TaskStage), f"{step} is not a task stage"
            result = _task(stage, ctx)
        logger.info("done %s in %.1fs: %s", phase, time.time() - started,
                    {k: v for k, v in result.items() if k in ("inputs", "kept", "rejected", "quarantined")})
        return result
    except Exception:
        logger.exception("failed %s", phase)
        raise
    finally:
        logger.removeHandler(handler)
        handler.close()


def step_digest(run: RunDir, recipe: Recipe, step: str, teacher: str | None,
                shard_index: int | None = None) -> str:
    """Digest of a step's output ids (one shard, or all of them) for `teacher` where the step runs per teacher."""
    src_teacher = teacher if teacher in recipe.teachers_of(step) else None
    shards = range(recipe.build_stage(step, src_teacher).num_shards()) if shard_index is None else [shard_index]
    digests = []
    for index in shards:
        manifest = run.shard(step, src_teacher, index, recipe.compress).manifest
        if not manifest.exists():
            raise InputNotReady(f"input {manifest} is missing: step {step!r} shard {index} has not finished")
        digests.append(read_json(manifest)["output_ids_digest"])
    return ids_digest(digests) if len(digests) > 1 else digests[0]


def upstream_digest(run: RunDir, recipe: Recipe, stage: Stage, shard_index: int | None, teacher: str | None) -> str:
    """Digest of what a shard is made from: the output ids of the input step's shard(s)."""
    source = stage.input_step()
    return "external" if source is None else step_digest(run, recipe, source, teacher, shard_index)


def task_header(stage: Stage, ctx: ShardContext, digest: str) -> dict[str, Any]:
    return {
        "step": ctx.stage,
        "teacher": ctx.teacher,
        "shard_index": ctx.shard_index,
        "num_shards": ctx.num_shards,
        "config_digest": stage_config_digest(stage),
        "input_ids_digest": digest,
    }


def manifest_is_fresh(manifest: Manifest, header: dict[str, Any]) -> str | None:
    """None when the manifest matches what the task would be made from now, else why it is stale."""
    if manifest.num_shards != header["num_shards"]:
        return f"shard count changed ({manifest.num_shards} -> {header['num_shards']})"
    if manifest.config_digest != header["config_digest"]:
        return "stage config changed"
    if manifest.input_ids_digest != header["input_ids_digest"]:
        return "input shard changed"
    return None


def input_digest(stage: Stage, ctx: ShardContext) -> str:
    own = getattr(stage, "input_digest", None)
    if own is not None:
        return own(ctx)
    per_shard = isinstance(stage, RecordStage)
    return upstream_digest(ctx.run, stage.recipe, stage, ctx.shard_index if per_shard else None, ctx.teacher)


def _process(stage: RecordStage, ctx: ShardContext) -> dict[str, Any]:
    paths = ctx.run.shard(ctx.stage, ctx.teacher, ctx.shard_index, stage.recipe.compress)
    header = task_header(stage, ctx, input_digest(stage, ctx))
    if paths.manifest.exists():
        manifest = Manifest.load(paths.manifest)
        stale = manifest_is_fresh(manifest, header)
        if stale is None:
            ctx.logger.info("already done (%s)", paths.manifest)
            return manifest.__dict__
        ctx.logger.warning("rerunning stale shard: %s", stale)
        paths.manifest.unlink()
    if isinstance(stage, TwoPassStage):
        merged = ctx.global_dir / "merge.done.json"
        if not merged.exists():
            raise InputNotReady(f"{merged} is missing: the merge of {ctx.stage} has not finished")
    started = time.time()
    journal = Journal(paths.journal, header)
    done = {entry["key"] for entry in journal.entries}
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
            done.add(outcome.key)
            journal.append(outcome.to_journal())
    finally:
        journal.close()
    if len(done) != len(seen) or not done <= seen:
        raise RuntimeError(f"{ctx.stage} shard {ctx.shard_index}: {len(seen)} inputs but {len(done)} outcomes")
    return _finalise(stage, ctx, paths, header, journal, started, resumed)


def _finalise(stage: RecordStage, ctx: ShardContext, paths: Any, header: dict[str, Any], journal: Journal,
              started: float, resumed: int) -> dict[str, Any]:
    outcomes = sorted((Outcome.from_journal(entry) for entry in journal.entries), key=lambda o: o.position)
    kept = [o for o in outcomes if o.kind == "kept"]
    rejected = [o for o in outcomes if o.kind == "rejected"]
    quarantined = [o for o in outcomes if o.kind == "quarantined"]
    count, sha = write_jsonl(paths.output, (o.record for o in kept), compress=stage.recipe.compress)
    write_jsonl(paths.rejected, ({"key": o.key, "reason": o.reason, "where": o.where, "record": o.record} for o in rejected))
    write_jsonl(paths.quarantine, ({"key": o.key, "reason": o.reason, "where": o.where, "raw": o.raw,
                                    "record": o.record} for o in quarantined))
    manifest = Manifest(
        stage=ctx.stage, teacher=ctx.teacher, shard_index=ctx.shard_index, num_shards=ctx.num_shards,
        inputs=len(outcomes), kept=count, rejected=len(rejected), quarantined=len(quarantined), sha256=sha,
        input_ids_digest=header["input_ids_digest"], output_ids_digest=ids_digest(o.key for o in kept),
        config_digest=header["config_digest"], code_version=code_version(), elapsed_s=round(time.time() - started, 3),
        resumed_items=resumed, stats=ctx.stats,
    )
    manifest.save(paths.manifest)
    journal.remove()
    return manifest.__dict__


def _scan(stage: TwoPassStage, ctx: ShardContext) -> dict[str, Any]:
    marker = ctx.global_dir / f"scan-{ctx.shard_index:05d}.done.json"
    header = task_header(stage, ctx, input_digest(stage, ctx))
    if marker.exists() and read_json(marker) == header:
        return header
    if ctx.rank == 0:
        marker.unlink(missing_ok=True)
        (ctx.global_dir / "merge.done.json").unlink(missing_ok=True)
        ctx.global_dir.mkdir(parents=True, exist_ok=True)
    stage.scan(stage.read_inputs(ctx), ctx)
    if ctx.rank == 0:
        write_json(marker, header)
    return header


def _merge(stage: TwoPassStage, ctx: ShardContext) -> dict[str, Any]:
    marker = ctx.global_dir / "merge.done.json"
    scans = [read_json(p) for p in sorted(ctx.global_dir.glob("scan-*.done.json"))]
    key = {"config_digest": stage_config_digest(stage), "num_shards": ctx.num_shards,
           "scans": ids_digest(s["input_ids_digest"] + str(s["shard_index"]) for s in scans)}
    if len(scans) != ctx.num_shards:
        raise InputNotReady(f"{ctx.stage}: {len(scans)} of {ctx.num_shards} scans are done")
    if marker.exists() and read_json(marker).get("key") == key:
        return read_json(marker)
    stats = stage.merge(ctx)
    result = {"key": key, "stats": stats}
    write_json(marker, result)
    return result


def _task(stage: TaskStage, ctx: ShardContext) -> dict[str, Any]:
    paths = ctx.run.shard(ctx.stage, ctx.teacher, ctx.shard_index)
    header = task_header(stage, ctx, input_digest(stage, ctx))
    if paths.manifest.exists():
        manifest = Manifest.load(paths.manifest)
        if manifest_is_fresh(manifest, header) is None:
            return manifest.__dict__
        if ctx.rank == 0:
            paths.manifest.unlink()
    started = time.time()
    stats = stage.run(ctx)
    if ctx.rank != 0:
        return stats
    inputs = int(stats.get("inputs", 0))
    kept = int(stats.get("kept", inputs))
    manifest = Manifest(
        stage=ctx.stage, teacher=ctx.teacher, shard_index=ctx.shard_index, num_shards=ctx.num_shards,
        inputs=inputs, kept=kept, rejected=int(stats.get("rejected", inputs - kept)),
        quarantined=int(stats.get("quarantined", 0)), sha256=str(stats.get("sha256", "")),
        input_ids_digest=header["input_ids_digest"], output_ids_digest=str(stats.get("output_ids_digest") or
                              ids_digest([header["input_ids_digest"], header["config_digest"]])),
        config_digest=header["config_digest"], code_version=code_version(), elapsed_s=round(time.time() - started, 3),
        stats=stats,
    )
    manifest.save(paths.manifest)
    return manifest.__dict__

