"""The quickstart recipe is valid and its first step runs through the same path as a cluster run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from distillery.cli import main
from distillery.core.plan import build_groups
from distillery.core.recipe import load_recipe
from distillery.core.store import Manifest, RunDir

REPO = Path(__file__).resolve().parents[2]


def test_quickstart_recipe_plans_every_stage_for_both_teachers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    recipe = load_recipe(REPO / "jobs" / "quickstart.yaml")
    keys = [g.key for g in build_groups(recipe)]
    for teacher in ("smol-warm", "smol-hot"):
        for step in ("generate", "perplexity", "ngram", "structure", "pack", "sft", "eval"):
            assert any(k.startswith(f"{step}/{teacher}:") for k in keys), (step, teacher)
    for lineage in ("smol-warm+strict", "smol-warm+uniform"):  # variants flow to the student like teachers
        for step in ("variants", "pack", "sft", "eval"):
            assert any(k.startswith(f"{step}/{lineage}:") for k in keys), (step, lineage)
        assert not any(k.startswith(f"perplexity/{lineage}:") for k in keys), "variants regenerate and rescore nothing"
    assert not any(k.startswith("variants/smol-hot") for k in keys) and not any("/smol-warm:" in k and
                                                                                  k.startswith("variants") for k in keys)
    pack = next(g for g in build_groups(recipe) if g.key == "pack/smol-warm+strict:task")
    assert pack.depends_on == ["variants/smol-warm+strict:process"]
    assert next(g for g in build_groups(recipe) if g.key == "pack/smol-warm:task").depends_on == ["structure/smol-warm:process"]


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
