"""Runs one task of a step: a shard's scan, the merge, a shard's process, or a whole-shard task.

`run_task` is the one importable entry point every executor calls with plain arguments (no pickled closures):
the run directory, the step, the teacher, the phase and the shard index, plus the rank and world size that only
executors read from their environment. Everything else comes from the recipe snapshot in the run directory.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml

from distillery.core.console import LOG_ONLY, task_output
from distillery.core.integrity import size_mismatch
from distillery.core.task_usage import start_task, task_usage
from distillery.core.recipe import Recipe, parse_recipe
from distillery.core.stage import Item, Outcome, RecordStage, ShardContext, Stage, TaskStage, TwoPassStage
from distillery.core.store import Journal, Manifest, RunDir, ids_digest, jsonl_sink, open_text, read_json, write_json
from distillery.core.versions import code_version
from distillery.hardware import dtype_stats, forget_choices

PHASES = ("scan", "merge", "process", "task")

DigestCache = dict[tuple[str, "str | None", int], str]
"""Output digests of manifests already read, by (step, teacher, shard): one status or resume pass shares one."""


class InputNotReady(RuntimeError):
    """An input shard this task needs has no manifest yet (its producer has not finished)."""


def load_run_recipe(run: RunDir) -> Recipe:
    if not run.recipe.exists():
        raise FileNotFoundError(f"{run.recipe} does not exist: is {run.root} a distillery run directory?")
    text = run.recipe.read_text(encoding="utf-8")
    return parse_recipe(yaml.safe_load(text), source=str(run.recipe), check_paths=False, text=text)


def task_log_path(run: RunDir, step: str, teacher: str | None, name: str) -> Path:
    """<run>/logs/<step>[/<teacher>]/<name>.log: everything one task wrote."""
    return run.log_dir(step, teacher) / f"{name}.log"


def shard_logger(run: RunDir, step: str, teacher: str | None, name: str) -> tuple[logging.Logger, logging.Handler]:
    """A logger that also writes to the task's log file (`task_log_path`)."""
    log_path = task_log_path(run, step, teacher, name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(f"distillery.task.{step}.{teacher or '-'}.{name}")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger, handler


def run_task(run_dir: str, step: str, teacher: str | None, phase: str, shard_index: int,
             rank: int = 0, world_size: int = 1) -> dict[str, Any]:
    """Run one task; idempotent: a task whose manifest is present and fresh returns it without work.

    On a quiet console (`core.console`) everything the task and its libraries print goes to its log file."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    run = RunDir(run_dir)
    suffix = f".rank{rank}" if world_size > 1 else ""
    name = f"shard-{shard_index:05d}.{phase}{suffix}" if phase != "merge" else "merge"
    with task_output(task_log_path(run, step, teacher, name)):
        return _run_task(run, step, teacher, phase, shard_index, rank, world_size, name)


def _run_task(run: RunDir, step: str, teacher: str | None, phase: str, shard_index: int, rank: int,
              world_size: int, name: str) -> dict[str, Any]:
    recipe = load_run_recipe(run)
    stage = recipe.build_stage(step, teacher)
    logger, handler = shard_logger(run, step, teacher, name)
    forget_choices()
    ctx = task_context(run, recipe, stage, teacher, shard_index, logger, rank, world_size)
    started = time.time()
    start_task()
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
        logger.exception("failed %s", phase, extra=LOG_ONLY)  # the executor tells the terminal, with this log's path
        raise
    finally:
        logger.removeHandler(handler)
        handler.close()


def machine_stats() -> dict[str, Any]:
    """What the task's models ran in (device, dtype and why), for its manifest; empty for tasks without a model."""
    choices = dtype_stats()
    return {"dtype": choices} if choices else {}


def record_key(record: dict[str, Any]) -> str:
    """A record's stable key: a query's id, the id of the query a trace answers, or, for a variant that keeps
    every attempt, that id with the attempt's index."""
    if "id" in record:
        return str(record["id"])
    variant_key = record.get("metadata", {}).get("variant", {}).get("key")
    return str(variant_key or record["query"]["id"])


class RunInputs:
    """The runner's `StepInputs`: resolves a step's input step, its teacher and its shards in the run directory,
    so stages never see the recipe."""

    def __init__(self, run: RunDir, recipe: Recipe, step: str | None, teacher: str | None,
                 known_digests: DigestCache | None = None) -> None:
        self.run = run
        self.recipe = recipe
        self.step = step
        self.teacher = teacher
        self.known_digests: DigestCache = known_digests if known_digests is not None else {}
        self._stages: dict[str, Stage] = {}
        """Status and resume share one across all groups: a downstream check reads no upstream manifest twice."""

    def _teacher_of(self, step: str) -> str | None:
        """The lineage of `step` that holds this lineage's data (a variant reads its teacher's earlier steps)."""
        source = self.recipe.runs(step, self.teacher)
        if source is False:
            raise ValueError(f"step {step!r} has no data for {self.teacher!r}")
        return source

    def _num_shards(self, step: str) -> int:
        return self.recipe.build_stage(step, self._teacher_of(step)).num_shards()

    def _source(self) -> str:
        if self.step is None:
            raise ValueError("this step reads no input step (it is first in the recipe, or reads external input)")
        return self.step

    def _finished(self, step: str, shard_index: int) -> tuple[Any, Manifest]:
        paths = self.run.shard(step, self._teacher_of(step), shard_index, self.recipe.compress)
        if not paths.manifest.exists():
            raise InputNotReady(f"input {paths.manifest} is missing: step {step!r} shard {shard_index} has not "
                                "finished")
        manifest = Manifest.load(paths.manifest)
        problem = size_mismatch(paths, manifest)
        if problem is not None:
            raise InputNotReady(f"input {paths.output} does not match its manifest ({problem}): rerun {step!r}")
        return paths, manifest

    def shard(self, shard_index: int, step: str | None = None) -> Iterator[Item]:
        """The shard's kept records (of the input step, or of an earlier `step` of this lineage), read only if the
        file still matches its manifest (size before reading, record count after)."""
        step = step or self._source()
        paths, manifest = self._finished(step, shard_index)
        count = 0
        with open_text(paths.output) as handle:
            for count, line in enumerate(handle, start=1):
                record = json.loads(line)
                yield Item(position=count - 1, key=record_key(record), record=record, where=f"{paths.output}:{count}")
        if count != manifest.kept:
            raise InputNotReady(f"input {paths.output} holds {count} records, its manifest says {manifest.kept}: "
                                f"rerun {step!r}")

    def dropped(self, step: str, shard_index: int) -> Iterator[dict[str, Any]]:
        """The rows a finished shard of an earlier `step` of this lineage set aside as rejected (key, reason, where,
        record)."""
        paths, _ = self._finished(step, shard_index)
        if paths.rejected.exists():
            with open_text(paths.rejected) as handle:
                for line in handle:
                    yield json.loads(line)

    def upstream_stage(self, step: str, shard_index: int = 0) -> tuple[Stage, ShardContext]:
        """An earlier step's stage as this lineage's data ran through it, with a task context for one of its shards:
        a variant re-applies its teacher's filters with them. One stage object per step, so what it loads lazily (a
        reference model) is loaded once per task."""
        lineage = self._teacher_of(step)
        stage = self._stages.get(step)
        if stage is None:
            stage = self._stages[step] = self.recipe.build_stage(step, lineage)
        ctx = task_context(self.run, self.recipe, stage, lineage, shard_index,
                           logging.getLogger(f"distillery.upstream.{step}"), known_digests=self.known_digests)
        return stage, ctx

    def everything(self) -> Iterator[Item]:
        position = 0
        for shard_index in range(self._num_shards(self._source())):
            for item in self.shard(shard_index):
                yield Item(position, item.key, item.record, item.where)
                position += 1

    def digest(self, step: str | None = None, shard_index: int | None = None) -> str:
        step = step or self._source()
        teacher = self._teacher_of(step)
        shards = range(self._num_shards(step)) if shard_index is None else [shard_index]
        digests = []
        for index in shards:
            known = self.known_digests.get((step, teacher, index))
            if known is None:
                manifest = self.run.shard(step, teacher, index, self.recipe.compress).manifest
                if not manifest.exists():
                    raise InputNotReady(f"input {manifest} is missing: step {step!r} shard {index} has not finished")
                known = self.known_digests[(step, teacher, index)] = read_json(manifest)["output_ids_digest"]
            digests.append(known)
        return ids_digest(digests) if len(digests) > 1 else digests[0]


def task_context(run: RunDir, recipe: Recipe, stage: Stage, teacher: str | None, shard_index: int,
                 logger: logging.Logger, rank: int = 0, world_size: int = 1,
                 known_digests: DigestCache | None = None) -> ShardContext:
    inputs = RunInputs(run, recipe, stage.input_step(), teacher, known_digests)
    return ShardContext(run, stage.step, teacher, shard_index, stage.num_shards(), logger, inputs,
                        rank=rank, world_size=world_size)


def input_digest(stage: Stage, ctx: ShardContext) -> str:
    """The stage's own digest hook, else the output ids of its input step (this shard's, or all for tasks)."""
    own = stage.input_digest(ctx)
    if own is not None:
        return own
    if ctx.inputs is None or ctx.inputs.step is None:
        return "external"
    return ctx.inputs.digest(shard_index=ctx.shard_index if isinstance(stage, RecordStage) else None)


def task_header(stage: Stage, ctx: ShardContext, digest: str) -> dict[str, Any]:
    return {
        "step": ctx.stage,
        "teacher": ctx.teacher,
        "shard_index": ctx.shard_index,
        "num_shards": ctx.num_shards,
        "config_digest": stage.config_digest,
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


def _process(stage: RecordStage, ctx: ShardContext) -> dict[str, Any]:
    paths = ctx.run.shard(ctx.stage, ctx.teacher, ctx.shard_index, stage.view.compress)
    header = task_header(stage, ctx, input_digest(stage, ctx))
    if paths.manifest.exists():
        manifest = Manifest.load(paths.manifest)
        stale = manifest_is_fresh(manifest, header) or size_mismatch(paths, manifest)
        if stale is None:
            ctx.logger.info("already done (%s)", paths.manifest)
            paths.journal.unlink(missing_ok=True)  # a kill between the manifest and the journal's removal
            return manifest.__dict__
        ctx.logger.warning("rerunning stale shard: %s", stale)
        paths.manifest.unlink()
    if isinstance(stage, TwoPassStage):
        merged = ctx.run.merge_marker(ctx.stage, ctx.teacher)
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


def reason_kind(reason: str) -> str:
    """A reject reason with its numbers and quoted parts masked, so reasons of one kind count together."""
    return _NUMBER.sub("#", _QUOTED.sub("'...'", reason))[:120]


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?")


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
    manifest = Manifest(
        stage=ctx.stage, teacher=ctx.teacher, shard_index=ctx.shard_index, num_shards=ctx.num_shards,
        inputs=sum(counts.values()), kept=counts["kept"], rejected=counts["rejected"],
        quarantined=counts["quarantined"], sha256=kept.sha256, input_ids_digest=header["input_ids_digest"],
        output_ids_digest=ids_digest(kept_keys), config_digest=header["config_digest"], code_version=code_version(),
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
    marker = ctx.run.scan_marker(ctx.stage, ctx.teacher, ctx.shard_index)
    header = task_header(stage, ctx, input_digest(stage, ctx))
    if marker.exists():
        done = read_json(marker)
        if scan_is_fresh(done, header):
            return done
    if ctx.rank == 0:
        marker.unlink(missing_ok=True)
        ctx.run.merge_marker(ctx.stage, ctx.teacher).unlink(missing_ok=True)
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
    marker = ctx.run.merge_marker(ctx.stage, ctx.teacher)
    scans = [read_json(p) for p in ctx.run.scan_markers(ctx.stage, ctx.teacher)]
    key = merge_key(stage, ctx.num_shards, scans)
    if len(scans) != ctx.num_shards:
        raise InputNotReady(f"{ctx.stage}: {len(scans)} of {ctx.num_shards} scans are done")
    if marker.exists() and read_json(marker).get("key") == key:
        return read_json(marker)
    started = time.time()
    stats = stage.merge(ctx)
    result = {"key": key, "stats": {**stats, **task_usage()},
              "inputs": sum(int(s.get("inputs", 0)) for s in scans), "elapsed_s": round(time.time() - started, 3)}
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
        stats={**stats, **machine_stats(), **task_usage()},
    )
    manifest.save(paths.manifest)
    return manifest.__dict__

