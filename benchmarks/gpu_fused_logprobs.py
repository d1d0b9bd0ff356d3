"""Fused linear log-probabilities at Qwen2.5-32B's head (H 5120, V 152064, 32,768 tokens) on one GPU.

Side by side in one run: our two ops, plain torch (logits, then float32 cross-entropy), Liger's fused linear
cross-entropy and Apple's cut-cross-entropy (each only if installed; otherwise reported as not installed):
- `ours_logprobs` (distillery_kernels.fused_logprobs, the perplexity scorer): fused Triton forward that also
  returns per-document sums (8 documents); its per-token autograd backward recomputes the logits;
- `ours_loss` (distillery_kernels.fused_linear_nll, the SFT loss): cuBLAS chunks + a Triton row kernel, with
  the gradients made during the forward.
Two measurements per method:
- forward: scoring without autograd;
- forward+backward: loss = sum of token NLLs, gradients of hidden and weight.
Each: median time over --repeats after --warmup, extra peak memory above the inputs (gradients included), and
the max absolute difference to the float32 torch reference (per-token log-probabilities; gradients of hidden and
weight for forward+backward). Ratios of ours against every baseline come from this same run. On a GPU our
forward tiles are first swept over a few candidates and the fastest is used.

    python benchmarks/gpu_fused_logprobs.py                              # one H100/H200, under 5 minutes
    python benchmarks/gpu_fused_logprobs.py --device cpu --tiny          # checks the script (Triton interpreter)

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

logger = logging.getLogger("gpu_fused_logprobs")
GIB = float(1 << 30)
TARGETS = {"forward": {"ms": 70.0, "gib": 0.5}, "forward_backward": {"ms": 235.0, "gib": 2.3}}
"""Issue 18's targets at the full shape on one H200."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="toy sizes (257 tokens, H 72, V 1031) to check the script")
    parser.add_argument("--tokens", type=int, default=32768)
    parser.add_argument("--hidden", type=int, default=5120)
    parser.add_argument("--vocab", type=int, default=152064)
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--documents", type=int, default=8)
    args = parser.parse_args()
    if args.tiny:
        args.tokens, args.hidden, args.vocab, args.warmup, args.repeats = 257, 72, 1031, 1, 2
    return args


def baselines() -> dict[str, tuple[Callable, Callable] | str]:
    """name -> (per-token log-probs fn, loss-sum fn), or why it cannot run. Each fn takes (hidden, weight, targets)."""
    methods: dict[str, tuple[Callable, Callable] | str] = {}

    def torch_logprobs(h, w, y):
        return -F.cross_entropy((h @ w.T).float(), y, reduction="none")

    def torch_loss(h, w, y):
        return F.cross_entropy((h @ w.T).float(), y, reduction="sum")

    methods["torch"] = (torch_logprobs, torch_loss)
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        methods["liger"] = "not installed (pip install liger-kernel)"
    else:
        def liger(reduction: str) -> Callable:
            loss_fn = LigerFusedLinearCrossEntropyLoss(reduction=reduction)

            def run(h, w, y):
                out = loss_fn(w, h, y)
                return out[0] if isinstance(out, tuple) else out
            return run

        liger_none, liger_sum = liger("none"), liger("sum")
        methods["liger"] = (lambda h, w, y: -liger_none(h, w, y), liger_sum)
    try:
        from cut_cross_entropy import linear_cross_entropy
    except ImportError:
        methods["cut_cross_entropy"] = "not installed (pip install cut-cross-entropy)"
    else:
        methods["cut_cross_entropy"] = (lambda h, w, y: -linear_cross_entropy(h, w, y, reduction="none"),
                                        lambda h, w, y: linear_cross_entropy(h, w, y, reduction="sum"))
    return methods


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(run: Callable[[], Any], device: torch.device, warmup: int, repeats: int,
            reset: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Median wall time (ms) and extra peak memory (GiB, CUDA only) of `run`; keeps the last output.

    `reset` runs before each measurement (outside it), e.g. to drop the previous gradients.
    """
    for _ in range(warmup):
        reset()
        run()
    times, extras, output = [], [], None
    for _ in range(repeats):
        output = None
        reset()
        synchronize(device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() if device.type == "cuda" else 0
        started = time.perf_counter()
        output = run()
        synchronize(device)
        times.append((time.perf_counter() - started) * 1e3)
        if device.type == "cuda":
            extras.append((torch.cuda.max_memory_allocated() - before) / GIB)
    return {"ms": round(statistics.median(times), 2), "gib": round(max(extras), 3) if extras else None,
            "output": output}


def reference(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int,
              with_grads: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Float32 reference log-probs and, if asked, gradients of the summed NLL (chunk by chunk, bounded memory)."""
    from distillery_kernels import linear_logprobs_reference

    weight32 = weight.detach().float().requires_grad_(with_grads)
    logprobs, grad_hidden = [], torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk):
        hidden32 = hidden[start:start + chunk].detach().float().requires_grad_(with_grads)
        with torch.set_grad_enabled(with_grads):
            result = linear_logprobs_reference(hidden32, weight32, targets[start:start + chunk], chunk_tokens=chunk)
            if with_grads:
                (-result.logprobs_T.sum()).backward()
                grad_hidden[start:start + chunk] = hidden32.grad
        logprobs.append(result.logprobs_T.detach())
    return torch.cat(logprobs), grad_hidden if with_grads else None, weight32.grad


def max_diff(a: torch.Tensor | None, b: torch.Tensor | None) -> float | None:
    return None if a is None or b is None else float((a.float() - b.float()).abs().max())


def sweep_tiles(hidden, weight, targets, device, candidates) -> tuple[Any, list[dict[str, Any]]]:
    """Forward time of each candidate tile set; returns the fastest and the table."""
    from distillery_kernels.fused_logprobs import fused_linear_logprobs

    table = []
    for tiles in candidates:
        with torch.no_grad():
            timing = measure(lambda t=tiles: fused_linear_logprobs(hidden, weight, targets, tiles=t), device, 1, 3)
        table.append({"tiles": tiles.__dict__, "forward_ms": timing["ms"]})
        logger.info("tiles %s: forward %.1f ms", tiles, timing["ms"])
    best = min(range(len(candidates)), key=lambda i: table[i]["forward_ms"])
    return candidates[best], table


def measure_method(logprobs_fn: Callable, loss_fn: Callable, hidden: torch.Tensor, weight: torch.Tensor,
                   targets: torch.Tensor, device: torch.device, args: argparse.Namespace,
                   reference_values: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    """Forward (no autograd) and forward+backward of one method, with its differences to the reference."""
    ref_logprobs, ref_grad_hidden, ref_grad_weight = reference_values
    with torch.no_grad():
        forward = measure(lambda: logprobs_fn(hidden, weight, targets), device, args.warmup, args.repeats)
    entry = {"forward": {"ms": forward["ms"], "gib": forward["gib"],
                         "max_abs_diff_logprobs": max_diff(forward.pop("output"), ref_logprobs)}}
    del forward
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()

    def drop_grads() -> None:
        h.grad = w.grad = None

    both = measure(lambda: loss_fn(h, w, targets).backward(), device, args.warmup, args.repeats, drop_grads)
    entry["forward_backward"] = {"ms": both["ms"], "gib": both["gib"],
                                 "max_abs_diff_grad_hidden": max_diff(h.grad, ref_grad_hidden),
                                 "max_abs_diff_grad_weight": max_diff(w.grad, ref_grad_weight)}
    return entry


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu --tiny to check the script")
    from distillery_kernels.fused_linear_nll import fused_linear_nll_sum
    from distillery_kernels.fused_logprobs import Tiles, default_tiles, fused_linear_logprobs

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    generator = torch.Generator(device=device).manual_seed(0)
    hidden = torch.randn(args.tokens, args.hidden, device=device, generator=generator).to(dtype)
    weight = (torch.randn(args.vocab, args.hidden, device=device, generator=generator) * 0.02).to(dtype)
    targets = torch.randint(0, args.vocab, (args.tokens,), device=device, generator=generator)
    cuts = torch.randperm(args.tokens - 1, device=device, generator=generator)[:args.documents - 1].sort().values + 1
    cu_seqlens = torch.cat([cuts.new_zeros(1), cuts, cuts.new_full((1,), args.tokens)])

    tiles, sweep = default_tiles(dtype), []
    if device.type == "cuda" and not args.tiny and dtype != torch.float32:
        tiles, sweep = sweep_tiles(hidden, weight, targets, device, [
            tiles, Tiles(128, 128, 64, num_warps=8, num_stages=4), Tiles(256, 128, 64, num_warps=8, num_stages=3)])

    def ours_logprobs(h, w, y):
        return fused_linear_logprobs(h, w, y, cu_seqlens=cu_seqlens, tiles=tiles).logprobs_T

    def ours_loss(h, w, y):
        return -fused_linear_logprobs(h, w, y, cu_seqlens=cu_seqlens, tiles=tiles).logprobs_T.sum()

    ones = torch.ones(args.tokens, device=device)
    methods: dict[str, tuple[Callable, Callable] | str] = {
        "ours_logprobs": (ours_logprobs, ours_loss),
        "ours_loss": (lambda h, w, y: -fused_linear_nll_sum(h, w, y, ones).nll_T,
                      lambda h, w, y: fused_linear_nll_sum(h, w, y, ones).loss),
        **baselines(),
    }
    logger.info("reference (float32, chunked) ...")
    reference_values = reference(hidden, weight, targets, 2048, with_grads=True)

    results: dict[str, Any] = {}
    for name, method in methods.items():
        if isinstance(method, str):
            results[name] = {"skipped": method}
            logger.info("%-18s %s", name, method)
            continue
        try:
            entry = measure_method(*method, hidden, weight, targets, device, args, reference_values)
        except (RuntimeError, ValueError, TypeError) as error:  # OOM or an API change in an optional baseline
            entry = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
        if device.type == "cuda":
            torch.cuda.empty_cache()
        results[name] = entry
        logger.info("%-18s %s", name, entry)

    ours_names = [name for name in results if name.startswith("ours")]
    complete = {name: entry for name, entry in results.items() if "forward_backward" in entry}
    ratios = {mine: {name: {phase: {"time": round(complete[mine][phase]["ms"] / entry[phase]["ms"], 3),
                                    "memory": (round(complete[mine][phase]["gib"] / entry[phase]["gib"], 3)
                                               if entry[phase]["gib"] else None)}
                            for phase in ("forward", "forward_backward")}
                     for name, entry in complete.items() if name not in ours_names}
              for mine in ours_names if mine in complete}
    full_size = device.type == "cuda" and (args.tokens, args.hidden, args.vocab) == (32768, 5120, 152064)
    report = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (Triton interpreter)",
        "shape": {"tokens": args.tokens, "hidden": args.hidden, "vocab": args.vocab, "dtype": args.dtype,
                  "documents": args.documents},
        "tiles": tiles.__dict__, "tile_sweep": sweep, "results": results,
        "ratios_ours_over_baseline": ratios,
        "targets": {mine: {phase: {**target, "met": (complete[mine][phase]["ms"] <= target["ms"]
                                                     and complete[mine][phase]["gib"] <= target["gib"])
                                   if full_size else None} for phase, target in TARGETS.items()}
                    for mine in ours_names if mine in complete},
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
