from __future__ import annotations

from pathlib import Path

import pytest

from distillery.cli import main
from distillery.core.recipe import RecipeError, load_recipe

GOOD = """name: t
run_dir: {run}
num_shards: 2
steps:
  ingest:
    inputs:
      - path: {inputs}
"""


def _recipe(tmp_path: Path, text: str) -> Path:
    (tmp_path / "q.jsonl").write_text("{}\n")
    path = tmp_path / "recipe.yaml"
    path.write_text(text.format(run=tmp_path / "run", inputs=tmp_path / "q.jsonl"))
    return path


def test_good_recipe_loads_with_absolute_paths(tmp_path: Path) -> None:
    recipe = load_recipe(_recipe(tmp_path, GOOD))
    assert recipe.run_dir.is_absolute()
    assert [s.step for s in recipe.steps] == ["ingest"]


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (GOOD.replace("num_shards: 2", "num_shards: two"), "num_shards"),
        (GOOD.replace("num_shards: 2", "num_shard: 2"), "num_shard: unknown field"),
        (GOOD.replace("- path: {inputs}", "- path: /nonexistent/q.jsonl"), "steps.ingest.inputs[0].path"),
        (GOOD.replace("- path: {inputs}", "- path: {inputs}\n        colour: red"), "steps.ingest.inputs[0].colour"),
        (GOOD.replace("  ingest:", "  ingset:"), "unknown stage type 'ingset'"),
        (GOOD + "teachers:\n  - name: a\n    model: m\n    backend: carrier-pigeon\n", "teachers[0].backend"),
        (GOOD.replace("run_dir: {run}", "run_dir: ${{NO_SUCH_VARIABLE_X}}/run"), "NO_SUCH_VARIABLE_X is not set"),
    ],
)
def test_bad_recipe_names_the_file_field_and_line(tmp_path: Path, bad: str, needle: str) -> None:
    path = _recipe(tmp_path, bad)
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    message = str(error.value)
    assert needle in message
    assert str(path) in message
    assert f"{path}:" in message and message.split(f"{path}:")[1][0].isdigit(), message


def test_bad_recipe_fails_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _recipe(tmp_path, GOOD.replace("num_shards: 2", "num_shards: -1"))
    assert main(["run", str(path)]) == 2
    assert "num_shards" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_only_generation_takes_the_teachers_resources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A teacher's `resources` size the tasks that serve its model; its sft, perplexity and eval steps keep
    their own (a remote teacher's client-sized resources must not turn its student's training into a CPU job)."""
    from distillery.core.plan import build_groups

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)
    monkeypatch.setenv("DISTILLERY_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("DISTILLERY_DATA", str(tmp_path / "data"))
    recipe = load_recipe(repo / "jobs" / "am-thinking-distill.yaml", check_paths=False)
    groups = {g.key: g for g in build_groups(recipe)}
    assert groups["generate/deepseek-r1:process"].job_kind == "cpu"
    assert groups["generate/am-thinking-v1:process"].resources.gpus_per_node == 4
    sft = groups["sft/deepseek-r1:task"]
    assert (sft.job_kind, sft.resources.nodes, sft.resources.gpus_per_node) == ("gpu", 4, 8)
    assert groups["perplexity/deepseek-r1:scan"].job_kind == "gpu"
