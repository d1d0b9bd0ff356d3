"""The fused linear log-probability kernel against its torch reference: values, both gradients, masks, documents.

Shapes are odd on purpose (T, H, V not multiples of the tiles) and tiles are small, so every dimension spans
several tiles and a partial one. Bf16/fp16 inputs are compared with the fp32 reference on the same (rounded)
values: the kernel multiplies them exactly and accumulates in fp32, so forward values are tight; gradients are
written in the inputs' dtype, hence the looser gradient tolerances.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distillery_kernels import linear_logprobs_reference
from distillery_kernels.fused_logprobs import Tiles, default_tiles, fused_linear_logprobs

SMALL_TILES = Tiles(block_t=16, block_v=32, block_k=16, group_t=2, num_warps=4, num_stages=2)
# dtype: (forward atol, gradient atol, gradient rtol)
TOLERANCE = {
    torch.float32: (2e-5, 2e-5, 1e-4),
    torch.bfloat16: (5e-5, 3e-2, 2e-2),
    torch.float16: (5e-5, 4e-3, 4e-3),
}
SHAPES = [(37, 24, 101), (32, 32, 64), (5, 40, 33)]


def make_inputs(tokens: int, hidden: int, vocab: int, dtype: torch.dtype, device: torch.device, seed: int = 0,
                logit_scale: float = 1.0) -> tuple[torch.Tensor, ...]:
    """hidden [T, H], weight [V, H], targets [T], a random response mask [T] and cu_seqlens of four documents."""
    generator = torch.Generator().manual_seed(seed)
    hidden_TH = torch.randn(tokens, hidden, generator=generator).to(dtype)
    weight_VH = (torch.randn(vocab, hidden, generator=generator) * logit_scale / hidden ** 0.5).to(dtype)
    targets_T = torch.randint(0, vocab, (tokens,), generator=generator)
    mask_T = torch.rand(tokens, generator=generator) > 0.3
    cuts = sorted(torch.randint(0, tokens + 1, (3,), generator=generator).tolist())
    cu_seqlens = torch.tensor([0, *cuts, tokens])
    return tuple(t.to(device) for t in (hidden_TH, weight_VH, targets_T, mask_T, cu_seqlens))


def fp32_reference(hidden_TH, weight_VH, targets_T, mask_T, cu_seqlens, grad_T=None):
    """The reference on fp32 copies of the inputs; returns (result, grad hidden, grad weight)."""
    hidden = hidden_TH.detach().float().requires_grad_()
    weight = weight_VH.detach().float().requires_grad_()
    result = linear_logprobs_reference(hidden, weight, targets_T, mask_T, cu_seqlens, chunk_tokens=8)
    if grad_T is None:
        return result, None, None
    result.logprobs_T.backward(grad_T)
    return result, hidden.grad, weight.grad


@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_matches_reference(shape, dtype, device) -> None:
    inputs = make_inputs(*shape, dtype, device)
    result = fused_linear_logprobs(*inputs, tiles=SMALL_TILES)
    expected, _, _ = fp32_reference(*inputs)
    atol = TOLERANCE[dtype][0]
    torch.testing.assert_close(result.logprobs_T, expected.logprobs_T, atol=atol, rtol=1e-5)
    torch.testing.assert_close(result.nll_sum_D, expected.nll_sum_D, atol=atol * shape[0], rtol=1e-5)
    assert torch.equal(result.tokens_D, expected.tokens_D)
    assert result.logprobs_T.dtype == torch.float32 and bool((result.logprobs_T[~inputs[3]] == 0).all())


@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
@pytest.mark.parametrize("shape", SHAPES[:2], ids=lambda s: "x".join(map(str, s)))
def test_gradients_match_reference(shape, dtype, device) -> None:
    hidden_TH, weight_VH, targets_T, mask_T, cu_seqlens = make_inputs(*shape, dtype, device, seed=1)
    hidden_TH.requires_grad_()
    weight_VH.requires_grad_()
    grad_T = torch.randn(shape[0], generator=torch.Generator().manual_seed(2)).to(device)
    result = fused_linear_logprobs(hidden_TH, weight_VH, targets_T, mask_T, cu_seqlens, tiles=SMALL_TILES,
                                   chunk_tokens=16)  # several backward chunks
    result.logprobs_T.backward(grad_T)
    _, grad_hidden, grad_weight = fp32_reference(hidden_TH, weight_VH, targets_T, mask_T, cu_seqlens, grad_T)
    _, atol, rtol = TOLERANCE[dtype]
    assert hidden_TH.grad.dtype == dtype and weight_VH.grad.dtype == dtype
    torch.testing.assert_close(hidden_TH.grad.float(), grad_hidden, atol=atol, rtol=rtol)
    torch.testing.assert_close(weight_VH.grad.float(), grad_weight, atol=atol, rtol=rtol)
    assert bool((hidden_TH.grad[~mask_T] == 0).all()), "unscored tokens get no gradient"


def test_large_logits_keep_an_exact_log_sum_exp(device) -> None:
    """Logits in the hundreds overflow a naive exp; the online log-sum-exp must not."""
    inputs = make_inputs(37, 24, 101, torch.float32, device, seed=3, logit_scale=200.0)
    result = fused_linear_logprobs(*inputs, tiles=SMALL_TILES)
    expected, _, _ = fp32_reference(*inputs)
    assert bool(torch.isfinite(result.logprobs_T).all()) and float(result.logprobs_T.min()) < -100
    torch.testing.assert_close(result.logprobs_T, expected.logprobs_T, atol=1e-3, rtol=1e-5)


def test_documents_and_mask_partition_the_sums(device) -> None:
    """Per-document sums are the scored tokens of each document only: an empty document and an unscored one give 0."""
    hidden_TH, weight_VH, targets_T, _, _ = make_inputs(37, 24, 101, torch.float32, device, seed=4)
    cu_seqlens = torch.tensor([0, 10, 10, 25, 37], device=device)
    mask_T = torch.ones(37, dtype=torch.bool, device=device)
    mask_T[10:25] = False
    mask_T[[0, 30]] = False
    result = fused_linear_logprobs(hidden_TH, weight_VH, targets_T, mask_T, cu_seqlens, tiles=SMALL_TILES)
    full = -F.cross_entropy(hidden_TH @ weight_VH.T, targets_T, reduction="none")
    assert result.tokens_D.tolist() == [9, 0, 0, 11]
    expected_D = torch.stack([-full[1:10].sum(), full.new_zeros(()), full.new_zeros(()),
                              -(full[25:30].sum() + full[31:].sum())])
    torch.testing.assert_close(result.nll_sum_D, expected_D, atol=1e-4, rtol=1e-5)


def test_nothing_scored_gives_zeros_and_zero_gradients(device) -> None:
    hidden_TH, weight_VH, targets_T, _, cu_seqlens = make_inputs(37, 24, 101, torch.float32, device, seed=5)
    hidden_TH.requires_grad_()
    weight_VH.requires_grad_()
    mask_T = torch.zeros(37, dtype=torch.bool, device=device)
    result = fused_linear_logprobs(hidden_TH, weight_VH, targets_T, mask_T, cu_seqlens, tiles=SMALL_TILES)
    result.logprobs_T.sum().backward()
    assert not result.logprobs_T.any() and not result.nll_sum_D.any() and not result.tokens_D.any()
    assert not hidden_TH.grad.any() and not weight_VH.grad.any()


def test_strided_hidden_and_a_frozen_weight(device) -> None:
    """Hidden states as a strided view (every other row of a wider buffer), and a weight needing no gradient."""
    hidden_TH, weight_VH, targets_T, mask_T, cu_seqlens = make_inputs(37, 24, 101, torch.float32, device, seed=6)
    wide = torch.zeros(74, 30, device=device)
    wide[::2, 3:27] = hidden_TH
    wide.requires_grad_()
    strided_TH = wide[::2, 3:27]
    assert not strided_TH.is_contiguous()
    result = fused_linear_logprobs(strided_TH, weight_VH, targets_T, mask_T, cu_seqlens, tiles=SMALL_TILES)
    grad_T = torch.randn(37, generator=torch.Generator().manual_seed(7)).to(device)
    result.logprobs_T.backward(grad_T)
    expected, grad_hidden, _ = fp32_reference(hidden_TH, weight_VH, targets_T, mask_T, cu_seqlens, grad_T)
    torch.testing.assert_close(result.logprobs_T, expected.logprobs_T, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(wide.grad[::2, 3:27], grad_hidden, atol=2e-5, rtol=1e-4)
    assert not wide.grad[1::2].any() and weight_VH.grad is None


def test_reference_equals_full_logits_cross_entropy() -> None:
    """The reference itself, chunked across token boundaries, against one plain full-logits cross-entropy."""
    hidden_TH, weight_VH, targets_T, mask_T, cu_seqlens = make_inputs(37, 24, 101, torch.float32, torch.device("cpu"))
    result = linear_logprobs_reference(hidden_TH, weight_VH, targets_T, mask_T, cu_seqlens, chunk_tokens=5)
    full_T = -F.cross_entropy(hidden_TH @ weight_VH.T, targets_T, reduction="none")
    torch.testing.assert_close(result.logprobs_T, torch.where(mask_T, full_T, 0.0), atol=1e-6, rtol=1e-6)
    owner_T = torch.searchsorted(cu_seqlens[1:], torch.arange(37), right=True)
    assert result.tokens_D.tolist() == torch.bincount(owner_T[mask_T], minlength=4).tolist()


@pytest.mark.parametrize("problem, message", [
    ({"targets_T": torch.tensor([0, 101, 2])}, "token ids in \\[0, 101\\)"),
    ({"cu_seqlens": torch.tensor([0, 2])}, "cu_seqlens must rise from 0 to 3"),
    ({"cu_seqlens": torch.tensor([0, 2, 1, 3])}, "cu_seqlens must rise"),
    ({"mask_T": torch.ones(4, dtype=torch.bool)}, "expected a mask \\[3\\]"),
    ({"weight_VH": torch.zeros(101, 24, dtype=torch.bfloat16)}, "must share one of"),
])
def test_bad_inputs_are_named(problem, message, device) -> None:
    arguments = {"hidden_TH": torch.zeros(3, 24), "weight_VH": torch.zeros(101, 24),
                 "targets_T": torch.tensor([0, 1, 2]), "mask_T": None, "cu_seqlens": None} | problem
    with pytest.raises(ValueError, match=message):
        fused_linear_logprobs(**{k: v if v is None else v.to(device) for k, v in arguments.items()})


def test_runs_under_inference_mode_as_the_scorer_calls_it(device) -> None:
    inputs = make_inputs(37, 24, 101, torch.bfloat16, device, seed=9)
    with torch.inference_mode():
        result = fused_linear_logprobs(*inputs, tiles=SMALL_TILES)
    expected, _, _ = fp32_reference(*inputs)
    torch.testing.assert_close(result.nll_sum_D, expected.nll_sum_D, atol=2e-3, rtol=1e-5)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU: the default Hopper tiles and the memory bound only mean "
                                       "something compiled (the CPU tests run the interpreter with small tiles)")


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_gpu_default_tiles_match_reference_without_full_logits(dtype) -> None:
    tokens, hidden, vocab = 2049, 576, 49153
    inputs = list(make_inputs(tokens, hidden, vocab, dtype, torch.device("cuda"), seed=8))
    inputs[0].requires_grad_()
    inputs[1].requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    result = fused_linear_logprobs(*inputs, tiles=default_tiles(dtype))
    forward_extra = torch.cuda.max_memory_allocated() - before
    assert forward_extra < tokens * vocab * 4 / 8, "the forward must not hold a [T, V] float32 logit matrix"
    grad_T = torch.randn(tokens, device="cuda")
    result.logprobs_T.backward(grad_T)
    expected, grad_hidden, grad_weight = fp32_reference(*inputs, grad_T=grad_T)
    atol = 1e-3 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(result.logprobs_T, expected.logprobs_T, atol=atol, rtol=1e-4)
    torch.testing.assert_close(inputs[0].grad.float(), grad_hidden, atol=atol * 5, rtol=2e-2)
    torch.testing.assert_close(inputs[1].grad.float(), grad_weight, atol=atol * 5, rtol=2e-2)


@needs_cuda
def test_dispatch_runs_the_kernel_on_cuda(monkeypatch) -> None:
    from distillery import kernels
    from distillery_kernels import fused_logprobs

    calls = []
    original = fused_logprobs.fused_linear_logprobs
    monkeypatch.setattr(fused_logprobs, "fused_linear_logprobs", lambda *a, **k: calls.append(1) or original(*a, **k))
    inputs = make_inputs(37, 24, 101, torch.float32, torch.device("cuda"))
    result = kernels.linear_logprobs(*inputs)
    expected, _, _ = fp32_reference(*inputs)
    assert calls and torch.allclose(result.logprobs_T, expected.logprobs_T, atol=1e-4)
