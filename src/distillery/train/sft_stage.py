"""The `sft` stage: fine-tune the student on one lineage's packed traces with Megatron-core, then export.

Its data is every shard file of its pack step, read as one dataset: shard after shard, each in bin order.

Runs as one task of `world_size` ranks (a multi-task SLURM job, one rank per task; or spawned processes
locally); tensor parallel size `tensor_parallel`, `pipeline_parallel` stages, data parallel over the remaining
ranks. A task killed or requeued is simply run again: it resumes from the newest checkpoint in its work
directory, with the same or another TP, PP and DP size (checkpoint.py).

Outputs in <run>/<step>/<teacher>/: `metrics.jsonl` (loss, lr, trained tokens/s, MFU, masked and padding tokens
per step) and `hf/`, the trained student as a Hugging Face folder for evaluation; the manifest's stats carry the
run's median throughput and token totals. `distillery plan` prints the step's per-GPU memory (memory.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from distillery.core.pricing import Priced, Pricing
from distillery.core.stage import ShardContext, StageConfig, TaskResult, TaskStage, register
from distillery.hardware import AUTO, choose_dtype
from distillery.core.store import config_digest
from distillery.core.teachers import Resources
from distillery.train.pack_stage import PackConfig

if TYPE_CHECKING:  # torch and Megatron load only when the stage runs, not when a recipe is planned
    import torch

    from distillery.train.trainer import Trainer, TrainSettings


LAYOUT_FIELDS = {"tensor_parallel", "pipeline_parallel", "distributed_optimizer", "gpu_memory_gib", "export_hf",
                 "recompute", "recompute_num_layers", "peak_tflops"}
"""Settings that change how training runs, never what it computes."""


class SFTConfig(StageConfig):
    student: str = Field("smollm2", description="Student HF folder (Llama or Qwen2), or 'smollm2'.")
    tensor_parallel: int = Field(1, ge=1, description="Tensor-parallel size.")
    pipeline_parallel: int = Field(1, ge=1, description="Pipeline stages; world = tensor x pipeline x data.")
    lr: float = Field(8e-5, gt=0, description="Peak learning rate (paper: 8e-5).")
    min_lr: float = Field(0.0, ge=0, description="Learning rate the cosine decays to (paper: 0).")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="Fraction of steps of linear warmup (paper: 5%).")
    epochs: int = Field(2, ge=1, description="Passes over the packed bins (paper: 2).")
    global_batch: int = Field(64, ge=1, description="Packed bins per optimizer step, all ranks (paper: 64).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (smoke tests).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay of matrices.")
    adam_beta2: float = Field(0.95, gt=0, lt=1, description="AdamW beta2 (beta1 is 0.9).")
    grad_clip: float = Field(1.0, ge=0, description="Clip the global gradient norm to this (0 = off).")
    save_every: int = Field(50, ge=1, description="Checkpoint every this many steps (and at the end).")
    keep_checkpoints: int = Field(2, ge=1, description="Newest checkpoints kept in the work directory.")
    seed: int = Field(0, description="Seed of the data order.")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 autocast on GPUs, fp32 on CPUs (Megatron-core's layers cannot autocast there).")
    recompute: Literal["off", "selective", "full"] = Field(
        "off", description="Activation recompute on GPU: selective (each layer's MLP) or full (layer chunks); "
                           "a CPU keeps every activation and says so in the log.")
    recompute_num_layers: int = Field(1, ge=1, description="Layers per recomputed chunk under full recompute.")
    distributed_optimizer: bool = Field(True, description="Shard AdamW state over data-parallel ranks (ZeRO-1).")
    gpu_memory_gib: float = Field(80.0, gt=0, description="Memory of one GPU, for the plan's memory table.")
    peak_tflops: float | None = Field(None, gt=0, description="Peak TFLOP/s per device for MFU (GPUs detected).")
    export_hf: bool = Field(True, description="Write the trained student as a Hugging Face folder.")


CPU_AUTOCAST = ("Megatron-core's tensor-parallel layers compute their backward outside CPU autocast (a bf16 x fp32 "
                "matmul fails), so training on a CPU is fp32 whatever its bf16 support")


@register
class SFTStage(TaskStage[SFTConfig]):
    name = "sft"
    Config = SFTConfig
    per_teacher = True
    kind = "gpu"

    def num_shards(self) -> int:
        return 1

    def preload(self) -> tuple[str, ...]:
        return ("distillery.train.trainer", "megatron.core", "transformers")

    def price(self, pricing: Pricing) -> Priced:
        """Every packed token `epochs` times at the training rate (the default is 6 x params FLOP a token at a
        stated MFU); on disk `keep_checkpoints` checkpoints of weights and optimizer state, and the bf16 export."""
        inputs, config = pricing.inputs, self.config
        params = inputs.student_params_b * 1e9
        checkpoints = params * inputs.checkpoint_bytes_per_param * config.keep_checkpoints
        disk = checkpoints + (params * 2 if config.export_hf else 0)  # the bf16 export
        priced = pricing.at_rate(pricing.records_in * pricing.tokens_in * config.epochs, 0, disk)
        priced.rate_from_manifests = False
        return priced

    def _settings(self, device: torch.device) -> TrainSettings:
        import torch

        from distillery.train.trainer import TrainSettings

        config = self.config
        requested = {"auto": AUTO, "bf16": "bfloat16", "fp32": "float32"}[config.precision]
        if device.type == "cpu" and requested == "bfloat16":
            raise ValueError("sft: precision bf16 needs a GPU: Megatron-core's tensor-parallel layers run their "
                             "backward outside CPU autocast (bf16 x fp32 matmul); use auto or fp32 on a CPU")
        dtype = getattr(torch, choose_dtype("sft", device.type, requested, no_cpu_bf16=CPU_AUTOCAST).dtype)
        return TrainSettings(
            lr=config.lr, min_lr=config.min_lr, warmup_fraction=config.warmup_fraction, epochs=config.epochs,
            global_batch=config.global_batch, weight_decay=config.weight_decay, adam_betas=(0.9, config.adam_beta2),
            grad_clip=config.grad_clip, save_every=config.save_every, keep_checkpoints=config.keep_checkpoints,
            seed=config.seed, tensor_parallel=config.tensor_parallel, pipeline_parallel=config.pipeline_parallel,
            max_steps=config.max_steps, dtype=dtype,
            recompute=config.recompute, pad_bins=device.type == "cuda", peak_tflops=config.peak_tflops,
            recompute_num_layers=config.recompute_num_layers, distributed_optimizer=config.distributed_optimizer,
        )

    def plan_report(self, resources: Resources, input_config: StageConfig | None) -> str:
        """Per-GPU memory of this step at its pack step's bin length, and the other layouts of its GPUs.

        The world size is the step's own resources (nodes x tasks per node).
        """
        from distillery.train.memory import Layout, layout_options, memory_table, student_shape

        config = self.config
        world_size = resources.nodes * resources.tasks_per_node
        shape = student_shape(config.student)
        if shape is None:
            return f"sft memory: no config.json in {config.student} and not a known model size"
        seq = input_config.max_tokens if isinstance(input_config, PackConfig) else 32768
        model_parallel = config.tensor_parallel * config.pipeline_parallel
        layout = Layout(config.tensor_parallel, config.pipeline_parallel, max(1, world_size // model_parallel),
                        config.recompute, config.recompute_num_layers, config.distributed_optimizer)
        return "\n".join([memory_table(shape, layout, seq, config.global_batch, config.gpu_memory_gib),
                          layout_options(shape, world_size, seq, config.global_batch, config.gpu_memory_gib,
                                         config.recompute, config.recompute_num_layers)])

    def run(self, ctx: ShardContext) -> TaskResult:
        import torch.distributed as dist

        from distillery.train.convert import hf_to_megatron, load_hf_state, save_shards
        from distillery.train.gpt import ModelShape
        from distillery.train.models import resolve_model_dir
        from distillery.train.parallel import init_distributed, init_megatron, pick_device, shutdown
        from distillery.train.trainer import Trainer

        config = self.config
        source = self.input_step()
        if source is None:
            raise ValueError(f"step {self.step!r} needs a pack step before it")
        model_parallel = config.tensor_parallel * config.pipeline_parallel
        if ctx.world_size % model_parallel:
            raise ValueError(f"world size {ctx.world_size} is not a multiple of tensor_parallel x pipeline_parallel "
                             f"= {model_parallel}")
        device = pick_device()
        owns_group = not dist.is_initialized()
        init_distributed(ctx.rank, ctx.world_size, device)
        try:
            init_megatron(config.tensor_parallel, config.pipeline_parallel, config.seed, device)
            model_dir = resolve_model_dir(config.student)
            shape = ModelShape.from_folder(model_dir)
            initial = ctx.work_dir / (f"initial-{config_digest(str(model_dir.resolve()))[:8]}"
                                      f"-tp{config.tensor_parallel}-pp{config.pipeline_parallel}")
            if ctx.rank == 0 and not (initial / "megatron.json").exists():
                ctx.logger.info("converting %s to Megatron-core shards for TP=%d PP=%d", model_dir,
                                config.tensor_parallel, config.pipeline_parallel)
                save_shards(hf_to_megatron(load_hf_state(model_dir), shape, config.tensor_parallel,
                                           config.pipeline_parallel), initial, shape)
            dist.barrier()
            metrics = ctx.run.train_metrics(ctx.stage, ctx.lineage)
            metrics.parent.mkdir(parents=True, exist_ok=True)
            data = [ctx.run.packed(source, ctx.lineage, shard) for shard in range(ctx.upstream.num_shards())]
            # the layout is left out: a checkpoint resumes under any TP, PP or DP size; the data is every pack
            # shard's output digest (its traces and its file's bytes)
            fingerprint = config_digest({"config": config.model_dump(mode="json", exclude=LAYOUT_FIELDS),
                                         "data": ctx.upstream.digest()})
            trainer = Trainer(self._settings(device), shape, initial, data, ctx.work_dir, metrics,
                              device, ctx.logger, fingerprint)
            summary = trainer.train()
            documents = trainer.data.document_count
            trainer.data.close()
            if config.export_hf and ctx.rank == 0:
                self._export(trainer, model_dir, ctx.run.hf_export(ctx.stage, ctx.lineage))
            dist.barrier()
        finally:
            if owns_group:
                shutdown()
        hf = ctx.run.hf_export(ctx.stage, ctx.lineage)
        return TaskResult(inputs=documents, kept=documents, stats={
            "world_size": ctx.world_size, "tensor_parallel": config.tensor_parallel,
            "pipeline_parallel": config.pipeline_parallel, "metrics": str(metrics),
            "hf": str(hf) if config.export_hf else None, **summary})

    def _export(self, trainer: Trainer, model_dir: Path, target: Path) -> None:
        """The final checkpoint already holds the Hugging Face tensors (layout.py): read them whole."""
        from distillery.train.convert import save_hf_folder

        save_hf_folder(trainer.checkpoints.trained_weights(), model_dir, target)
