"""Perplexity scoring: packed passes (block-diagonal causal attention) against padded batches, and peak memory
at one 32k-token sequence on the reference model's vocabulary.

Throughput: the same documents (lengths drawn like teacher responses: log-normal, a long tail) are scored
(a) packed, several documents per forward pass, by `PackedScorer`; (b) in padded batches, the usual transformers
way (right padding, a 2D attention mask, SDPA, full logits then log-softmax), in input order and sorted by
length. It prints tokens/s of each and the ratio packed / padded, and checks they give the same perplexities.

Peak memory: one sequence of `--peak-tokens` tokens (default 32,768), each method in a fresh subprocess:
peak resident-set growth over the loaded model on CPU (sampled), `torch.cuda.max_memory_allocated` growth on a GPU. The full-logits
method holds tokens x vocabulary fp32 logits (6.4 GB at 32k x 49,152) plus their log-softmax: on CPU it runs
only with `--naive-peak`. `--peak-layers K` keeps the first K decoder layers for the memory runs only: in
inference mode a layer's activations are freed before the next, so depth changes time, not the peak.

    python benchmarks/bench_perplexity.py [--model DIR] [--docs 24] [--median-tokens 200] [--peak-layers 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
from typing import Self

import numpy as np
import torch

from distillery.filters.scoring import Document, PackedScorer, resolve_device
from distillery.models import resolve_model

logger = logging.getLogger("bench_perplexity")


def make_documents(count: int, median_tokens: int, vocab: int, seed: int, max_tokens: int) -> list[Document]:
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(math.log(median_tokens), 0.8, size=count).astype(int), 16, max_tokens)
    docs = []
    for length in lengths:
        ids = rng.integers(3, vocab, size=int(length)).tolist()
        split = max(1, int(length) // 5)
        docs.append(Document(tuple(ids[:split]), tuple(ids[split:])))
    return docs


@torch.inference_mode()
def padded_ppl(model: torch.nn.Module, docs: list[Document], batch_size: int, pad_id: int, device: torch.device) -> list[float]:
    """Right-padded batches with a 2D attention mask and full-vocabulary logits: the ordinary way."""
    out: list[float] = []
    for start in range(0, len(docs), batch_size):
        batch = docs[start : start + batch_size]
        width = max(len(d) for d in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, doc in enumerate(batch):
            tokens = list(doc.context_ids) + list(doc.target_ids)
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        log_probs = torch.log_softmax(logits, dim=-1)
        for row, doc in enumerate(batch):
            first, end = len(doc.context_ids), len(doc)
            targets = ids[row, first:end].to(device)
            picked = log_probs[row, first - 1 : end - 1].gather(1, targets[:, None])
            out.append(math.exp(-picked.double().mean().item()))
    return out


def throughput(args: argparse.Namespace, model_dir: str) -> dict[str, float]:
    """Best of `--repeats` interleaved rounds of each method, so a change in machine load hits all of them."""
    from transformers import AutoModelForCausalLM

    device = resolve_device(args.device)
    scorer = PackedScorer(model_dir, args.device, args.dtype, args.tokens_per_pass)
    vocab = scorer.model.config.vocab_size
    docs = make_documents(args.docs, args.median_tokens, vocab, args.seed, args.tokens_per_pass)
    tokens = sum(len(d) for d in docs)
    logger.info("%d documents, %d tokens (median %d, max %d)", len(docs), tokens, int(np.median([len(d) for d in docs])),
                max(len(d) for d in docs))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, args.dtype), attn_implementation="sdpa").to(device).eval()
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    methods = {
        "packed": lambda: [s.ppl for s in scorer.score(docs)],
        "padded_input_order": lambda: padded_ppl(model, docs, args.batch_size, pad, device),
        "padded_sorted": lambda: padded_ppl(model, sorted(docs, key=len), args.batch_size, pad, device),
    }
    scorer.score(docs[:2])  # warm-up
    best = dict.fromkeys(methods, float("inf"))
    outputs: dict[str, list[float]] = {}
    for round_index in range(args.repeats):
        for name, method in methods.items():
            started = time.perf_counter()
            outputs[name] = method()
            best[name] = min(best[name], time.perf_counter() - started)
        logger.info("round %d: %s", round_index, {k: f"{v:.1f}s" for k, v in best.items()})
    results = {"tokens": tokens, **{f"{name}_tokens_per_s": tokens / seconds for name, seconds in best.items()}}
    results["max_rel_diff_vs_packed"] = max(abs(a - b) / b for a, b in zip(outputs["packed"], outputs["padded_input_order"]))
    return results


class RssSampler:
    """Highest resident set size seen while running (sampled from /proc every 5 ms): unlike ru_maxrss, it
    starts from now, not from the process's earlier peak (loading the model)."""

    def __init__(self) -> None:
        self.peak = self.current()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.current())

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def peak_child(method: str, model_dir: str, args: argparse.Namespace) -> dict[str, float]:
    """Run in a fresh process: peak memory growth of scoring one long sequence, over the loaded model."""
    device = resolve_device(args.device)
    overrides = {"num_hidden_layers": args.peak_layers} if args.peak_layers else {}
    scorer = PackedScorer(model_dir, args.device, args.dtype, args.peak_tokens, model_kwargs=overrides)
    vocab = scorer.model.config.vocab_size
    ids = np.random.default_rng(args.seed).integers(3, vocab, size=args.peak_tokens).tolist()
    doc = Document(tuple(ids[:512]), tuple(ids[512:]))  # a 512-token prompt, the rest scored
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    sampler = RssSampler()
    before_rss = sampler.peak
    started = time.perf_counter()
    with sampler, torch.inference_mode():
        if method == "packed":
            scorer.score([doc])
        else:
            row = torch.tensor([ids], device=device)
            logits = scorer.model(input_ids=row).logits.float()
            torch.log_softmax(logits, dim=-1)[0, 511:-1].gather(1, row[0, 512:, None]).mean()
    elapsed = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = sampler.peak - before_rss
    return {"tokens": len(doc), "vocab": vocab, "layers": scorer.model.config.num_hidden_layers,
            "peak_extra_gib": peak / 2**30, "seconds": elapsed}


def peak(method: str, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", method, *sys.argv[1:]]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="reference model folder, or smollm2 (embedded)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--docs", type=int, default=24)
    parser.add_argument("--median-tokens", type=int, default=200)
    parser.add_argument("--tokens-per-pass", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=8, help="documents per padded batch")
    parser.add_argument("--peak-tokens", type=int, default=32768)
    parser.add_argument("--peak-layers", type=int, default=None, help="decoder layers kept for the memory runs")
    parser.add_argument("--naive-peak", action="store_true", help="also measure the full-logits method's peak (CPU: ~13 GB at 32k)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds; the best of each method counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=("packed", "naive"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    model_dir = resolve_model(args.model)
    if args.child:
        print(json.dumps(peak_child(args.child, model_dir, args)))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"device: {resolve_device(args.device)}, torch threads: {torch.get_num_threads()}, model: {model_dir}")
    if not args.skip_throughput:
        result = throughput(args, model_dir)
        print(f"throughput over {result['tokens']:,} tokens:")
        print(f"  packed                 {result['packed_tokens_per_s']:10.1f} tokens/s")
        for label in ("padded_input_order", "padded_sorted"):
            ratio = result["packed_tokens_per_s"] / result[f"{label}_tokens_per_s"]
            print(f"  {label:22s} {result[f'{label}_tokens_per_s']:10.1f} tokens/s   packed/padded = {ratio:.2f}x")
        print(f"  max relative perplexity difference packed vs padded: {result['max_rel_diff_vs_packed']:.2e}")
    methods = ["packed"] + (["naive"] if args.naive_peak or resolve_device(args.device).type == "cuda" else [])
    for method in methods:
        result = peak(method, args)
        print(f"peak memory, {method:6s}: {result['peak_extra_gib']:.2f} GiB over the loaded model for one {result['tokens']:,}-token "
              f"sequence (vocab {result['vocab']:,}, {result['layers']} layers, {result['seconds']:.1f} s)")
    if "naive" not in methods:
        print(f"  (full fp32 logits alone at that length would be {args.peak_tokens * result['vocab'] * 4 / 2**30:.2f} GiB; "
              "pass --naive-peak to measure)")


if __name__ == "__main__":
    main()
