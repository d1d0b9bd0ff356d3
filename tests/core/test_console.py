"""The terminal hears distillery's progress and errors; everything else a task prints goes to its log file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from distillery.testing import write_queries
from distillery.testing.stages import PLUGIN

NOISE = ("NOISE-FD1", "NOISE-FD2", "NOISE-WARNING", "NOISE-LIBRARY-INFO")


def _run(tmp_path: Path, *flags: str, fail: bool = False) -> tuple[subprocess.CompletedProcess[str], Path]:
    run_dir = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "console", "run_dir": str(run_dir), "num_shards": 1, "plugins": [PLUGIN],
        "steps": {"ingest": {"inputs": [{"path": str(write_queries(tmp_path / "q.jsonl", 5))}]},
                  "noisy": {"type": "test_noisy", "fail": fail}}}))
    done = subprocess.run([sys.executable, "-m", "distillery.cli", *flags, "run", str(recipe)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "default"})
    return done, run_dir


def test_third_party_output_goes_to_the_task_log_and_progress_to_the_terminal(tmp_path: Path) -> None:
    done, run_dir = _run(tmp_path)
    assert done.returncode == 0, done.stderr
    console = done.stdout + done.stderr
    assert not [noise for noise in NOISE if noise in console], console
    log = (run_dir / "logs" / "noisy" / "shard-00000.process.log").read_text()
    assert all(noise in log for noise in NOISE), log
    assert "noisy: 1 shard" in console and "noisy: 1/1 done" in console and "kept 5 of 5" in console
    assert "noisy: working on shard 0" in console, "a task's progress reaches the terminal"
    assert "wall time per step" in console


def test_verbose_brings_everything_back(tmp_path: Path) -> None:
    done, _ = _run(tmp_path, "-v")
    assert done.returncode == 0, done.stderr
    console = done.stdout + done.stderr
    assert all(noise in console for noise in NOISE), console


def test_a_failure_reaches_the_terminal_with_its_log(tmp_path: Path) -> None:
    done, run_dir = _run(tmp_path, fail=True)
    assert done.returncode == 1
    log = run_dir / "logs" / "noisy" / "shard-00000.process.log"
    error_lines = [line for line in done.stderr.splitlines() if "NOISE-FAILURE" in line]
    assert error_lines and all(str(log) in line for line in error_lines), done.stderr
    assert "Traceback" in log.read_text() and "Traceback" not in done.stderr
