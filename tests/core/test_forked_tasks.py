"""A local run's model tasks start in processes forked from a server that imported the run's heavy modules once:
each task is a fresh process, finds what its step asked to preload already imported, and sees the environment of
the process that ran it as it was when the task started (not the server's, which started earlier)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distillery.cli import main
from distillery.testing import write_queries
from distillery.testing.stages import PLUGIN

PRELOAD = ["xml.dom.minidom", "wave"]  # stdlib modules nothing in distillery imports


def write_recipe(root: Path, queries: Path) -> Path:
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "forked", "run_dir": str(root / "run"), "num_shards": 2, "plugins": [PLUGIN],
        "executor": {"kind": "local", "workers": 1},
        "steps": {"ingest": {"inputs": [{"path": str(queries)}]},
                  "forked": {"type": "test_forked", "preload": PRELOAD}}}, sort_keys=False))
    return recipe


def kept(run: Path) -> list[dict]:
    return [json.loads(line) for path in sorted((run / "forked").glob("shard-*.jsonl*")) for line in
            path.read_text().splitlines()]


def test_a_fresh_run_forks_its_model_tasks_from_a_server_that_preloaded_their_modules(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, write_queries(tmp_path / "queries.jsonl", 12))
    env = {**os.environ, "DISTILLERY_TEST_MARK": "from-the-shell", "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-m", "distillery.cli", "run", str(recipe)], check=True, env=env,
                   capture_output=True, timeout=300)
    records = kept(tmp_path / "run")
    assert len(records) == 12
    assert {tuple(r["preloaded"]) for r in records} == {tuple(sorted(PRELOAD))}
    assert {r["variable"] for r in records} == {"from-the-shell"}
    assert len({r["pid"] for r in records}) == 2, "each shard's task is a process of its own"


def test_each_task_sees_the_environment_as_it_is_when_the_task_starts(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    queries = write_queries(tmp_path / "queries.jsonl", 6)
    for mark in ("first", "second"):  # the second run's tasks come from the server the first one started
        root = tmp_path / mark
        root.mkdir()
        monkeypatch.setenv("DISTILLERY_TEST_MARK", mark)
        assert main(["run", str(write_recipe(root, queries))]) == 0
        assert {r["variable"] for r in kept(root / "run")} == {mark}
        assert os.getpid() not in {r["pid"] for r in kept(root / "run")}
