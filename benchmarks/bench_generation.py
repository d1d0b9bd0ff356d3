"""Generation throughput on long-tailed answer lengths: the batch loop, the streaming loop, and their bound.

Answer lengths are lognormal with a --tail:1 ratio (default 10) between the 99th percentile and the median (the
shape of the paper's reasoning traces, scaled down), imposed per request with `max_tokens` and `ignore_eos`:
each request's length is drawn from its own seed, so every run below asks for the very same lengths. One vLLM
engine in this process serves every run, with the same `max_num_seqs`; the loops keep that many requests in
flight. `--paper` is a configuration closer to the paper's: 256 requests, 32 engine slots, p99:median 20.

1. Verification off, one attempt per query:
   (a) the batch loop (`RegenerationLoop`, engine calls of --batch-size, default max_num_seqs);
   (b) the streaming loop (`StreamingLoop`, max_in_flight = max_num_seqs + --headroom: the engine still runs at most
       max_num_seqs sequences; the few extra wait in its queue, so a finished sequence is replaced in the same
       scheduler step instead of after a round trip through the loop);
   (c) the bound: every request of (b) in one `LLM.generate` call (vLLM refilling its batch as requests end).
   Targets: (b) >= 0.97x (c); the streaming loop's mean in flight >= 0.95 x max_in_flight until its queue
   drains (after that only the tail is left); (b)/(a) printed beside them. Also printed: what the engine saw
   per step (sequences running and waiting, steps with free slots while requests were due, time-to-full).
2. Verification on: every answer is checked by the real code sandbox running a program that takes
   --test-seconds (a synthetic code answer built from the response; its verdict is drawn from a hash of the
   response with pass rate 0.5, so retries happen). Target: the streaming engine idles < 5% of the time.
3. Cost per accepted trace of `sequential` and `parallel(n)` at pass rates near 0.3 and 0.8 (a verifier with
   a controlled pass rate: a hash of query and response, no sandbox), in process CPU-seconds (GPU: wall-seconds
   of the one GPU) per accepted trace.

Compare ratios within one run, never numbers across runs (shared machines).

    python benchmarks/bench_generation.py [--requests 64] [--max-num-seqs 8] [--median 20] [--parts 1,2,3]
    python benchmarks/bench_generation.py --paper --parts 1                 # 256 requests, 32 slots, tail 20
    python benchmarks/bench_generation.py --paper --parts 1 --device cuda   # the same on a GPU, unchanged
    python benchmarks/bench_generation.py --device cuda --model /path/to/model --requests 4096 --max-num-seqs 256 \\
        --median 1000 --tail 20 --max-model-len 32768
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

from distillery.schema.formats import query_from_messages
from distillery.schema.records import Query, TestCase, Trace
from distillery.core.store import iter_jsonl
from distillery.generate.loop import LoopSettings, RegenerationLoop
from distillery.generate.progress import GenerationProgress
from distillery.generate.prompts import attempt_seed, build_conversation
from distillery.generate.streaming import StreamingLoop, StreamingSettings
from distillery.generate.verification import VerificationLanes
from distillery.llm.protocol import Sampling
from distillery.llm.vllm_engine import VLLMChatModel
from distillery.models import resolve_model
from distillery.verify.verdict import Verdict

logger = logging.getLogger("bench_generation")

QUICKSTART = Path(__file__).resolve().parents[1] / "src" / "distillery" / "data" / "quickstart" / "queries.jsonl"
SYSTEM_PROMPT = "Answer briefly. Put a final number in \\boxed{}."
TEACHER = "bench"
PAPER = {"requests": 256, "max_num_seqs": 32, "tail": 20.0}
"""--paper: closer to the paper's shape (many requests per engine slot, a longer tail)."""


class LongTailEngine(VLLMChatModel):
    """The real engine, each request's length fixed by its seed: lognormal around `median`, EOS ignored."""

    def __init__(self, model: str, options: dict[str, Any], median: int, tail: float, cap: int) -> None:
        super().__init__(model, options, name=TEACHER)
        self.median = median
        self.sigma = math.log(tail) / statistics.NormalDist().inv_cdf(0.99)
        """Lognormal shape with p99 / median = `tail`."""
        self.cap = cap

    def length(self, seed: int) -> int:
        quantile = (seed % 1_000_003 + 0.5) / 1_000_003
        drawn = self.median * math.exp(self.sigma * statistics.NormalDist().inv_cdf(quantile))
        return max(1, min(self.cap, round(drawn)))

    def request_params(self, sampling: Sampling, seed: int | None) -> Any:
        from vllm import SamplingParams

        assert seed is not None
        return SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, seed=seed,
                              max_tokens=self.length(seed), ignore_eos=True)


class HashVerifier:
    """Passes a response with probability `rate`, decided by a hash of (query, response): no timing involved."""

    name = "controlled_pass_rate"

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def passes(self, query: Query, response: str) -> bool:
        digest = hashlib.sha256(f"{query.id}\x00{response}".encode()).digest()
        return int.from_bytes(digest[:4], "big") / 2**32 < self.rate

    def verify_batch(self, pairs: list[tuple[Query, str]]) -> list[Verdict]:
        return [Verdict(score=float(ok), passed=ok, verifier=self.name) for ok in (self.passes(q, r) for q, r in pairs)]


class SlowCodeVerifier(HashVerifier):
    """The real sandboxed code verifier on a program that sleeps `seconds`, then prints its verdict."""

    name = "code_sandbox"

    def __init__(self, rate: float, seconds: float, parallelism: int) -> None:
        from distillery.verify.code import CodeVerifier
        from distillery.verify.config import CodeSettings

        super().__init__(rate)
        self.seconds = seconds
        self.code = CodeVerifier(CodeSettings(parallelism=parallelism), 0.9)

    def verify_batch(self, pairs: list[tuple[Query, str]]) -> list[Verdict]:
        checks = []
        for query, response in pairs:
            verdict = "ok" if self.passes(query, response) else "no"
            program = f"```python\nimport time\ntime.sleep({self.seconds})\nprint({verdict!r})\n```"
            test = query.model_copy(update={"category": "code", "reference": query.reference.model_copy(
                update={"tests": [TestCase(input="", output="ok")], "fn_name": None, "language": "python"})})
            checks.append((test, program))
        return self.code.verify_batch(checks)

    def close(self) -> None:
        self.code.close()


def load_queries(count: int) -> list[Query]:
    """The quickstart queries cycled to `count`, each copy with its own id (hence its own seeds and lengths)."""
    base = [query_from_messages(row) for row in iter_jsonl(QUICKSTART)]
    return [base[i % len(base)].model_copy(update={"id": f"{base[i % len(base)].id}-{i}"}) for i in range(count)]


def tokens_of(traces: dict[Any, Trace]) -> int:
    return sum(a.completion_tokens for t in traces.values() for a in t.attempts)


def run_batch(engine: LongTailEngine, queries: list[Query], sampling: Sampling, batch_size: int, verifier: Any,
              max_attempts: int) -> tuple[float, dict[int, Trace], GenerationProgress]:
    settings = LoopSettings(teacher=TEACHER, sampling=sampling, system_prompt=SYSTEM_PROMPT, threshold=0.9,
                            max_attempts=max_attempts, batch_size=batch_size)
    progress = GenerationProgress(total=len(queries))
    started = time.perf_counter()
    traces = dict(RegenerationLoop(engine, verifier, settings, progress, logger).run(enumerate(queries)))
    return time.perf_counter() - started, traces, progress


def run_streaming(engine: LongTailEngine, queries: list[Query], sampling: Sampling, max_in_flight: int,
                  verifier: Any, max_attempts: int, strategy: str = "sequential",
                  ) -> tuple[float, dict[int, Trace], GenerationProgress]:
    settings = StreamingSettings(teacher=TEACHER, sampling=sampling, system_prompt=SYSTEM_PROMPT, threshold=0.9,
                                 max_attempts=max_attempts, max_in_flight=max_in_flight,
                                 max_verify_queue=4 * max_in_flight, strategy={"default": strategy}, log_every_s=30)
    progress = GenerationProgress(total=len(queries))
    engine.reset_step_log()
    threads = {"bench": verifier.code.settings.parallelism} if isinstance(verifier, SlowCodeVerifier) else {}
    lanes = VerificationLanes(verifier, lambda q: "bench", threads=threads) if verifier is not None else None
    started = time.perf_counter()
    try:
        traces = dict(StreamingLoop(engine, lanes, settings, progress, logger).run(enumerate(queries)))
    finally:
        if lanes is not None:
            lanes.close()
    return time.perf_counter() - started, traces, progress


def run_bound(engine: LongTailEngine, queries: list[Query], traces: dict[int, Trace], sampling: Sampling) -> tuple[float, int]:
    """Every request of `traces` (retries included) in one `LLM.generate` call."""
    prompts, params = [], []
    for index in sorted(traces):  # input order, attempts in order: what a batch job would hand vLLM at once
        ids = engine.prompt_ids(build_conversation(queries[index], SYSTEM_PROMPT))
        for attempt in traces[index].attempts:
            prompts.append({"prompt_token_ids": ids})
            params.append(engine.request_params(sampling, attempt.seed))
    started = time.perf_counter()
    outputs = engine.llm.generate(prompts, params, use_tqdm=False)
    return time.perf_counter() - started, sum(len(o.outputs[0].token_ids) for o in outputs)


def part_throughput(engine: LongTailEngine, args: argparse.Namespace, sampling: Sampling) -> None:
    queries = load_queries(args.requests)
    lengths = [engine.length(attempt_seed(0, q.id, TEACHER, 0)) for q in queries]
    print(f"\n1. verification off: {len(queries)} requests, max_num_seqs {args.max_num_seqs}, lengths median "
          f"{statistics.median(lengths):.0f}, p99 {sorted(lengths)[int(0.99 * (len(lengths) - 1))]}, max {max(lengths)}, "
          f"total {sum(lengths)} tokens")
    batch_s, batch_traces, _ = run_batch(engine, queries, sampling, args.batch_size, None, 1)
    stream_s, stream_traces, stream_progress = run_streaming(engine, queries, sampling, args.in_flight, None, 1)
    bound_s, bound_tokens = run_bound(engine, queries, stream_traces, sampling)
    rates = {"a": tokens_of(batch_traces) / batch_s, "b": tokens_of(stream_traces) / stream_s, "c": bound_tokens / bound_s}
    stats = stream_progress.stats()
    until_drain = stats["requests_in_flight_mean_until_drain"]
    print(f"  (a) batch loop, calls of {args.batch_size:<4}: {batch_s:7.2f} s  {rates['a']:7.1f} tokens/s")
    print(f"  (b) streaming loop, {args.in_flight:>3} in flight: {stream_s:7.2f} s  {rates['b']:7.1f} tokens/s")
    print(f"  (c) bound, one LLM.generate   : {bound_s:7.2f} s  {rates['c']:7.1f} tokens/s")
    print(f"  (b)/(c) = {rates['b'] / rates['c']:.3f}x (target >= 0.97)   (b)/(a) = {rates['b'] / rates['a']:.2f}x")
    if until_drain is None:  # every request fitted in the first group: the queue drained at once
        print(f"  streaming in flight: all {len(queries)} requests in the first group (no queue to drain); mean over "
              f"the run {stats['requests_in_flight_mean']}")
    else:
        print(f"  streaming in flight until the queue drained: mean {until_drain:.2f} of {args.in_flight} = "
              f"{until_drain / args.in_flight:.3f} (target >= 0.95); over the whole run "
              f"{stats['requests_in_flight_mean']}")
    print(f"  engine per step ({stats.get('engine_steps')} steps, {args.max_num_seqs} slots): running mean "
          f"{stats.get('engine_running_mean')}, waiting mean {stats.get('engine_waiting_mean')}, free slots while "
          f"requests were due in {100 * (stats.get('engine_starved_step_share') or 0):.1f}% of steps "
          f"({stats.get('engine_starved_s')} s), full {stats.get('engine_time_to_full_s')} s after its first request, "
          f"{stats.get('engine_tokens_per_s')} tokens/s from it")


def part_verification(engine: LongTailEngine, args: argparse.Namespace, sampling: Sampling) -> None:
    queries = load_queries(args.requests)
    verifier = SlowCodeVerifier(0.5, args.test_seconds, args.sandboxes)
    print(f"\n2. verification on: code answers whose test takes {args.test_seconds:g} s in the sandbox "
          f"({args.sandboxes} at once), pass rate 0.5, up to {args.max_attempts} attempts")
    try:
        batch_s, batch_traces, batch_progress = run_batch(engine, queries, sampling, args.batch_size, verifier,
                                                          args.max_attempts)
        stream_s, stream_traces, stream_progress = run_streaming(engine, queries, sampling, args.in_flight, verifier,
                                                                 args.max_attempts)
    finally:
        verifier.close()
    for label, seconds, traces, progress in (("(a) batch loop    ", batch_s, batch_traces, batch_progress),
                                             ("(b) streaming loop", stream_s, stream_traces, stream_progress)):
        stats = progress.stats()
        print(f"  {label}: {seconds:7.2f} s  {tokens_of(traces) / seconds:7.1f} tokens/s  {stats['attempts']} attempts, "
              f"{stats['accepted']}/{len(queries)} accepted, engine idle {100 * stats['engine_idle_fraction']:.1f}% "
              f"(target for (b) < 5%)" + (f", verify queue max {stats['verify_queue_max']}, back-pressure "
                                           f"{stats['backpressure_s']} s" if progress.streaming else ""))
    print(f"  (b)/(a) = {(tokens_of(stream_traces) / stream_s) / (tokens_of(batch_traces) / batch_s):.2f}x tokens/s")


def part_strategies(engine: LongTailEngine, args: argparse.Namespace, sampling: Sampling) -> None:
    queries = load_queries(args.strategy_queries)
    parallel = f"parallel({args.parallel})"
    print(f"\n3. cost per accepted trace, {len(queries)} queries, up to {args.max_attempts} attempts, controlled pass rate")
    for rate in args.pass_rates:
        for strategy in ("sequential", parallel):
            cpu_started = time.process_time()
            seconds, traces, progress = run_streaming(engine, queries, sampling, args.in_flight, HashVerifier(rate),
                                                      args.max_attempts, strategy)
            cpu = time.process_time() - cpu_started
            accepted = progress.accepted
            per = f"{cpu / accepted:6.2f} CPU-s, {seconds / accepted:6.2f} wall-s" if accepted else "no accepted trace"
            print(f"  pass rate {rate:.1f} {strategy:<12}: {progress.attempts:4d} attempts, {accepted:3d} accepted, "
                  f"{tokens_of(traces):6d} tokens, {seconds:7.2f} s wall; per accepted trace: {per}")


def describe_machine() -> str:
    """The CPU's name and its bf16/AVX-512 flags, the load average, the GPU if one is used."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    flags = sorted({flag for flag in ("avx512f", "avx512_bf16", "amx_bf16") if f" {flag}" in cpuinfo})
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    return f"{name} ({os.cpu_count()} cores, flags {' '.join(flags) or 'no avx512/bf16'}), load average {load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", default="smollm2", help="a model folder, or smollm2 (the embedded SmolLM2-135M)")
    parser.add_argument("--paper", action="store_true", help=f"the paper-shaped configuration: {PAPER} (flags given "
                        "explicitly still win)")
    parser.add_argument("--requests", type=int, default=None, help="default 64")
    parser.add_argument("--max-num-seqs", type=int, default=None, help="the engine's slots (default 8)")
    parser.add_argument("--tail", type=float, default=None, help="p99 : median of the answer lengths (default 10)")
    parser.add_argument("--batch-size", type=int, default=None, help="the batch loop's call size (default max_num_seqs)")
    parser.add_argument("--headroom", type=int, default=None,
                        help="streaming requests queued beyond max_num_seqs (default max(2, max_num_seqs // 4))")
    parser.add_argument("--median", type=int, default=20, help="median answer length in tokens (p99 = 10x)")
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--max-attempts", type=int, default=4)
    parser.add_argument("--test-seconds", type=float, default=1.0)
    parser.add_argument("--sandboxes", type=int, default=8, help="code tests run at once")
    parser.add_argument("--strategy-queries", type=int, default=32)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--pass-rates", type=lambda s: [float(x) for x in s.split(",")], default=[0.3, 0.8])
    parser.add_argument("--parts", default="1,2,3")
    args = parser.parse_args()
    for name, default in {"requests": 64, "max_num_seqs": 8, "tail": 10.0}.items():
        if getattr(args, name) is None:
            setattr(args, name, PAPER[name] if args.paper else default)
    args.batch_size = args.batch_size or args.max_num_seqs
    args.in_flight = args.max_num_seqs + (args.headroom if args.headroom is not None else max(2, args.max_num_seqs // 4))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

    options: dict[str, Any] = {"max_num_seqs": args.max_num_seqs, "max_model_len": args.max_model_len}
    if args.device == "cpu":
        options["dtype"] = "float32"
    cap = min(round(max(16.0, 1.6 * args.tail) * args.median), args.max_model_len - 256)
    print(f"machine: {describe_machine()}")
    engine = LongTailEngine(resolve_model(args.model), options, args.median, args.tail, cap)
    sampling = Sampling(temperature=0.7, top_p=0.95, max_tokens=cap)
    print(f"engine: {args.model} on {args.device}, max_num_seqs {args.max_num_seqs}, lengths lognormal median "
          f"{args.median} (p99 {args.tail:g}x, cap {cap}) by seed, ignore_eos")
    engine.llm.generate(["A warm-up prompt."] * args.max_num_seqs, engine.request_params(sampling, 1), use_tqdm=False)
    engine.submit([{"role": "user", "content": "A warm-up prompt."}], sampling, 1).result()  # starts the engine thread
    parts = {int(p) for p in args.parts.split(",")}
    try:
        if 1 in parts:
            part_throughput(engine, args, sampling)
        if 2 in parts:
            part_verification(engine, args, sampling)
        if 3 in parts:
            part_strategies(engine, args, sampling)
    finally:
        engine.close()
    print(f"load average at the end: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main()
