"""The ledger of submitted SLURM jobs (<run>/_jobs.jsonl) and their states from one sacct call (or squeue's, for
what the controller still lists)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

from distillery.core.store import RunDir

LIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
                         "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"})
"""sacct states of a task that is still queued or running: its shard must not be submitted again."""


ACCOUNTING_LAG_S = 60.0
"""How long after submission a job may still be missing from sacct (slurmctld reports to slurmdbd in batches)."""


def append_jobs(run: RunDir, entry: dict[str, Any]) -> None:
    run.jobs_file().parent.mkdir(parents=True, exist_ok=True)
    with run.jobs_file().open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def submitted_tasks(run: RunDir) -> dict[tuple[str, int], tuple[str, float]]:
    """(group key, shard index) -> (job id, submission time) of its latest submission, from <run>/_jobs.jsonl."""
    latest: dict[tuple[str, int], tuple[str, float]] = {}
    if not run.jobs_file().exists():
        return latest
    for line in run.jobs_file().read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            for job_id, shard_index in zip(entry["job_ids"], entry["shards"]):
                latest[(entry["group"], int(shard_index))] = (job_id, float(entry["submitted"]))
    return latest


def expand_job_ids(job_id: str) -> list[str]:
    """sacct's `123_[0-3,7%2]` (pending array tasks grouped) -> 123_0 .. 123_3, 123_7; other ids unchanged."""
    match = re.fullmatch(r"(\d+)_\[([^\]%]+)(?:%\d+)?\]", job_id)
    if not match:
        return [job_id]
    array_id, ranges = match.groups()
    ids = []
    for part in ranges.split(","):
        first, _, last = part.partition("-")
        ids += [f"{array_id}_{index}" for index in range(int(first), int(last or first) + 1)]
    return ids


def parse_sacct(output: str) -> dict[str, str]:
    """`sacct -P -X -D -o JobID,State` lines -> job id -> state of its latest run. A task that was requeued,
    preempted or timed out and now waits to run again reads REQUEUED."""
    history: dict[str, list[str]] = {}
    for line in output.splitlines():
        job_id, _, state = line.partition("|")
        state = state.split(" ")[0]  # "CANCELLED by 0" -> CANCELLED
        for task_id in expand_job_ids(job_id):
            history.setdefault(task_id, []).append(state)
    states = {}
    for task_id, runs in history.items():
        interrupted = any(state in ("REQUEUED", "PREEMPTED", "TIMEOUT", "NODE_FAIL") for state in runs[:-1])
        states[task_id] = "REQUEUED" if runs[-1] == "PENDING" and interrupted else runs[-1]
    return states


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """job id -> state of its latest run, from one sacct call over the arrays these ids belong to."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    if not arrays:
        return {}
    command = ["sacct", "--noheader", "--parsable2", "--allocations", "--duplicates",
               "--format=JobID,State", "--jobs", ",".join(arrays)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return parse_sacct(done.stdout)


def query_states(run: RunDir | str | Path) -> dict[tuple[str, int], str]:
    """(group key, shard index) -> SLURM state of its latest submission (PENDING, RUNNING, COMPLETED, FAILED,
    REQUEUED, PREEMPTED, TIMEOUT, CANCELLED, ...), from one sacct call. Empty when nothing was submitted.

    A job submitted in the last minute that accounting does not list yet reads PENDING."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    submitted = submitted_tasks(run)
    states = sacct_states([job_id for job_id, _ in submitted.values()])
    result = {}
    for task, (job_id, when) in submitted.items():
        if job_id in states:
            result[task] = states[job_id]
        elif time.time() - when < ACCOUNTING_LAG_S:
            result[task] = "PENDING"
    return result


def squeue_states(job_ids: list[str]) -> dict[str, str]:
    """Array task id (`123_4`) -> its state in squeue, one line per task; tasks the controller no longer lists
    are absent. Unlike sacct, it shows COMPLETING: a cancelled task whose processes have not ended yet."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    if not arrays:
        return {}
    command = ["squeue", "--noheader", "--array", "--format=%i|%T", "--jobs", ",".join(arrays)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode != 0 and "Invalid job id" not in done.stderr:  # every array already purged
        raise RuntimeError(f"{shlex.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return dict(line.split("|", 1) for line in done.stdout.split())
