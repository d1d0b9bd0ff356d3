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
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import submitit
import yaml
from pydantic import Field, ValidationError

# submitit's own renderer and memory format (private names, used by its tests too): `plan` shows byte for byte
# the script `map_array` submits.
from submitit.slurm.slurm import _convert_mem, _make_sbatch_string

from distillery.core.config import StrictModel
from distillery.core.plan import TaskGroup
from distillery.core.recipe import Recipe, RecipeError
from distillery.core.runner import run_task
from distillery.core.store import RunDir
from distillery.executors.base import Executor

logger = logging.getLogger(__name__)

LIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
                         "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"})
"""sacct states of a task that is still queued or running: its shard must not be submitted again."""


ACCOUNTING_LAG_S = 60.0
"""How long after submission a job may still be missing from sacct (slurmctld reports to slurmdbd in batches)."""


class ProfileError(RecipeError):
    """A cluster profile that cannot be used, or a group that does not fit it; raised before any submission."""


class JobKindProfile(StrictModel):
    """Where tasks of one job kind (cpu, gpu, mpi) run on this cluster, and the most they may ask for."""

    partition: str | None = Field(None, description="SLURM partition; None uses the cluster's default partition.")
    account: str | None = Field(None, description="Account charged for the jobs (--account).")
    qos: str | None = Field(None, description="Quality of service (--qos).")
    gres: str | None = Field(None, description="GRES for GPUs, e.g. gpu or gpu:h100; the count is the step's "
                             "gpus_per_node.")
    constraint: str | None = Field(None, description="Node features required (--constraint).")
    exclusive: bool = Field(False, description="Ask for whole nodes (--exclusive).")
    mpi: str | None = Field(None, description="srun MPI plugin (--mpi=...) for this kind: pmi2 with the mpich wheel.")
    max_cpus_per_task: int | None = Field(None, ge=1, description="Most CPUs a task may ask for; None: no check.")
    max_mem_gb: float | None = Field(None, gt=0, description="Most GiB per node a task may ask for; None: no check.")
    max_gpus_per_node: int | None = Field(None, ge=0, description="Most GPUs per node a task may ask for; None: no "
                                          "check.")
    max_time_min: int | None = Field(None, ge=1, description="Partition time limit in minutes; None: no check.")
    setup: list[str] = Field(default_factory=list, description="Shell lines run before the task (module load, venv).")
    sbatch: dict[str, str | int | bool] = Field(default_factory=dict, description="Extra #SBATCH flags without the "
                                                "dashes, e.g. {mail-type: FAIL}.")


class ClusterProfile(StrictModel):
    """A cluster's job kinds and requeue policy; one YAML file per cluster under slurm/profiles/."""

    name: str = Field(description="Cluster name, shown in plans and logs.")
    job_kinds: dict[str, JobKindProfile] = Field(description="Settings per job kind (cpu, gpu, mpi).")
    signal_delay_s: int = Field(90, ge=10, description="USR2 this long before the time limit: checkpoint and requeue.")
    max_timeouts: int = Field(3, ge=0, description="Requeues at the time limit per task; preemptions do not count.")
    source: str = Field("<default>", exclude=True, description="File the profile was read from, for error messages.")

    def kind(self, group: TaskGroup) -> JobKindProfile:
        if group.job_kind not in self.job_kinds:
            raise ProfileError(f"{self.source}: job_kinds: no entry {group.job_kind!r} for {group.key}; "
                               f"the profile has {sorted(self.job_kinds)}")
        return self.job_kinds[group.job_kind]


def default_profile() -> ClusterProfile:
    """Used when a recipe names no profile: the cluster's default partition and account for every kind."""
    return ClusterProfile(name="default", job_kinds={"cpu": JobKindProfile(), "gpu": JobKindProfile(gres="gpu"),
                                                     "mpi": JobKindProfile(mpi="pmi2")})


def load_profile(path: Path | str | None) -> ClusterProfile:
    """Read and validate a profile; errors name the file and the field."""
    if path is None:
        return default_profile()
    path = Path(path)
    if not path.exists():
        raise ProfileError(f"{path}: cluster profile does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ProfileError(f"{path}: not valid YAML: {error}") from None
    try:
        profile = ClusterProfile.model_validate(data)
    except ValidationError as error:
        lines = []
        for item in error.errors():
            field = ".".join(str(part) for part in item["loc"]) or "<top>"
            expected = "unknown field" if item["type"] == "extra_forbidden" else item["msg"]
            lines.append(f"{path}: {field}: {expected} (got {item.get('input')!r:.80})")
        raise ProfileError("\n".join(lines)) from None
    profile.source = str(path)
    return profile


def check_fits(profile: ClusterProfile, group: TaskGroup) -> None:
    """Raise ProfileError when a group's resources do not fit its job kind on this cluster."""
    kind = profile.kind(group)
    res = group.resources
    where = f"{profile.source}: job_kinds.{group.job_kind}"
    limits = [("cpus_per_task", res.cpus_per_task, kind.max_cpus_per_task),
              ("mem_gb", res.mem_gb, kind.max_mem_gb),
              ("gpus_per_node", res.gpus_per_node, kind.max_gpus_per_node),
              ("time_min", res.time_min, kind.max_time_min)]
    for name, asked, most in limits:
        if most is not None and asked > most:
            raise ProfileError(f"{where}: {group.key} asks {name}={asked} but this kind allows at most {most}")
    if res.gpus_per_node and not kind.gres:
        raise ProfileError(f"{where}: {group.key} asks {res.gpus_per_node} GPUs per node but the kind has no gres")


def group_slug(group: TaskGroup) -> str:
    """A file-system and job-name safe name for a group: ingest:process -> ingest-process."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", group.key)


def submitit_folder(recipe: Recipe, run: RunDir, group: TaskGroup) -> Path:
    """submitit's files for one group; %j becomes <array id>_<index>, one folder (and log) per shard task."""
    base = recipe.executor.submitit_dir or (run.root / "_submitit")
    return Path(base) / group_slug(group) / "%j"


def sbatch_parameters(recipe: Recipe, profile: ClusterProfile, group: TaskGroup,
                      dependency_ids: list[str] | None = None) -> dict[str, Any]:
    """The group's sbatch settings, in the parameter names submitit's SlurmExecutor takes."""
    check_fits(profile, group)
    kind = profile.kind(group)
    res = group.resources
    params: dict[str, Any] = {
        "job_name": f"{recipe.name}.{group_slug(group)}",
        "time": res.time_min,
        "nodes": res.nodes,
        "ntasks_per_node": res.tasks_per_node,
        "cpus_per_task": res.cpus_per_task,
        "mem": _convert_mem(res.mem_gb),
        "partition": kind.partition,
        "account": kind.account,
        "qos": kind.qos,
        "constraint": kind.constraint,
        "gres": f"{kind.gres}:{res.gpus_per_node}" if res.gpus_per_node else None,
        "exclusive": True if kind.exclusive else None,
        "signal_delay_s": profile.signal_delay_s,
        "array_parallelism": recipe.executor.array_parallelism,
        "setup": list(kind.setup) or None,
        "srun_args": [f"--mpi={kind.mpi}"] if kind.mpi else None,
        # Requeue must be allowed on clusters where JobRequeue=0; a failed dependency cancels its dependents.
        "additional_parameters": {"requeue": True, **({"kill-on-invalid-dep": "yes"} if dependency_ids else {}),
                                  **kind.sbatch},
        "dependency": "afterok:" + ":".join(dependency_ids) if dependency_ids else None,
    }
    return {key: value for key, value in params.items() if value is not None}


def _worker_command(folder: Path) -> str:
    """The command submitit puts in the sbatch script (`SlurmExecutor._submitit_command_str`)."""
    return " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])


def render_sbatch(recipe: Recipe, group: TaskGroup) -> str:
    """The exact sbatch script `SlurmExecutor` submits for this group (for `distillery plan`; submits nothing).

    Dependencies are shown by group key (`afterok:<ingest:process>`): their job ids exist only once submitted.
    """
    profile = load_profile(recipe.executor.profile)
    run = RunDir(recipe.run_dir)
    folder = submitit_folder(recipe, run, group)
    dependencies = [f"<{key}>" for key in group.depends_on] or None
    params = sbatch_parameters(recipe, profile, group, dependencies)
    map_count = len(group.shards) if len(group.shards) > 1 else None
    return _make_sbatch_string(command=_worker_command(folder), folder=folder, map_count=map_count, **params)


def distributed_env(job: submitit.JobEnvironment) -> dict[str, str]:
    """torch.distributed's env:// variables for a multi-rank task; the port is derived from the job id so every
    rank agrees on it without talking, and is not inherited from the submitting shell."""
    port = 20000 + zlib.crc32(job.job_id.encode()) % 30000
    return {"MASTER_ADDR": job.hostnames[0], "MASTER_PORT": str(port), "RANK": str(job.global_rank),
            "WORLD_SIZE": str(job.num_tasks), "LOCAL_RANK": str(job.local_rank),
            "LOCAL_WORLD_SIZE": str(job.num_tasks // job.num_nodes)}


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
        """On USR2: requeue the same task; its item journal (fsynced per item) says where to continue."""
        logger.warning("%s %s shard %d: checkpoint and requeue", step, phase, shard_index)
        return submitit.helpers.DelayedSubmission(self, run_dir, step, teacher, phase, shard_index)


def _append_jobs(run: RunDir, entry: dict[str, Any]) -> None:
    run.jobs_file().parent.mkdir(parents=True, exist_ok=True)
    with run.jobs_file().open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _submitted_tasks(run: RunDir) -> dict[tuple[str, int], tuple[str, float]]:
    """(group key, shard index) -> (job id, submission time) of its latest submission, from <run>/_jobs.jsonl."""
    latest: dict[tuple[str, int], tuple[str, float]] = {}
    if not run.jobs_file().exists():
        return latest
    for line in run.jobs_file().read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            for job_id, shard_index in zip(entry["job_ids"], entry["shards"]):
                latest[(entry["group"], int(shard_index))] = (job_id, float(entry["submitted"]))
    return latest


def _expand_job_ids(job_id: str) -> list[str]:
    """sacct's `123_[0-3,7%2]` (pending array tasks grouped) -> 123_0 .. 123_3, 123_7; other ids unchanged."""
    match = re.fullmatch(r"(\d+)_\[([^\]%]+)(?:%\d+)?\]", job_id)
    if not match:
        return [job_id]
    array_id, ranges = match.groups()
    ids = []
    for part in ranges.split(","):
        first, _, last = part.partition("-")
        ids += [f"{array_id}_{index}" for index in range(int(first), int(last or first) + 1)]
    return ids


def parse_sacct(output: str) -> dict[str, str]:
    """`sacct -P -X -D -o JobID,State` lines -> job id -> state of its latest run. A task that was requeued,
    preempted or timed out and now waits to run again reads REQUEUED."""
    history: dict[str, list[str]] = {}
    for line in output.splitlines():
        job_id, _, state = line.partition("|")
        state = state.split(" ")[0]  # "CANCELLED by 0" -> CANCELLED
        for task_id in _expand_job_ids(job_id):
            history.setdefault(task_id, []).append(state)
    states = {}
    for task_id, runs in history.items():
        interrupted = any(state in ("REQUEUED", "PREEMPTED", "TIMEOUT", "NODE_FAIL") for state in runs[:-1])
        states[task_id] = "REQUEUED" if runs[-1] == "PENDING" and interrupted else runs[-1]
    return states


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """job id -> state of its latest run, from one sacct call over the arrays these ids belong to."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    if not arrays:
        return {}
    command = ["sacct", "--noheader", "--parsable2", "--allocations", "--duplicates",
               "--format=JobID,State", "--jobs", ",".join(arrays)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return parse_sacct(done.stdout)


def query_states(run: RunDir | str | Path) -> dict[tuple[str, int], str]:
    """(group key, shard index) -> SLURM state of its latest submission (PENDING, RUNNING, COMPLETED, FAILED,
    REQUEUED, PREEMPTED, TIMEOUT, CANCELLED, ...), from one sacct call. Empty when nothing was submitted.

    A job submitted in the last minute that accounting does not list yet reads PENDING."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    submitted = _submitted_tasks(run)
    states = sacct_states([job_id for job_id, _ in submitted.values()])
    result = {}
    for task, (job_id, when) in submitted.items():
        if job_id in states:
            result[task] = states[job_id]
        elif time.time() - when < ACCOUNTING_LAG_S:
            result[task] = "PENDING"
    return result


class SlurmExecutor(Executor):
    """Submits each task group as one submitit job array and returns once everything is queued."""

    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        super().__init__(recipe, run)
        self.profile = load_profile(recipe.executor.profile)

    def execute(self, groups: list[TaskGroup]) -> bool:
        for group in groups:  # a group that does not fit fails before anything is submitted
            check_fits(self.profile, group)
        states = query_states(self.run)
        live = {task: job_id for task, (job_id, _) in _submitted_tasks(self.run).items()
                if states.get(task) in LIVE_STATES}
        job_of_group: dict[str, list[str]] = {}
        for group in groups:
            waiting = [live[(group.key, s)] for s in group.shards if (group.key, s) in live]
            shards = [s for s in group.shards if (group.key, s) not in live]
            if waiting:
                logger.info("%s: %d shard(s) still queued or running, not resubmitted", group.key, len(waiting))
            dependencies = [job_id for key in group.depends_on for job_id in job_of_group.get(key, [])]
            submitted = self._submit(group, shards, sorted(set(dependencies))) if shards else []
            job_of_group[group.key] = submitted + waiting
        return True

    def _submit(self, group: TaskGroup, shards: list[int], dependencies: list[str]) -> list[str]:
        folder = submitit_folder(self.recipe, self.run, group)
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=self.profile.max_timeouts)
        narrowed = dataclasses.replace(group, shards=shards)
        executor.update_parameters(**sbatch_parameters(self.recipe, self.profile, narrowed, dependencies or None))
        count = len(shards)
        jobs = executor.map_array(ShardTask(), [str(self.run.root)] * count, [group.step] * count,
                                  [group.teacher] * count, [group.phase] * count, shards)
        job_ids = [job.job_id for job in jobs]
        _append_jobs(self.run, {"group": group.key, "job_ids": job_ids, "shards": shards, "submitted": time.time()})
        logger.info("%s: submitted %d task(s) as %s%s", group.key, count, job_ids[0].split("_")[0],
                    f" after {dependencies}" if dependencies else "")
        # Dependents wait on whole arrays (afterok:<array id> covers every task of it).
        return sorted({job_id.split("_")[0] for job_id in job_ids})
