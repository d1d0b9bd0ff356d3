"""The SFT loop over packed bins: tensor, pipeline (1F1B) and data parallel Megatron-core GPTModel, ZeRO-1 AdamW,
checkpoints that resume under any layout.

One optimizer step consumes `global_batch` bins (one bin per micro-batch, THD layout), split over the
data-parallel ranks, with gradients accumulated over micro-batches. The loss is the token-weighted mean over
every trained token of the global batch, so it does not depend on how bins fall on ranks or micro-batches.
Data order is a seeded permutation per epoch, so a resumed run sees exactly the bins the killed one would have.

The trainer composes the parts, each with one job: the model (gpt.py), the step's collectives over explicit
process groups (distributed.py), the optimizer and schedule, the pipeline (pipeline.py), the checkpoints
(checkpoint.py) and what the run reports (metrics.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from distillery.core.console import PROGRESS, progress_bar
from distillery.train.batches import packed_inputs, weighted_loss_sum
from distillery.train.checkpoint import CheckpointManager
from distillery.train.distributed import (
    ParallelGroups,
    clip_grad_norm,
    reduce_gradients,
    sum_over_replicas_and_stages,
    tied_copy,
)
from distillery.train.flops import peak_flops
from distillery.train.gpt import ModelShape, build_model
from distillery.train.metrics import MetricsLog, step_throughput, throughput_summary
from distillery.train.optimizer import build_optimizer
from distillery.train.packed_file import PackedBin, PackedDataset
from distillery.train.pipeline import megatron_1f1b, run_1f1b
from distillery.train.schedule import warmup_cosine


@dataclass(frozen=True)
class TrainSettings:
    lr: float
    min_lr: float
    warmup_fraction: float
    epochs: int
    global_batch: int
    weight_decay: float
    adam_betas: tuple[float, float]
    grad_clip: float
    save_every: int
    keep_checkpoints: int
    seed: int
    tensor_parallel: int
    pipeline_parallel: int
    max_steps: int | None
    dtype: torch.dtype
    recompute: str
    pad_bins: bool
    peak_tflops: float | None
    recompute_num_layers: int = 1
    distributed_optimizer: bool = True
    """Shard AdamW state over data-parallel ranks (ZeRO stage 1, optimizer.py)."""


def step_plan(num_bins: int, settings: TrainSettings) -> list[np.ndarray]:
    """Bin indices of every optimizer step, epoch after epoch (each epoch a seeded permutation)."""
    steps: list[np.ndarray] = []
    for epoch in range(settings.epochs):
        order = np.random.default_rng([settings.seed, epoch]).permutation(num_bins)
        steps.extend(order[start:start + settings.global_batch] for start in range(0, num_bins, settings.global_batch))
    return steps[:settings.max_steps] if settings.max_steps is not None else steps


class Trainer:
    def __init__(self, settings: TrainSettings, shape: ModelShape, initial_shards: Path | None, data: Sequence[Path],
                 work_dir: Path, metrics_path: Path, device: torch.device, logger: logging.Logger,
                 fingerprint: str = "") -> None:
        """`data`: the packed files, read as one dataset in their order (`PackedDataset`). `fingerprint` names the
        config and data; checkpoints made under another one are not resumed."""
        self.settings = settings
        self.shape = shape
        self.device = device
        self.logger = logger
        self.groups = ParallelGroups.from_megatron()
        self.data = PackedDataset(data)
        self.plan = step_plan(len(self.data), settings)
        self.model = build_model(shape, settings.tensor_parallel, settings.pipeline_parallel, torch.float32, device,
                                 settings.recompute, settings.recompute_num_layers)
        self.optimizer = build_optimizer(self.model, settings.lr, settings.adam_betas, settings.weight_decay,
                                         self.groups.dp_group, self.groups.dp_size, settings.distributed_optimizer)
        total = len(self.plan)
        min_ratio = settings.min_lr / settings.lr
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: warmup_cosine(step, total, settings.warmup_fraction, min_ratio))
        self.checkpoints = CheckpointManager(
            work_dir, fingerprint, settings.keep_checkpoints, total, model=self.model, optimizer=self.optimizer,
            scheduler=self.scheduler, shape=shape, groups=self.groups,
            meta={"distributed_optimizer": settings.distributed_optimizer}, device=device, logger=logger)
        self.step = self.checkpoints.restore_or_initialise(initial_shards)
        self.metrics = MetricsLog(metrics_path, writer=dist.get_rank() == 0)
        self.metrics.truncate(self.step)
        self.peak = peak_flops(device, settings.peak_tflops)
        self.tied = tied_copy(self.model, self.groups, shape.tie_embeddings)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.data) / self.settings.global_batch)

    def _bin_inputs(self, packed_bin: PackedBin, document_mask: bool) -> Any:
        capacity = self.data.capacity if self.settings.pad_bins else None
        inputs = packed_inputs(packed_bin, self.device, pad_to=capacity)
        if not document_mask:
            inputs.packed = None
        return inputs

    def _run_stage(self, inputs: Any, autocast: Any) -> torch.Tensor:
        """This stage's forward: the micro-batch's weighted loss sum on the last stage (the fused head on one
        tensor-parallel rank), else the hidden states for the next stage."""
        with autocast:
            if self.groups.links.last:
                return weighted_loss_sum(self.model, inputs)
            return self.model(inputs.tokens_1T, inputs.position_ids_1T, attention_mask=None,
                              packed_seq_params=inputs.packed)

    def _pipeline(self, bins: list[PackedBin], document_mask: bool, autocast: Any, scale: float) -> torch.Tensor:
        """1F1B over this replica's bins (one micro-batch each): Megatron's schedule on GPU, pipeline.py's on CPU."""
        inputs = [self._bin_inputs(b, document_mask) for b in bins]

        def weighted(batch: Any, loss_sum: torch.Tensor) -> torch.Tensor:
            return loss_sum  # the last stage already returns the weighted sum

        if self.device.type == "cuda":
            return megatron_1f1b(self.model, inputs, inputs[0].tokens_1T.shape[1],
                                 lambda batch: self._run_stage(batch, autocast), weighted, scale)

        def forward(index: int, received: torch.Tensor | None) -> torch.Tensor:
            self.model.set_input_tensor(received)
            return self._run_stage(inputs[index], autocast)

        def loss_of(index: int, loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return loss / scale, loss

        shapes = [(batch.tokens_1T.shape[1], 1, self.shape.hidden_size) for batch in inputs]
        return run_1f1b(self.groups.links, shapes, forward, loss_of, self.device)

    def _forward_backward(self, bins: list[PackedBin], document_mask: bool, scale: float) -> torch.Tensor:
        """Gradients of this rank's share of the step, scaled by 1 / `scale`; returns its weighted loss sum."""
        autocast = torch.autocast(self.device.type, dtype=self.settings.dtype,
                                  enabled=self.settings.dtype != torch.float32)
        loss_sum = torch.zeros((), device=self.device)
        if self.groups.pp_size > 1 and bins:
            loss_sum += self._pipeline(bins, document_mask, autocast, scale)
            return loss_sum
        for packed_bin in bins:
            inputs = self._bin_inputs(packed_bin, document_mask)
            with autocast:
                weighted = weighted_loss_sum(self.model, inputs)
            (weighted / scale).backward()
            loss_sum += weighted.detach()
        return loss_sum

    def train_step(self, bins: np.ndarray, document_mask: bool = True) -> dict[str, Any]:
        """One optimizer step over `bins` (all ranks pass the same bins; each takes its data-parallel share).

        `document_mask=False` runs every bin as one causal sequence (plain SDPA): only the throughput benchmark
        uses it, for its baseline.
        """
        started = time.perf_counter()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        step_bins = [self.data[int(b)] for b in bins]
        loss_tokens = sum(float(b.labels()[1].sum()) for b in step_bins)
        scale = max(loss_tokens, 1.0)
        mine = step_bins[self.groups.dp_rank::self.groups.dp_size]
        loss_sum = self._forward_backward(mine, document_mask, scale)
        params = list(self.model.parameters())
        reduce_gradients(params, self.groups, self.tied)
        sum_over_replicas_and_stages(loss_sum, self.groups)
        grad_norm = clip_grad_norm(params, self.settings.grad_clip, self.groups,
                                   leave_out=None if self.groups.links.first else self.tied)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        docs = [np.diff(b.cu_seqlens).tolist() if document_mask else [len(b.tokens)] for b in step_bins]
        return {"step": self.step + 1, "loss": float(loss_sum) / scale, "lr": lr, "grad_norm": grad_norm,
                **step_throughput(self.shape, docs, loss_tokens, self.data.capacity,
                                  time.perf_counter() - started, dist.get_world_size(), self.peak)}

    def _save(self) -> None:
        self.checkpoints.save(self.step, {"epoch": self.step // self.steps_per_epoch,
                                          "step_in_epoch": self.step % self.steps_per_epoch,
                                          "seed": self.settings.seed})

    def train(self, stop_at: int | None = None) -> dict[str, Any]:
        """Run the remaining steps (or up to `stop_at`, with a checkpoint there: a preempted job in tests); returns
        a summary. The final checkpoint holds the trained weights."""
        is_logger = dist.get_rank() == 0
        history: list[dict[str, Any]] = []
        end = len(self.plan) if stop_at is None else min(stop_at, len(self.plan))
        progress = progress_bar(total=len(self.plan), initial=self.step, desc="sft", unit="step", disable=not is_logger)
        while self.step < end:
            record = self.train_step(self.plan[self.step])
            self.step += 1
            history.append(record)
            progress.update(1)
            self.metrics.append(record)
            if is_logger:
                self.logger.info("step %d/%d loss %.4f lr %.3g %.0f trained tokens/s (%d masked, %d padding) mfu %s",
                                 self.step, len(self.plan), record["loss"], record["lr"], record["tokens_per_s"],
                                 record["masked_tokens"], record["padding_tokens"],
                                 f"{record['mfu']:.3f}" if record["mfu"] is not None else "n/a", extra=PROGRESS)
            if self.step % self.settings.save_every == 0 or self.step == end:
                self._save()
        progress.close()
        if self.checkpoints.latest() is None:
            self._save()
        return {"steps": len(self.plan), "resumed_at": end - len(history),
                "final_loss": history[-1]["loss"] if history else None,
                "epochs": self.settings.epochs, "bins": len(self.data), "steps_per_epoch": self.steps_per_epoch,
                **throughput_summary(history),
                "checkpoint_save_s": round(max(self.checkpoints.save_seconds, default=0.0), 3)}
