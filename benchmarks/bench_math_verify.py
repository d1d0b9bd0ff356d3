"""Math verification throughput: the verifier's worker pool with 1 and 2 workers against calling Math-Verify
directly in this process, on the same (gold, response) pairs built from MATH-500.

Each MATH-500 gold is paired with a response boxing its own answer (equivalent) and one boxing another
problem's answer (mostly not). The in-process baseline does what a caller of Math-Verify would: parse the
boxed gold, parse the response, verify. The pool times include everything `MathVerifier.verify_batch` does
(answer extraction, IPC, verdicts); worker start-up is excluded by a warm-up batch.
Targets: >= 1.8x from 1 to 2 workers, <= 10% overhead of 1 worker over in-process.
Timings on a shared machine move with its load: compare the ratios of one run, never numbers across runs.
CPU seconds (this process plus the workers, from /proc) are also printed: the overhead in CPU time holds
even when a loaded machine makes wall-clock ratios meaningless.

    python benchmarks/bench_math_verify.py [--benchmarks DIR] [--pairs 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

from distillery.schema.records import Query, Reference, make_query
from distillery.data import benchmarks_dir
from distillery.verify.config import MathSettings
from distillery.verify.math import MathVerifier, gold_text

logger = logging.getLogger("bench_math_verify")


def build_pairs(benchmarks: Path, count: int) -> list[tuple[Query, str]]:
    golds = [json.loads(line)["answer"] for line in (benchmarks / "math500" / "math500.jsonl").open()]
    pairs: list[tuple[Query, str]] = []
    index = 0
    while len(pairs) < count:
        gold = golds[index % len(golds)]
        other = golds[(index * 7 + 3) % len(golds)]
        query = make_query("math", [{"role": "user", "content": f"problem {index}"}], Reference(answer=gold))
        response = f"<think>work {index}</think><answer>The answer is $\\boxed{{{gold if index % 2 == 0 else other}}}$.</answer>"
        pairs.append((query, response))
        index += 1
    return pairs


def in_process(pairs: list[tuple[Query, str]]) -> list[bool]:
    """Math-Verify called directly: parse gold, parse response, verify."""
    from math_verify import parse, verify

    return [bool(verify(parse(gold_text(query.reference.answer or "")), parse(response))) for query, response in pairs]


def worker_cpu_s(verifier: MathVerifier) -> float:
    """CPU seconds (user + system) the pool's live workers have used, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for worker in verifier.pool.workers:
        fields = Path(f"/proc/{worker.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def timed(function, *args, verifier: MathVerifier | None = None) -> tuple[float, float, object]:
    """Wall seconds, CPU seconds (this process, plus the pool's workers) and the result."""
    workers_before = worker_cpu_s(verifier) if verifier else 0.0
    started, cpu_started = time.perf_counter(), time.process_time()
    result = function(*args)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return wall, cpu + (worker_cpu_s(verifier) - workers_before if verifier else 0.0), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmarks", type=Path, default=benchmarks_dir())
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="best of N for each configuration")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    pairs = build_pairs(args.benchmarks, args.pairs)
    in_process(pairs[:50])  # import and warm sympy
    baseline_s, baseline_cpu, baseline = min((timed(in_process, pairs) for _ in range(args.repeats)), key=lambda run: run[0])

    pool_s: dict[int, float] = {}
    pool_cpu: dict[int, float] = {}
    for workers in (1, 2):
        verifier = MathVerifier(MathSettings(workers=workers), threshold=0.9)
        try:
            verifier.verify_batch(pairs[:50])  # start workers, import Math-Verify in them
            runs = [timed(verifier.verify_batch, pairs, verifier=verifier) for _ in range(args.repeats)]
        finally:
            verifier.close()
        pool_s[workers], pool_cpu[workers], verdicts = min(runs, key=lambda run: run[0])
        agree = sum(v.passed == b for v, b in zip(verdicts, baseline))
        print(f"pool, {workers} worker(s): {args.pairs / pool_s[workers]:8.1f} pairs/s  ({pool_s[workers]:.2f} s; verdicts agree with in-process on {agree}/{len(pairs)})")
    print(f"in-process Math-Verify:  {args.pairs / baseline_s:8.1f} pairs/s  ({baseline_s:.2f} s)  [baseline]")
    print(f"speed-up 2 workers / 1 worker:         {pool_s[1] / pool_s[2]:.2f}x   (target >= 1.8x)")
    print(f"overhead 1 worker vs in-process:       {100 * (pool_s[1] / baseline_s - 1):+.1f}%  (target <= 10%)")
    print(f"2 workers vs in-process:               {baseline_s / pool_s[2]:.2f}x")
    print(f"CPU overhead 1 worker vs in-process:   {100 * (pool_cpu[1] / baseline_cpu - 1):+.1f}%  "
          f"(CPU s: in-process {baseline_cpu:.2f}, 1 worker {pool_cpu[1]:.2f}, 2 workers {pool_cpu[2]:.2f}; load-independent)")
    print(f"load average while running: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (a speed-up needs 2 idle cores)")


if __name__ == "__main__":
    main()
