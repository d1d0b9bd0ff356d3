"""The sft stage as a 2-task job on the real single-node SLURM cluster, interrupted by USR2 and requeued."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from distillery.cli import main
from distillery.core.recipe import load_recipe
from distillery.core.runner import run_task
from distillery.core.store import Manifest, RunDir
from distillery.executors.sacct import query_states
from distillery.testing import finish_shard
from distillery.testing.slurm import DEV_PROFILE, cancel_jobs, job_id_of, sacct_history, task_logs, wait_until_final
from distillery.testing.stages import trace_recipe

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _curve(run_root: Path) -> list[dict]:
    return [json.loads(line) for line in (run_root / "sft" / "t1" / "metrics.jsonl").read_text().splitlines()]


def test_two_task_sft_job_resumes_after_usr2(tmp_path, slurm_cluster, monkeypatch, traces, make_run, tiny_model,
                                              smollm2_dir, megatron_single) -> None:
    student = tiny_model(tmp_path, "llama", tie=True, tokenizer_from=smollm2_dir)
    steps = {"pack": {"student": str(student), "max_tokens": 384, "resources": {"mem_gb": 2, "time_min": 30}},
             "sft": {"student": str(student), "lr": 1e-3, "global_batch": 2, "epochs": 10, "max_steps": 24,
                     "save_every": 3, "warmup_fraction": 0.1, "precision": "fp32",
                     "resources": {"mem_gb": 4, "time_min": 30, "tasks_per_node": 2}}}
    # the uninterrupted reference: one rank in this process (data parallel 2 = 1 rank, test_sft.py)
    reference = make_run(tmp_path / "reference", traces, {k: {**v, "resources": {}} for k, v in steps.items()})
    run_task(str(reference.root), "pack", "t1", "task", 0)
    run_task(str(reference.root), "sft", "t1", "task", 0)

    run_root = tmp_path / "slurm-run"
    recipe_path = tmp_path / "slurm.yaml"
    recipe_path.write_text(yaml.safe_dump(trace_recipe(
        run_root, steps, executor={"kind": "slurm", "profile": str(DEV_PROFILE), "array_parallelism": 4}),
        sort_keys=False))
    finish_shard(RunDir(run_root), "traces", "t1", 0, traces, recipe=load_recipe(recipe_path))
    try:
        assert main(["submit", str(recipe_path)]) == 0
        checkpoint = run_root / "sft" / "t1" / "_work" / "shard-00000" / "checkpoints" / "step-00000006" / "meta.json"
        deadline = time.time() + 400
        while not checkpoint.exists() and time.time() < deadline:
            states = query_states(run_root)
            assert "FAILED" not in states.values(), f"{states}\n{task_logs(run_root)}"
            time.sleep(0.5)
        assert checkpoint.exists(), task_logs(run_root)
        job_id = job_id_of(run_root, "sft/t1:task", 0)
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        states = wait_until_final(run_root, expected_tasks=2, timeout_s=600)
    finally:
        cancel_jobs(run_root)
    assert set(states.values()) == {"COMPLETED"}, f"{states}\n{task_logs(run_root)}"
    assert "REQUEUED" in sacct_history(job_id), sacct_history(job_id)
    manifest = Manifest.load(RunDir(run_root).shard("sft", "t1", 0).manifest)
    assert manifest.stats["world_size"] == 2
    assert 6 <= manifest.stats["resumed_at"] < 24, "the requeued job must continue from its checkpoint"
    curve, expected = _curve(run_root), _curve(reference.root)
    assert [r["step"] for r in curve] == list(range(1, 25))
    for mine, ref in zip(curve, expected):
        assert mine["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    assert (run_root / "sft" / "t1" / "hf" / "model.safetensors").exists()
