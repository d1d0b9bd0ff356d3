from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillery.cli import main
from distillery.core.recipe import parse_recipe
from distillery.core.stage import stage_types
from distillery.ops.status import state_ranges
from distillery.core.store import RunDir


def test_explain_shows_each_config_field_with_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "ingest"]) == 0
    out = capsys.readouterr().out
    assert "inputs" in out and "Files to read" in out


def test_explain_shows_nested_settings_as_a_tree(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "ingest"]) == 0
    lines = capsys.readouterr().out.splitlines()
    inputs = next(i for i, line in enumerate(lines) if line.lstrip().startswith("inputs:"))
    path = next(i for i, line in enumerate(lines) if line.lstrip().startswith("path:"))
    assert path > inputs and len(lines[path]) - len(lines[path].lstrip()) > len(lines[inputs]) - len(lines[inputs].lstrip())
    assert main(["explain", "generate"]) == 0
    out = capsys.readouterr().out
    for nested in ("threshold: float", "fallbacks: list[", "wall_s: float", "An answer passes when its score reaches"):
        assert nested in out, nested


def test_every_registered_stage_documents_every_field() -> None:
    undocumented = [f"{name}.{field}" for name, cls in stage_types().items()
                    for field, info in cls.Config.model_fields.items() if not info.description]
    assert undocumented == []


def test_explain_unknown_stage_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "no-such-stage"]) == 2
    assert "unknown stage" in capsys.readouterr().err


def _sleepy_run(tmp_path, queries, write_recipe, capsys) -> Path:
    run_dir = tmp_path / "run"
    assert main(["run", str(write_recipe(tmp_path / "r.yaml", run_dir, queries))]) == 0
    capsys.readouterr()
    return run_dir


def test_rerun_runs_exactly_the_named_shards_again(tmp_path: Path, queries: Path, write_recipe,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _sleepy_run(tmp_path, queries, write_recipe, capsys)
    run = RunDir(run_dir)
    before = {i: run.shard("sleepy", None, i).manifest.stat().st_mtime_ns for i in range(2)}
    output = run.shard("sleepy", None, 1).output.read_bytes()
    assert main(["rerun", str(run_dir), "--step", "sleepy", "--shards", "1"]) == 0
    assert "reran sleepy:process shards [1]" in capsys.readouterr().out
    assert run.shard("sleepy", None, 0).manifest.stat().st_mtime_ns == before[0]
    assert run.shard("sleepy", None, 1).manifest.stat().st_mtime_ns != before[1]
    assert run.shard("sleepy", None, 1).output.read_bytes() == output
    assert main(["rerun", str(run_dir), "--step", "sleepy", "--shards", "7"]) == 2
    assert "not [7]" in capsys.readouterr().err
    assert main(["rerun", str(run_dir), "--step", "nope"]) == 2


def test_status_json_and_reject_reasons(tmp_path: Path, queries: Path, write_recipe,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _sleepy_run(tmp_path, queries, write_recipe, capsys)
    assert main(["status", str(run_dir), "--json"]) == 0
    groups = {g["group"]: g for g in json.loads(capsys.readouterr().out)}
    sleepy = groups["sleepy:process"]
    assert sleepy["states"] == {"done": 2} and sleepy["shard_states"] == "0-1 done"
    assert sleepy["inputs"] == sleepy["kept"] + sleepy["rejected"] == 60
    assert sleepy["reject_reasons"] == {"position # is a multiple of #": sleepy["rejected"]}
    assert main(["status", str(run_dir)]) == 0
    assert "rejected 9x: position # is a multiple of #" in capsys.readouterr().out


def test_state_ranges_keep_ten_thousand_shards_on_one_line() -> None:
    labels = ["done"] * 42 + ["running"] + ["pending"] * 9957
    assert state_ranges(labels) == "0-41 done, 42 running, 43-9999 pending"
    assert state_ranges(["done"]) == "0 done"


def test_verify_and_explain_behave(tmp_path: Path, queries: Path, write_recipe,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _sleepy_run(tmp_path, queries, write_recipe, capsys)
    assert main(["verify", str(run_dir)]) == 0
    assert "4 shards checked against their manifests: 0 mismatched" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "not-a-run")]) == 2
    assert main(["export", str(run_dir), "--step", "sleepy", "-o", str(tmp_path / "out.jsonl")]) == 0
    exported = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(exported) == 51 and all(row["tag"] == "x" for row in exported)


def test_status_shows_the_engine_figures_of_generation_shards(tmp_path: Path) -> None:
    from distillery.core.plan import build_groups
    from distillery.ops.status import GroupStatus, render_status

    (tmp_path / "q.jsonl").write_text("")
    group = next(g for g in build_groups(parse_recipe({"name": "x", "run_dir": str(tmp_path), "steps": {
        "ingest": {"inputs": [{"path": str(tmp_path / "q.jsonl")}]}}})))
    status = GroupStatus(group, engine={"tokens_per_s": [400.0, 600.0], "engine_idle_fraction": [0.02, 0.04],
                                        "backpressure_s": [3.0, 4.0]})
    assert "rates: 500 tok/s, idle 3.0%, back-pressure 7s" in render_status([status])
    steps = GroupStatus(group, engine={"tokens_per_s": [500.0], "engine_running_mean": [30.0, 32.0],
                                       "engine_starved_step_share": [0.0, 0.02], "engine_starved_s": [1.0, 2.0],
                                       "engine_time_to_full_s": [1.0, 2.0]})
    assert ("rates: 500 tok/s, engine runs 31.0, free slots while due in 1.0% of steps, 3s starved, full after 1.5s"
            in render_status([steps]))
