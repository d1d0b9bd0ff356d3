"""The rehearsal recipe through the real SLURM cluster against the same recipe run here: identical output, and a
kill of some array tasks followed by `resume` that reruns exactly what the kill lost.

Shared by `benchmarks/rehearsal_slurm.py` (10,000 queries) and `tests/slurm/test_slurm_slice.py` (a few hundred).
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distillery.core.console import CONSOLE
from distillery.core.plan import GroupInspector, build_groups, pending_groups
from distillery.core.recipe import load_recipe
from distillery.core.runner import load_run_recipe
from distillery.core.store import RunDir
from distillery.executors import build_executor
from distillery.executors.handles import all_done
from distillery.executors.sacct import squeue_states, submitted_tasks
from distillery.testing.slurm import CHECKOUT, DEV_PROFILE

REHEARSAL = CHECKOUT / "jobs" / "rehearsal.yaml"

logger = logging.getLogger(__name__)


def rehearsal_recipe(path: Path, run_dir: Path, data: Path, num_shards: int, *, slurm_profile: Path | None = None,
                     cache_dir: Path | None = None, steps: list[str] | None = None,
                     teachers: list[str] | None = None) -> Path:
    """jobs/rehearsal.yaml over the queries `distillery synth` wrote to `data`, written to `path`: run locally, or
    on SLURM with `slurm_profile`; optionally cut to the named steps and teachers (same settings otherwise)."""
    recipe = yaml.safe_load(REHEARSAL.read_text())
    recipe["run_dir"] = str(run_dir)
    recipe["num_shards"] = num_shards
    for spec in recipe["steps"]["ingest"]["inputs"]:
        spec["path"] = str(data / Path(spec["path"]).name)
    if cache_dir is not None:
        recipe["steps"]["decontaminate"]["cache_dir"] = str(cache_dir)
    if steps is not None:
        recipe["steps"] = {name: config for name, config in recipe["steps"].items() if name in steps}
    if teachers is not None:
        recipe["teachers"] = [t for t in recipe["teachers"] if t["name"] in teachers]
        layouts = recipe["steps"].get("normalise", {}).get("layouts")
        if layouts:
            recipe["steps"]["normalise"]["layouts"] = {t: layouts[t] for t in teachers}
    if slurm_profile is not None:
        recipe["executor"] = {"kind": "slurm", "profile": str(slurm_profile)}
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def small_array_profile(path: Path, max_array_size: int) -> Path:
    """The dev cluster's profile with job arrays of at most `max_array_size` tasks, so groups split into chunks."""
    path.write_text(DEV_PROFILE.read_text() + f"max_array_size: {max_array_size}\n")
    return path


def run_local(recipe_path: Path) -> dict[str, float]:
    """Run the recipe with its own (local) executor to the end; wall seconds per task group."""
    recipe = load_recipe(recipe_path, [])
    run = RunDir(recipe.run_dir)
    _snapshot(recipe, run)
    recipe = load_run_recipe(run)
    executor = build_executor(recipe, run)
    if not all_done(executor.execute(pending_groups(run, recipe, sweep=True, exclusive=True))):
        raise RuntimeError(f"the local run failed; logs: {run.root / 'logs'}")
    return executor.timings


def _snapshot(recipe: Any, run: RunDir) -> None:
    from distillery.cli import _write_snapshot

    _write_snapshot(recipe, run)


def submit(recipe_path: Path, resume: bool = False) -> tuple[RunDir, list[Any]]:
    """`distillery submit` (or `resume` of the recipe's run): every pending shard queued; the handles."""
    recipe = load_recipe(recipe_path, [])
    run = RunDir(recipe.run_dir)
    if not resume:
        _snapshot(recipe, run)
    recipe = load_run_recipe(run)
    executor = build_executor(recipe, run, "slurm")
    return run, executor.execute(pending_groups(run, recipe, sweep=True, exclusive=False))


def wait_for_run(run: RunDir, handles: list[Any], poll_s: float = 2.0, timeout_s: float = 3600) -> bool:
    """Wait until every task ended and the cluster lists none of the run's jobs any more (a cancelled task may
    still be running its last seconds, COMPLETING); whether every task completed. Fails after `timeout_s`."""
    deadline = time.time() + timeout_s
    while True:
        for kind in {type(handle) for handle in handles}:
            kind.refresh()
        if all(handle.finished() for handle in handles) and not queued(run):
            return all_done(handles)
        if time.time() > deadline:
            unfinished_handles = "\n".join(str(handle) for handle in handles if not handle.finished())
            raise TimeoutError(f"{run.root}: not finished after {timeout_s:.0f}s:\n{unfinished_handles}\n"
                               f"still queued: {queued(run)[:20]}")
        time.sleep(poll_s)


def queued(run: RunDir) -> list[str]:
    """The run's array tasks squeue still lists (pending, running or completing)."""
    return sorted(squeue_states([job_id for job_id, _ in submitted_tasks(run).values()]))


def kill_tasks(run: RunDir, group: str, pending: list[int], running: list[int], poll_s: float = 0.3,
               timeout_s: float = 1800) -> dict[int, str]:
    """`scancel` array tasks of one group: those of `pending` at once (behind their dependencies, they are still
    PENDING), those of `running` as soon as squeue shows them RUNNING. Shard -> the state each was cancelled in,
    or `ended` for one that finished before it could be caught."""
    job_of = {shard: job_id for (key, shard), (job_id, _) in submitted_tasks(run).items() if key == group}
    killed: dict[int, str] = {}
    waiting = set(running)
    now = squeue_states([job_of[shard] for shard in pending])
    for shard in pending:
        _scancel(job_of[shard])
        killed[shard] = now.get(job_of[shard], "ended")
    deadline = time.time() + timeout_s
    while waiting and time.time() < deadline:
        states = squeue_states([job_of[shard] for shard in waiting])
        for shard in sorted(waiting):
            state = states.get(job_of[shard])
            if state == "RUNNING":
                _scancel(job_of[shard])
                killed[shard] = "RUNNING"
            elif state is None or state not in ("PENDING", "CONFIGURING"):
                killed[shard] = "ended"
            else:
                continue
            waiting.discard(shard)
        time.sleep(poll_s)
    logger.info("%s: cancelled %s", group, killed, extra=CONSOLE)
    return killed


def _scancel(job_id: str) -> None:
    subprocess.run(["scancel", job_id], check=True, capture_output=True)


def unfinished(run: RunDir) -> dict[str, set[int]]:
    """Group key -> shards with no manifest (scan or merge: no marker), from the run's files alone."""
    recipe = load_run_recipe(run)
    missing = {}
    for group in build_groups(recipe):
        inspector = GroupInspector(run, recipe, group)
        shards = {s for s in group.shards if inspector.state(s, check_inputs=False).state != "done"}
        if shards:
            missing[group.key] = shards
    return missing


def submissions(run: RunDir, after: int = 0) -> dict[str, set[int]]:
    """Group key -> shards submitted by the ledger's lines after the first `after` (what one `resume` queued)."""
    lines = run.jobs_file().read_text(encoding="utf-8").splitlines()[after:]
    found: dict[str, set[int]] = {}
    for line in lines:
        entry = json.loads(line)
        found.setdefault(entry["group"], set()).update(entry["shards"])
    return found


@dataclass
class KillResume:
    """What a kill of some array tasks lost, and what `resume` then reran."""

    group: str
    killed: dict[int, str]
    """Shard -> the state its task was cancelled in (PENDING, RUNNING) or `ended` (finished before the kill)."""
    lost: dict[str, set[int]] = field(default_factory=dict)
    """Group -> shards without a manifest once the killed run ended (a killed group's, and every group after it)."""
    rerun: dict[str, set[int]] = field(default_factory=dict)
    """Group -> shards that `resume` submitted."""
    submit_s: float = 0.0
    resume_s: float = 0.0
    resumed_ok: bool = False

    @property
    def lost_in_group(self) -> set[int]:
        return self.lost.get(self.group, set())

    @property
    def cancelled(self) -> set[int]:
        return {shard for shard, state in self.killed.items() if state != "ended"}

    def verdict(self) -> list[str]:
        """Why resume did not rerun exactly what the kill lost; empty when it did."""
        problems = []
        if self.lost_in_group - self.cancelled:
            problems.append(f"{self.group}: shards {sorted(self.lost_in_group - self.cancelled)} lost but not killed")
        for key in sorted(self.lost.keys() | self.rerun.keys()):
            lost, rerun = self.lost.get(key, set()), self.rerun.get(key, set())
            if lost != rerun:
                problems.append(f"{key}: lost {sorted(lost)}, rerun {sorted(rerun)}")
        if not self.resumed_ok:
            problems.append("the resumed run did not complete")
        return problems


def kill_and_resume(recipe_path: Path, group: str, pending: list[int], running: list[int],
                    timeout_s: float = 3600) -> KillResume:
    """Submit the recipe's run, cancel the given array tasks of `group` (see `kill_tasks`), let the run end, then
    `resume` it and wait for it to end (each at most `timeout_s`)."""
    started = time.perf_counter()
    run, handles = submit(recipe_path)
    report = KillResume(group, kill_tasks(run, group, pending, running, timeout_s=timeout_s))
    wait_for_run(run, handles, timeout_s=timeout_s)
    report.submit_s = time.perf_counter() - started
    report.lost = unfinished(run)
    ledger_lines = len(run.jobs_file().read_text(encoding="utf-8").splitlines())
    started = time.perf_counter()
    run, handles = submit(recipe_path, resume=True)
    report.resumed_ok = wait_for_run(run, handles, timeout_s=timeout_s)
    report.resume_s = time.perf_counter() - started
    report.rerun = submissions(run, ledger_lines)
    return report
