"""The paper-scale ablation sweep (`jobs/am-thinking-ablations.yaml`) plans, and shares every step before its
variants with the main recipe, so that it runs in the main run's directory without redoing any of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillery.cli import main
from distillery.core.plan import build_groups
from distillery.core.pricing import CostInputs
from distillery.core.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _paper_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    for name, value in {"DISTILLERY_RUNS": str(tmp_path / "runs"), "DISTILLERY_DATA": str(tmp_path / "data"),
                        "R1_API_KEY": "x"}.items():
        monkeypatch.setenv(name, value)


def test_the_ablation_sweep_plans_a_student_per_variant(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "jobs/am-thinking-ablations.yaml", "--no-path-check"]) == 0
    out = capsys.readouterr().out
    recipe = load_recipe(REPO / "jobs" / "am-thinking-ablations.yaml", check_paths=False)
    lineages = [t for t in recipe.teachers_of("variants") if t]
    assert {"am-thinking-v1+t0.7", "am-thinking-v1+t1.0", "am-thinking-v1+no-ppl", "am-thinking-v1+keep-all",
            "deepseek-r1+uniform", "deepseek-r1+diverse"} <= set(lineages)
    assert not any(t.startswith("qwen3") for t in lineages), "the length variants name only two teachers"
    groups = {g.key: g for g in build_groups(recipe)}
    for lineage in lineages:
        for step in ("pack", "sft", "eval"):
            key = f"{step}/{lineage}:{'process' if step == 'eval' else 'task'}"
            assert key in groups and key.split(":")[0] in out, key
        assert groups[f"pack/{lineage}:task"].depends_on == [f"variants/{lineage}:process"]
    assert groups["pack/am-thinking-v1:task"].depends_on == ["structure/am-thinking-v1:process"]


def test_the_sweep_reuses_the_main_run() -> None:
    """Same run directory, shards and seed, and every step before `variants` with the same config digest for every
    teacher: the main run's finished shards are fresh for the sweep."""
    main_recipe = load_recipe(REPO / "jobs" / "am-thinking-distill.yaml", check_paths=False)
    sweep = load_recipe(REPO / "jobs" / "am-thinking-ablations.yaml", check_paths=False)
    assert (sweep.run_dir, sweep.num_shards, sweep.seed) == (main_recipe.run_dir, main_recipe.num_shards, main_recipe.seed)
    names = [s.step for s in sweep.steps]
    shared = names[: names.index("variants")] + names[names.index("variants") + 1:]
    assert shared == [s.step for s in main_recipe.steps]
    for step in shared:
        for teacher in main_recipe.teachers_of(step):
            assert (sweep.build_stage(step, teacher).config_digest
                    == main_recipe.build_stage(step, teacher).config_digest), (step, teacher)


def test_plan_cost_prices_every_variant(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "jobs/am-thinking-ablations.yaml", "--no-path-check", "--cost", "--nodes", "32"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.strip()}
    # pack's tasks each pay the scheduler's start (CostInputs.task_overhead_s) on its CPUs; beyond that, a length
    # variant of half the data packs half the tokens
    pack = load_recipe(REPO / "jobs" / "am-thinking-ablations.yaml", check_paths=False).step("pack")
    keys = ("pack/am-thinking-v1+uniform", "pack/am-thinking-v1")
    assert rows[keys[0]][2] == rows[keys[1]][2]
    overhead = int(rows[keys[0]][2]) * CostInputs().task_overhead_s * pack.resources.cpus_per_task / 3600
    work = {key: float(rows[key][6]) - overhead for key in keys}
    assert work[keys[0]] == pytest.approx(work[keys[1]] / 2, rel=0.02), "half the data packs half the tokens"
    assert "sft/am-thinking-v1+keep-all" in rows and "eval/deepseek-r1+diverse" in rows
