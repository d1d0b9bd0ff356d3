"""Fused kernels (Triton) beside their torch references; `linear_logprobs` picks one for the tensors' device."""

from __future__ import annotations

import logging

import torch

from distillery.kernels.fused_logprobs_reference import LinearLogprobs, linear_logprobs_reference

logger = logging.getLogger(__name__)


def linear_logprobs(hidden_TH: torch.Tensor, weight_VH: torch.Tensor, targets_T: torch.Tensor,
                    mask_T: torch.Tensor | None = None, cu_seqlens: torch.Tensor | None = None,
                    chunk_tokens: int = 1024) -> LinearLogprobs:
    """Per-token log p(target) under the head `weight_VH` and per-document sums, never the full [T, V] logits.

    On a CUDA device the fused Triton kernel runs; elsewhere (CPU) the chunked torch reference, whose
    `chunk_tokens` bounds the logits that exist at once. The kernel sizes its own chunks.
    """
    if hidden_TH.is_cuda:
        try:
            from distillery.kernels.fused_logprobs import fused_linear_logprobs
        except ImportError as error:
            logger.warning("fused kernel unavailable (%s; install the `kernels` extra): using the torch reference",
                           error)
        else:
            return fused_linear_logprobs(hidden_TH, weight_VH, targets_T, mask_T, cu_seqlens)
    return linear_logprobs_reference(hidden_TH, weight_VH, targets_T, mask_T, cu_seqlens, chunk_tokens)


__all__ = ["LinearLogprobs", "linear_logprobs", "linear_logprobs_reference"]
