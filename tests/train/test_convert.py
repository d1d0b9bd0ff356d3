"""HF <-> Megatron conversion: exact weights round trip, equal logits, and packed attention that keeps
documents apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from distillery.train.batches import packed_inputs, token_losses, weighted_loss_sum
from distillery.train.convert import (
    hf_to_megatron,
    load_hf_state,
    load_shards,
    megatron_to_hf,
    save_hf_folder,
    save_shards,
)
from distillery.train.gpt import ModelShape, build_model, load_state
from distillery.train.packed_file import PackedBin


@pytest.mark.parametrize("model_type,tie", [("llama", False), ("qwen2", False), ("llama", True)])
@pytest.mark.parametrize("tp,pp", [(1, 1), (2, 1), (2, 2)])
def test_round_trip_reproduces_weights_exactly(tmp_path, tiny_model, model_type, tie, tp, pp) -> None:
    folder = tiny_model(tmp_path, model_type, tie=tie)
    shape = ModelShape.from_folder(folder)
    original = load_hf_state(folder)
    shards = hf_to_megatron(original, shape, tp, pp)
    assert len(shards) == tp * pp
    save_shards(shards, tmp_path / "mcore", shape)
    back = megatron_to_hf(load_shards(tmp_path / "mcore"), shape)
    expected = {k: v for k, v in original.items() if not (tie and k == "lm_head.weight")}
    assert sorted(back) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(back[name], tensor), name


def _hf_logits(folder, tokens: torch.Tensor) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(tokens).logits[0]


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_megatron_logits_match_hugging_face(tmp_path, tiny_model, megatron_single, model_type) -> None:
    folder = tiny_model(tmp_path, model_type)
    shape = ModelShape.from_folder(folder)
    model = build_model(shape, 1, 1, torch.float32, torch.device("cpu"))
    load_state(model, hf_to_megatron(load_hf_state(folder), shape, 1, 1)[(0, 0)])
    model.eval()
    tokens = torch.randint(0, shape.vocab_size, (1, 37), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(tokens, torch.arange(37)[None], attention_mask=None)[0]
    torch.testing.assert_close(logits, _hf_logits(folder, tokens), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_smollm2_round_trip_logits(tmp_path, smollm2_dir, megatron_single) -> None:
    shape = ModelShape.from_folder(smollm2_dir)
    shards = hf_to_megatron(load_hf_state(smollm2_dir), shape, 1, 1)
    exported = save_hf_folder(megatron_to_hf(shards, shape), smollm2_dir, tmp_path / "export")
    tokens = torch.randint(0, shape.vocab_size, (1, 24), generator=torch.Generator().manual_seed(1))
    reference = _hf_logits(smollm2_dir, tokens)
    torch.testing.assert_close(_hf_logits(exported, tokens), reference, atol=1e-5, rtol=0)
    model = build_model(shape, 1, 1, torch.float32, torch.device("cpu"))
    load_state(model, shards[(0, 0)])
    model.eval()
    with torch.no_grad():
        logits = model(tokens, torch.arange(24)[None], attention_mask=None)[0]
    torch.testing.assert_close(logits, reference, atol=1e-4, rtol=1e-4)


def test_packed_loss_equals_documents_one_by_one(tmp_path, tiny_model, megatron_single) -> None:
    folder = tiny_model(tmp_path, "qwen2")
    shape = ModelShape.from_folder(folder)
    model = build_model(shape, 1, 1, torch.float32, torch.device("cpu"))
    load_state(model, hf_to_megatron(load_hf_state(folder), shape, 1, 1)[(0, 0)])
    rng = np.random.default_rng(0)
    lengths = [17, 5, 30, 9]
    docs = []
    for length in lengths:
        mask = np.zeros(length, np.uint8)
        mask[int(rng.integers(1, length - 1)):] = 1
        docs.append((rng.integers(0, shape.vocab_size, length).astype(np.int32), mask))
    cu = np.concatenate([[0], np.cumsum(lengths)])

    def as_bin(parts) -> PackedBin:
        bounds = np.concatenate([[0], np.cumsum([len(t) for t, _ in parts])])
        return PackedBin(np.concatenate([t for t, _ in parts]), np.concatenate([m for _, m in parts]),
                         np.concatenate([np.arange(len(t), dtype=np.int32) for t, _ in parts]), bounds)

    with torch.no_grad():
        packed = packed_inputs(as_bin(docs), torch.device("cpu"))
        packed_losses = token_losses(model, packed)
        total = (packed_losses * packed.weights_T).sum() / packed.weights_T.sum()
        separate_sum, separate_count = 0.0, 0.0
        for index, doc in enumerate(docs):
            single = packed_inputs(as_bin([doc]), torch.device("cpu"))
            losses = token_losses(model, single)
            separate_sum += float((losses * single.weights_T).sum())
            separate_count += float(single.weights_T.sum())
            # each document's trained token losses are the same inside the pack: nothing leaks across documents
            trained = single.weights_T.bool()
            assert trained.any() and not packed.weights_T[cu[index + 1] - 1]
            torch.testing.assert_close(packed_losses[cu[index]:cu[index + 1]][trained], losses[trained],
                                       atol=1e-5, rtol=1e-5)
        # and padding with a filler document changes nothing
        padded = packed_inputs(as_bin(docs), torch.device("cpu"), pad_to=80)
        padded_total = (token_losses(model, padded) * padded.weights_T).sum() / padded.weights_T.sum()
    assert float(total) == pytest.approx(separate_sum / separate_count, rel=1e-5)
    assert float(padded_total) == pytest.approx(float(total), rel=1e-6)


@pytest.mark.parametrize("tie", [False, True])
def test_token_losses_equal_megatrons_own_cross_entropy(tmp_path, tiny_model, megatron_single, tie) -> None:
    """The losses through distillery_kernels (references on CPU) equal GPTModel's labels loss, gradients included."""
    folder = tiny_model(tmp_path, "qwen2", tie=tie)
    shape = ModelShape.from_folder(folder)
    model = build_model(shape, 1, 1, torch.float32, torch.device("cpu"))
    load_state(model, hf_to_megatron(load_hf_state(folder), shape, 1, 1)[(0, 0)])
    rng = np.random.default_rng(3)
    lengths = [13, 21, 7]
    masks = [(np.arange(n) >= n // 3).astype(np.uint8) for n in lengths]
    bin_ = PackedBin(rng.integers(0, shape.vocab_size, sum(lengths)).astype(np.int32), np.concatenate(masks),
                     np.concatenate([np.arange(n, dtype=np.int32) for n in lengths]),
                     np.concatenate([[0], np.cumsum(lengths)]))
    inputs = packed_inputs(bin_, torch.device("cpu"))

    def grads_of(loss: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    ours_T = token_losses(model, inputs)
    our_grads = grads_of((ours_T * inputs.weights_T).sum())
    weighted = weighted_loss_sum(model, inputs)
    weighted_grads = grads_of(weighted)
    megatron_T = model(inputs.tokens_1T, inputs.position_ids_1T, attention_mask=None, labels=inputs.labels_1T,
                       packed_seq_params=inputs.packed)[0]
    their_grads = grads_of((megatron_T * inputs.weights_T).sum())
    trained = inputs.weights_T.bool()
    torch.testing.assert_close(ours_T[trained].detach(), megatron_T[trained].detach(), atol=1e-5, rtol=1e-5)
    assert not ours_T[~trained].any(), "untrained tokens are not scored"
    assert float(weighted) == pytest.approx(float((megatron_T * inputs.weights_T).sum()), rel=1e-5)
    for (name, _), mine, summed, expected in zip(model.named_parameters(), our_grads, weighted_grads, their_grads):
        torch.testing.assert_close(mine, expected, atol=1e-6, rtol=1e-4, msg=name)
        torch.testing.assert_close(summed, expected, atol=1e-6, rtol=1e-4, msg=name)


def test_flex_attention_document_mask_equals_block_diagonal_mask() -> None:
    """The GPU path's FlexAttention mask (run eagerly here) against the CPU path's explicit mask."""
    import torch.nn.functional as F

    from distillery.train.attention import block_diagonal_causal_mask, flex_document_attention

    generator = torch.Generator().manual_seed(0)
    total, heads, groups, dim = 200, 4, 2, 16
    cu_seqlens = torch.tensor([0, 37, 100, 101, 160, 200], dtype=torch.int32)
    q = torch.randn(heads, total, dim, generator=generator)
    k, v = (torch.randn(groups, total, dim, generator=generator) for _ in range(2))
    out = flex_document_attention(q, k, v, cu_seqlens, 0.25, compiled=False)
    expected = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 0), v.repeat_interleave(2, 0), scale=0.25,
                                              attn_mask=block_diagonal_causal_mask(cu_seqlens, total))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
