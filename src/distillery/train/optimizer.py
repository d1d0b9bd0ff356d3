"""AdamW over this rank's parameters, its state sharded over the data-parallel ranks (ZeRO stage 1) or replicated.

Sharded: `torch.distributed.optim.ZeroRedundancyOptimizer` gives each data-parallel rank whole parameters to own
(a sorted greedy split by size); it steps only those, keeps their moments, and broadcasts the updated weights.
Gradients are still all-reduced in full before the step (the trainer clips the global norm on them).
Megatron-core's DistributedOptimizer is not used: in 0.16 it hard-codes CUDA and its own checkpoint format, and this
one path runs and is tested the same on CPU and GPU, with checkpoints that reshard (checkpoint.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.optim import ZeroRedundancyOptimizer

MOMENTS = ("exp_avg", "exp_avg_sq")


def build_optimizer(model: torch.nn.Module, lr: float, betas: tuple[float, float], weight_decay: float,
                    dp_group: Any, dp_size: int, sharded: bool) -> torch.optim.Optimizer:
    """Matrices decay, vectors (norms, biases) do not."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [group for group in groups if group["params"]]
    if sharded and dp_size > 1:
        return ZeroRedundancyOptimizer(groups, optimizer_class=torch.optim.AdamW, process_group=dp_group, lr=lr,
                                       betas=betas, eps=1e-8, fused=True)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8, fused=True)


def local_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer that really steps this rank's parameters (ZeRO's inner one, else itself)."""
    return optimizer.optim if isinstance(optimizer, ZeroRedundancyOptimizer) else optimizer


def owned_parameters(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    return [p for group in local_optimizer(optimizer).param_groups for p in group["params"]]


def state_elements(optimizer: torch.optim.Optimizer) -> int:
    """Numbers of optimizer state this rank holds (the sharding shows here)."""
    state = local_optimizer(optimizer).state
    return sum(v.numel() for s in state.values() for k, v in s.items() if k in MOMENTS)


def get_moments(optimizer: torch.optim.Optimizer, names: dict[torch.nn.Parameter, str]
                ) -> dict[str, dict[str, torch.Tensor]]:
    """{moment: {parameter name: tensor}} of the parameters this rank owns (none before the first step)."""
    state = local_optimizer(optimizer).state
    return {moment: {names[p]: state[p][moment] for p in owned_parameters(optimizer) if p in state}
            for moment in MOMENTS}


def set_moments(optimizer: torch.optim.Optimizer, moments: dict[str, dict[str, torch.Tensor]],
                names: dict[torch.nn.Parameter, str], step: int) -> None:
    """Install AdamW state for the owned parameters, `step` optimizer steps in (its bias correction)."""
    inner = local_optimizer(optimizer)
    fused = bool(inner.defaults.get("fused"))
    for param in owned_parameters(optimizer):
        name = names[param]
        inner.state[param] = {
            "step": torch.tensor(float(step), dtype=torch.float32, device=param.device if fused else "cpu"),
            **{moment: moments[moment][name].to(param.device, param.dtype).clone() for moment in MOMENTS}}
