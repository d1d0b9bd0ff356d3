"""From a recipe to task groups (one job array each), and the state of every shard of a run.

A task group is one step x teacher x phase: a two-pass step becomes scan (array) -> merge (one task) ->
process (array); a record step one process array; a task step one array of whole-shard tasks. A group depends
on the last group of the previous step for the same teacher. `pending_groups` keeps only shards that are
missing or stale, which is all `resume` submits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from distillery.core.integrity import size_mismatch
from distillery.core.recipe import Recipe, Resources
from distillery.core.inputs import DigestCache, InputNotReady, task_context
from distillery.core.runner import input_digest, merge_key, scan_is_fresh, task_header, why_stale
from distillery.core.stage import TwoPassStage
from distillery.core.store import Manifest, RunDir, ShardPaths, read_json


@dataclass
class TaskGroup:
    step: str
    teacher: str | None
    phase: str
    shards: list[int]
    num_shards: int
    resources: Resources
    job_kind: str
    depends_on: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.step}{'/' + self.teacher if self.teacher else ''}:{self.phase}"

    @property
    def world_size(self) -> int:
        return self.resources.tasks_per_node * self.resources.nodes


def light_resources(resources: Resources) -> Resources:
    """A light phase's share of its step's resources: one task on one node, no GPUs, the same cores, memory, time."""
    return resources.model_copy(update={"gpus_per_node": 0, "tasks_per_node": 1, "nodes": 1, "job_kind": None})


def build_groups(recipe: Recipe) -> list[TaskGroup]:
    """Every group of the recipe, in dependency order, with all shards."""
    groups: list[TaskGroup] = []
    last_of: dict[tuple[str, str | None], str] = {}
    for spec in recipe.steps:
        for teacher in recipe.teachers_of(spec.step):
            stage = recipe.build_stage(spec.step, teacher)
            teacher_resources = stage.teacher.resources if stage.teacher and stage.serves_teacher else None
            resources = teacher_resources or spec.resources
            previous = recipe.previous_step(spec.step, teacher)
            deps = [last_of[(previous, t)] for t in recipe.input_lineages(spec.step, teacher)] if previous else []
            for phase in stage.phases:
                num = 1 if phase == "merge" else stage.num_shards()
                kind = stage.phase_kind(phase)
                phase_resources = resources if kind else light_resources(resources)
                group = TaskGroup(spec.step, teacher, phase, list(range(num)), num, phase_resources,
                                  (resources.job_kind or kind) if kind else "cpu", deps)
                groups.append(group)
                deps = [group.key]
            last_of[(spec.step, teacher)] = groups[-1].key
    return groups


@dataclass
class ShardState:
    state: str
    """done, stale, partial (journal present), waiting (input not ready) or missing."""
    detail: str = ""
    manifest: Manifest | None = None
    journal_items: int = 0
    marker: dict[str, Any] | None = None
    """A finished scan's or merge's marker: its item count and elapsed time."""


class GroupInspector:
    """Reads the state of a group's shards; the stage is built once per group, not once per shard."""

    def __init__(self, run: RunDir, recipe: Recipe, group: TaskGroup,
                 known_digests: DigestCache | None = None) -> None:
        self.run = run
        self.recipe = recipe
        self.group = group
        self.stage = recipe.build_stage(group.step, group.teacher)
        self.known_digests: DigestCache = known_digests if known_digests is not None else {}
        self._logger = logging.getLogger("distillery.plan")
        self._dir = run.stage_dir(group.step, group.teacher)  # joined once: status builds 10,000s of shard paths

    def state(self, shard_index: int, check_inputs: bool = True) -> ShardState:
        group, run = self.group, self.run
        if group.phase in ("scan", "merge"):
            marker = (run.merge_marker(group.step, group.teacher) if group.phase == "merge"
                      else run.scan_marker(group.step, group.teacher, shard_index))
            try:
                done = read_json(marker)
            except FileNotFoundError:
                return ShardState("missing")
            why = self._marker_stale(done, shard_index) if check_inputs else None
            return ShardState("stale", why, marker=done) if why else ShardState("done", marker=done)
        paths = ShardPaths(self._dir, shard_index, self.recipe.compress)
        try:
            manifest = Manifest.load(paths.manifest)
        except FileNotFoundError:
            manifest = None
        if manifest is not None:
            self.known_digests[(group.step, group.teacher, shard_index)] = manifest.output_ids_digest
            if not check_inputs:
                return ShardState("done", manifest=manifest)
            probe = task_context(run, self.recipe, self.stage, group.teacher, shard_index, self._logger,
                                 known_digests=self.known_digests)
            try:
                header = task_header(self.stage, probe, input_digest(self.stage, probe))
            except InputNotReady as error:
                return ShardState("stale", f"input not ready: {error}", manifest)
            why = why_stale(manifest, header) or size_mismatch(paths, manifest)
            return ShardState("stale", why, manifest) if why else ShardState("done", manifest=manifest)
        if paths.journal.exists():
            with paths.journal.open("rb") as handle:
                lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
            return ShardState("partial", journal_items=max(lines - 1, 0))
        return ShardState("missing")


    def _marker_stale(self, marker: dict[str, Any], shard_index: int) -> str | None:
        """Why a finished scan or merge no longer matches what it would be made from now; None if it does."""
        stage = self.stage
        assert isinstance(stage, TwoPassStage)
        if self.group.phase == "merge":
            scans = [read_json(p) for p in self.run.scan_markers(self.group.step, self.group.teacher)]
            fresh = marker.get("key") == merge_key(stage, stage.num_shards(), scans)
            return None if fresh else "its scans or the stage config changed"
        probe = task_context(self.run, self.recipe, stage, self.group.teacher, shard_index, self._logger,
                             known_digests=self.known_digests)
        try:
            header = task_header(stage, probe, input_digest(stage, probe))
        except InputNotReady as error:
            return f"input not ready: {error}"
        return None if scan_is_fresh(marker, header) else "stage config or input changed"


def pending_groups(run: RunDir, recipe: Recipe, sweep: bool = False, exclusive: bool = False) -> list[TaskGroup]:
    """Groups cut down to the shards that are missing or stale; a group with nothing left is dropped and
    its dependents no longer wait for it. Anything downstream of pending work is pending too.

    With `sweep` (run and resume, never plan or status), what a kill -9 left beside a finished shard goes: its
    journal (killed between the manifest and the journal's removal) and temporary files of its writers."""
    pending: list[TaskGroup] = []
    kept_keys: set[str] = set()
    known_digests: DigestCache = {}
    for group in build_groups(recipe):
        upstream_pending = [d for d in group.depends_on if d in kept_keys]
        if upstream_pending:
            shards = group.shards
        else:
            inspector = GroupInspector(run, recipe, group, known_digests)
            done = {s for s in group.shards if inspector.state(s).state == "done"}
            if sweep and group.phase in ("process", "task"):
                for shard_index, strays in run.stray_files(group.step, group.teacher).items():
                    for stray in strays:
                        if shard_index in done or (exclusive and stray.name.endswith(".tmp")):
                            stray.unlink(missing_ok=True)
            shards = [s for s in group.shards if s not in done]
        if shards:
            pending.append(TaskGroup(group.step, group.teacher, group.phase, shards, group.num_shards,
                                     group.resources, group.job_kind, upstream_pending))
            kept_keys.add(group.key)
    return pending
