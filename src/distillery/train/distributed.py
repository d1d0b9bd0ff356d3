"""The collectives of a training step, beside a model that knows nothing of them: data-parallel gradient sums,
the tied embedding's gradient across pipeline stages, and the global gradient norm for clipping.

Each works over the process groups it is given (`ParallelGroups`, read once from Megatron-core's parallel state),
so the step's arithmetic never asks global state which group it is in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from distillery.train.pipeline import StageLinks


@dataclass(frozen=True)
class ParallelGroups:
    """This rank's tensor-, pipeline- and data-parallel groups and its place in each."""

    tp_group: Any
    tp_rank: int
    tp_size: int
    pp_group: Any
    links: StageLinks
    """This rank's pipeline stage and its neighbours' global ranks."""
    dp_group: Any
    dp_rank: int
    dp_size: int
    embedding_group: Any | None
    """The first and last pipeline stage (which hold a tied embedding's two copies) on those stages; else None."""

    @property
    def pp_rank(self) -> int:
        return self.links.stage

    @property
    def pp_size(self) -> int:
        return self.links.stages

    @property
    def layout(self) -> dict[str, int]:
        return {"tensor_parallel": self.tp_size, "pipeline_parallel": self.pp_size, "data_parallel": self.dp_size}

    @classmethod
    def from_megatron(cls) -> ParallelGroups:
        from megatron.core import parallel_state as ps

        links = StageLinks(ps.get_pipeline_model_parallel_rank(), ps.get_pipeline_model_parallel_world_size(),
                           ps.get_pipeline_model_parallel_prev_rank(), ps.get_pipeline_model_parallel_next_rank())
        in_embedding_group = links.stages > 1 and ps.is_rank_in_embedding_group()
        return cls(ps.get_tensor_model_parallel_group(), ps.get_tensor_model_parallel_rank(),
                   ps.get_tensor_model_parallel_world_size(), ps.get_pipeline_model_parallel_group(), links,
                   ps.get_data_parallel_group(), ps.get_data_parallel_rank(), ps.get_data_parallel_world_size(),
                   ps.get_embedding_group() if in_embedding_group else None)


def all_reduce_bucketed(tensors: Sequence[torch.Tensor], group: Any, bucket_bytes: int = 128 << 20) -> None:
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


def tied_copy(model: Any, groups: ParallelGroups, tied: bool) -> torch.Tensor | None:
    """Under pipeline parallelism a tied model keeps the embedding on the first stage and a copy as the output
    layer on the last: this stage's copy, or None where there is none."""
    if not tied or groups.embedding_group is None:
        return None
    return model.shared_embedding_or_output_weight()


def reduce_gradients(params: Sequence[torch.nn.Parameter], groups: ParallelGroups,
                     tied: torch.Tensor | None) -> None:
    """Sum gradients over data-parallel ranks, and the tied copies' over the embedding group, so that both copies
    take the same update.

    Every rank takes part with every parameter, even one that saw no bin this step (the last step of an epoch may
    hold fewer bins than there are ranks): its gradients are zeros, never skipped.
    """
    for param in params:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
    if groups.dp_size > 1:
        all_reduce_bucketed([p.grad for p in params], groups.dp_group)
    if tied is not None:
        dist.all_reduce(tied.grad, group=groups.embedding_group)


def sum_over_replicas_and_stages(value: torch.Tensor, groups: ParallelGroups) -> None:
    """In place: the sum over data-parallel replicas and pipeline stages (e.g. a loss only the last stage has)."""
    if groups.dp_size > 1:
        dist.all_reduce(value, group=groups.dp_group)
    if groups.pp_size > 1:
        dist.all_reduce(value, group=groups.pp_group)


def clip_grad_norm(params: Sequence[torch.nn.Parameter], max_norm: float, groups: ParallelGroups,
                   leave_out: torch.Tensor | None = None) -> float:
    """Global L2 norm of the whole model's gradients (tensor-parallel slices summed over the TP group, stages over
    the PP group; `leave_out`, a tied copy, counted on its other stage only), then scale them to `max_norm` if
    above it (0: no clipping). Returns the norm before clipping."""
    sharded = torch.zeros((), device=params[0].device)
    replicated = torch.zeros((), device=params[0].device)
    for param in params:
        if param.grad is None or param is leave_out:
            continue
        squares = param.grad.detach().float().pow(2).sum()
        if getattr(param, "tensor_model_parallel", False):
            sharded += squares
        else:
            replicated += squares
    dist.all_reduce(sharded, group=groups.tp_group)
    total = sharded + replicated
    if groups.pp_size > 1:
        dist.all_reduce(total, group=groups.pp_group)
    norm = float(torch.sqrt(total))
    if max_norm > 0 and norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for param in params:
            if param.grad is not None:
                param.grad.mul_(scale)
    return norm
