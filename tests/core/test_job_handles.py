"""The local executor's job handles: finished when `execute` returns, FAILED for a group with a failed task,
CANCELLED for what depends on it; the command line's exit code follows them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distillery.cli import main
from distillery.core.plan import pending_groups
from distillery.core.runner import load_run_recipe
from distillery.core.store import RunDir
from distillery.executors import build_executor
from distillery.executors.handles import CANCELLED, DONE, FAILED, all_done
from distillery.testing.stages import PLUGIN

pytestmark = pytest.mark.filterwarnings("ignore:NOISE-WARNING")


def _recipe(tmp_path: Path, queries: Path, fail: bool) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "name": "handles", "run_dir": str(tmp_path / "run"), "num_shards": 2, "plugins": [PLUGIN],
        "steps": {"ingest": {"inputs": [{"path": str(queries)}]}, "noisy": {"type": "test_noisy", "fail": fail},
                  "sleepy": {"type": "test_sleepy"}}}))
    return path


def test_a_failed_task_gives_a_failed_handle_and_its_dependents_cancelled_ones(tmp_path: Path, queries: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.recipe.write_text(_recipe(tmp_path, queries, fail=True).read_text())
    recipe = load_run_recipe(run)
    handles = build_executor(recipe, run, "local").execute(pending_groups(run, recipe))
    ingest = [(h.key, h.job_id, h.state()) for h in handles if h.key.startswith("ingest:")]
    assert ingest == [(f"ingest:{phase}", None, DONE) for phase in ("scan", "merge", "process")]
    assert [(h.key, h.job_id, h.state()) for h in handles[len(ingest):]] == [
        ("noisy:process", None, FAILED), ("sleepy:process", None, CANCELLED)]
    noisy, sleepy = handles[len(ingest):]
    assert noisy.finished() and noisy.shard_states() == {0: "FAILED", 1: "FAILED"}
    assert all("NOISE-FAILURE" in error for error in noisy.failures.values())
    assert sleepy.shard_states() == {0: "CANCELLED", 1: "CANCELLED"}
    assert noisy.wait(poll_s=0) == FAILED, "a finished handle's wait returns at once"
    assert not all_done(handles) and all_done(handles[:len(ingest)])


def test_the_exit_code_follows_the_handles(tmp_path: Path, queries: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(_recipe(tmp_path, queries, fail=True))]) == 1
    assert "FAILED in" in capsys.readouterr().out
    assert main(["run", str(_recipe(tmp_path, queries, fail=False))]) == 0
    assert "finished in" in capsys.readouterr().out
