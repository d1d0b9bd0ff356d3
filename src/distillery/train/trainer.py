"""The SFT loop over packed bins: tensor, pipeline (1F1B) and data parallel Megatron-core GPTModel, ZeRO-1 AdamW,
checkpoints that resume under any layout.

One optimizer step consumes `global_batch` bins (one bin per micro-batch, THD layout), split over the
data-parallel ranks, with gradients accumulated over micro-batches. The loss is the token-weighted mean over
every trained token of the global batch, so it does not depend on how bins fall on ranks or micro-batches.
Data order is a seeded permutation per epoch, so a resumed run sees exactly the bins the killed one would have.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from distillery.core.console import PROGRESS, progress_bar

from distillery.core.store import atomic_write
from distillery.train.batches import packed_inputs, weighted_loss_sum
from distillery.train.checkpoint import (
    latest_checkpoint,
    load_tensors,
    load_trainer_state,
    read_meta,
    save_checkpoint,
)
from distillery.train.flops import peak_flops, training_flops
from distillery.train.gpt import ModelShape, build_model, load_state
from distillery.train.layout import Piece, RankLayout
from distillery.train.optimizer import MOMENTS, build_optimizer, get_moments, owned_parameters, set_moments
from distillery.train.packed_file import PackedBin, PackedReader
from distillery.train.pipeline import StageLinks, megatron_1f1b, run_1f1b
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
        self.links = StageLinks.from_parallel_state()
        self.embedding_group = parallel_state.get_embedding_group() if self.pp_size > 1 else None
        self.in_embedding_group = self.pp_size > 1 and parallel_state.is_rank_in_embedding_group()
        self.dp_rank = parallel_state.get_data_parallel_rank()
        self.dp_size = parallel_state.get_data_parallel_world_size()
        self.dp_group = parallel_state.get_data_parallel_group()
        self.data = PackedReader(data)
        self.plan = step_plan(len(self.data), settings)
        self.model = build_model(shape, settings.tensor_parallel, settings.pipeline_parallel, torch.float32, device,
                                 settings.recompute, settings.recompute_num_layers)
        self.names = {param: name for name, param in self.model.named_parameters()}
        self.rank_layout = RankLayout(shape, settings.tensor_parallel, settings.pipeline_parallel, self.pp_rank)
        self.tp_mesh = None
        if settings.tensor_parallel > 1:
            from torch.distributed.device_mesh import DeviceMesh

            self.tp_mesh = DeviceMesh.from_group(self.tp_group, device.type)
        self.optimizer = build_optimizer(self.model, settings.lr, settings.adam_betas, settings.weight_decay,
                                         self.dp_group, self.dp_size, settings.distributed_optimizer)
        total = len(self.plan)
        min_ratio = settings.min_lr / settings.lr
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: warmup_cosine(step, total, settings.warmup_fraction, min_ratio))
        self.step = 0
        self.save_seconds: list[float] = []
        self._restore_or_load(initial_shards)
        self.peak = peak_flops(device, settings.peak_tflops)

    @property
    def layout(self) -> dict[str, int]:
        return {"tensor_parallel": self.settings.tensor_parallel, "pipeline_parallel": self.settings.pipeline_parallel,
                "data_parallel": self.dp_size}

    def _parameters(self) -> dict[str, torch.Tensor]:
        return {name: param.detach() for name, param in self.model.named_parameters()}

    def _restore_or_load(self, initial_shards: Path | None) -> None:
        """Newest checkpoint (of any layout), else the converted student (None keeps Megatron's random init)."""
        from distillery.train.convert import shard_file

        checkpoint = latest_checkpoint(self.checkpoints, self.fingerprint)
        if checkpoint is None:
            if initial_shards is not None:
                load_state(self.model, torch.load(initial_shards / shard_file(self.tp_rank, self.pp_rank),
                                                  map_location="cpu", weights_only=True))
            self._rewrite_metrics(0)
            return
        state = load_trainer_state(checkpoint)
        if state["data"]["plan_steps"] != len(self.plan):
            raise ValueError(f"{checkpoint} was saved in a plan of {state['data']['plan_steps']} steps, this job has "
                             f"{len(self.plan)}: the data or batch size changed")
        tp = self.settings.tensor_parallel
        params = self._parameters()
        weights = load_tensors(checkpoint, _prefixed("model/", self.rank_layout.requests(params)), self.tp_mesh, tp)
        load_state(self.model, self.rank_layout.from_global(_unprefixed("model/", weights), params))
        owned = {self.names[p]: params[self.names[p]] for p in owned_parameters(self.optimizer)}
        moments = {}
        for moment in MOMENTS:
            prefix = f"optim/{moment}/"
            pieces = load_tensors(checkpoint, _prefixed(prefix, self.rank_layout.requests(owned)), self.tp_mesh, tp)
            moments[moment] = self.rank_layout.from_global(_unprefixed(prefix, pieces), owned)
        self.step = int(state["step"])
        set_moments(self.optimizer, moments, self.names, self.step)
        self.scheduler.load_state_dict(state["scheduler"])
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
            group["lr"] = lr  # the scheduler's state does not reach the optimizer's groups by itself
        torch.set_rng_state(state["rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self._rewrite_metrics(self.step)
        saved = read_meta(checkpoint)
        self.logger.info("resumed from %s at step %d of %d (saved as TP=%d PP=%d DP=%d, running TP=%d PP=%d DP=%d)",
                         checkpoint, self.step, len(self.plan), saved["tensor_parallel"], saved["pipeline_parallel"],
                         saved["data_parallel"], *self.layout.values())

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

    def _run_stage(self, inputs: Any, autocast: Any) -> torch.Tensor:
        """This stage's forward: the micro-batch's weighted loss sum on the last stage (the fused head on one
        tensor-parallel rank), else the hidden states for the next stage."""
        with autocast:
            if self.links.last:
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
        return run_1f1b(self.links, shapes, forward, loss_of, self.device)

    def train_step(self, bins: np.ndarray, document_mask: bool = True) -> dict[str, Any]:
        """One optimizer step over `bins` (all ranks pass the same bins; each takes its data-parallel share).

        `document_mask=False` runs every bin as one causal sequence (plain SDPA): only the throughput benchmark
        uses it, for its baseline.

        Throughput counts useful tokens, those the loss trains on: `tokens_per_s` and `mfu` leave out packing
        padding and masked (prompt) tokens, which are reported separately; `mfu_documents` is the usual MFU over
        every document token (the FLOPs the step really ran, padding excluded).
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
        scale = max(loss_tokens, 1.0)
        if self.pp_size > 1 and mine:
            loss_sum += self._pipeline(mine, document_mask, autocast, scale)
        elif mine:
            for packed_bin in mine:
                inputs = self._bin_inputs(packed_bin, document_mask)
                with autocast:
                    weighted = weighted_loss_sum(self.model, inputs)
                (weighted / scale).backward()
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
        useful_flops = flops * loss_tokens / max(tokens, 1)
        world = dist.get_world_size()
        return {
            "step": self.step + 1, "loss": float(loss_sum) / scale, "lr": lr, "grad_norm": grad_norm,
            "bins": len(bins), "tokens": tokens, "loss_tokens": int(loss_tokens),
            "masked_tokens": tokens - int(loss_tokens),
            "padding_tokens": len(bins) * int(self.data.attrs["capacity"]) - tokens, "step_s": round(elapsed, 4),
            "tokens_per_s": loss_tokens / elapsed, "document_tokens_per_s": tokens / elapsed,
            "tflops_per_device": flops / elapsed / world / 1e12,
            "mfu": useful_flops / elapsed / world / self.peak if self.peak else None,
            "mfu_documents": flops / elapsed / world / self.peak if self.peak else None,
        }

    def _save(self) -> None:
        """Collective: weights from data-parallel rank 0, each AdamW moment from the rank that owns it."""
        started = time.perf_counter()
        tensors: dict[str, Piece] = {}
        if self.dp_rank == 0:
            tensors.update(_prefixed("model/", self.rank_layout.to_global(self._parameters())))
        for moment, by_name in get_moments(self.optimizer, self.names).items():
            tensors.update(_prefixed(f"optim/{moment}/", self.rank_layout.to_global(by_name)))
        trainer_state = None
        if dist.get_rank() == 0:
            epoch_steps = math.ceil(len(self.data) / self.settings.global_batch)
            trainer_state = {
                "step": self.step, "scheduler": self.scheduler.state_dict(), "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                "data": {"plan_steps": len(self.plan), "epoch": self.step // epoch_steps,
                         "step_in_epoch": self.step % epoch_steps, "seed": self.settings.seed}}
        save_checkpoint(self.checkpoints, self.step, tensors, trainer_state,
                        {**self.layout, "fingerprint": self.fingerprint,
                         "distributed_optimizer": self.settings.distributed_optimizer},
                        self.settings.keep_checkpoints, self.tp_mesh, self.settings.tensor_parallel)
        self.save_seconds.append(time.perf_counter() - started)

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
            if is_logger:
                with self.metrics_path.open("a") as out:
                    out.write(json.dumps(record) + "\n")
                self.logger.info("step %d/%d loss %.4f lr %.3g %.0f trained tokens/s (%d masked, %d padding) mfu %s",
                                 self.step, len(self.plan), record["loss"], record["lr"], record["tokens_per_s"],
                                 record["masked_tokens"], record["padding_tokens"],
                                 f"{record['mfu']:.3f}" if record["mfu"] is not None else "n/a", extra=PROGRESS)
            if self.step % self.settings.save_every == 0 or self.step == end:
                self._save()
        progress.close()
        if latest_checkpoint(self.checkpoints, self.fingerprint) is None:
            self._save()
        return {"steps": len(self.plan), "resumed_at": end - len(history),
                "final_loss": history[-1]["loss"] if history else None,
                "epochs": self.settings.epochs, "bins": len(self.data),
                "steps_per_epoch": math.ceil(len(self.data) / self.settings.global_batch),
                **throughput_summary(history), "checkpoint_save_s": round(max(self.save_seconds, default=0.0), 3)}


def throughput_summary(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of this run's steps (the first, which compiles, included) and token totals, for the manifest."""
    if not history:
        return {}
    mfu = [r["mfu"] for r in history if r["mfu"] is not None]
    mfu_documents = [r["mfu_documents"] for r in history if r["mfu_documents"] is not None]
    return {"tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in history), 2),
            "mfu": round(statistics.median(mfu), 4) if mfu else None,
            "mfu_documents": round(statistics.median(mfu_documents), 4) if mfu_documents else None,
            **{key: sum(r[key] for r in history) for key in ("loss_tokens", "masked_tokens", "padding_tokens")}}


def _prefixed(prefix: str, items: dict[str, Any]) -> dict[str, Any]:
    return {prefix + name: value for name, value in items.items()}


def _unprefixed(prefix: str, items: dict[str, Any]) -> dict[str, Any]:
    return {name.removeprefix(prefix): value for name, value in items.items()}
