"""Torch reference for the weighted NLL loss of a linear head (the SFT loss): L = sum_t w_t * -log p(y_t | hidden_t)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from distillery_kernels.fused_logprobs_reference import linear_logprobs_reference


class LinearNLL(NamedTuple):
    loss: torch.Tensor
    """float32 scalar sum_t w_t nll_t; differentiable wrt hidden and weight."""
    nll_T: torch.Tensor
    """float32 per-token NLL (0 where w_t = 0), detached: for logging."""


def linear_nll_sum_reference(hidden_TH: torch.Tensor, weight_VH: torch.Tensor, targets_T: torch.Tensor,
                             weights_T: torch.Tensor, chunk_tokens: int = 1024) -> LinearNLL:
    result = linear_logprobs_reference(hidden_TH, weight_VH, targets_T, weights_T != 0, chunk_tokens=chunk_tokens)
    return LinearNLL(-(result.logprobs_T * weights_T).sum(), -result.logprobs_T.detach())
