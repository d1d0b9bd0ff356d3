"""Cluster profiles: where each job kind (cpu, gpu, mpi) runs on a cluster and the most it may ask for.

One YAML file per cluster under slurm/profiles/; a group that does not fit its kind fails before anything is
submitted.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError

from distillery.core.config import StrictModel, format_validation_error, read_yaml, yaml_line_index
from distillery.core.plan import TaskGroup
from distillery.core.recipe import RecipeError


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
    max_array_size: int | None = Field(None, ge=1, description="Most tasks per job array; a larger group is submitted "
                                       "as several arrays. None: the cluster's MaxArraySize (scontrol show config).")
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
    data, text = read_yaml(path, "cluster profile", ProfileError)
    try:
        profile = ClusterProfile.model_validate(data)
    except ValidationError as error:
        raise ProfileError(format_validation_error(str(path), error, (), yaml_line_index(text))) from None
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
