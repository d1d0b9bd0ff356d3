"""Decontamination as 2 MPI ranks under the real single-node SLURM cluster (`srun --mpi=pmi2`) equals a 1-rank run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distillery.cli import main
from distillery.core.store import RunDir
from distillery.testing import planted
from distillery.testing.prepare import MATH_BENCHMARKS, decontaminate_step, query_row, rejected, run_recipe, write_rows
from distillery.testing.slurm import DEV_PROFILE, cancel_jobs, wait_until_final

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_two_ranks_under_slurm_equal_one_local_rank(tmp_path: Path, slurm_cluster: dict[str, str], benchmarks_dir: Path,
                                                     embed_cache: Path) -> None:  # noqa: F811
    rows = planted.build(benchmarks_dir, per_kind=5, names=("aime24", "aime25"))
    inputs = write_rows(tmp_path / "queries.jsonl", (query_row(r.text) for r in rows))
    decontaminate = decontaminate_step(benchmarks_dir, embed_cache, batch_size=8, benchmarks=MATH_BENCHMARKS[:2])
    local = run_recipe(tmp_path, "local", inputs, {"decontaminate": decontaminate}, num_shards=1)

    run = RunDir(tmp_path / "slurm-run")
    small = {"mem_gb": 4, "time_min": 30}
    recipe = {"name": "decontaminate-slurm", "run_dir": str(run.root), "num_shards": 1,
              "executor": {"kind": "slurm", "profile": str(DEV_PROFILE)},
              "steps": {"ingest": {"inputs": [{"path": str(inputs)}], "resources": small},
                        "decontaminate": {**decontaminate, "resources": {**small, "tasks_per_node": 2, "job_kind": "mpi"}}}}
    path = tmp_path / "slurm.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    try:
        assert main(["submit", str(path)]) == 0
        states = wait_until_final(run.root, expected_tasks=6, timeout_s=900)  # two three-phase steps
    finally:
        cancel_jobs(run.root)
    assert set(states.values()) == {"COMPLETED"}, states
    scan_log = (run.log_dir("decontaminate") / "shard-00000.scan.rank1.log").read_text()
    assert "rank 1/2" in scan_log
    matches = run.shard_summary("decontaminate", None, "matches", 0, ".jsonl").relative_to(run.stage_dir("decontaminate"))
    for name in (matches, "audit.jsonl", "summary.json", "shard-00000.jsonl", "rejected/shard-00000.jsonl"):
        ours, theirs = ((r.stage_dir("decontaminate") / name).read_bytes().replace(bytes(r.root), b"RUN") for r in (run, local))
        assert ours == theirs, name
    assert rejected(local, "decontaminate")
