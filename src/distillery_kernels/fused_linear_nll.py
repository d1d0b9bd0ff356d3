"""Fused weighted NLL loss of a linear head for training (packed SFT), its gradients computed in the forward pass.

For scored tokens t (weight w_t != 0), hidden h_t, head W [V, H] and targets y_t:
    z_tv = h_t . W_v,   lse_t = log sum_v exp z_tv,   nll_t = lse_t - z_t,y_t,   L = sum_t w_t nll_t
    dL/dz_tv = w_t (exp(z_tv - lse_t) - 1[v = y_t]),   dL/dh_t = sum_v dL/dz_tv W_v,   dL/dW_v = sum_t dL/dz_tv h_t

Why a second op beside fused_logprobs: its per-token log-probabilities can take any upstream gradient, so its
backward must recompute z (four [T, H] x [H, V] matmuls for forward + backward). A loss with known token weights
lets the forward produce the gradients at once, with z never recomputed: three matmuls. Tokens go in chunks of C:
    z_CV = h_C W^T                      (cuBLAS, into a reused [C, V] buffer in the inputs' dtype)
    row kernel (Triton, one program per token): online log-sum-exp over V, nll_t, then dz written over z in place
    dh_C = dz_CV W,   dW += dz_CV^T h_C (cuBLAS)
The backward only scales the stored gradients by dL_out/dL, in place: it runs once (no retain_graph reuse).
Memory beyond the gradients themselves: the [C, V] buffer (C from ROW_BUFFER_BYTES).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from distillery_kernels.fused_linear_nll_reference import LinearNLL
from distillery_kernels.fused_logprobs_reference import check_inputs

ROW_BUFFER_BYTES = 256 << 20
"""Size of the [C, V] logits/gradient buffer; sets the chunk of tokens."""


@triton.jit
def _nll_rows_kernel(z_ptr, targets_ptr, weights_ptr, nll_ptr, V, stride_z, WRITE_GRAD: tl.constexpr,
                     BLOCK_V: tl.constexpr):
    """One token per program: nll from its row of z; with WRITE_GRAD, dz = w (softmax - onehot) over that row."""
    row = tl.program_id(0).to(tl.int64)
    z_row = z_ptr + row * stride_z
    offs = tl.arange(0, BLOCK_V)
    lane_max = tl.full((BLOCK_V,), -1e30, tl.float32)  # finite start: masked lanes add exp(-inf) = 0, never nan
    lane_sum = tl.zeros((BLOCK_V,), tl.float32)
    for start in range(0, V, BLOCK_V):
        z = tl.load(z_row + start + offs, mask=start + offs < V, other=float("-inf")).to(tl.float32)
        new_max = tl.maximum(lane_max, z)
        lane_sum = lane_sum * tl.exp(lane_max - new_max) + tl.exp(z - new_max)
        lane_max = new_max
    row_max = tl.max(lane_max, axis=0)
    lse = row_max + tl.log(tl.sum(lane_sum * tl.exp(lane_max - row_max), axis=0))
    target = tl.load(targets_ptr + row)
    tl.store(nll_ptr + row, lse - tl.load(z_row + target).to(tl.float32))
    if WRITE_GRAD:
        weight = tl.load(weights_ptr + row)
        for start in range(0, V, BLOCK_V):
            cols = start + offs
            ok = cols < V
            z = tl.load(z_row + cols, mask=ok, other=0.0).to(tl.float32)
            dz = weight * (tl.exp(z - lse) - tl.where(cols == target, 1.0, 0.0))
            tl.store(z_row + cols, dz.to(z_ptr.dtype.element_ty), mask=ok)


def _chunk_tokens(vocab: int, dtype: torch.dtype) -> int:
    return max(16, ROW_BUFFER_BYTES // (vocab * torch.finfo(dtype).bits // 8))


def _loss_and_gradients(hidden_TH: torch.Tensor, weight_VH: torch.Tensor, rows_N: torch.Tensor,
                        targets_N: torch.Tensor, weights_N: torch.Tensor, chunk_tokens: int, need_hidden: bool,
                        need_weight: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    scored, vocab = len(rows_N), weight_VH.shape[0]
    nll_N = torch.empty(scored, dtype=torch.float32, device=hidden_TH.device)
    grad_hidden = torch.zeros_like(hidden_TH) if need_hidden else None
    grad_weight = torch.zeros_like(weight_VH) if need_weight else None
    z_buffer = torch.empty(min(chunk_tokens, scored), vocab, dtype=hidden_TH.dtype, device=hidden_TH.device)
    for start in range(0, scored, chunk_tokens):
        end = min(start + chunk_tokens, scored)
        rows_C = rows_N[start:end]
        hidden_CH = hidden_TH[rows_C]
        z_CV = torch.mm(hidden_CH, weight_VH.T, out=z_buffer[:end - start])
        _nll_rows_kernel[(end - start,)](z_CV, targets_N[start:end], weights_N[start:end], nll_N[start:end], vocab,
                                         z_CV.stride(0), WRITE_GRAD=need_hidden or need_weight, BLOCK_V=1024,
                                         num_warps=8)
        if grad_hidden is not None:
            grad_hidden[rows_C] = z_CV @ weight_VH
        if grad_weight is not None:
            grad_weight.addmm_(z_CV.T, hidden_CH)
    return nll_N, grad_hidden, grad_weight


class FusedLinearNLL(torch.autograd.Function):
    """(hidden [T, H], weight [V, H]) -> (sum_t w_t nll_t, nll [T]); gradients made in forward, scaled in backward."""

    @staticmethod
    def forward(ctx, hidden_TH: torch.Tensor, weight_VH: torch.Tensor, targets_T: torch.Tensor,
                weights_T: torch.Tensor, chunk_tokens: int, need_hidden: bool,
                need_weight: bool) -> tuple[torch.Tensor, torch.Tensor]:
        rows_N = (weights_T != 0).nonzero().squeeze(1)
        weights_N = weights_T[rows_N].float().contiguous()
        nll_N, ctx.grad_hidden, ctx.grad_weight = _loss_and_gradients(
            hidden_TH, weight_VH, rows_N, targets_T[rows_N].long().contiguous(), weights_N, chunk_tokens,
            need_hidden, need_weight)
        nll_T = torch.zeros(hidden_TH.shape[0], dtype=torch.float32, device=hidden_TH.device)
        nll_T[rows_N] = nll_N
        ctx.mark_non_differentiable(nll_T)
        return (nll_N * weights_N).sum(), nll_T

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: torch.Tensor, _: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grads = []
        for grad in (ctx.grad_hidden, ctx.grad_weight):
            grads.append(None if grad is None else grad.mul_(grad_loss.to(grad.dtype)))
        ctx.grad_hidden = ctx.grad_weight = None
        return grads[0], grads[1], None, None, None, None, None


def fused_linear_nll_sum(hidden_TH: torch.Tensor, weight_VH: torch.Tensor, targets_T: torch.Tensor,
                         weights_T: torch.Tensor, chunk_tokens: int | None = None) -> LinearNLL:
    """sum_t weights_t * -log p(targets_t); tokens with weight 0 are not computed."""
    check_inputs(hidden_TH, weight_VH, targets_T, weights_T != 0, None)
    if hidden_TH.dtype != weight_VH.dtype:
        raise ValueError(f"hidden and weight must share a dtype, got {hidden_TH.dtype} and {weight_VH.dtype}")
    chunk_tokens = chunk_tokens or _chunk_tokens(weight_VH.shape[0], hidden_TH.dtype)
    grad_on = torch.is_grad_enabled()  # gradients are made in forward: only when a backward can follow
    return LinearNLL(*FusedLinearNLL.apply(hidden_TH, weight_VH, targets_T, weights_T, chunk_tokens,
                                           grad_on and hidden_TH.requires_grad, grad_on and weight_VH.requires_grad))
