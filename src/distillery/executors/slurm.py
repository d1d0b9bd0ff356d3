"""SLURM executor: one submitit job array per task group, `afterok` between groups, requeue on preemption.

Every array task runs `ShardTask`, an importable callable class holding no state, with `run_task`'s plain
arguments (run directory, step, teacher, phase, shard index). On USR2 (preemption, or `signal_delay_s` before
the time limit) submitit calls `ShardTask.checkpoint`, which resubmits the same task; the shard's item journal
makes the requeued task continue at its next unfinished item. Multi-rank groups (world_size > 1) run one
process per rank under srun; rank and world size come from submitit's job environment, plus MASTER_ADDR/PORT
for torch.distributed, and MPI kinds get `srun --mpi=<plugin>`.

Where and how jobs run (partition, account, qos, gres, limits per job kind) comes from a cluster profile YAML
(slurm/profiles/). Submitted job ids are appended to <run>/_jobs.jsonl; `query_states` reads them back with one
sacct call for `distillery status`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import subprocess
import time
from typing import Any

import submitit

from distillery.core.plan import TaskGroup
from distillery.core.recipe import Recipe
from distillery.core.runner import run_task
from distillery.core.store import RunDir
from distillery.executors import Executor, SchedulerStates
from distillery.executors.sacct import LIVE_STATES, append_jobs, query_states, submitted_tasks
from distillery.executors.sbatch import distributed_env, render_sbatch, sbatch_parameters, submitit_folder
from distillery.executors.slurm_detect import parse_config
from distillery.executors.slurm_profile import check_fits, load_profile
from distillery.serve.groups import server_groups
from distillery.serve.jobs import describe_servers, submit_served

logger = logging.getLogger(__name__)


class ShardTask(submitit.helpers.Checkpointable):
    """What every array task runs: `run_task` with plain arguments. It holds no state, so what is pickled for
    the job is a class reference plus strings and ints; recipe plugins are imported when the run's recipe loads."""

    def __call__(self, run_dir: str, step: str, teacher: str | None, phase: str, shard_index: int) -> dict[str, Any]:
        job = submitit.JobEnvironment()
        if job.num_tasks > 1:
            os.environ.update(distributed_env(job))
        return run_task(run_dir, step, teacher, phase, shard_index, rank=job.global_rank, world_size=job.num_tasks)

    def checkpoint(self, run_dir: str, step: str, teacher: str | None, phase: str,
                   shard_index: int) -> submitit.helpers.DelayedSubmission:
        """On USR2: requeue the same task; its item journal (every finished item written through) says where to
        continue."""
        logger.warning("%s %s shard %d: checkpoint and requeue", step, phase, shard_index)
        return submitit.helpers.DelayedSubmission(self, run_dir, step, teacher, phase, shard_index)


class SlurmExecutor(Executor):
    """Submits each task group as one submitit job array and returns once everything is queued."""

    blocking = False
    exclusive = False  # a queued or running array task may be writing any pending shard

    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        super().__init__(recipe, run)
        self.profile = load_profile(recipe.executor.profile)

    def describe(self, groups: list[TaskGroup]) -> str:
        arrays = "\n".join(f"\n# ---- sbatch for {group.key} ----\n{render_sbatch(self.recipe, group)}" for group in groups)
        return arrays + describe_servers(self.recipe, groups)

    def states(self) -> SchedulerStates:
        return query_states(self.run)

    @classmethod
    def has_submitted(cls, run: RunDir) -> bool:
        return run.jobs_file().exists()

    def execute(self, groups: list[TaskGroup]) -> bool:
        for group in groups:  # a group (or its teacher's servers) that does not fit fails before anything is submitted
            for checked in (group, *server_groups(self.recipe, group)):
                check_fits(self.profile, checked)
        states = query_states(self.run)
        live = {task: job_id for task, (job_id, _) in submitted_tasks(self.run).items()
                if states.get(task) in LIVE_STATES}
        job_of_group: dict[str, list[str]] = {}
        for group in groups:
            waiting = [live[(group.key, s)] for s in group.shards if (group.key, s) in live]
            shards = [s for s in group.shards if (group.key, s) not in live]
            if waiting:
                logger.info("%s: %d shard(s) still queued or running, not resubmitted", group.key, len(waiting))
            dependencies = [job_id for key in group.depends_on for job_id in job_of_group.get(key, [])]
            dependencies = sorted(set(dependencies))
            submitted = submit_served(self.recipe, self.profile, self.run, group, dependencies,
                                      lambda: self._submit(group, shards, dependencies)) if shards else []
            job_of_group[group.key] = submitted + waiting
        return True

    def _submit(self, group: TaskGroup, shards: list[int], dependencies: list[str]) -> list[str]:
        """One job array per chunk of at most the cluster's MaxArraySize tasks; the arrays' ids (what dependents
        wait on: afterok:<array id> covers every task of it)."""
        limit = self.profile.max_array_size or max_array_size()
        arrays: list[str] = []
        for start in range(0, len(shards), limit):
            chunk = shards[start : start + limit]
            folder = submitit_folder(self.recipe, self.run, group)
            executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=self.profile.max_timeouts)
            narrowed = dataclasses.replace(group, shards=chunk)
            executor.update_parameters(**sbatch_parameters(self.recipe, self.profile, narrowed, dependencies or None))
            count = len(chunk)
            jobs = executor.map_array(ShardTask(), [str(self.run.root)] * count, [group.step] * count,
                                      [group.teacher] * count, [group.phase] * count, chunk)
            job_ids = [job.job_id for job in jobs]
            append_jobs(self.run, {"group": group.key, "job_ids": job_ids, "shards": chunk, "submitted": time.time()})
            arrays += sorted({job_id.split("_")[0] for job_id in job_ids})
        logger.info("%s: submitted %d task(s) as %s%s", group.key, len(shards), ", ".join(arrays),
                    f" after {dependencies}" if dependencies else "")
        return arrays


@functools.cache
def max_array_size() -> int:
    """The cluster's MaxArraySize: array indices run 0 .. MaxArraySize - 1, so that many tasks fit one array."""
    done = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60, check=False)
    value = parse_config(done.stdout).get("MaxArraySize", "")
    if done.returncode != 0 or not value.isdigit():
        raise RuntimeError(f"cannot read MaxArraySize from `scontrol show config` ({done.returncode}): "
                           f"{done.stderr.strip()[:300]}; set max_array_size in the cluster profile")
    return int(value)
