"""Fused kernels (Triton) beside their torch references; each entry point picks one for the tensors' device.

- `linear_logprobs`: per-token log-probabilities and per-document sums under a linear head (perplexity scoring).
- `linear_nll_sum`: the weighted NLL loss of a linear head with its gradients (SFT).
On a CUDA device the fused kernel runs; elsewhere (CPU) the chunked torch reference, whose `chunk_tokens` bounds
the logits that exist at once. The kernels size their own chunks.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

import torch

from distillery_kernels.fused_linear_nll_reference import LinearNLL, linear_nll_sum_reference
from distillery_kernels.fused_logprobs_reference import LinearLogprobs, linear_logprobs_reference

logger = logging.getLogger("distillery.kernels")  # under the distillery logger, like the stages that call it


def _fused(module: str, name: str) -> Callable[..., Any] | None:
    """The fused entry point, or None (logged) when Triton is missing."""
    try:
        return getattr(importlib.import_module(f"distillery_kernels.{module}"), name)
    except ImportError as error:
        logger.warning("fused kernel unavailable (%s; install the `kernels` extra): using the torch reference", error)
        return None


def linear_logprobs(hidden_TH: torch.Tensor, weight_VH: torch.Tensor, targets_T: torch.Tensor,
                    mask_T: torch.Tensor | None = None, cu_seqlens: torch.Tensor | None = None,
                    chunk_tokens: int = 1024) -> LinearLogprobs:
    """Log p(target) of the masked tokens under the head `weight_VH`, and sums per document (cu_seqlens [D + 1])."""
    fused = _fused("fused_logprobs", "fused_linear_logprobs") if hidden_TH.is_cuda else None
    if fused is not None:
        return fused(hidden_TH, weight_VH, targets_T, mask_T, cu_seqlens)
    return linear_logprobs_reference(hidden_TH, weight_VH, targets_T, mask_T, cu_seqlens, chunk_tokens)


def linear_nll_sum(hidden_TH: torch.Tensor, weight_VH: torch.Tensor, targets_T: torch.Tensor,
                   weights_T: torch.Tensor, chunk_tokens: int = 1024) -> LinearNLL:
    """sum_t weights_t * -log p(targets_t) under the head `weight_VH`; tokens of weight 0 are not computed."""
    fused = _fused("fused_linear_nll", "fused_linear_nll_sum") if hidden_TH.is_cuda else None
    if fused is not None:
        return fused(hidden_TH, weight_VH, targets_T, weights_T)
    return linear_nll_sum_reference(hidden_TH, weight_VH, targets_T, weights_T, chunk_tokens)


__all__ = ["LinearLogprobs", "LinearNLL", "linear_logprobs", "linear_logprobs_reference", "linear_nll_sum",
           "linear_nll_sum_reference"]
