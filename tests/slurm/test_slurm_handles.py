"""SLURM job handles on the real single-node cluster: the states they report come from the cluster (sacct through
submitit), `wait` ends when the tasks do, and `submit --wait` exits nonzero when a task failed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from distillery.cli import main
from distillery.core.plan import pending_groups
from distillery.core.runner import load_run_recipe
from distillery.core.store import RunDir
from distillery.executors.handles import DONE, PENDING, RUNNING, wait_all
from distillery.executors.slurm import SlurmExecutor
from distillery.testing import write_queries
from distillery.testing.slurm import cancel_jobs, job_id_of, task_logs, wait_until_final, write_recipe

pytestmark = pytest.mark.slurm


@pytest.fixture(autouse=True)
def cluster(slurm_cluster: dict[str, str], tmp_path: Path) -> Iterator[None]:
    yield
    cancel_jobs(tmp_path / "run")


def test_handles_follow_the_cluster_and_a_resume_hands_back_the_tasks_still_running(tmp_path: Path) -> None:
    steps = {"slow": {"type": "test_slurm_slow", "delay_s": 0.5, "items_per_shard": 8,
                      "resources": {"mem_gb": 1, "time_min": 30}}}
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.recipe.write_text(write_recipe(tmp_path / "slurm.yaml", run.root, steps, num_shards=2).read_text())
    recipe = load_run_recipe(run)
    [submitted] = SlurmExecutor(recipe, run).execute(pending_groups(run, recipe))
    assert submitted.key == "slow:process" and submitted.shards == [0, 1]
    assert submitted.job_id == job_id_of(run.root, "slow:process", 0).split("_")[0]
    assert submitted.state() in (PENDING, RUNNING)

    # A resume while the tasks are queued or running submits nothing and hands back the tasks it waits for.
    [resumed] = SlurmExecutor(recipe, run).execute(pending_groups(run, recipe))
    assert (resumed.key, resumed.job_id, resumed.shards) == (submitted.key, submitted.job_id, [0, 1])
    assert len(run.jobs_file().read_text().splitlines()) == 1

    seen: list[str] = []
    wait_all([submitted, resumed], poll_s=1, on_change=lambda handle: seen.append(handle.state()))
    assert submitted.state() == resumed.state() == DONE, task_logs(run.root)
    assert submitted.shard_states() == {0: "COMPLETED", 1: "COMPLETED"}
    assert RUNNING in seen or PENDING in seen, seen
    # A task is over once its result file is written; sacct says so a moment later, when the job has exited.
    assert wait_until_final(run.root, expected_tasks=2) == {("slow:process", 0): "COMPLETED",
                                                            ("slow:process", 1): "COMPLETED"}


def test_submit_wait_shows_the_states_and_exits_nonzero_when_a_task_failed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = {"mem_gb": 1, "time_min": 30}
    steps = {"ingest": {"inputs": [{"path": str(write_queries(tmp_path / "q.jsonl", 6))}], "resources": small},
             "noisy": {"type": "test_noisy", "fail": True, "resources": small},
             "slow": {"type": "test_slurm_slow", "resources": small}}
    recipe = write_recipe(tmp_path / "slurm.yaml", tmp_path / "run", steps, num_shards=1)
    assert main(["submit", str(recipe), "--wait", "1"]) == 1
    out = capsys.readouterr().out
    final = {line.split()[0]: line.split()[1:3] for line in out.splitlines() if line.endswith(tuple("0123456789"))}
    ingest = ("ingest:scan", "ingest:merge", "ingest:process")
    ids = {group: job_id_of(tmp_path / "run", group, 0).split("_")[0]
           for group in (*ingest, "noisy:process", "slow:process")}
    assert final == {**{group: [ids[group], "DONE"] for group in ingest},
                     "noisy:process": [ids["noisy:process"], "FAILED"],
                     "slow:process": [ids["slow:process"], "CANCELLED"]}, out
    assert "FAILED: noisy:process, slow:process" in out
