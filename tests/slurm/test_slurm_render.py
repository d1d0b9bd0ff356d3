"""What we generate for SLURM, checked without a cluster: golden sbatch scripts and profile validation."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest

from distillery.cli import main
from distillery.core.plan import TaskGroup, build_groups
from distillery.core.recipe import Recipe, Resources, load_recipe
from distillery.core.store import RunDir
from distillery.executors.sacct import expand_job_ids, parse_sacct
from distillery.executors.sbatch import render_sbatch
from distillery.executors.slurm import SlurmExecutor
from distillery.executors.slurm_profile import ProfileError, load_profile
from distillery.testing import write_queries
from distillery.testing.slurm import DEV_PROFILE, EXAMPLE_PROFILE, ingest_then_slow, write_recipe

GOLDEN = Path(__file__).resolve().parent / "golden"


def normalise(text: str, run_dir: Path) -> str:
    return text.replace(shlex.quote(sys.executable), "<PYTHON>").replace(str(run_dir), "<RUN>")


def check_golden(name: str, text: str) -> None:
    """Compare with golden/<name>; DISTILLERY_UPDATE_GOLDEN=1 rewrites it (then review the diff)."""
    path = GOLDEN / name
    if os.environ.get("DISTILLERY_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with DISTILLERY_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"sbatch script differs from {path}"


def load(tmp_path: Path, profile: Path, num_shards: int = 4) -> Recipe:
    queries = write_queries(tmp_path / "queries.jsonl", 4)
    return load_recipe(write_recipe(tmp_path / "recipe.yaml", tmp_path / "run", ingest_then_slow(queries, 0.0),
                                    num_shards=num_shards, profile=profile))


def test_dev_array_with_dependency_matches_golden(tmp_path: Path) -> None:
    recipe = load(tmp_path, DEV_PROFILE)
    ingest_scan, _, _, slow = build_groups(recipe)
    check_golden("dev-ingest-array.sbatch", normalise(render_sbatch(recipe, ingest_scan), recipe.run_dir))
    check_golden("dev-slow-after-ingest.sbatch", normalise(render_sbatch(recipe, slow), recipe.run_dir))


def test_example_cluster_gpu_and_mpi_groups_match_golden(tmp_path: Path) -> None:
    recipe = load(tmp_path, EXAMPLE_PROFILE)
    gpu = TaskGroup("generate", "qwq-32b", "process", [0], 64, Resources(cpus_per_task=32, mem_gb=900, gpus_per_node=8,
                    time_min=720), "gpu", ["clean:process"])
    mpi = TaskGroup("decontaminate", None, "task", [0, 1, 2], 3, Resources(cpus_per_task=8, mem_gb=64, tasks_per_node=4,
                    nodes=2, time_min=240), "mpi")
    check_golden("example-gpu-single.sbatch", normalise(render_sbatch(recipe, gpu), recipe.run_dir))
    check_golden("example-mpi-array.sbatch", normalise(render_sbatch(recipe, mpi), recipe.run_dir))


def test_plan_prints_the_sbatch_scripts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = load(tmp_path, DEV_PROFILE)
    assert main(["plan", str(tmp_path / "recipe.yaml")]) == 0
    printed = normalise(capsys.readouterr().out, recipe.run_dir)
    assert (GOLDEN / "dev-ingest-array.sbatch").read_text() in printed
    assert (GOLDEN / "dev-slow-after-ingest.sbatch").read_text() in printed


@pytest.mark.parametrize("body, field, expected", [
    ("name: x\njob_kinds:\n  cpu:\n    partion: main\n", "job_kinds.cpu.partion", "unknown field"),
    ("name: x\njob_kinds:\n  cpu:\n    max_time_min: soon\n", "job_kinds.cpu.max_time_min", "valid integer"),
    ("job_kinds: {}\n", "name", "Field required"),
])
def test_bad_profile_names_file_and_field(tmp_path: Path, body: str, field: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ProfileError) as error:
        load_profile(path)
    assert str(path) in str(error.value) and field in str(error.value) and expected in str(error.value)


def test_shipped_profiles_are_valid() -> None:
    for path in sorted((DEV_PROFILE.parent).glob("*.yaml")):
        profile = load_profile(path)
        assert {"cpu", "gpu", "mpi"} <= set(profile.job_kinds), path
        assert profile.job_kinds["mpi"].mpi == "pmi2", f"{path}: MPI without pmi2 runs one-rank jobs"


@pytest.mark.parametrize("resources, message", [
    ({"time_min": 5000}, "time_min=5000"),
    ({"gpus_per_node": 1}, "no gres"),
    ({"job_kind": "tpu"}, "no entry 'tpu'"),
])
def test_group_that_does_not_fit_fails_before_submission(tmp_path: Path, resources: dict[str, object],
                                                         message: str) -> None:
    recipe = load(tmp_path, DEV_PROFILE)
    recipe.step("slow").resources = Resources(mem_gb=1, **resources)
    run = RunDir(recipe.run_dir)
    with pytest.raises(ProfileError, match=message):
        SlurmExecutor(recipe, run).execute(build_groups(recipe))
    assert not run.jobs_file().exists(), "nothing may be submitted when one group does not fit"


def test_pending_array_tasks_are_expanded() -> None:
    assert expand_job_ids("41_[0-2,5%2]") == ["41_0", "41_1", "41_2", "41_5"]
    assert expand_job_ids("41_[7]") == ["41_7"]
    assert expand_job_ids("41_3") == ["41_3"]
    assert expand_job_ids("42") == ["42"]


def test_sacct_history_reads_as_latest_state_with_requeue_shown() -> None:
    output = "\n".join(["7_0|COMPLETED", "7_1|REQUEUED", "7_1|PENDING", "7_2|PREEMPTED", "7_2|RUNNING",
                        "7_[3-4%2]|PENDING", "8|CANCELLED by 0", "9|TIMEOUT", "9|PENDING"])
    assert parse_sacct(output) == {"7_0": "COMPLETED", "7_1": "REQUEUED", "7_2": "RUNNING", "7_3": "PENDING",
                                   "7_4": "PENDING", "8": "CANCELLED", "9": "REQUEUED"}
