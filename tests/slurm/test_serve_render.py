"""A served teacher's jobs without a cluster: the golden scripts of a two-node vLLM replica and its keeper, the
plan's rows, the placeholders a replica node fills, and recipe errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distillery.cli import main
from distillery.core.plan import build_groups
from distillery.core.recipe import RecipeError, load_recipe
from distillery.core.store import RunDir
from distillery.executors.slurm_profile import load_profile
from distillery.serve.groups import server_groups
from distillery.executors.serve_jobs import keeper_script, replica_script
from distillery.serve.replica import fill
from distillery.testing import write_queries
from distillery.testing.slurm import EXAMPLE_PROFILE, write_recipe

from test_slurm_render import check_golden, normalise  # type: ignore[import-not-found]

R1 = {"name": "deepseek-r1", "model": "/models/DeepSeek-R1", "backend": "openai", "options": {"concurrency": 256},
      "resources": {"cpus_per_task": 8, "mem_gb": 32, "time_min": 1440, "job_kind": "cpu"},
      "serve": {"replicas": 2, "nodes_per_replica": 2, "gpus_per_node": 8, "cpus_per_node": 64, "mem_gb": 1500,
                "time_min": 1440, "engine_args": {"tensor_parallel_size": 8, "pipeline_parallel_size": 2,
                                                  "max_model_len": 40960, "enable_expert_parallel": True},
                "env": {"VLLM_USE_DEEP_GEMM": "1"}}}


def recipe_with(tmp_path: Path, teacher: dict, profile: Path = EXAMPLE_PROFILE) -> Path:
    queries = write_queries(tmp_path / "queries.jsonl", 4)
    path = write_recipe(tmp_path / "recipe.yaml", tmp_path / "run", {
        "ingest": {"inputs": [{"path": str(queries)}]}, "generate": {"max_attempts": 2}}, num_shards=4, profile=profile)
    data = yaml.safe_load(path.read_text())
    data["teachers"] = [teacher]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_two_node_replica_and_keeper_scripts_match_golden(tmp_path: Path) -> None:
    recipe = load_recipe(recipe_with(tmp_path, R1))
    teacher, run, profile = recipe.teachers[0], RunDir(recipe.run_dir), load_profile(EXAMPLE_PROFILE)
    replica = replica_script(recipe, profile, run, teacher, 1, ["<ingest:process>"])
    # vLLM's multi-node mode: every node runs `vllm serve` with the same TP x PP and its own node rank.
    assert "--nodes=2" in replica and "--gres=gpu:h100:8" in replica and "--exclusive" in replica
    assert ("--tensor-parallel-size 8 --pipeline-parallel-size 2 --max-model-len 40960 --enable-expert-parallel "
            "--nnodes 2 --node-rank '{node_rank}' --master-addr '{master_addr}' --master-port 29501") in replica
    assert "--port 8001" in replica and "export VLLM_USE_DEEP_GEMM=1" in replica
    check_golden("example-served-replica-two-node.sbatch", normalise(replica, recipe.run_dir))
    keeper = keeper_script(recipe, profile, run, teacher, "generate/deepseek-r1:process", ["<ingest:process>"])
    check_golden("example-served-keeper.sbatch", normalise(keeper, recipe.run_dir))


def test_plan_lists_the_server_jobs_beside_their_clients(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = recipe_with(tmp_path, R1)
    recipe = load_recipe(path)
    groups = build_groups(recipe)
    generate = next(g for g in groups if g.step == "generate")
    replicas, keeper = server_groups(recipe, generate)
    assert (replicas.key, replicas.shards, replicas.resources.nodes, replicas.job_kind) == \
        ("serve/deepseek-r1:replica", [0, 1], 2, "gpu")
    assert keeper.job_kind == "cpu" and replicas.depends_on == generate.depends_on == ["ingest:process"]
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "serve/deepseek-r1:replica" in out and "sbatch for serve/deepseek-r1:replica 1" in out
    assert "sbatch for serve/deepseek-r1:keeper" in out


def test_a_replica_node_fills_its_rank_and_nodes_after_the_first_join_headless(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)
    words = ["vllm", "serve", "{model}", "--served-model-name", "/models/R1", "--nnodes", "2", "--node-rank",
             "{node_rank}", "--master-addr", "{master_addr}"]
    first, second = fill(words, 0), fill(words, 1)
    assert first[2] == "/models/R1" and "--headless" not in first and first[first.index("--node-rank") + 1] == "0"
    assert second[-1] == "--headless" and second[second.index("--node-rank") + 1] == "1"
    assert "{master_addr}" not in first


@pytest.mark.parametrize("change, message", [
    ({"backend": "vllm"}, "set backend: openai"),
    ({"options": {"base_url": "http://x:8000/v1"}}, "options.base_url is set by distillery"),
])
def test_a_served_teacher_must_talk_http_to_its_own_servers(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        load_recipe(recipe_with(tmp_path, {**R1, **change}))


def test_a_served_teacher_needs_the_slurm_executor(tmp_path: Path) -> None:
    path = recipe_with(tmp_path, R1)
    path.write_text(path.read_text().replace("kind: slurm", "kind: local"))
    with pytest.raises(RecipeError, match=r"teachers \['deepseek-r1'\] have serve: .* executor.kind must be slurm"):
        load_recipe(path)


def test_a_replica_that_does_not_fit_the_cluster_fails_before_submission(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    too_big = {**R1, "serve": {**R1["serve"], "gpus_per_node": 16}}
    assert main(["submit", str(recipe_with(tmp_path, too_big))]) != 0
    assert "serve/deepseek-r1:replica asks gpus_per_node=16 but this kind allows at most 8" in capsys.readouterr().err
    assert not (tmp_path / "run" / "_jobs.jsonl").exists()
