"""What a SLURM job array looks like: sbatch parameters per group, the exact script submitit submits (for
`distillery plan`), and the torch.distributed environment of a multi-rank task."""

from __future__ import annotations

import re
import shlex
import sys
import zlib
from pathlib import Path
from typing import Any

import submitit

# submitit's own renderer and memory format (private names, used by its tests too): `plan` shows byte for byte
# the script `map_array` submits. setup.cfg pins submitit to the tested range for that reason.
from submitit.slurm.slurm import _convert_mem, _make_sbatch_string

from distillery.core.plan import TaskGroup
from distillery.core.recipe import Recipe
from distillery.core.store import RunDir
from distillery.executors.slurm_profile import ClusterProfile, check_fits, load_profile


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
