"""A user's clone stands alone: in a copy of the committed tree with nothing beside it, every recipe validates and
the quickstart's query preparation runs against the benchmarks packaged with distillery."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bare_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`git archive HEAD` unpacked into an empty folder: what a clone holds, and nothing around it."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], capture_output=True, check=True).stdout
    root = tmp_path_factory.mktemp("clone") / "distillery"
    root.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    assert not (root.parent / "shared").exists()
    return root


def _cli(clone: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The clone's own package (its src/ first on the path), run from the clone's root."""
    environ = {**os.environ, "PYTHONPATH": str(clone / "src"), "HF_HUB_OFFLINE": "1", **env}
    environ.pop("DISTILLERY_BENCHMARKS", None)
    return subprocess.run([sys.executable, "-m", "distillery.cli", *args], cwd=clone, env=environ,
                          capture_output=True, text=True, timeout=900)


def test_the_clone_imports_its_own_package(bare_clone: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import distillery.data as d; print(d.benchmarks_dir())"],
                          cwd=bare_clone, env={**os.environ, "PYTHONPATH": str(bare_clone / "src")},
                          capture_output=True, text=True, check=True)
    assert Path(done.stdout.strip()) == bare_clone / "src" / "distillery" / "data" / "benchmarks"


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "jobs").glob("*.yaml")))
def test_every_recipe_validates_in_the_clone(bare_clone: Path, recipe: str) -> None:
    data = bare_clone.parent / "data"
    done = _cli(bare_clone, "plan", f"jobs/{recipe}", "--no-path-check",
                DISTILLERY_RUNS=str(bare_clone.parent / "runs"), DISTILLERY_DATA=str(data), R1_API_KEY="unused")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "group" in done.stdout and "shared" not in done.stdout + done.stderr


@pytest.mark.slow
def test_quickstart_prepares_queries_in_the_clone(bare_clone: Path) -> None:
    run_dir = bare_clone / "runs" / "quickstart"
    done = _cli(bare_clone, "run", "jobs/quickstart.yaml", "--until", "decontaminate")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    manifests = sorted((run_dir / "decontaminate").glob("shard-*.done.json"))
    assert len(manifests) == 1
    kept = sum(json.loads(p.read_text())["kept"] for p in manifests)
    assert kept >= 20
    summary = json.loads((run_dir / "decontaminate" / "summary.json").read_text())
    assert {"aime24", "aime25", "math500", "ifeval"} <= set(summary["benchmarks"]), "the quickstart's benchmarks"
    assert not (run_dir / "generate").exists()
