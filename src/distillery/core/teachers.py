"""Teachers and resources: the parts of a recipe that stages see (through their `StepView`) besides their config."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from distillery.core.config import StrictModel

Backend = Literal["vllm", "openai", "transformers", "replay", "synthetic"]


class Sampling(StrictModel):
    temperature: float = Field(0.6, ge=0, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(32768, ge=1, description="Most tokens generated per answer.")


class ModelSpec(StrictModel):
    """Which model to talk to and through which backend: all `build_chat_model` needs."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Short name, used in paths and reports.")
    model: str = Field(description="Model folder, hub id, served model name, or a dataset file for replay.")
    backend: Backend = Field("vllm", description="Generation backend.")
    options: dict[str, Any] = Field(default_factory=dict, description="Backend options (tensor_parallel_size, base_url, ...).")


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
