"""The fused weighted NLL loss (gradients made in forward) against its torch reference.

V = 2101 spans three 1024-wide blocks of the row kernel plus a partial one; chunk_tokens=16 gives three chunks.
The loss's logits pass through the inputs' dtype (as in plain torch), so 16-bit forward tolerances are looser
than fused_logprobs', whose logits stay in float32 registers.
"""

from __future__ import annotations

import pytest
import torch

from distillery_kernels import linear_nll_sum_reference
from distillery_kernels.fused_linear_nll import fused_linear_nll_sum

# dtype: (nll atol, gradient atol, gradient rtol)
TOLERANCE = {
    torch.float32: (2e-5, 2e-5, 1e-4),
    torch.bfloat16: (3e-2, 3e-2, 3e-2),
    torch.float16: (4e-3, 4e-3, 4e-3),
}


def make_inputs(tokens: int, hidden: int, vocab: int, dtype: torch.dtype, device: torch.device,
                seed: int = 0) -> tuple[torch.Tensor, ...]:
    """hidden, weight, targets, and token weights mixing 0 (prompt), 1 and fractional values."""
    generator = torch.Generator().manual_seed(seed)
    hidden_TH = torch.randn(tokens, hidden, generator=generator).to(dtype)
    weight_VH = (torch.randn(vocab, hidden, generator=generator) * 2 / hidden ** 0.5).to(dtype)
    targets_T = torch.randint(0, vocab, (tokens,), generator=generator)
    weights_T = torch.tensor([0.0, 1.0, 0.5, 1.0])[torch.randint(0, 4, (tokens,), generator=generator)]
    weights_T[::5] = 0.0
    return tuple(t.to(device) for t in (hidden_TH, weight_VH, targets_T, weights_T))


def fp32_reference(hidden_TH, weight_VH, targets_T, weights_T, loss_scale: float):
    hidden = hidden_TH.detach().float().requires_grad_()
    weight = weight_VH.detach().float().requires_grad_()
    result = linear_nll_sum_reference(hidden, weight, targets_T, weights_T, chunk_tokens=8)
    (result.loss * loss_scale).backward()
    return result, hidden.grad, weight.grad


@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
@pytest.mark.parametrize("shape", [(37, 24, 2101), (16, 32, 1024)], ids=lambda s: "x".join(map(str, s)))
def test_loss_and_gradients_match_reference(shape, dtype, device) -> None:
    hidden_TH, weight_VH, targets_T, weights_T = make_inputs(*shape, dtype, device)
    hidden_TH.requires_grad_()
    weight_VH.requires_grad_()
    result = fused_linear_nll_sum(hidden_TH, weight_VH, targets_T, weights_T, chunk_tokens=16)
    (result.loss * 0.25).backward()  # the backward scales the gradients made in forward
    expected, grad_hidden, grad_weight = fp32_reference(hidden_TH, weight_VH, targets_T, weights_T, 0.25)
    nll_atol, atol, rtol = TOLERANCE[dtype]
    torch.testing.assert_close(result.nll_T, expected.nll_T, atol=nll_atol, rtol=1e-5)
    torch.testing.assert_close(result.loss, expected.loss.detach(), atol=nll_atol * shape[0], rtol=1e-5)
    torch.testing.assert_close(hidden_TH.grad.float(), grad_hidden, atol=atol, rtol=rtol)
    torch.testing.assert_close(weight_VH.grad.float(), grad_weight, atol=atol, rtol=rtol)
    unscored = weights_T == 0
    assert unscored.any() and not result.nll_T[unscored].any() and not hidden_TH.grad[unscored].any()


def test_frozen_weight_and_no_grad_mode(device) -> None:
    hidden_TH, weight_VH, targets_T, weights_T = make_inputs(37, 24, 2101, torch.float32, device, seed=1)
    with torch.no_grad():
        evaluated = fused_linear_nll_sum(hidden_TH.requires_grad_(), weight_VH, targets_T, weights_T)
    assert not evaluated.loss.requires_grad
    result = fused_linear_nll_sum(hidden_TH, weight_VH, targets_T, weights_T, chunk_tokens=16)
    result.loss.backward()
    expected, grad_hidden, _ = fp32_reference(hidden_TH, weight_VH, targets_T, weights_T, 1.0)
    torch.testing.assert_close(evaluated.loss, expected.loss.detach(), atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(hidden_TH.grad, grad_hidden, atol=2e-5, rtol=1e-4)
    assert weight_VH.grad is None


def test_no_trained_token_gives_a_zero_loss(device) -> None:
    hidden_TH, weight_VH, targets_T, weights_T = make_inputs(37, 24, 2101, torch.float32, device, seed=2)
    hidden_TH.requires_grad_()
    result = fused_linear_nll_sum(hidden_TH, weight_VH, targets_T, torch.zeros_like(weights_T))
    result.loss.backward()
    assert float(result.loss.detach()) == 0.0 and not hidden_TH.grad.any()


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU: cuBLAS chunks and the compiled row kernel only run there")
def test_gpu_large_vocabulary_matches_reference() -> None:
    inputs = list(make_inputs(2049, 576, 49153, torch.bfloat16, torch.device("cuda"), seed=3))
    inputs[0].requires_grad_()
    inputs[1].requires_grad_()
    result = fused_linear_nll_sum(*inputs)
    result.loss.backward()
    expected, grad_hidden, grad_weight = fp32_reference(*inputs, loss_scale=1.0)
    torch.testing.assert_close(result.nll_T, expected.nll_T, atol=5e-2, rtol=1e-3)
    torch.testing.assert_close(inputs[0].grad.float(), grad_hidden, atol=5e-2, rtol=3e-2)
    torch.testing.assert_close(inputs[1].grad.float(), grad_weight, atol=5e-2, rtol=3e-2)
