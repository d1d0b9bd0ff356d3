"""Teachers and resources: the parts of a recipe that stages see (through their `StepView`) besides their config."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

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


class ServeConfig(StrictModel):
    """A teacher served by distillery itself: each replica its own SLURM job running the engine's HTTP server,
    the generate array its clients (`distillery.serve`)."""

    replicas: int = Field(1, ge=1, description="Server replicas, each its own SLURM job; clients balance over them.")
    nodes_per_replica: int = Field(1, ge=1, description="Nodes per replica (>1: the engine's multi-node mode).")
    gpus_per_node: int = Field(0, ge=0, description="GPUs per node of a replica.")
    engine: Literal["vllm"] = Field("vllm", description="The server: vLLM's OpenAI-compatible `vllm serve`.")
    engine_args: dict[str, Any] = Field(default_factory=dict, description=(
        "Server flags without dashes (tensor_parallel_size: 8, max_model_len: 40960, enforce_eager: true); "
        "distillery adds host, port and the multi-node flags."))
    port: int = Field(8000, ge=1024, le=65000, description="HTTP port of replica 0; replica i listens on port + i.")
    cpus_per_node: int = Field(8, ge=1, description="CPU cores per node of a replica.")
    mem_gb: float = Field(64, gt=0, description="Memory per node of a replica in GiB.")
    time_min: int = Field(1440, ge=1, description="Wall-clock limit of a replica job (it is cancelled when the "
                          "generate array ends).")
    job_kind: str = Field("gpu", description="Cluster-profile entry the replica jobs use.")
    max_restarts: int = Field(3, ge=0, description="Resubmissions per replica after it died (not counting the "
                              "scheduler's own requeues after preemption).")
    start_timeout_s: float = Field(3600, gt=0, description="How long a client waits for a first healthy replica.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment of the server processes.")


class TeacherConfig(ModelSpec):
    """One teacher model: how to reach it and how to sample it."""

    sampling: Sampling = Field(default_factory=Sampling)
    system_prompt: str | None = Field(None, description="System prompt; the default asks for <think>/<answer>.")
    resources: Resources | None = Field(None, description="Resources per generation shard; overrides the step's.")
    serve: ServeConfig | None = Field(None, description=(
        "distillery starts, balances and stops this teacher's servers (SLURM executor); backend must be openai."))

    @model_validator(mode="after")
    def _served_over_http(self) -> TeacherConfig:
        if self.serve is not None:
            if self.backend != "openai":
                raise ValueError(f"teacher {self.name!r}: a served teacher is reached over HTTP: set backend: openai "
                                 f"(got {self.backend})")
            if "base_url" in self.options:
                raise ValueError(f"teacher {self.name!r}: options.base_url is set by distillery for a served teacher "
                                 "(its replicas' endpoints): remove it")
        return self
