"""SLURM executor: one submitit job array per task group, `afterok` between groups, requeue on preemption.

Every array task runs `ShardTask`, an importable callable class holding no state, with `run_task`'s plain
arguments (run directory, step, lineage, phase, shard index). On USR2 (preemption, or `signal_delay_s` before
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

from distillery.core.console import CONSOLE
from distillery.core.plan import TaskGroup
from distillery.core.recipe import Recipe
from distillery.core.runner import run_task
from distillery.core.store import RunDir
from distillery.executors import Executor, SchedulerStates
from distillery.executors.handles import FINAL_STATES, JobHandle
from distillery.executors.sacct import (
    ACCOUNTING_LAG_S,
    LIVE_STATES,
    append_jobs,
    query_states,
    squeue_states,
    submitted_tasks,
)
from distillery.executors.sbatch import distributed_env, render_sbatch, sbatch_parameters, submitit_folder
from distillery.executors.slurm_detect import parse_config
from distillery.executors.slurm_profile import check_fits, load_profile
from distillery.serve.groups import server_groups
from distillery.executors.serve_jobs import describe_servers, submit_served

logger = logging.getLogger(__name__)


class ShardTask(submitit.helpers.Checkpointable):
    """What every array task runs: `run_task` with plain arguments. It holds no state, so what is pickled for
    the job is a class reference plus strings and ints; recipe plugins are imported when the run's recipe loads."""

    def __call__(self, run_dir: str, step: str, lineage: str | None, phase: str, shard_index: int) -> dict[str, Any]:
        job = submitit.JobEnvironment()
        if job.num_tasks > 1:
            os.environ.update(distributed_env(job))
        return run_task(run_dir, step, lineage, phase, shard_index, rank=job.global_rank, world_size=job.num_tasks)

    def checkpoint(self, run_dir: str, step: str, lineage: str | None, phase: str,
                   shard_index: int) -> submitit.helpers.DelayedSubmission:
        """On USR2: requeue the same task; its item journal (every finished item written through) says where to
        continue."""
        logger.warning("%s %s shard %d: checkpoint and requeue", step, phase, shard_index)
        return submitit.helpers.DelayedSubmission(self, run_dir, step, lineage, phase, shard_index)


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

    def execute(self, groups: list[TaskGroup]) -> list[JobHandle]:
        for group in groups:  # a group (or its teacher's servers) that does not fit fails before anything is submitted
            for checked in (group, *server_groups(self.recipe, group)):
                check_fits(self.profile, checked)
        wait_for_ending(self.run)
        states = query_states(self.run)
        live = {task: job_id for task, (job_id, _) in submitted_tasks(self.run).items()
                if states.get(task) in LIVE_STATES}
        handles: list[JobHandle] = []
        job_of_group: dict[str, list[str]] = {}
        for group in groups:
            waiting = {s: live[(group.key, s)] for s in group.shards if (group.key, s) in live}
            shards = [s for s in group.shards if s not in waiting]
            if waiting:
                logger.info("%s: %d shard(s) still queued or running, not resubmitted", group.key, len(waiting))
                handles.append(SubmititHandle(group.key, list(waiting), [self._job(group, job_id)
                                                                         for job_id in waiting.values()]))
            dependencies = [job_id for key in group.depends_on for job_id in job_of_group.get(key, [])]
            dependencies = sorted(set(dependencies))
            submitted = submit_served(self.recipe, self.profile, self.run, group, dependencies,
                                      lambda: self._submit(group, shards, dependencies)) if shards else []
            handles += submitted
            # afterok on a waiting task's own id: its array may hold tasks that failed and are submitted anew.
            job_of_group[group.key] = [handle.job_id for handle in submitted] + list(waiting.values())
        return handles

    def _job(self, group: TaskGroup, job_id: str) -> submitit.SlurmJob:
        """A submitit handle of an array task submitted earlier (by another `submit` or `resume`)."""
        return submitit.SlurmJob(folder=submitit_folder(self.recipe, self.run, group), job_id=job_id,
                                 tasks=list(range(group.world_size)))

    def _submit(self, group: TaskGroup, shards: list[int], dependencies: list[str]) -> list[SubmititHandle]:
        """One job array per chunk of at most the cluster's MaxArraySize tasks, a handle each (its job id, the
        array's, is what dependents wait on: afterok:<array id> covers every task of it)."""
        limit = self.profile.max_array_size or max_array_size()
        handles: list[SubmititHandle] = []
        for start in range(0, len(shards), limit):
            chunk = shards[start : start + limit]
            folder = submitit_folder(self.recipe, self.run, group)
            executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=self.profile.max_timeouts)
            narrowed = dataclasses.replace(group, shards=chunk)
            executor.update_parameters(**sbatch_parameters(self.recipe, self.profile, narrowed, dependencies or None))
            count = len(chunk)
            jobs = executor.map_array(ShardTask(), [str(self.run.root)] * count, [group.step] * count,
                                      [group.lineage] * count, [group.phase] * count, chunk)
            append_jobs(self.run, {"group": group.key, "job_ids": [job.job_id for job in jobs], "shards": chunk,
                                   "submitted": time.time()})
            handles.append(SubmititHandle(group.key, chunk, jobs))
        logger.info("%s: submitted %d task(s) as %s%s", group.key, len(shards), ", ".join(h.job_id for h in handles),
                    f" after {dependencies}" if dependencies else "")
        return handles


class SubmititHandle(JobHandle):
    """Array tasks submitted through submitit, read through its `Job` objects: a task is over once its result
    file is written (COMPLETED, or FAILED when it holds an error); until then its state is sacct's, which
    submitit's watcher shared by every job reads for all of them in one call."""

    def __init__(self, key: str, shards: list[int], jobs: list[submitit.Job]) -> None:
        super().__init__(key, shards)
        self.jobs = jobs
        """One per shard, in `shards` order."""
        self._final: dict[int, str] = {}
        self._since = time.time()

    @property
    def job_id(self) -> str:
        return ",".join(sorted({job.job_id.split("_")[0] for job in self.jobs}, key=int))

    @classmethod
    def refresh(cls) -> None:
        submitit.SlurmJob.watcher.update()

    def shard_states(self) -> dict[int, str]:
        states = {shard: self._final.get(shard) or task_state(job) for shard, job in zip(self.shards, self.jobs)}
        unknown = {shard for shard, state in states.items() if state == "UNKNOWN"}
        if unknown and time.time() - self._since > ACCOUNTING_LAG_S:
            # A pending array task cancelled before it ever ran may never reach accounting (slurmctld drops it
            # from the array): once the controller does not list it either, it is over.
            queued = squeue_states([job.job_id for shard, job in zip(self.shards, self.jobs) if shard in unknown])
            states.update({shard: "CANCELLED" for shard, job in zip(self.shards, self.jobs)
                           if shard in unknown and job.job_id not in queued})
        for shard, state in states.items():
            if state in FINAL_STATES:
                self._final[shard] = state  # its result file and sacct are not read again
        return {shard: "PENDING" if state == "UNKNOWN" else state for shard, state in states.items()}


def task_state(job: submitit.Job) -> str:
    """One array task's state: from its result files once every rank wrote one, else from sacct (UNKNOWN: sacct
    does not list it, yet or at all)."""
    if all(job.task(rank).paths.result_pickle.exists() for rank in range(job.num_tasks)):
        return "COMPLETED" if job.exception() is None else "FAILED"
    return job.state.split(" ")[0]  # "CANCELLED by 0" -> CANCELLED


ENDING_TIMEOUT_S = 600.0
"""How long `execute` waits for cancelled tasks to end (the cluster's KillWait, 30 s by default, plus slack)."""


def wait_for_ending(run: RunDir, poll_s: float = 2.0, timeout_s: float = ENDING_TIMEOUT_S) -> None:
    """Wait until no task of the run is COMPLETING. `scancel` sends SIGTERM, which submitit ignores, and SIGKILL
    KillWait seconds later: meanwhile sacct already says CANCELLED but the task may still append to its shard's
    journal, and a second task submitted for that shard now would be a second writer of it."""
    job_ids = [job_id for job_id, _ in submitted_tasks(run).values()]
    deadline = time.monotonic() + timeout_s
    announced = False
    while True:
        ending = sorted(job_id for job_id, state in squeue_states(job_ids).items() if state == "COMPLETING")
        if not ending:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"tasks {', '.join(ending[:10])} still COMPLETING after {timeout_s:.0f}s: their "
                               "processes may still write their shards; submit again once squeue no longer lists them")
        if not announced:
            logger.info("waiting for %d cancelled task(s) to end before submitting: %s", len(ending),
                        ", ".join(ending[:10]), extra=CONSOLE)
            announced = True
        time.sleep(poll_s)


@functools.cache
def max_array_size() -> int:
    """The cluster's MaxArraySize: array indices run 0 .. MaxArraySize - 1, so that many tasks fit one array."""
    done = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60, check=False)
    value = parse_config(done.stdout).get("MaxArraySize", "")
    if done.returncode != 0 or not value.isdigit():
        raise RuntimeError(f"cannot read MaxArraySize from `scontrol show config` ({done.returncode}): "
                           f"{done.stderr.strip()[:300]}; set max_array_size in the cluster profile")
    return int(value)
