"""The rehearsal recipe (cut to its first steps and one teacher) on the real dev cluster, in arrays of at most three
tasks, makes shard for shard the data of the same recipe run locally; a kill of array tasks followed by `resume`
reruns exactly the shards the kill lost (benchmarks/rehearsal_slurm.py does the same at 10,000 queries)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from distillery.core.store import RunDir
from distillery.ops.compare_runs import compare_runs
from distillery.synth.write import write_queries
from distillery.testing.slurm import cancel_jobs
from distillery.testing.slurm_slice import kill_and_resume, rehearsal_recipe, run_local, small_array_profile, submit, \
    submissions, wait_for_run

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

STEPS = ["ingest", "clean", "dedup", "generate", "normalise"]
TEACHER = "am-thinking-v1"
SHARDS = 4
GENERATE = f"generate/{TEACHER}:process"
NORMALISE = f"normalise/{TEACHER}:process"


@pytest.fixture(autouse=True)
def cluster(slurm_cluster: dict[str, str], tmp_path: Path) -> Iterator[None]:
    yield
    for run_dir in ("slurm", "killed"):
        cancel_jobs(tmp_path / run_dir)


def test_cluster_run_matches_local_run_and_resume_reruns_exactly_the_killed_tasks(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_queries(data, 120, seed=3)
    profile = small_array_profile(tmp_path / "profile.yaml", max_array_size=3)

    def recipe(name: str, slurm: bool) -> Path:
        return rehearsal_recipe(tmp_path / f"{name}.yaml", tmp_path / name, data, SHARDS,
                                slurm_profile=profile if slurm else None, steps=STEPS, teachers=[TEACHER])

    run_local(recipe("local", slurm=False))
    run, handles = submit(recipe("slurm", slurm=True))
    assert wait_for_run(run, handles, poll_s=1, timeout_s=600)
    ledger = [line for line in run.jobs_file().read_text().splitlines() if f'"{GENERATE}"' in line]
    assert len(ledger) == 2, "four shards in arrays of at most three: two arrays"
    rows = compare_runs(tmp_path / "local", tmp_path / "slurm")
    assert [row.step for row in rows] == STEPS
    assert all(row.shards == SHARDS and row.identical == SHARDS for row in rows), [(r.step, r.different) for r in rows]

    # One generate task cancelled while it waits behind its dependencies: it and everything after it is lost.
    report = kill_and_resume(recipe("killed", slurm=True), GENERATE, pending=[2], running=[], timeout_s=600)
    assert report.killed == {2: "PENDING"}
    assert report.lost == {GENERATE: {2}, NORMALISE: set(range(SHARDS))}
    assert report.rerun == report.lost, "resume must submit exactly the shards the kill lost"
    assert report.verdict() == []
    assert submissions(RunDir(tmp_path / "killed"))[GENERATE] == set(range(SHARDS))
    after = compare_runs(tmp_path / "local", tmp_path / "killed")
    assert all(row.identical == row.shards == SHARDS for row in after), [(r.step, r.different) for r in after]
