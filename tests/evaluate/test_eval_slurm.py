"""An eval array on the real single-node SLURM cluster, interrupted mid-shard by USR2 (what preemption sends):
submitit checkpoints and requeues the task, which resumes from its journal to the numbers of a local run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_stage import eval_records, stable_records, write_recipe

sys.path.insert(0, str(Path(__file__).parents[1] / "slurm"))
from slurm_helpers import DEV_PROFILE, cancel_jobs, job_id_of, sacct_history, task_logs, wait_until_final

from distillery.cli import main
from distillery.core.store import RunDir
from distillery.evaluate.summary import summarize

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_eval_array_interrupted_mid_shard_resumes_to_the_same_numbers(
        tmp_path: Path, slurm_cluster: dict[str, str], smollm2_dir: Path, benchmarks_dir: Path, one_thread: None) -> None:
    settings = {"model": smollm2_dir, "benchmarks_dir": benchmarks_dir, "backend": "transformers", "num_shards": 1,
                "max_tokens": 16, "batch_size": 1}
    reference = tmp_path / "local-run"
    assert main(["run", str(write_recipe(tmp_path / "local.yaml", reference, **settings))]) == 0

    run_dir = tmp_path / "slurm-run"
    recipe = write_recipe(tmp_path / "slurm.yaml", run_dir, **settings,
                          executor={"kind": "slurm", "profile": str(DEV_PROFILE)})
    try:
        assert main(["submit", str(recipe)]) == 0
        journal = RunDir(run_dir).shard("eval", "smollm2", 0).journal
        deadline = time.time() + 300
        while not (journal.exists() and journal.read_bytes().count(b"\n") >= 2):  # header + one scored sample
            assert time.time() < deadline, f"no sample journaled\n{task_logs(run_dir)}"
            time.sleep(0.2)
        job_id = job_id_of(run_dir, "eval/smollm2:process", 0)
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        states = wait_until_final(run_dir, expected_tasks=1, timeout_s=600)
    except BaseException:
        cancel_jobs(run_dir)  # leave the node idle for the next test
        raise
    assert states == {("eval/smollm2:process", 0): "COMPLETED"}, (states, sacct_history(job_id), task_logs(run_dir))
    history = sacct_history(job_id)
    assert "REQUEUED" in history and history[-1] == "COMPLETED", history
    manifest = json.loads(RunDir(run_dir).shard("eval", "smollm2", 0).manifest.read_text())
    assert 1 <= manifest["resumed_items"] < 4, "the requeued task must continue from its journal"
    assert stable_records(eval_records(run_dir)) == stable_records(eval_records(reference))
    ours, theirs = (summarize(d).result("smollm2", "math500") for d in (run_dir, reference))
    assert (ours.pass1, ours.pass_at_k, repr(ours.lengths)) == (theirs.pass1, theirs.pass_at_k, repr(theirs.lengths))
