"""SLURM USR2 (preemption notice) in the middle of a streaming generate shard on the real single-node cluster:
submitit checkpoints and requeues the job, the requeued task resumes from the journal, and the output equals
the uninterrupted local run's, record for record (see test_streaming_resume for why one request in flight)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_streaming_resume import TEACHER, _recipe, _records, reference_run, wait_for_journal

sys.path.insert(0, str(Path(__file__).parents[1] / "slurm"))
from slurm_helpers import DEV_PROFILE, cancel_jobs, job_id_of, sacct_history, wait_until_final

from distillery.cli import main
from distillery.core.store import Manifest, RunDir

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_usr2_mid_streaming_shard_requeues_and_gives_exactly_once_output(tmp_path: Path,
                                                                         slurm_cluster: dict[str, str]) -> None:
    queries, expected = reference_run(tmp_path)
    recipe = _recipe(tmp_path, "slurm-run", queries, executor={"kind": "slurm", "profile": str(DEV_PROFILE)})
    run_dir = tmp_path / "slurm-run"
    try:
        assert main(["submit", str(recipe)]) == 0
        wait_for_journal(run_dir, 2, lambda: True)
        job_id = job_id_of(run_dir, f"generate/{TEACHER}:process", 0)
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        states = wait_until_final(run_dir, expected_tasks=2, timeout_s=1200)
    finally:
        cancel_jobs(run_dir)
    assert set(states.values()) == {"COMPLETED"}, states
    history = sacct_history(job_id)
    assert "REQUEUED" in history and history[-1] == "COMPLETED", history
    manifest = Manifest.load(RunDir(run_dir).shard("generate", TEACHER, 0).manifest)
    assert 2 <= manifest.resumed_items < 6, "the requeued task continues from its journal"
    assert _records(run_dir) == expected
