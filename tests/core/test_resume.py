"""Kill -9 a shard at random points, resume, and require every record exactly once (datatrove's test, harder)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from distillery.cli import main
from distillery.core.store import RunDir


def _outputs(run_dir: Path, step: str) -> dict[str, bytes]:
    stage_dir = RunDir(run_dir).stage_dir(step)
    files = sorted(stage_dir.glob("shard-*.jsonl")) + sorted((stage_dir / "rejected").glob("shard-*.jsonl"))
    return {str(p.relative_to(stage_dir)): p.read_bytes().replace(str(run_dir).encode(), b"RUN") for p in files}


def _wait_for_progress(run_dir: Path, shard_index: int, items: int, process: subprocess.Popen, timeout_s: float = 120
                       ) -> None:
    """Until shard `shard_index` of the sleepy step has journaled `items` items (or finished)."""
    paths = RunDir(run_dir).shard("sleepy", None, shard_index)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if paths.manifest.exists():
            return
        if paths.journal.exists() and paths.journal.read_bytes().count(b"\n") - 1 >= items:
            return
        time.sleep(0.005)
    raise AssertionError(f"shard {shard_index} of {run_dir} never reached {items} journaled items")


@pytest.mark.slow
def test_kill_minus_nine_at_random_points_then_resume_gives_exactly_once_output(
        tmp_path: Path, queries: Path, write_recipe: Callable[..., Path]) -> None:
    """Each trial kills the run once a random shard has journaled a random number of items (or, one trial in
    five, between shards), so every kill lands where it was aimed; the resumed output is byte-identical to an
    uninterrupted run, and no journal or temporary file of ours is left behind."""
    reference_run = tmp_path / "reference"
    assert main(["run", str(write_recipe(tmp_path / "ref.yaml", reference_run, queries, delay_s=0.01))]) == 0
    expected = _outputs(reference_run, "sleepy")
    assert sum(data.count(b"\n") for data in expected.values()) == 60

    rng = random.Random(1234)
    killed_mid_shard = 0
    for trial in range(20):
        run_dir = tmp_path / f"trial-{trial}"
        recipe = write_recipe(tmp_path / f"trial-{trial}.yaml", run_dir, queries, delay_s=0.01)
        process = subprocess.Popen([sys.executable, "-m", "distillery.cli", "run", str(recipe)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        shard = rng.randrange(2)
        between_shards = trial % 5 == 4
        _wait_for_progress(run_dir, shard, 10**6 if between_shards else rng.randint(1, 25), process)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        journals = list(RunDir(run_dir).stage_dir("sleepy").glob("*.journal"))
        killed_mid_shard += any(j.read_bytes().count(b"\n") > 1 for j in journals)
        assert main(["resume", str(run_dir)]) == 0
        assert _outputs(run_dir, "sleepy") == expected, f"trial {trial} differs from the uninterrupted run"
        assert not list(RunDir(run_dir).stage_dir("sleepy").glob("*.journal"))
        assert not list(run_dir.rglob("*.tmp")), f"trial {trial} left temporary files behind"
    assert killed_mid_shard >= 10, "the kills were aimed inside shards"


def test_config_or_shard_count_change_is_stale_never_mixed(tmp_path: Path, queries: Path, write_recipe: Callable[..., Path],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    recipe = write_recipe(tmp_path / "r.yaml", run_dir, queries, tag="first")
    assert main(["run", str(recipe)]) == 0
    capsys.readouterr()

    recipe = write_recipe(tmp_path / "r.yaml", run_dir, queries, tag="second")
    assert main(["plan", str(recipe)]) == 0
    plan = capsys.readouterr().out
    assert "sleepy:process" in plan
    from distillery.core.plan import pending_groups
    from distillery.core.recipe import load_recipe

    pending = pending_groups(RunDir(run_dir), load_recipe(recipe))
    assert [(g.key, g.shards) for g in pending] == [("sleepy:process", [0, 1])]
    assert main(["run", str(recipe)]) == 0
    tags = {line.split(b'"tag": ')[1][:8] for data in _outputs(run_dir, "sleepy").values() for line in data.splitlines()
            if b'"tag"' in line}
    assert tags == {b'"second"'}

    recipe = write_recipe(tmp_path / "r.yaml", run_dir, queries, num_shards=3, tag="second")
    pending = pending_groups(RunDir(run_dir), load_recipe(recipe))
    assert [g.key for g in pending] == ["ingest:scan", "ingest:merge", "ingest:process", "sleepy:process"]
    assert main(["run", str(recipe)]) == 0
    capsys.readouterr()
    assert main(["status", str(run_dir)]) == 0
    status = capsys.readouterr().out
    assert "stale" not in status
    out = tmp_path / "export.jsonl"
    assert main(["export", str(run_dir), "--step", "sleepy", "-o", str(out)]) == 0
    kept = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    rejected = [json.loads(line)["key"] for p in sorted((run_dir / "sleepy" / "rejected").glob("shard-0000[0-2].jsonl"))
                for line in p.read_text().splitlines()]
    assert len(kept) + len(rejected) == len(set(kept) | set(rejected)) == 60


def test_engine_kind_tasks_run_in_fresh_processes_with_the_same_output(tmp_path: Path, queries: Path,
                                                                      write_recipe: Callable[..., Path]) -> None:
    in_process, spawned = tmp_path / "cpu", tmp_path / "gpu"
    assert main(["run", str(write_recipe(tmp_path / "cpu.yaml", in_process, queries))]) == 0
    recipe = write_recipe(tmp_path / "gpu.yaml", spawned, queries)
    text = recipe.read_text().replace("type: test_sleepy", "type: test_sleepy\n    resources: {job_kind: gpu}")
    recipe.write_text(text)
    assert main(["run", str(recipe)]) == 0
    assert "job_kind: gpu" in (spawned / "recipe.yaml").read_text()
    assert _outputs(spawned, "sleepy") == _outputs(in_process, "sleepy")


def test_a_shard_truncated_or_edited_after_its_manifest_is_detected_and_rerun(
        tmp_path: Path, queries: Path, write_recipe: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    recipe = write_recipe(tmp_path / "r.yaml", run_dir, queries)
    assert main(["run", str(recipe)]) == 0
    expected = _outputs(run_dir, "sleepy")
    assert main(["verify", str(run_dir)]) == 0
    assert "0 mismatched" in capsys.readouterr().out

    run = RunDir(run_dir)
    truncated = run.shard("ingest", None, 0).output
    truncated.write_bytes(truncated.read_bytes()[:-40])  # a writer that ran out of disk
    edited = run.shard("sleepy", None, 1).output
    edited.write_bytes(edited.read_bytes().replace(b'"tag": "x"', b'"tag": "y"', 1))  # same size, other content
    assert main(["verify", str(run_dir)]) == 1
    out = capsys.readouterr().out
    assert "ingest/shard-00000.done.json" in out and "bytes" in out
    assert "sleepy/shard-00001.done.json" in out and "sha256" in out
    assert main(["status", str(run_dir)]) == 0
    assert "stale" in capsys.readouterr().out

    assert main(["resume", str(run_dir)]) == 0  # the truncated input is rerun, and what was made from it
    assert _outputs(run_dir, "sleepy") != expected  # an edit that kept the size is caught by the full check only
    assert main(["verify", str(run_dir), "--invalidate"]) == 1
    assert "sleepy/shard-00001" in capsys.readouterr().out
    assert main(["resume", str(run_dir)]) == 0
    assert _outputs(run_dir, "sleepy") == expected
    assert main(["verify", str(run_dir)]) == 0
