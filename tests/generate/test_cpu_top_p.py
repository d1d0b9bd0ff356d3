"""Top-p on vLLM's CPU sampler without the full-vocabulary sort: the same tokens kept as vLLM's own function.

vLLM is imported inside the tests, not at collection: importing it (and with it Triton) while pytest collects this
folder would come before tests/kernels/conftest.py asks Triton for its interpreter, and break those tests.
"""

from __future__ import annotations

from types import ModuleType

import pytest
import torch

from distillery.llm import cpu_top_p

VOCAB = 49_152


@pytest.fixture(scope="module")
def sampler() -> ModuleType:
    return pytest.importorskip("vllm.v1.sample.ops.topk_topp_sampler")


def vllm_top_k_top_p(logits, k, p):
    """vLLM's own sort-based function, whatever `install` did to the module attribute."""
    from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch

    return apply_top_k_top_p_pytorch(logits, k, p, allow_cpu_sync=True)


def language_model_like_logits(rows: int, seed: int) -> torch.Tensor:
    """Peaked rows (a nucleus of a few tokens to a few hundred) and flat rows (wider than the candidates)."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.tensor([12.0, 8.0, 6.0, 0.5] * (rows // 4)).unsqueeze(1)
    return torch.randn(rows, VOCAB, generator=generator) * scales


@pytest.mark.parametrize("with_top_k", [False, True])
def test_the_same_tokens_survive_as_under_vllms_sort(sampler: ModuleType, with_top_k: bool) -> None:
    logits = language_model_like_logits(16, seed=3)
    p = torch.tensor([0.95, 0.5, 0.9, 0.95, 1.0, 0.7, 0.95, 0.99] * 2)
    k = torch.tensor([40, 1000, 5, VOCAB] * 4) if with_top_k else None
    expected = vllm_top_k_top_p(logits.clone(), None if k is None else k.clone(), p.clone())
    got = cpu_top_p.nucleus_top_p(logits.clone(), None if k is None else k.clone(), p.clone(), vllm_top_k_top_p)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    assert torch.equal(got[~torch.isinf(got)], expected[~torch.isinf(expected)])
    kept = (~torch.isinf(got)).sum(dim=1)
    assert kept.min() >= 1
    narrow, wide = (kept < cpu_top_p.CANDIDATES).sum(), ((kept > cpu_top_p.CANDIDATES) & (p < 1)).sum()
    assert narrow >= 8 and wide >= 2, "the rows no longer exercise both the candidates and the fallback"


def test_a_batch_without_top_p_is_vllms_own_path(sampler: ModuleType) -> None:
    logits = language_model_like_logits(4, seed=5)
    k = torch.tensor([3, 10, VOCAB, 1])
    expected = vllm_top_k_top_p(logits.clone(), k.clone(), None)
    got = cpu_top_p.nucleus_top_p(logits.clone(), k.clone(), None, vllm_top_k_top_p)
    assert torch.equal(got, expected)
    assert cpu_top_p.nucleus_top_p(logits.clone(), None, torch.ones(4), vllm_top_k_top_p).isinf().sum() == 0


def test_install_routes_the_cpu_sampler_once(sampler: ModuleType) -> None:
    assert cpu_top_p.install()
    installed = sampler.apply_top_k_top_p
    assert getattr(installed, "_distillery_nucleus", False)
    assert cpu_top_p.install()
    assert sampler.apply_top_k_top_p is installed, "installed twice: every call would go through two wrappers"
