"""The SFT loop over packed bins: tensor, pipeline and data parallel Megatron-core GPTModel, resumable.

One optimizer step consumes `global_batch` bins (one bin per micro-batch, THD layout), split over the
data-parallel ranks, with gradients accumulated over micro-batches. The loss is the token-weighted mean over
every trained token of the global batch, so it does not depend on how bins fall on ranks or micro-batches.
Data order is a seeded permutation per epoch, so a resumed run sees exactly the bins the killed one would have.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from distillery.core.store import atomic_write
from distillery.train.batches import packed_inputs, weighted_loss_sum
from distillery.train.checkpoint import latest_checkpoint, load_rank_state, save_checkpoint
from distillery.train.flops import peak_flops, training_flops
from distillery.train.gpt import ModelShape, build_model, load_state, model_state
from distillery.train.packed_file import PackedBin, PackedReader
from distillery.train.pipeline import StageLinks, pipeline_forward_backward
from distillery.train.schedule import warmup_cosine


def all_reduce_bucketed(tensors: list[torch.Tensor], group: Any, bucket_bytes: int = 128 << 20) -> None:
    """Sum tensors over `group` in a few flat messages instead of one per tensor."""
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    bucket: list[torch.Tensor] = []
    size = 0
    for index, tensor in enumerate(tensors):
        bucket.append(tensor)
        size += tensor.numel() * tensor.element_size()
        if size >= bucket_bytes or index == len(tensors) - 1:
            flat = _flatten_dense_tensors(bucket)
            dist.all_reduce(flat, group=group)
            for target, reduced in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
                target.copy_(reduced)
            bucket, size = [], 0


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
    recompute: bool
    pad_bins: bool
    peak_tflops: float | None


def step_plan(num_bins: int, settings: TrainSettings) -> list[np.ndarray]:
    """Bin indices of every optimizer step, epoch after epoch (each epoch a seeded permutation)."""
    steps: list[np.ndarray] = []
    for epoch in range(settings.epochs):
        order = np.random.default_rng([settings.seed, epoch]).permutation(num_bins)
        steps.extend(order[start:start + settings.global_batch] for start in range(0, num_bins, settings.global_batch))
    return steps[:settings.max_steps] if settings.max_steps is not None else steps


class Trainer:
    def __init__(self, settings: TrainSettings, shape: ModelShape, initial_shards: Path | None, data: Path,
                 work_dir: Path, metrics_path: Path, device: torch.device, logger: logging.Logger,
                 fingerprint: str = "") -> None:
        """`fingerprint` names the config and data; checkpoints made under another one are not resumed."""
        from megatron.core import parallel_state

        self.settings = settings
        self.shape = shape
        self.device = device
        self.logger = logger
        self.metrics_path = metrics_path
        self.checkpoints = work_dir / "checkpoints"
        self.fingerprint = fingerprint
        self.tp_rank = parallel_state.get_tensor_model_parallel_rank()
        self.tp_group = parallel_state.get_tensor_model_parallel_group()
        self.pp_rank = parallel_state.get_pipeline_model_parallel_rank()
        self.pp_size = parallel_state.get_pipeline_model_parallel_world_size()
        self.pp_group = parallel_state.get_pipeline_model_parallel_group()
        self.links = StageLinks()
        self.embedding_group = parallel_state.get_embedding_group() if self.pp_size > 1 else None
        self.in_embedding_group = self.pp_size > 1 and parallel_state.is_rank_in_embedding_group()
        self.dp_rank = parallel_state.get_data_parallel_rank()
        self.dp_size = parallel_state.get_data_parallel_world_size()
        self.dp_group = parallel_state.get_data_parallel_group()
        self.data = PackedReader(data)
        self.plan = step_plan(len(self.data), settings)
        self.model = build_model(shape, settings.tensor_parallel, settings.pipeline_parallel, torch.float32, device,
                                 settings.recompute)
        decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=settings.lr, betas=settings.adam_betas, eps=1e-8, fused=True)
        total = len(self.plan)
        min_ratio = settings.min_lr / settings.lr
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: warmup_cosine(step, total, settings.warmup_fraction, min_ratio))
        self.step = 0
        self._restore_or_load(initial_shards)
        self.peak = peak_flops(device, settings.peak_tflops)

    @property
    def layout(self) -> dict[str, int]:
        return {"tensor_parallel": self.settings.tensor_parallel, "pipeline_parallel": self.settings.pipeline_parallel}

    def _restore_or_load(self, initial_shards: Path | None) -> None:
        """Newest checkpoint, else the converted student (None keeps Megatron's random init: benchmarks)."""
        from distillery.train.convert import shard_file

        checkpoint = latest_checkpoint(self.checkpoints, self.fingerprint)
        if checkpoint is None:
            if initial_shards is not None:
                load_state(self.model, torch.load(initial_shards / shard_file(self.tp_rank, self.pp_rank),
                                                  map_location="cpu", weights_only=True))
            self._rewrite_metrics(0)
            return
        state = load_rank_state(checkpoint, self.tp_rank, self.pp_rank, self.layout)
        load_state(self.model, state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self._rewrite_metrics(self.step)
        self.logger.info("resumed from %s at step %d of %d", checkpoint, self.step, len(self.plan))

    def _rewrite_metrics(self, upto_step: int) -> None:
        """Drop metrics of steps after the checkpoint (they are redone), so the log reads like one run."""
        if dist.get_rank() != 0:
            return
        kept: list[str] = []
        if upto_step and self.metrics_path.exists():
            kept = [line for line in self.metrics_path.read_text().splitlines()
                    if line and json.loads(line)["step"] <= upto_step]
        with atomic_write(self.metrics_path) as out:
            out.write("".join(line + "\n" for line in kept))

    def _bin_inputs(self, packed_bin: PackedBin, document_mask: bool) -> Any:
        capacity = int(self.data.attrs["capacity"]) if self.settings.pad_bins else None
        inputs = packed_inputs(packed_bin, self.device, pad_to=capacity)
        if not document_mask:
            inputs.packed = None
        return inputs

    def _tied_weight(self) -> torch.Tensor | None:
        """Under pipeline parallelism a tied model keeps the embedding on the first stage and a copy as the output
        layer on the last; their gradients are summed so both copies take the same update."""
        if not (self.in_embedding_group and self.shape.tie_embeddings):
            return None
        return self.model.embedding.word_embeddings.weight if self.links.first else self.model.output_layer.weight

    def _all_reduce_gradients(self) -> None:
        """Sum gradients over data-parallel ranks (and tied copies over the embedding group).

        Every rank takes part with every parameter, even one that saw no bin this step (the last step of an
        epoch may hold fewer bins than there are ranks): its gradients are zeros, never skipped.
        """
        params = list(self.model.parameters())
        for param in params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        if self.dp_size > 1:
            all_reduce_bucketed([p.grad for p in params], self.dp_group)
        tied = self._tied_weight()
        if tied is not None:
            dist.all_reduce(tied.grad, group=self.embedding_group)

    def _clip_gradients(self) -> float:
        """Global L2 norm over the whole model (TP-sharded weights summed over the TP group), then clip."""
        sharded = torch.zeros((), device=self.device)
        replicated = torch.zeros((), device=self.device)
        tied_copy = self._tied_weight() if not self.links.first else None
        for param in self.model.parameters():
            if param.grad is None or param is tied_copy:
                continue
            squares = param.grad.detach().float().pow(2).sum()
            if getattr(param, "tensor_model_parallel", False):
                sharded += squares
            else:
                replicated += squares
        dist.all_reduce(sharded, group=self.tp_group)
        total = sharded + replicated
        if self.pp_size > 1:
            dist.all_reduce(total, group=self.pp_group)
        norm = float(torch.sqrt(total))
        if self.settings.grad_clip > 0 and norm > self.settings.grad_clip:
            scale = self.settings.grad_clip / (norm + 1e-6)
            for param in self.model.parameters():
                if param.grad is not None:
                    param.grad.mul_(scale)
        return norm

    def _pipeline_micro_batch(self, inputs: Any, autocast: Any, scale: float) -> torch.Tensor:
        def run_stage() -> torch.Tensor:
            with autocast:
                if self.links.last:
                    return weighted_loss_sum(self.model, inputs)
                return self.model(inputs.tokens_1T, inputs.position_ids_1T, attention_mask=None,
                                  packed_seq_params=inputs.packed)

        return pipeline_forward_backward(self.model, self.links, inputs.tokens_1T.shape[1], self.shape.hidden_size,
                                         self.device, run_stage, lambda weighted: weighted, scale)

    def train_step(self, bins: np.ndarray, document_mask: bool = True) -> dict[str, Any]:
        """One optimizer step over `bins` (all ranks pass the same bins; each takes its data-parallel share).

        `document_mask=False` lets every token attend to the whole bin (plain causal attention): only the
        throughput benchmark uses it, as the baseline that document masking costs against.
        """
        started = time.perf_counter()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        step_bins = [self.data[int(b)] for b in bins]
        docs = [np.diff(b.cu_seqlens).tolist() if document_mask else [len(b.tokens)] for b in step_bins]
        loss_tokens = sum(float(b.labels()[1].sum()) for b in step_bins)
        mine = step_bins[self.dp_rank::self.dp_size]
        loss_sum = torch.zeros((), device=self.device)
        autocast = torch.autocast(self.device.type, dtype=self.settings.dtype,
                                  enabled=self.settings.dtype != torch.float32)
        for packed_bin in mine:
            inputs = self._bin_inputs(packed_bin, document_mask)
            if self.pp_size > 1:
                loss_sum += self._pipeline_micro_batch(inputs, autocast, max(loss_tokens, 1.0))
            else:
                with autocast:
                    weighted = weighted_loss_sum(self.model, inputs)
                (weighted / max(loss_tokens, 1.0)).backward()
                loss_sum += weighted.detach()
        self._all_reduce_gradients()
        if self.dp_size > 1:
            dist.all_reduce(loss_sum, group=self.dp_group)
        if self.pp_size > 1:
            dist.all_reduce(loss_sum, group=self.pp_group)
        grad_norm = self._clip_gradients()
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - started
        tokens = sum(sum(d) for d in docs)
        flops = sum(training_flops(self.shape, d) for d in docs)
        world = dist.get_world_size()
        return {
            "step": self.step + 1, "loss": float(loss_sum) / max(loss_tokens, 1.0), "lr": lr, "grad_norm": grad_norm,
            "bins": len(bins), "tokens": tokens, "loss_tokens": int(loss_tokens), "step_s": round(elapsed, 4),
            "tokens_per_s": tokens / elapsed, "tflops_per_device": flops / elapsed / world / 1e12,
            "mfu": flops / elapsed / world / self.peak if self.peak else None,
        }

    def _save(self) -> None:
        state = {"model": model_state(self.model), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng": torch.get_rng_state(), "step": self.step}
        save_checkpoint(self.checkpoints, self.step, self.tp_rank, self.pp_rank, self.dp_rank, state,
                        {**self.layout, "data_parallel": self.dp_size, "fingerprint": self.fingerprint},
                        self.settings.keep_checkpoints)

    def train(self) -> dict[str, Any]:
        """Run the remaining steps; returns a summary. The final checkpoint holds the trained weights."""
        is_logger = dist.get_rank() == 0
        history: list[dict[str, Any]] = []
        progress = tqdm(total=len(self.plan), initial=self.step, desc="sft", unit="step", disable=not is_logger)
        while self.step < len(self.plan):
            record = self.train_step(self.plan[self.step])
            self.step += 1
            history.append(record)
            progress.update(1)
            if is_logger:
                with self.metrics_path.open("a") as out:
                    out.write(json.dumps(record) + "\n")
                self.logger.info("step %d/%d loss %.4f lr %.3g %.0f tokens/s mfu %s", self.step, len(self.plan),
                                 record["loss"], record["lr"], record["tokens_per_s"], record["mfu"])
            if self.step % self.settings.save_every == 0 or self.step == len(self.plan):
                self._save()
        progress.close()
        if latest_checkpoint(self.checkpoints, self.fingerprint) is None:
            self._save()
        return {"steps": len(self.plan), "resumed_at": len(self.plan) - len(history),
                "final_loss": history[-1]["loss"] if history else None,
                "epochs": self.settings.epochs, "bins": len(self.data),
                "steps_per_epoch": math.ceil(len(self.data) / self.settings.global_batch)}
