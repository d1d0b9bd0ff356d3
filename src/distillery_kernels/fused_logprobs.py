"""Fused linear log-probabilities: per-token log p(target) under an LM head, never building the [T, V] logits.

For scored tokens t (mask on), vocabulary entries v, hidden size H and target ids y_t:
    z_tv      = sum_k hidden_tk weight_vk
    lse_t     = log sum_v exp z_tv
    logprob_t = z_t,y_t - lse_t
    nll_d     = -sum over scored t in document d of logprob_t,   tokens_d = how many there are
With an upstream gradient g_t = dL/dlogprob_t:
    dz_tv           = g_t (1[v = y_t] - exp(z_tv - lse_t))
    d hidden_t      = sum_v dz_tv weight_v
    d weight_v      = sum_t dz_tv hidden_t

Forward: one 2-D grid of (token tile, vocabulary tile) programs, grouped along tokens so that neighbouring
programs share weight tiles in L2. Each computes its [BLOCK_T, BLOCK_V] block of z in float32 registers
(K-loop over H) and keeps only the block's log-sum-exp per row, plus the target logit in the one tile that holds
the target. A second small kernel merges the tiles' log-sum-exps per token with the online rule
    m' = max(m, x),  s' = s exp(m - m') + exp(x - m'),  lse = m + log s
writes logprob_t and lse_t, and adds each token's NLL and count to its document (atomics). Extra memory is
T x ceil(V / BLOCK_V) floats (about 80 MB for 32k tokens and a 152k vocabulary).

Backward: tokens in chunks of C; the same tile code recomputes z for the chunk and writes dz ([C, V], in the
inputs' dtype), then two cuBLAS matmuls give d hidden for the chunk and add its share to d weight.

Only scored tokens are computed: the launcher gathers their row indices and the kernels read hidden through
them. Offsets that can pass 2^31 (rows, vocabulary, tile bases) are int64.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from distillery_kernels.fused_logprobs_reference import LinearLogprobs, check_inputs, document_index

DZ_BUFFER_BYTES = 256 << 20
"""Size of the backward's per-chunk dz buffer; sets the chunk of tokens."""


@dataclass(frozen=True)
class Tiles:
    """Block sizes and launch settings of the tile kernels."""

    block_t: int
    block_v: int
    block_k: int
    group_t: int = 8
    num_warps: int = 8
    num_stages: int = 3


def default_tiles(dtype: torch.dtype) -> Tiles:
    """Hopper-sized tiles for 16-bit inputs (tensor cores); smaller ones for exact fp32 (no tf32)."""
    if dtype in (torch.bfloat16, torch.float16):
        return Tiles(block_t=128, block_v=256, block_k=64)
    return Tiles(block_t=64, block_v=64, block_k=32, num_warps=4, num_stages=2)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _tile_coordinates(pid, num_t, num_v, GROUP_T: tl.constexpr):
    """Program id -> (token tile, vocabulary tile), walking GROUP_T token tiles down each vocabulary column."""
    per_group = GROUP_T * num_v
    first_t = (pid // per_group) * GROUP_T
    group_size = tl.minimum(num_t - first_t, GROUP_T)
    return first_t + (pid % per_group) % group_size, (pid % per_group) // group_size


@triton.jit
def _logits_tile(hidden_ptr, weight_ptr, rows, offs_v, V, H, stride_ht, stride_hk, stride_wv, stride_wk,
                 BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr,
                 DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """z for one tile in float32: hidden[rows] @ weight[offs_v].T; columns past V read row V - 1 (masked later)."""
    offs_k = tl.arange(0, BLOCK_K)
    safe_v = tl.minimum(offs_v, V - 1)
    h_ptrs = hidden_ptr + rows[:, None] * stride_ht + offs_k[None, :] * stride_hk
    w_ptrs = weight_ptr + safe_v[None, :] * stride_wv + offs_k[:, None] * stride_wk
    acc = tl.zeros((BLOCK_T, BLOCK_V), dtype=tl.float32)
    for k_start in range(0, H, BLOCK_K):
        if EVEN_K:
            h = tl.load(h_ptrs)
            w = tl.load(w_ptrs)
        else:
            k_ok = offs_k + k_start < H
            h = tl.load(h_ptrs, mask=k_ok[None, :], other=0.0)
            w = tl.load(w_ptrs, mask=k_ok[:, None], other=0.0)
        if UPCAST:  # the interpreter multiplies bfloat16 bit patterns in tl.dot (triton-lang/triton#11584)
            h = h.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(h, w, acc=acc, input_precision=DOT_PRECISION)
        h_ptrs += BLOCK_K * stride_hk
        w_ptrs += BLOCK_K * stride_wk
    return acc


@triton.jit
def _forward_tiles_kernel(hidden_ptr, weight_ptr, rows_ptr, targets_ptr, partial_lse_ptr, target_logit_ptr,
                          N, V, H, stride_ht, stride_hk, stride_wv, stride_wk,
                          BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
                          GROUP_T: tl.constexpr, EVEN_K: tl.constexpr, DOT_PRECISION: tl.constexpr,
                          UPCAST: tl.constexpr):
    """Per tile: log-sum-exp of each row's BLOCK_V logits -> partial_lse[tile_v, n]; target logit -> target_logit[n]."""
    pid_t, pid_v = _tile_coordinates(tl.program_id(0), tl.cdiv(N, BLOCK_T), tl.cdiv(V, BLOCK_V), GROUP_T)
    offs_t = pid_t.to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    first_v = pid_v.to(tl.int64) * BLOCK_V
    offs_v = first_v + tl.arange(0, BLOCK_V)
    t_ok = offs_t < N
    rows = tl.load(rows_ptr + offs_t, mask=t_ok, other=0)
    z = _logits_tile(hidden_ptr, weight_ptr, rows, offs_v, V, H, stride_ht, stride_hk, stride_wv, stride_wk,
                     BLOCK_T, BLOCK_V, BLOCK_K, EVEN_K, DOT_PRECISION, UPCAST)
    z = tl.where(offs_v[None, :] < V, z, float("-inf"))
    row_max = tl.max(z, axis=1)
    lse = row_max + tl.log(tl.sum(tl.exp(z - row_max[:, None]), axis=1))
    tl.store(partial_lse_ptr + pid_v.to(tl.int64) * N + offs_t, lse, mask=t_ok)
    targets = tl.load(targets_ptr + offs_t, mask=t_ok, other=-1)
    target_z = tl.sum(tl.where(offs_v[None, :] == targets[:, None], z, 0.0), axis=1)
    owns = (targets >= first_v) & (targets < first_v + BLOCK_V)
    tl.store(target_logit_ptr + offs_t, target_z, mask=t_ok & owns)


@triton.jit
def _merge_kernel(partial_lse_ptr, target_logit_ptr, owner_ptr, logprob_ptr, lse_ptr, nll_ptr, count_ptr,
                  N, NUM_V, BLOCK: tl.constexpr):
    """Online log-sum-exp over the vocabulary tiles; logprob and lse per token; NLL and count per document."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < N
    running_max = tl.full((BLOCK,), float("-inf"), tl.float32)
    running_sum = tl.zeros((BLOCK,), tl.float32)
    partial_ptrs = partial_lse_ptr + offs
    for _ in range(NUM_V):
        tile_lse = tl.load(partial_ptrs, mask=ok, other=0.0)
        new_max = tl.maximum(running_max, tile_lse)
        running_sum = running_sum * tl.exp(running_max - new_max) + tl.exp(tile_lse - new_max)
        running_max = new_max
        partial_ptrs += N
    lse = running_max + tl.log(running_sum)
    logprob = tl.load(target_logit_ptr + offs, mask=ok, other=0.0) - lse
    tl.store(logprob_ptr + offs, logprob, mask=ok)
    tl.store(lse_ptr + offs, lse, mask=ok)
    owner = tl.load(owner_ptr + offs, mask=ok, other=0)
    tl.atomic_add(nll_ptr + owner, -logprob, mask=ok)
    tl.atomic_add(count_ptr + owner, tl.full((BLOCK,), 1, tl.int32), mask=ok)


@triton.jit
def _grad_logits_kernel(hidden_ptr, weight_ptr, rows_ptr, targets_ptr, lse_ptr, grad_ptr, dz_ptr,
                        row_start, C, V, H, stride_ht, stride_hk, stride_wv, stride_wk, stride_dz,
                        BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
                        GROUP_T: tl.constexpr, EVEN_K: tl.constexpr, DOT_PRECISION: tl.constexpr,
                        UPCAST: tl.constexpr):
    """dz = g (onehot(target) - softmax(z)) for the chunk of C scored tokens starting at row_start."""
    pid_t, pid_v = _tile_coordinates(tl.program_id(0), tl.cdiv(C, BLOCK_T), tl.cdiv(V, BLOCK_V), GROUP_T)
    local_t = pid_t.to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_v = pid_v.to(tl.int64) * BLOCK_V + tl.arange(0, BLOCK_V)
    t_ok = local_t < C
    offs_t = row_start + local_t
    rows = tl.load(rows_ptr + offs_t, mask=t_ok, other=0)
    z = _logits_tile(hidden_ptr, weight_ptr, rows, offs_v, V, H, stride_ht, stride_hk, stride_wv, stride_wk,
                     BLOCK_T, BLOCK_V, BLOCK_K, EVEN_K, DOT_PRECISION, UPCAST)
    lse = tl.load(lse_ptr + offs_t, mask=t_ok, other=0.0)
    upstream = tl.load(grad_ptr + offs_t, mask=t_ok, other=0.0)
    targets = tl.load(targets_ptr + offs_t, mask=t_ok, other=-1)
    onehot = tl.where(offs_v[None, :] == targets[:, None], 1.0, 0.0)
    dz = upstream[:, None] * (onehot - tl.exp(z - lse[:, None]))
    tl.store(dz_ptr + local_t[:, None] * stride_dz + offs_v[None, :], dz.to(dz_ptr.dtype.element_ty),
             mask=t_ok[:, None] & (offs_v[None, :] < V))


def _tile_meta(tiles: Tiles, hidden_TH: torch.Tensor) -> dict[str, object]:
    return {"BLOCK_T": tiles.block_t, "BLOCK_V": tiles.block_v, "BLOCK_K": tiles.block_k, "GROUP_T": tiles.group_t,
            "EVEN_K": hidden_TH.shape[1] % tiles.block_k == 0,
            "DOT_PRECISION": "ieee" if hidden_TH.dtype == torch.float32 else "tf32",
            "UPCAST": _interpreting(), "num_warps": tiles.num_warps, "num_stages": tiles.num_stages}


def _forward(hidden_TH: torch.Tensor, weight_VH: torch.Tensor, rows_N: torch.Tensor, targets_N: torch.Tensor,
             owner_N: torch.Tensor, documents: int, tiles: Tiles) -> tuple[torch.Tensor, ...]:
    """(logprob_N, lse_N, nll_sum_D, tokens_D) of the scored rows."""
    scored, (vocab, hidden) = len(rows_N), weight_VH.shape
    device = hidden_TH.device
    nll_sum_D = torch.zeros(documents, dtype=torch.float32, device=device)
    count_D = torch.zeros(documents, dtype=torch.int32, device=device)
    logprob_N = torch.empty(scored, dtype=torch.float32, device=device)
    lse_N = torch.empty(scored, dtype=torch.float32, device=device)
    if scored:
        vocab_tiles = triton.cdiv(vocab, tiles.block_v)
        partial_lse = torch.empty(vocab_tiles, scored, dtype=torch.float32, device=device)
        target_logit_N = torch.empty(scored, dtype=torch.float32, device=device)
        grid = (triton.cdiv(scored, tiles.block_t) * vocab_tiles,)
        _forward_tiles_kernel[grid](hidden_TH, weight_VH, rows_N, targets_N, partial_lse, target_logit_N,
                                    scored, vocab, hidden, *hidden_TH.stride(), *weight_VH.stride(),
                                    **_tile_meta(tiles, hidden_TH))
        merge_block = 256
        _merge_kernel[(triton.cdiv(scored, merge_block),)](partial_lse, target_logit_N, owner_N, logprob_N, lse_N,
                                                          nll_sum_D, count_D, scored, vocab_tiles, BLOCK=merge_block)
    return logprob_N, lse_N, nll_sum_D, count_D.long()


def _chunk_tokens(vocab: int, dtype: torch.dtype, tiles: Tiles) -> int:
    rows = DZ_BUFFER_BYTES // (vocab * torch.finfo(dtype).bits // 8)
    return max(tiles.block_t, rows // tiles.block_t * tiles.block_t)


def _backward(hidden_TH: torch.Tensor, weight_VH: torch.Tensor, rows_N: torch.Tensor, targets_N: torch.Tensor,
              lse_N: torch.Tensor, grad_N: torch.Tensor, tiles: Tiles, chunk_tokens: int,
              need_hidden: bool, need_weight: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    scored, (vocab, hidden) = len(rows_N), weight_VH.shape
    grad_hidden = torch.zeros_like(hidden_TH) if need_hidden else None
    grad_weight = torch.zeros_like(weight_VH) if need_weight else None
    dz_buffer = torch.empty(min(chunk_tokens, scored), vocab, dtype=hidden_TH.dtype, device=hidden_TH.device)
    for start in range(0, scored, chunk_tokens):
        count = min(chunk_tokens, scored - start)
        dz_CV = dz_buffer[:count]
        grid = (triton.cdiv(count, tiles.block_t) * triton.cdiv(vocab, tiles.block_v),)
        _grad_logits_kernel[grid](hidden_TH, weight_VH, rows_N, targets_N, lse_N, grad_N, dz_CV, start, count,
                                  vocab, hidden, *hidden_TH.stride(), *weight_VH.stride(), dz_CV.stride(0),
                                  **_tile_meta(tiles, hidden_TH))
        rows_C = rows_N[start:start + count]
        if grad_hidden is not None:
            grad_hidden[rows_C] = dz_CV @ weight_VH
        if grad_weight is not None:
            grad_weight.addmm_(dz_CV.T, hidden_TH[rows_C])
    return grad_hidden, grad_weight


class FusedLinearLogprobs(torch.autograd.Function):
    """(hidden [T, H], weight [V, H]) -> (logprobs [T], nll_sum [D], tokens [D]); only logprobs has a gradient."""

    @staticmethod
    def forward(ctx, hidden_TH: torch.Tensor, weight_VH: torch.Tensor, targets_T: torch.Tensor,
                mask_T: torch.Tensor, bounds: torch.Tensor, tiles: Tiles,
                chunk_tokens: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows_N = mask_T.nonzero().squeeze(1)
        targets_N = targets_T[rows_N].long().contiguous()
        owner_N = document_index(bounds, hidden_TH.shape[0])[rows_N].contiguous()
        logprob_N, lse_N, nll_sum_D, tokens_D = _forward(hidden_TH, weight_VH, rows_N, targets_N, owner_N,
                                                         len(bounds) - 1, tiles)
        ctx.save_for_backward(hidden_TH, weight_VH, rows_N, targets_N, lse_N)
        ctx.tiles, ctx.chunk_tokens = tiles, chunk_tokens
        ctx.mark_non_differentiable(nll_sum_D, tokens_D)
        logprobs_T = torch.zeros(hidden_TH.shape[0], dtype=torch.float32, device=hidden_TH.device)
        logprobs_T[rows_N] = logprob_N
        return logprobs_T, nll_sum_D, tokens_D

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_logprobs_T: torch.Tensor, *_: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hidden_TH, weight_VH, rows_N, targets_N, lse_N = ctx.saved_tensors
        grad_N = grad_logprobs_T[rows_N].float().contiguous()
        grad_hidden, grad_weight = _backward(hidden_TH, weight_VH, rows_N, targets_N, lse_N, grad_N, ctx.tiles,
                                             ctx.chunk_tokens, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return grad_hidden, grad_weight, None, None, None, None, None


def fused_linear_logprobs(hidden_TH: torch.Tensor, weight_VH: torch.Tensor, targets_T: torch.Tensor,
                          mask_T: torch.Tensor | None = None, cu_seqlens: torch.Tensor | None = None,
                          tiles: Tiles | None = None, chunk_tokens: int | None = None) -> LinearLogprobs:
    """Log p(targets) of the masked tokens and per-document sums (cu_seqlens [D + 1]; one document if None)."""
    mask, bounds = check_inputs(hidden_TH, weight_VH, targets_T, mask_T, cu_seqlens)
    if hidden_TH.dtype != weight_VH.dtype or hidden_TH.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"hidden and weight must share one of float32/bfloat16/float16, got {hidden_TH.dtype} "
                         f"and {weight_VH.dtype}")
    tiles = tiles or default_tiles(hidden_TH.dtype)
    chunk_tokens = chunk_tokens or _chunk_tokens(weight_VH.shape[0], hidden_TH.dtype, tiles)
    return LinearLogprobs(*FusedLinearLogprobs.apply(hidden_TH, weight_VH, targets_T, mask, bounds, tiles,
                                                     chunk_tokens))
