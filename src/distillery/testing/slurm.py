"""Helpers of the tests that drive the real single-node SLURM cluster: waiting on sacct, reading job ids and
states back, and cleaning up what a test left queued."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from distillery.core.store import RunDir
from distillery.executors.handles import FINAL_STATES
from distillery.executors.sacct import query_states
from distillery.testing.stages import PLUGIN

CHECKOUT = Path(__file__).resolve().parents[3]
"""The source checkout these helpers run in (the repository's `slurm/` folder holds the cluster profiles)."""
DEV_PROFILE = CHECKOUT / "slurm" / "profiles" / "dev.yaml"
EXAMPLE_PROFILE = CHECKOUT / "slurm" / "profiles" / "example-cluster.yaml"


def write_recipe(path: Path, run_dir: Path, steps: dict[str, Any], num_shards: int = 4, kind: str = "slurm",
                 profile: Path = DEV_PROFILE) -> Path:
    recipe = {"name": "slurm-test", "run_dir": str(run_dir), "num_shards": num_shards, "plugins": [PLUGIN],
              "executor": {"kind": kind, "profile": str(profile), "array_parallelism": 8}, "steps": steps}
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def ingest_then_slow(queries: Path, delay_s: float) -> dict[str, Any]:
    small = {"mem_gb": 1, "time_min": 30}  # time >= 20 min: a USR2 then counts as preemption, not time limit
    return {"ingest": {"inputs": [{"path": str(queries)}], "resources": small},
            "slow": {"type": "test_slurm_slow", "delay_s": delay_s, "resources": small}}


def wait_until_final(run_dir: Path, expected_tasks: int, timeout_s: float = 240,
                     seen: set[str] | None = None) -> dict[tuple[str, int], str]:
    """Poll `query_states` until every submitted task is in a final state, adding every state met to `seen`;
    on timeout fail with the cluster's view."""
    deadline = time.time() + timeout_s
    states: dict[tuple[str, int], str] = {}
    while time.time() < deadline:
        states = query_states(run_dir)
        (seen if seen is not None else set()).update(states.values())
        if len(states) == expected_tasks and set(states.values()) <= FINAL_STATES:
            return states
        time.sleep(1)
    squeue = subprocess.run(["squeue", "-o", "%i %T %r %P"], capture_output=True, text=True).stdout
    raise AssertionError(f"tasks not finished after {timeout_s}s: {states}\nsqueue:\n{squeue}\n{task_logs(run_dir)}")


def wait_for_journal(run_dir: Path, step: str, shard_index: int, items: int, timeout_s: float = 120) -> None:
    """Wait until a shard's item journal holds at least `items` finished items (its first line is a header)."""
    journal = RunDir(run_dir).shard(step, None, shard_index).journal
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if journal.exists() and journal.read_bytes().count(b"\n") - 1 >= items:
            return
        time.sleep(0.1)
    raise AssertionError(f"{journal} never reached {items} items\n{task_logs(run_dir)}")


def job_id_of(run_dir: Path, group: str, shard_index: int) -> str:
    job_id = None
    for line in RunDir(run_dir).jobs_file().read_text().splitlines():
        entry = json.loads(line)
        if entry["group"] == group and shard_index in entry["shards"]:
            job_id = entry["job_ids"][entry["shards"].index(shard_index)]
    assert job_id is not None, f"{group} shard {shard_index} was never submitted"
    return job_id


def sacct_history(job_id: str) -> list[str]:
    """Every state this job went through (one per run: requeues, preemptions), oldest first."""
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-D", "-o", "JobID,State", "-j", job_id.split("_")[0]],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("|")[1].split(" ")[0] for line in out.splitlines() if line.split("|")[0] == job_id]


def kept_outputs(run_dir: Path, step: str) -> dict[str, list[dict[str, Any]]]:
    stage_dir = RunDir(run_dir).stage_dir(step)
    return {p.name: [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted(stage_dir.glob("shard-*.jsonl"))}


def cancel_jobs(run_dir: Path) -> None:
    """Cancel whatever a test left queued or running, so the next test starts on an idle node."""
    jobs = RunDir(run_dir).jobs_file()
    if jobs.exists():
        ids = sorted({job_id.split("_")[0] for line in jobs.read_text().splitlines()
                      for job_id in json.loads(line)["job_ids"]})
        subprocess.run(["scancel", *ids], capture_output=True)


def task_logs(run_dir: Path) -> str:
    logs = sorted((Path(run_dir) / "_submitit").rglob("*_log.*"))
    return "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in logs if p.stat().st_size)
