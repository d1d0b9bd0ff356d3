"""Torch reference for linear log-probabilities: per-token log p(target) under a linear head, per-document sums.

    logits_tv = hidden_t . weight_v                       (matmul in the inputs' dtype, as the plain model does)
    logprob_t = logits_t,target_t - logsumexp_v logits_tv (in float32)
    nll_d     = -sum of logprob_t over the masked tokens t of document d;  tokens_d = their count

Tokens are taken `chunk_tokens` at a time, so only a chunk x vocabulary block of logits exists at once in a
forward without gradients; under autograd each chunk's log-softmax is kept for backward (fine for the small
models that train on CPU, which is where this path runs). The Triton kernel (fused_logprobs.py) computes the same.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class LinearLogprobs(NamedTuple):
    logprobs_T: torch.Tensor
    """float32 log p(target) per token; 0 where the mask is off. Differentiable wrt hidden and weight."""
    nll_sum_D: torch.Tensor
    """float32 negative log-likelihood summed over each document's masked tokens."""
    tokens_D: torch.Tensor
    """int64 masked tokens per document."""


def check_inputs(hidden_TH: torch.Tensor, weight_VH: torch.Tensor, targets_T: torch.Tensor,
                 mask_T: torch.Tensor | None, cu_seqlens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate shapes; return the boolean mask [T] and int64 document boundaries [D + 1] (one document if none)."""
    tokens = hidden_TH.shape[0]
    if hidden_TH.dim() != 2 or weight_VH.dim() != 2 or hidden_TH.shape[1] != weight_VH.shape[1]:
        raise ValueError(f"expected hidden [T, H] and weight [V, H], got {tuple(hidden_TH.shape)} and "
                         f"{tuple(weight_VH.shape)}")
    if targets_T.shape != (tokens,):
        raise ValueError(f"expected targets [{tokens}], got {tuple(targets_T.shape)}")
    mask = torch.ones(tokens, dtype=torch.bool, device=hidden_TH.device) if mask_T is None else mask_T.bool()
    if mask.shape != (tokens,):
        raise ValueError(f"expected a mask [{tokens}], got {tuple(mask.shape)}")
    bounds = (torch.tensor([0, tokens], device=hidden_TH.device) if cu_seqlens is None
              else cu_seqlens.to(device=hidden_TH.device, dtype=torch.int64))
    if bounds.dim() != 1 or len(bounds) < 2 or int(bounds[0]) != 0 or int(bounds[-1]) != tokens \
            or bool((bounds.diff() < 0).any()):
        raise ValueError(f"cu_seqlens must rise from 0 to {tokens} tokens, got {bounds.tolist()[:8]}")
    scored = targets_T[mask]
    if scored.numel() and (int(scored.min()) < 0 or int(scored.max()) >= weight_VH.shape[0]):
        raise ValueError(f"masked targets must be token ids in [0, {weight_VH.shape[0]}), got "
                         f"[{int(scored.min())}, {int(scored.max())}]")
    return mask, bounds


def document_index(bounds: torch.Tensor, tokens: int) -> torch.Tensor:
    """Document of each token [T] (int64) from boundaries [D + 1]."""
    positions = torch.arange(tokens, device=bounds.device)
    return torch.searchsorted(bounds[1:], positions, right=True)


def linear_logprobs_reference(hidden_TH: torch.Tensor, weight_VH: torch.Tensor, targets_T: torch.Tensor,
                              mask_T: torch.Tensor | None = None, cu_seqlens: torch.Tensor | None = None,
                              chunk_tokens: int = 1024) -> LinearLogprobs:
    mask, bounds = check_inputs(hidden_TH, weight_VH, targets_T, mask_T, cu_seqlens)
    rows_N = mask.nonzero().squeeze(1)
    pieces = []
    for start in range(0, len(rows_N), chunk_tokens):
        rows_C = rows_N[start:start + chunk_tokens]
        logits_CV = (hidden_TH[rows_C] @ weight_VH.T).float()
        pieces.append(logits_CV.gather(1, targets_T[rows_C, None].long()).squeeze(1) - torch.logsumexp(logits_CV, 1))
    picked_N = torch.cat(pieces) if pieces else hidden_TH.new_zeros(0, dtype=torch.float32)
    logprobs_T = hidden_TH.new_zeros(hidden_TH.shape[0], dtype=torch.float32).index_put((rows_N,), picked_N)
    documents = len(bounds) - 1
    owner_N = document_index(bounds, hidden_TH.shape[0])[rows_N]
    nll_sum_D = torch.zeros(documents, dtype=torch.float32, device=hidden_TH.device)
    nll_sum_D.index_add_(0, owner_N, -picked_N.detach())
    return LinearLogprobs(logprobs_T, nll_sum_D, torch.bincount(owner_N, minlength=documents))
