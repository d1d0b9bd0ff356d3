"""jobs/rehearsal.yaml validates, and a tiny synthetic corpus goes through it end to end with the real runner,
real verifiers and real filters: regeneration happens, loops are dropped by the 20-gram filter, broken layouts
by normalise/structure, and every task's manifest carries its peak RSS and CPU seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from distillery import cli
from distillery.core.store import iter_jsonl
from distillery.synth.write import write_queries
from distillery.train.packed_file import PackedReader

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "jobs" / "rehearsal.yaml"


def test_the_rehearsal_recipe_validates() -> None:
    assert cli.main(["plan", str(RECIPE), "--no-path-check"]) == 0


@pytest.mark.slow
def test_a_tiny_rehearsal_runs_end_to_end(tmp_path: Path) -> None:
    write_queries(tmp_path / "data", 60, seed=2)
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe.update(run_dir=str(tmp_path / "run"), num_shards=1)
    recipe["executor"]["workers"] = 1
    for teacher in recipe["teachers"]:  # degenerate often enough that 60 queries show each filter at work
        teacher["options"].update(loop_rate=0.15, untagged_rate=0.1)
    steps = recipe["steps"]
    for spec in steps["ingest"]["inputs"]:
        spec["path"] = str(tmp_path / "data" / Path(spec["path"]).name)
    steps["decontaminate"]["benchmarks"] = [{"name": "aime24"}]  # embedding the others is most of a tiny run
    del steps["variants"]  # three more task groups, each a process start: the ablations' tests cover them
    path = tmp_path / "rehearsal.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert cli.main(["run", str(path)]) == 0

    run = tmp_path / "run"
    traces = [row for teacher in ("am-thinking-v1", "deepseek-r1")
              for row in iter_jsonl(run / "generate" / teacher / "shard-00000.jsonl.gz")]
    assert traces and any(len(trace["attempts"]) > 1 for trace in traces)  # the loop really regenerated
    assert all(trace["attempts"][trace["accepted"]]["passed"] for trace in traces)
    ngram = json.loads((run / "ngram" / "deepseek-r1" / "shard-00000.done.json").read_text())
    assert ngram["rejected"] >= 1
    dropped = sum(json.loads((run / "structure" / t / "shard-00000.done.json").read_text())["rejected"]
                  for t in ("am-thinking-v1", "qwen3-235b-a22b", "deepseek-r1"))
    assert dropped >= 1
    manifest = json.loads((run / "pack" / "am-thinking-v1" / "shard-00000.done.json").read_text())
    assert manifest["stats"]["peak_rss_mb"] > 0 and manifest["stats"]["cpu_s"] > 0


@pytest.mark.slow
def test_traces_near_the_32k_cap_pass_every_stage(tmp_path: Path) -> None:
    """Unscaled lengths: every answer written complete just under a 28k-token budget (the synthetic teacher's
    `overlong` form), 29-31k tokens with the prompt under the student's tokenizer, through normalise, the 20-gram
    filter, structure and variants into the packed bins at the paper's 32,768-token cap."""
    write_queries(tmp_path / "data", 8, seed=3)
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe.update(run_dir=str(tmp_path / "run"), num_shards=1)
    recipe["teachers"] = [recipe["teachers"][0]]
    teacher = recipe["teachers"][0]
    teacher["sampling"]["max_tokens"] = 28000
    teacher["options"] = {"length_scale": 1.0, "overlong_rate": 1.0, "loop_rate": 0.0, "untagged_rate": 0.0,
                          "pass_rate": 1.0}
    steps = recipe["steps"]
    for spec in steps["ingest"]["inputs"]:
        spec["path"] = str(tmp_path / "data" / Path(spec["path"]).name)
    steps["decontaminate"]["benchmarks"] = [{"name": "aime24"}]
    steps["structure"]["max_tokens"] = steps["pack"]["max_tokens"] = 32768
    steps["variants"]["rules"] = {"strict": {"threshold": 1.0, "teachers": [teacher["name"]]}}
    path = tmp_path / "rehearsal.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert cli.main(["run", str(path)]) == 0

    run = tmp_path / "run"
    generated = json.loads((run / "generate" / teacher["name"] / "shard-00000.done.json").read_text())
    for step in ("normalise", "ngram", "structure", "pack"):
        manifest = json.loads((run / step / teacher["name"] / "shard-00000.done.json").read_text())
        assert manifest["kept"] == generated["kept"] > 0, (step, manifest["rejected"])
    reader = PackedReader(run / "pack" / teacher["name"] / "shard-00000.h5")
    try:
        lengths = [int(n) for i in range(len(reader)) for n in np.diff(reader[i].cu_seqlens)]
    finally:
        reader.close()
    assert len(lengths) == generated["kept"] and min(lengths) > 26000 and max(lengths) <= 32768
