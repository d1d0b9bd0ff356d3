"""`plan` on a cluster's login node: an unprivileged user, no apt-get, no SLURM daemons, only the SLURM client
commands on PATH. Run as `nobody` (setpriv) when the suite runs as root; as the current user otherwise."""

from __future__ import annotations

import functools
import os
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECIPE = "jobs/am-thinking-distill.yaml"
NOBODY = 65534
# What a login node lacks: the package manager, privilege, the SLURM daemons (in sbin, which is not on PATH).
LOGIN_NODE_LACKS = {"apt", "apt-get", "apt-cache", "aptitude", "dpkg", "dpkg-query", "sudo", "su", "setpriv"}
SLURM_CLIENTS = {"sinfo", "scontrol", "sbatch", "squeue", "sacct", "scancel", "srun"}


@functools.cache
def _interpreter(prefix: tuple[str, ...]) -> tuple[str, list[str]]:
    """This venv's Python, or (when it lives under a home the user cannot enter, e.g. root's pyenv) the system
    Python of the same version with this venv's packages on PYTHONPATH."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    errors = []
    for python, path in ((sys.executable, []), (f"/usr/bin/{version}", site.getsitepackages())):
        # Through a shell, as launch.sh and the venv's scripts start it (gVisor let setpriv itself exec a Python
        # under root's 0700 home that a shell of the same user then could not).
        probe = ["/bin/sh", "-c", 'exec "$0" -c "import distillery.cli"', python]
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join([str(REPO / "src"), *path])}
        done = subprocess.run([*prefix, *probe], cwd=REPO, env=env, text=True, capture_output=True, timeout=120,
                              check=False)
        if done.returncode == 0:
            return python, path
        errors.append(f"{python}: {done.stderr.strip()[-300:]}")
    pytest.skip("no Python the unprivileged user can run with distillery's dependencies: " + "; ".join(errors))


class LoginNode:
    """A home directory and a PATH of symlinks to /usr/bin and /bin without LOGIN_NODE_LACKS (and no sbin)."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.bin = root / "bin"
        self.bin.mkdir()
        for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
            for tool in sorted(Path(directory).iterdir()) if Path(directory).is_dir() else []:
                target = self.bin / tool.name
                if tool.name not in LOGIN_NODE_LACKS and not target.exists() and os.access(tool, os.X_OK):
                    target.symlink_to(tool)
        queries = self.home / "data" / "queries"
        queries.mkdir(parents=True)
        for category in ("math", "code", "science", "instruction_following", "chat", "general"):
            (queries / f"{category}.jsonl").write_text("")
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("running as root and setpriv is missing: cannot drop to an unprivileged user")
            for path in [root, *root.rglob("*")]:
                os.lchown(path, NOBODY, NOBODY)
            self.prefix = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
        self.python, self.pythonpath = _interpreter(tuple(self.prefix))

    def env(self, **extra: str) -> dict[str, str]:
        path = os.pathsep.join([str(REPO / "src"), *self.pythonpath])
        return {"PATH": str(self.bin), "HOME": str(self.home), "LANG": "C.UTF-8", "PYTHONPATH": path,
                "DISTILLERY_RUNS": str(self.home / "runs"), "DISTILLERY_DATA": str(self.home / "data"), **extra}

    def run(self, command: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.prefix + command, cwd=REPO, env=self.env(**extra), capture_output=True, text=True,
                              timeout=300, check=False)


@pytest.fixture
def login_node() -> Iterator[LoginNode]:
    # Not tmp_path: pytest's temporary root is private to the user running the suite.
    root = Path(tempfile.mkdtemp(prefix="distillery-login-"))
    root.chmod(0o755)
    try:
        yield LoginNode(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _check_plan(done: subprocess.CompletedProcess[str], node: LoginNode) -> None:
    assert done.returncode == 0, f"plan failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert "run 'am-thinking-distill'" in done.stdout and "executor: slurm" in done.stdout
    assert "#SBATCH --gres=gpu:h100:8" in done.stdout  # the example profile's GPU kind, rendered without a cluster
    assert not (node.home / "runs").exists(), "plan is a dry run: it must not create the run directory"


def test_the_login_node_is_unprivileged_without_apt_or_slurm_daemons(login_node: LoginNode) -> None:
    done = login_node.run([login_node.python, "-c", "import os, shutil; print(os.geteuid(), *(shutil.which(t) for t "
                           "in ('apt-get', 'slurmctld', 'slurmd', 'slurmdbd', 'sudo', 'sh')))"])
    uid, *tools, shell = done.stdout.split()
    assert int(uid) == (NOBODY if os.geteuid() == 0 else os.geteuid()) != 0
    assert tools == ["None"] * 5 and shell != "None"


def test_plan_of_the_paper_recipe_on_a_login_node(login_node: LoginNode) -> None:
    _check_plan(login_node.run([login_node.python, "-m", "distillery.cli", "plan", RECIPE]), login_node)


def test_launch_sh_plan_on_a_login_node(login_node: LoginNode) -> None:
    """An operator who installed distillery with pip into a venv (no `./launch.sh setup` stamp) runs plan."""
    venv = login_node.home / "venv" / "bin"
    venv.mkdir(parents=True)
    for name, command in (("python", ""), ("distillery", " -m distillery.cli")):
        (venv / name).write_text(f'#!/bin/sh\nexec "{login_node.python}"{command} "$@"\n')
        (venv / name).chmod(0o755)
    if os.geteuid() == 0:
        for path in [venv.parent, venv, *venv.iterdir()]:
            os.lchown(path, NOBODY, NOBODY)
    done = login_node.run(["bash", "launch.sh", "plan", RECIPE], DISTILLERY_VENV=str(venv.parent))
    _check_plan(done, login_node)
