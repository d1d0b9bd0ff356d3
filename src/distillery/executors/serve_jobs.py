"""A served teacher's SLURM jobs: one job per replica (all nodes of the replica in it) and one small keeper job,
submitted beside the teacher's generate array with the same dependencies; their scripts for `distillery plan`.

Job ids go to the run's job ledger (<run>/_jobs.jsonl) under the groups `serve/<teacher>:replica` (shard index =
replica index) and `serve/<teacher>:keeper`, so `query_states` and `status` read them like array tasks.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from submitit.slurm.slurm import _make_sbatch_string

from distillery.core.plan import TaskGroup
from distillery.core.recipe import Recipe
from distillery.core.store import RunDir
from distillery.core.teachers import TeacherConfig
from distillery.executors.sacct import LIVE_STATES, append_jobs, query_states
from distillery.executors.sbatch import sbatch_parameters
from distillery.executors.slurm_profile import ClusterProfile
from distillery.serve.engine import engine_command, render
from distillery.serve.groups import keeper_group, replica_group, served_teacher

logger = logging.getLogger(__name__)


Clients = TypeVar("Clients")
"""What the client arrays' submission returns (the executor's job handles), passed through."""


def _script(recipe: Recipe, profile: ClusterProfile, run: RunDir, group: TaskGroup, index: int, command: str,
            dependencies: list[str] | None, comment: str, exports: tuple[str, ...] | list[str] = ()) -> str:
    params = sbatch_parameters(recipe, profile, group, dependencies)
    if exports:
        params["setup"] = [*params.get("setup", []), *exports]
    params["job_name"] = f"{recipe.name}.serve-{group.lineage}-{group.phase}-{index}"
    params.pop("array_parallelism", None)
    logs = run.serve_dir(str(group.lineage)) / "logs"
    script = _make_sbatch_string(command=command, folder=logs, **params)
    script = script.replace("export SUBMITIT_EXECUTOR=slurm\n", "")  # no submitit inside these jobs
    return script.replace("# command\n", f"# command\n# {comment}\n", 1)


def replica_script(recipe: Recipe, profile: ClusterProfile, run: RunDir, teacher: TeacherConfig, index: int,
                   dependencies: list[str] | None) -> str:
    """One srun task per node runs `distillery.serve.replica`, which starts the engine there (node 0 serves HTTP
    and records the endpoint once healthy; nodes 1.. join headless)."""
    group = replica_group(teacher, [])
    assert teacher.serve is not None
    exports = [f"export {name}={shlex.quote(value)}" for name, value in sorted(teacher.serve.env.items())]
    wrapper = [sys.executable, "-u", "-m", "distillery.serve.replica", str(run.root), teacher.name, str(index), "--"]
    comment = ("{model}, {node_rank}, {master_addr} are filled on each node; nodes 1.. add --headless"
               if group.resources.nodes > 1 else "{model} is filled on the node (the model reference, resolved)")
    return _script(recipe, profile, run, group, index, render(wrapper + engine_command(teacher, index)),
                   dependencies, comment, exports)


def keeper_script(recipe: Recipe, profile: ClusterProfile, run: RunDir, teacher: TeacherConfig, clients: str,
                  dependencies: list[str] | None) -> str:
    assert teacher.serve is not None
    command = [sys.executable, "-u", "-m", "distillery.executors.serve_keeper", str(run.root), teacher.name, clients,
               "--max-restarts", str(teacher.serve.max_restarts)]
    return _script(recipe, profile, run, keeper_group(teacher, []), 0, shlex.join(command), dependencies,
                   f"requeues a replica that dies; cancels every replica once {clients} has ended")


def describe_servers(recipe: Recipe, groups: list[TaskGroup]) -> str:
    """The server and keeper scripts of every served teacher's client group, as `submit` would write them."""
    from distillery.executors.slurm_profile import load_profile

    profile, run, parts = load_profile(recipe.executor.profile), RunDir(recipe.run_dir), []
    for group in groups:
        teacher = served_teacher(recipe, group)
        if teacher is None:
            continue
        dependencies = [f"<{key}>" for key in group.depends_on] or None
        for index in range(teacher.serve.replicas):  # type: ignore[union-attr]
            parts.append(f"\n# ---- sbatch for serve/{teacher.name}:replica {index} (server of {group.key}) ----\n"
                         + replica_script(recipe, profile, run, teacher, index, dependencies))
        parts.append(f"\n# ---- sbatch for serve/{teacher.name}:keeper ----\n"
                     + keeper_script(recipe, profile, run, teacher, group.key, dependencies))
    return "\n".join(parts)


def sbatch(script: str, dependencies: list[str] | None = None) -> str:
    """Submit a script on stdin; its job id. A dependency given here replaces none in the script (resubmission)."""
    done = subprocess.run(["sbatch", "--parsable"], input=script, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"sbatch failed ({done.returncode}): {done.stderr.strip()[:500]}")
    return done.stdout.strip().split(";")[0]


def script_path(run: RunDir, teacher: str, index: int) -> Path:
    """The replica's script as submitted, kept for the keeper's resubmissions (without dependencies)."""
    return run.serve_dir(teacher) / f"replica-{index}.sbatch"


def submit_served(recipe: Recipe, profile: ClusterProfile, run: RunDir, group: TaskGroup, dependencies: list[str],
                  submit_clients: Callable[[], Clients]) -> Clients:
    """Submit the servers of a served teacher's client group (unless live ones are already there), then the
    clients (`submit_clients`), then the keeper. Without a served teacher: just the clients."""
    teacher = served_teacher(recipe, group)
    if teacher is None:
        return submit_clients()
    assert teacher.serve is not None
    states = query_states(run)
    (run.serve_dir(teacher.name) / "logs").mkdir(parents=True, exist_ok=True)  # sbatch fails a job without it
    replicas = f"serve/{teacher.name}:replica"
    live = {index for (key, index), state in states.items() if key == replicas and state in LIVE_STATES}
    for index in range(teacher.serve.replicas):
        if index in live:
            continue
        path = script_path(run, teacher.name, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(replica_script(recipe, profile, run, teacher, index, None))
        job_id = sbatch(replica_script(recipe, profile, run, teacher, index, dependencies or None))
        append_jobs(run, {"group": replicas, "job_ids": [job_id], "shards": [index], "submitted": time.time()})
        logger.info("%s: replica %d submitted as %s", teacher.name, index, job_id)
    arrays = submit_clients()
    keeper = f"serve/{teacher.name}:keeper"
    if not any(key == keeper and state in LIVE_STATES for (key, _), state in states.items()):
        job_id = sbatch(keeper_script(recipe, profile, run, teacher, group.key, dependencies or None))
        append_jobs(run, {"group": keeper, "job_ids": [job_id], "shards": [0], "submitted": time.time()})
        logger.info("%s: server keeper submitted as %s", teacher.name, job_id)
    return arrays
