"""Teachers and resources: the parts of a recipe that stages see (through their `StepView`) besides their config."""

from __future__ import annotations

from pydantic import Field

from distillery.core.config import StrictModel
from distillery.llm.protocol import ModelSpec, Sampling


class Resources(StrictModel):
    """What one task of a step asks the cluster for; the cluster profile adds partition, account, qos."""

    cpus_per_task: int = Field(1, ge=1, description="CPU cores per task.")
    mem_gb: float = Field(4, gt=0, description="Memory per node in GiB.")
    gpus_per_node: int = Field(0, ge=0, description="GPUs per node.")
    tasks_per_node: int = Field(1, ge=1, description="Tasks (ranks) per node: >1 for MPI or torch.distributed.")
    nodes: int = Field(1, ge=1, description="Nodes per task group.")
    time_min: int = Field(60, ge=1, description="Wall-clock limit per task in minutes; the task checkpoints and requeues.")
    job_kind: str | None = Field(None, description="Cluster-profile entry to use (cpu, gpu, mpi); defaults to the stage's kind.")


class TeacherConfig(ModelSpec):
    """One teacher model: how to reach it and how to sample it."""

    sampling: Sampling = Field(default_factory=Sampling)
    system_prompt: str | None = Field(None, description="System prompt; the default asks for <think>/<answer>.")
    resources: Resources | None = Field(None, description="Resources per generation shard; overrides the step's.")
