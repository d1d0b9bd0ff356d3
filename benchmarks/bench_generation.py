"""Generation throughput: our verify-and-regenerate loop against raw `LLM.generate` on the same prompts.

All three runs use one in-process vLLM engine serving SmolLM2-135M-Instruct and the bundled quickstart queries
(cycled to --queries), with the same per-request seeds, so raw and loop generate the very same tokens:
- raw: `LLM.generate` on chat-templated prompts, in chunks of --batch-size (the loop's engine calls);
- loop, verification off: `RegenerationLoop` with no verifier (one attempt per query); target >= 0.97x raw;
- loop, verification on: the real verifiers and up to --max-attempts attempts; reports how long the engine
  idles while answers are verified.
Raw and loop-without-verification alternate --repeats times and the fastest of each is compared, which damps
the noise of a shared machine. Compare the ratios of one run, never numbers across runs.

    python benchmarks/bench_generation.py [--queries 48] [--max-tokens 64] [--batch-size 24] [--repeats 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from distillery.core.formats import query_from_messages
from distillery.core.records import Query
from distillery.core.store import iter_jsonl
from distillery.generate.loop import LoopSettings, RegenerationLoop
from distillery.generate.progress import GenerationProgress
from distillery.generate.prompts import attempt_seed, build_conversation
from distillery.llm.protocol import Sampling
from distillery.llm.vllm_engine import VLLMChatModel, sampling_params
from distillery.models.smollm2 import ensure_hf_folder
from distillery.verify import VerifyConfig, build_verifier

logger = logging.getLogger("bench_generation")

QUICKSTART = Path(__file__).resolve().parents[1] / "src" / "distillery" / "data" / "quickstart" / "queries.jsonl"
SYSTEM_PROMPT = "Answer briefly. Put a final number in \\boxed{}."
TEACHER = "bench"


def load_queries(count: int) -> list[Query]:
    base = [query_from_messages(row) for row in iter_jsonl(QUICKSTART)]
    return [base[index % len(base)] for index in range(count)]


def run_raw(engine: VLLMChatModel, queries: list[Query], sampling: Sampling, batch_size: int) -> tuple[float, list[str], int]:
    """`LLM.generate` over the chat-templated prompts, chunked like the loop's engine calls."""
    tokenizer = engine.llm.get_tokenizer()
    prompts = [tokenizer.apply_chat_template(build_conversation(q, SYSTEM_PROMPT), add_generation_prompt=True, tokenize=False)
               for q in queries]
    params = [sampling_params(sampling, attempt_seed(0, q.id, TEACHER, 0)) for q in queries]
    texts: list[str] = []
    tokens = 0
    started = time.perf_counter()
    for start in range(0, len(prompts), batch_size):
        for output in engine.llm.generate(prompts[start:start + batch_size], params[start:start + batch_size], use_tqdm=False):
            texts.append(output.outputs[0].text)
            tokens += len(output.outputs[0].token_ids)
    return time.perf_counter() - started, texts, tokens


def run_loop(engine: VLLMChatModel, queries: list[Query], sampling: Sampling, batch_size: int, verifier: object | None,
             max_attempts: int) -> tuple[float, list[str], GenerationProgress]:
    settings = LoopSettings(teacher=TEACHER, sampling=sampling, system_prompt=SYSTEM_PROMPT, base_seed=0,
                            max_attempts=max_attempts, batch_size=batch_size)
    progress = GenerationProgress(total=len(queries))
    loop = RegenerationLoop(engine, verifier, settings, progress, log=logging.getLogger("bench_generation.loop"))
    started = time.perf_counter()
    traces = dict(loop.run(enumerate(queries)))
    elapsed = time.perf_counter() - started
    return elapsed, [traces[index].attempts[0].response for index in range(len(queries))], progress


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

    queries = load_queries(args.queries)
    sampling = Sampling(temperature=0.7, top_p=0.95, max_tokens=args.max_tokens)
    engine = VLLMChatModel(str(ensure_hf_folder()), {"dtype": "float32", "max_model_len": 1024}, name=TEACHER)
    run_raw(engine, queries[:4], sampling, args.batch_size)  # warm-up
    raw_times, loop_times = [], []
    for _ in range(args.repeats):
        raw_s, raw_texts, raw_tokens = run_raw(engine, queries, sampling, args.batch_size)
        loop_s, loop_texts, progress = run_loop(engine, queries, sampling, args.batch_size, None, 1)
        raw_times.append(raw_s)
        loop_times.append(loop_s)
    same = sum(a == b for a, b in zip(raw_texts, loop_texts))
    raw_best, loop_best = min(raw_times), min(loop_times)
    print(f"prompts {len(queries)}, batch {args.batch_size}, max_tokens {args.max_tokens}, "
          f"{raw_tokens} completion tokens per pass; identical answers raw vs loop: {same}/{len(queries)}")
    print(f"raw LLM.generate           : {raw_best:7.2f} s  {raw_tokens / raw_best:7.1f} tokens/s  (runs {[round(t, 2) for t in raw_times]})")
    print(f"loop, verification off     : {loop_best:7.2f} s  {progress.completion_tokens / loop_best:7.1f} tokens/s  "
          f"(runs {[round(t, 2) for t in loop_times]})")
    print(f"throughput ratio loop/raw  : {raw_best / loop_best:.3f}x  (target >= 0.97x)")

    verifier = build_verifier(VerifyConfig.model_validate({"math": {"workers": 1}, "code": {"parallelism": 1}}))
    try:
        verify_s, _, verified = run_loop(engine, queries, sampling, args.batch_size, verifier, args.max_attempts)
    finally:
        verifier.close()
    stats = verified.stats()
    print(f"loop, verification on      : {verify_s:7.2f} s  {stats['tokens_per_s']:7.1f} tokens/s over "
          f"{stats['attempts']} attempts ({stats['accepted']}/{len(queries)} accepted, up to {args.max_attempts} attempts)")
    print(f"  engine generating {stats['generate_s']:.2f} s, verifying {stats['verify_s']:.2f} s: engine idle "
          f"{100 * stats['engine_idle_fraction']:.1f}% of the time; generation-only rate "
          f"{stats['completion_tokens'] / stats['generate_s']:.1f} tokens/s")
    engine.close()


if __name__ == "__main__":
    main()
