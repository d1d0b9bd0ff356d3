"""SlurmExecutor on the real single-node cluster: arrays with dependencies, USR2 requeue, partition preemption, MPI.

Interrupted runs must end with exactly the records of an uninterrupted local run: no loss, no duplicate.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from distillery.cli import main
from distillery.core.plan import build_groups
from distillery.core.recipe import load_recipe
from distillery.core.runner import load_run_recipe
from distillery.ops.status import collect_status
from distillery.core.store import Manifest, RunDir
from distillery.executors.sacct import squeue_states
from distillery.executors.sbatch import render_sbatch
from distillery.testing import write_queries
from distillery.testing.slurm import (
    DEV_PROFILE,
    cancel_jobs,
    ingest_then_slow,
    job_id_of,
    kept_outputs,
    sacct_history,
    wait_for_journal,
    wait_until_final,
    write_recipe,
)

pytestmark = pytest.mark.slurm


@pytest.fixture(autouse=True)
def cluster(slurm_cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    yield
    for run_dir in tmp_path.glob("*run*"):
        cancel_jobs(run_dir)


def reference_outputs(tmp_path: Path, steps: dict, num_shards: int, step: str) -> dict[str, list[dict]]:
    """The same recipe run locally without interruption."""
    recipe = write_recipe(tmp_path / "local.yaml", tmp_path / "local-run", steps, num_shards=num_shards, kind="local")
    assert main(["run", str(recipe)]) == 0
    return kept_outputs(tmp_path / "local-run", step)


def submit(tmp_path: Path, steps: dict, num_shards: int) -> Path:
    run_dir = tmp_path / "slurm-run"
    assert main(["submit", str(write_recipe(tmp_path / "slurm.yaml", run_dir, steps, num_shards=num_shards))]) == 0
    return run_dir


def test_four_shard_arrays_with_dependency_complete_and_status_reports_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    steps = ingest_then_slow(write_queries(tmp_path / "queries.jsonl", 40), delay_s=0.0)
    run_dir = submit(tmp_path, steps, num_shards=4)
    run = RunDir(run_dir)
    recipe = load_run_recipe(run)

    # What was submitted is exactly what `plan` shows (dependencies there are symbolic).
    groups = build_groups(recipe)
    array_id = job_id_of(run_dir, "ingest:scan", 0).split("_")[0]
    submitted = (run_dir / "_submitit" / "ingest-scan" / array_id / f"{array_id}_submission.sh").read_text()
    assert submitted == render_sbatch(recipe, groups[0])

    states = wait_until_final(run_dir, expected_tasks=4 + 1 + 4 + 4)  # ingest's scan, merge, process; slow
    assert set(states.values()) == {"COMPLETED"}, states
    ingest_end = max(_sacct_time(job_id_of(run_dir, "ingest:process", s), "End") for s in range(4))
    slow_start = min(_sacct_time(job_id_of(run_dir, "slow:process", s), "Start") for s in range(4))
    assert slow_start >= ingest_end, "afterok: the dependent array started before its input array finished"

    status = collect_status(run, recipe, states)
    assert [dict(g.states) for g in status] == [{"done": 4}, {"done": 1}, {"done": 4}, {"done": 4}]
    assert sum(g.kept for g in status if g.group.step == "slow") == 40
    capsys.readouterr()
    assert main(["status", str(run_dir)]) == 0
    assert "slow" in capsys.readouterr().out
    assert kept_outputs(run_dir, "slow") == reference_outputs(tmp_path, steps, 4, "slow")

    # Nothing left to do: resume submits nothing.
    assert main(["resume", str(run_dir)]) == 0
    assert len(run.jobs_file().read_text().splitlines()) == 4  # one line per group submitted, none added


def _sacct_time(job_id: str, field: str) -> str:
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", f"JobID,{field}", "-j", job_id.split("_")[0]],
                         capture_output=True, text=True, check=True).stdout
    return next(line.split("|")[1] for line in out.splitlines() if line.split("|")[0] == job_id)


def interrupted_run(tmp_path: Path, interrupt) -> tuple[Path, str]:
    steps = {"slow": {"type": "test_slurm_slow", "delay_s": 0.4, "items_per_shard": 24,
                      "resources": {"mem_gb": 1, "time_min": 30}}}
    run_dir = submit(tmp_path, steps, num_shards=1)
    wait_for_journal(run_dir, "slow", 0, items=4)
    job_id = job_id_of(run_dir, "slow:process", 0)
    # A resume while the shard is still running must not submit a second writer of its journal.
    assert main(["resume", str(run_dir)]) == 0
    assert len(RunDir(run_dir).jobs_file().read_text().splitlines()) == 1
    interrupt(job_id)
    seen: set[str] = set()
    states = wait_until_final(run_dir, expected_tasks=1, seen=seen)
    assert states == {("slow:process", 0): "COMPLETED"}
    assert "REQUEUED" in seen, f"status never showed the task waiting to resume: {seen}"
    manifest = Manifest.load(RunDir(run_dir).shard("slow", None, 0).manifest)
    assert 4 <= manifest.resumed_items < 24, "the requeued task must continue from its journal, not from zero"
    assert manifest.inputs == manifest.kept == 24
    outputs = kept_outputs(run_dir, "slow")
    assert outputs == reference_outputs(tmp_path, steps, 1, "slow")
    ids = [record["id"] for records in outputs.values() for record in records]
    assert len(ids) == len(set(ids)) == 24
    return run_dir, job_id


@pytest.mark.slow
def test_usr2_mid_shard_requeues_and_resumes_exactly_once(tmp_path: Path) -> None:
    def usr2(job_id: str) -> None:
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)

    run_dir, job_id = interrupted_run(tmp_path, usr2)
    history = sacct_history(job_id)
    assert "REQUEUED" in history and history[-1] == "COMPLETED", history


@pytest.mark.slow
def test_partition_preemption_requeues_and_resumes_exactly_once(tmp_path: Path) -> None:
    urgent: list[str] = []

    def preempt(job_id: str) -> None:
        # A whole-node job on the higher-tier partition displaces everything running on `main`.
        out = subprocess.run(["sbatch", "--parsable", "--partition=urgent", "--exclusive", "--time=2",
                              f"--output={tmp_path}/urgent-%j.out", "--wrap", "sleep 3"],
                             capture_output=True, text=True, check=True).stdout
        urgent.append(out.strip().split(";")[0])

    run_dir, job_id = interrupted_run(tmp_path, preempt)
    # The preemption's USR2 (preempt_send_user_signal; this test sends none) made submitit checkpoint and requeue
    # the task before SLURM's own requeue, so accounting may record REQUEUED rather than PREEMPTED.
    history = sacct_history(job_id)
    assert history[-1] == "COMPLETED" and {"REQUEUED", "PREEMPTED"} & set(history[:-1]), history
    log = next((run_dir / "_submitit" / "slow-process" / job_id).glob("*_log.err")).read_text()
    assert "Caught signal SIGUSR2" in log and "this job is preempted" in log
    assert sacct_history(urgent[0]) == ["COMPLETED"]
    assert _sacct_time(urgent[0], "Start") <= _sacct_time(job_id, "Start"), "the urgent job did not displace it"


@pytest.mark.slow
def test_time_limit_checkpoints_requeues_and_finishes(tmp_path: Path) -> None:
    # 50 s of work under a 1-minute limit, USR2 15 s before it (SLURM may send it up to ~15 s earlier still).
    profile = tmp_path / "short.yaml"
    profile.write_text(DEV_PROFILE.read_text().replace("signal_delay_s: 90", "signal_delay_s: 15\nmax_timeouts: 5"))
    steps = {"slow": {"type": "test_slurm_slow", "delay_s": 1.0, "items_per_shard": 50,
                      "resources": {"mem_gb": 1, "time_min": 1}}}
    run_dir = tmp_path / "slurm-run"
    assert main(["submit", str(write_recipe(tmp_path / "slurm.yaml", run_dir, steps, num_shards=1,
                                            profile=profile))]) == 0
    states = wait_until_final(run_dir, expected_tasks=1, timeout_s=300)
    job_id = job_id_of(run_dir, "slow:process", 0)
    assert states == {("slow:process", 0): "COMPLETED"}, sacct_history(job_id)
    assert "REQUEUED" in sacct_history(job_id)
    log = next((run_dir / "_submitit" / "slow-process" / job_id).glob("*_log.err")).read_text()
    assert "this job is timed-out" in log
    assert Manifest.load(RunDir(run_dir).shard("slow", None, 0).manifest).resumed_items > 0
    expected = [{"id": f"s0-{i}", "square": i * i, "shard": 0} for i in range(50)]
    assert kept_outputs(run_dir, "slow") == {"shard-00000.jsonl": expected}


def test_mpi_group_runs_two_ranks_through_srun_pmi2(tmp_path: Path) -> None:
    steps = {"mpi": {"type": "test_slurm_mpi", "resources": {"mem_gb": 1, "time_min": 30, "tasks_per_node": 2}}}
    run_dir = submit(tmp_path, steps, num_shards=1)
    states = wait_until_final(run_dir, expected_tasks=1)
    assert states == {("mpi:task", 0): "COMPLETED"}
    stats = json.loads(RunDir(run_dir).shard("mpi", None, 0).manifest.read_text())["stats"]
    assert stats["mpi_world_size"] == 2
    ranks = stats["ranks"]
    assert [r["mpi_rank"] for r in ranks] == [r["ctx_rank"] for r in ranks] == [0, 1]
    assert {r["ctx_world_size"] for r in ranks} == {2}
    masters = {r["master"] for r in ranks}
    assert len(masters) == 1 and "None" not in masters.pop(), ranks


def test_recipe_with_unknown_profile_kind_submits_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    steps = {"slow": {"type": "test_slurm_slow", "items_per_shard": 2,
                      "resources": {"mem_gb": 1, "time_min": 30, "job_kind": "tpu"}}}
    recipe = write_recipe(tmp_path / "slurm.yaml", tmp_path / "slurm-run", steps, num_shards=1)
    load_recipe(recipe)
    assert main(["submit", str(recipe)]) == 2
    assert "no entry 'tpu'" in capsys.readouterr().err
    assert not RunDir(tmp_path / "slurm-run").jobs_file().exists()


def test_groups_larger_than_the_array_limit_go_in_chunks_that_all_gate_their_dependents(tmp_path: Path) -> None:
    from distillery.executors.slurm import max_array_size

    assert max_array_size() >= 1  # read from the real cluster's `scontrol show config`
    profile = tmp_path / "small-arrays.yaml"
    profile.write_text(DEV_PROFILE.read_text() + "max_array_size: 3\n")
    steps = ingest_then_slow(write_queries(tmp_path / "queries.jsonl", 30), delay_s=0.0)
    run_dir = tmp_path / "slurm-run"
    recipe = write_recipe(tmp_path / "slurm.yaml", run_dir, steps, num_shards=5, profile=profile)
    assert main(["submit", str(recipe)]) == 0
    ledger = [json.loads(line) for line in RunDir(run_dir).jobs_file().read_text().splitlines()]
    assert [(entry["group"], entry["shards"]) for entry in ledger] == [
        ("ingest:scan", [0, 1, 2]), ("ingest:scan", [3, 4]), ("ingest:merge", [0]),
        ("ingest:process", [0, 1, 2]), ("ingest:process", [3, 4]), ("slow:process", [0, 1, 2]), ("slow:process", [3, 4])]
    states = wait_until_final(run_dir, expected_tasks=5 + 1 + 5 + 5)
    assert set(states.values()) == {"COMPLETED"}, states
    ingest_end = max(_sacct_time(job_id_of(run_dir, "ingest:process", s), "End") for s in range(5))
    slow_start = min(_sacct_time(job_id_of(run_dir, "slow:process", s), "Start") for s in range(5))
    assert slow_start >= ingest_end, "a dependent array started before every chunk of its input finished"
    assert kept_outputs(run_dir, "slow") == reference_outputs(tmp_path, steps, 5, "slow")


@pytest.mark.slow
def test_resume_right_after_scancel_waits_until_the_cancelled_task_has_ended(tmp_path: Path) -> None:
    # 40 s of work: the cancelled task works on until KillWait's SIGKILL (30 s; submitit ignores the SIGTERM).
    steps = {"slow": {"type": "test_slurm_slow", "delay_s": 0.5, "items_per_shard": 80,
                      "resources": {"mem_gb": 1, "time_min": 30}}}
    run_dir = submit(tmp_path, steps, num_shards=1)
    wait_for_journal(run_dir, "slow", 0, items=2)
    first = job_id_of(run_dir, "slow:process", 0)
    subprocess.run(["scancel", first], check=True)
    wait_until_final(run_dir, expected_tasks=1)  # sacct says CANCELLED at once
    assert squeue_states([first]).get(first) == "COMPLETING", "the cancelled task should still be ending"
    assert main(["resume", str(run_dir)]) == 0
    assert first not in squeue_states([first]), "resume submitted a second writer while the first still ran"
    second = job_id_of(run_dir, "slow:process", 0)
    assert second != first
    assert wait_until_final(run_dir, expected_tasks=1) == {("slow:process", 0): "COMPLETED"}
    manifest = Manifest.load(RunDir(run_dir).shard("slow", None, 0).manifest)
    assert 0 < manifest.resumed_items < 80 and manifest.kept == 80
    assert kept_outputs(run_dir, "slow") == {"shard-00000.jsonl": [{"id": f"s0-{i}", "square": i * i, "shard": 0}
                                                                    for i in range(80)]}
