"""The quickstart recipe is valid and its first step runs through the same path as a cluster run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from distillery.cli import main
from distillery.core.plan import build_groups
from distillery.core.recipe import load_recipe, parse_recipe
from distillery.core.store import Manifest, RunDir

REPO = Path(__file__).resolve().parents[2]


def test_quickstart_recipe_plans_every_stage_for_both_teachers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    recipe = load_recipe(REPO / "jobs" / "quickstart.yaml")
    keys = [g.key for g in build_groups(recipe)]
    for teacher in ("smol-warm", "smol-hot"):
        for step in ("generate", "perplexity", "ngram", "structure", "pack", "sft", "eval"):
            assert any(k.startswith(f"{step}/{teacher}:") for k in keys), (step, teacher)
    for lineage in ("smol-warm+uniform",):  # variants flow to the student like teachers
        for step in ("variants", "pack", "sft", "eval"):
            assert any(k.startswith(f"{step}/{lineage}:") for k in keys), (step, lineage)
        assert not any(k.startswith(f"perplexity/{lineage}:") for k in keys), "variants regenerate and rescore nothing"
    assert not any(k.startswith("variants/smol-hot") for k in keys) and not any("/smol-warm:" in k and
                                                                                  k.startswith("variants") for k in keys)
    pack = next(g for g in build_groups(recipe) if g.key == "pack/smol-warm+uniform:task")
    assert pack.depends_on == ["variants/smol-warm+uniform:process"]
    assert next(g for g in build_groups(recipe) if g.key == "pack/smol-warm:task").depends_on == ["structure/smol-warm:process"]


def test_only_the_phases_that_run_a_model_take_its_job_kind_and_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A merge (and a process that only reads what its scan scored) is light cpu work: on a cluster it must not
    hold the step's GPUs or nodes, and a local run does it in its own process instead of starting another."""
    monkeypatch.chdir(REPO)
    data = yaml.safe_load((REPO / "jobs" / "quickstart.yaml").read_text())
    data["steps"]["perplexity"]["resources"] = {"gpus_per_node": 8, "nodes": 2, "tasks_per_node": 8, "mem_gb": 64}
    groups = {g.key: g for g in build_groups(parse_recipe(data, source="quickstart"))}
    scan, merge, process = (groups[f"perplexity/smol-warm:{phase}"] for phase in ("scan", "merge", "process"))
    assert (scan.job_kind, scan.resources.gpus_per_node, scan.world_size) == ("gpu", 8, 16)
    for light in (merge, process):
        assert (light.job_kind, light.resources.gpus_per_node, light.world_size) == ("cpu", 0, 1), light.key
        assert light.resources.mem_gb == 64
    assert [groups[f"decontaminate:{p}"].job_kind for p in ("scan", "merge", "process")] == ["gpu", "cpu", "cpu"]
    assert [groups[f"variants/smol-warm+uniform:{p}"].job_kind for p in ("scan", "merge", "process")] == \
        ["cpu", "cpu", "gpu"]  # the variant's re-screen scores attempts the filters never saw
    assert groups["generate/smol-warm:process"].job_kind == groups["sft/smol-hot:task"].job_kind == "gpu"


def test_quickstart_ingest_runs_the_bundled_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(REPO)
    run_dir = tmp_path / "qs"
    assert main(["run", "jobs/quickstart.yaml", "--until", "ingest", "--set", f"run_dir={run_dir}"]) == 0
    manifests = [Manifest.load(p) for p in sorted(RunDir(run_dir).stage_dir("ingest").glob("*.done.json"))]
    assert len(manifests) == 1 and all(m.reconciles() for m in manifests)
    assert sum(m.kept for m in manifests) >= 20
    assert not (run_dir / "clean").exists()
    out = capsys.readouterr().out
    assert "finished" in out
    assert re.search(r"^ingest\s+\d+\.\ds\s+100%$", out, re.M), "the per-step time table lists the step that ran"
