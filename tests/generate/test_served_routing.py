"""How a served teacher's clients spread queries over replicas (rendezvous hashing on the prompt), and what its
servers cost. The end-to-end run against real replicas is tests/slurm/test_served_teacher.py."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from distillery.core.teachers import TeacherConfig
from distillery.serve.client import rank_replicas
from distillery.serve.cost import server_gpu_hours, serving_gpus
from distillery.serve.records import ReplicaRecord


def replicas(indices: list[int]) -> list[ReplicaRecord]:
    return [ReplicaRecord("r1", i, str(100 + i), f"node{i}", 8000 + i, "healthy", 0.0) for i in indices]


def key(n: int) -> str:
    return json.dumps([{"role": "user", "content": f"What is {n} + 1?"}], sort_keys=True)


def test_queries_spread_evenly_and_each_sticks_to_its_replica() -> None:
    four = replicas([0, 1, 2, 3])
    homes = {n: rank_replicas(key(n), four)[0].index for n in range(2000)}
    shares = Counter(homes.values())
    assert set(shares) == {0, 1, 2, 3} and all(400 <= count <= 600 for count in shares.values()), shares
    # Every attempt of a query (same prompt) goes to the same replica, whatever order the records were read in.
    assert all(rank_replicas(key(n), four[::-1])[0].index == homes[n] for n in range(200))


def test_losing_a_replica_moves_only_its_own_queries() -> None:
    four, three = replicas([0, 1, 2, 3]), replicas([0, 1, 3])
    for n in range(500):
        before, after = rank_replicas(key(n), four), rank_replicas(key(n), three)
        if before[0].index != 2:
            assert after[0].index == before[0].index
        else:  # its failover order is the one it had: the next replica in its own ranking
            assert after[0].index == before[1].index


def test_servers_are_charged_for_every_gpu_of_every_replica_while_their_clients_run() -> None:
    teacher = TeacherConfig.model_validate({
        "name": "r1", "model": "/models/R1", "backend": "openai",
        "serve": {"replicas": 4, "nodes_per_replica": 2, "gpus_per_node": 8}})
    assert serving_gpus(teacher) == 64
    assert server_gpu_hours(teacher, client_wall_s=10 * 3600, startup_s=1800) == 64 * 10.5
    assert serving_gpus(TeacherConfig(name="x", model="m", backend="openai", options={"base_url": "http://h/v1"})) == 0


def test_plan_cost_prices_the_paper_recipes_served_r1_on_its_replica_gpus(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    from distillery.core.pricing import CostInputs
    from distillery.core.recipe import load_recipe
    from distillery.ops.cost import estimate, render_estimate

    monkeypatch.setenv("DISTILLERY_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("DISTILLERY_DATA", str(tmp_path / "data"))
    recipe = load_recipe(Path(__file__).resolve().parents[2] / "jobs" / "am-thinking-distill.yaml", check_paths=False)
    row = next(r for r in estimate(recipe, CostInputs(), 32) if r.key == "generate/deepseek-r1")
    # 4 replicas x 2 nodes x 8 GPUs decode together; every GPU is charged from its load to the step's end.
    assert "served here: 64 GPUs in 4 replica jobs" in row.notes
    assert row.kind == "served", "the replica jobs' GPU-hours are this cluster's, not a remote server's"
    table = render_estimate(estimate(recipe, CostInputs(), 32), 32)
    cluster_hours = float(table.splitlines()[-1].split()[1])
    assert cluster_hours >= row.gpu_hours
    busy = row.gpu_hours - 64 * CostInputs().teacher("deepseek-r1").startup_s / 3600
    # The clients share the servers, so the step lasts the servers' busy GPU-hours over their 64 GPUs (the array's
    # last round of 1000 shards at 128 a time adds 2.4%).
    assert row.wall_s == pytest.approx(busy * 3600 / 64 * 1024 / 1000, rel=0.001)
