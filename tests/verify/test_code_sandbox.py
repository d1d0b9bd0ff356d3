"""The sandbox primitive itself: isolation facts, exclusive uid leases, and a clean slate after each run."""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from distillery.verify.sandbox import SandboxLimits, SandboxSettings, lease_uid, processes_of_uid, run_sandboxed

SETTINGS = SandboxSettings(uid_base=62300, uid_count=4, lock_dir="/tmp/distillery-sandbox-uids-tests")
PYTHON = "/usr/bin/python3"


@pytest.fixture
def program_dir() -> Path:
    """A world-readable folder (pytest's tmp_path sits under a 0700 folder the sandbox uid cannot enter)."""
    folder = Path(tempfile.mkdtemp(prefix="distillery-sandbox-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _write(folder: Path, name: str, code: str) -> None:
    (folder / name).write_text(code)
    (folder / name).chmod(0o644)


def test_program_sees_stdin_an_unprivileged_uid_and_only_its_own_files(program_dir: Path) -> None:
    _write(program_dir, "p.py", (
        "import os, sys\n"
        "print(sys.stdin.read().strip(), os.getuid() >= 1000, os.getpid(), sorted(os.environ))\n"
        "open('/tmp/scratch', 'w').write('ok')\n"
        "print(os.listdir('/sandbox'), os.path.exists('/work'))\n"
    ))
    result = run_sandboxed([PYTHON, "-I", "/sandbox/p.py"], program_dir, stdin=b"hello\n", settings=SETTINGS)
    assert result.started and result.exit_code == 0 and not result.timed_out
    first, second = result.stdout.decode().splitlines()
    assert first.startswith("hello True ") and "'HOME', 'LANG', 'PATH'" in first
    assert int(first.split()[2]) < 10, "the program should be in its own pid namespace"
    assert second == "['p.py'] False"


def test_exit_codes_and_signals_come_back(program_dir: Path) -> None:
    _write(program_dir, "exit.py", "import sys\nsys.exit(7)\n")
    _write(program_dir, "abort.py", "import os\nos.abort()\n")
    assert run_sandboxed([PYTHON, "/sandbox/exit.py"], program_dir, settings=SETTINGS).exit_code == 7
    assert run_sandboxed([PYTHON, "/sandbox/abort.py"], program_dir, settings=SETTINGS).signal == 6


def test_wall_timeout_kills_everything_of_the_uid(program_dir: Path) -> None:
    _write(program_dir, "hang.py", "import os, time\nfor _ in range(3):\n    if os.fork() == 0:\n        os.setsid()\n        break\ntime.sleep(1000)\n")
    result = run_sandboxed([PYTHON, "/sandbox/hang.py"], program_dir, limits=SandboxLimits(wall_s=1.5), settings=SETTINGS)
    assert result.timed_out and result.exit_code is None
    assert all(processes_of_uid(uid) == [] for uid in range(SETTINGS.uid_base, SETTINGS.uid_base + SETTINGS.uid_count))


def test_writable_mode_lets_a_compiler_write_its_output(program_dir: Path) -> None:
    _write(program_dir, "w.py", "open('/sandbox/out.txt', 'w').write('built')\n")
    assert run_sandboxed([PYTHON, "/sandbox/w.py"], program_dir, settings=SETTINGS).exit_code != 0
    assert run_sandboxed([PYTHON, "/sandbox/w.py"], program_dir, settings=SETTINGS, writable=True).exit_code == 0
    assert (program_dir / "out.txt").read_text() == "built"


def test_setup_failure_is_not_a_program_failure(program_dir: Path) -> None:
    missing = run_sandboxed(["/usr/bin/does-not-exist"], program_dir, settings=SETTINGS)
    assert not missing.started and b"execvp" in missing.stderr
    hidden = Path(tempfile.mkdtemp(prefix="distillery-sandbox-hidden-"))
    try:
        (hidden / "inner").mkdir()
        unreachable = run_sandboxed([PYTHON, "-c", "print(1)"], hidden / "inner", settings=SETTINGS)
    finally:
        shutil.rmtree(hidden)
    assert not unreachable.started


def test_uid_leases_are_exclusive() -> None:
    held: list[int] = []
    barrier = threading.Barrier(3)

    def hold() -> None:
        with lease_uid(SETTINGS) as uid:
            held.append(uid)
            barrier.wait(timeout=10)

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(held)) == 3
    assert all(SETTINGS.uid_base <= uid < SETTINGS.uid_base + SETTINGS.uid_count for uid in held)


def test_code_verifier_refuses_to_start_without_a_working_sandbox() -> None:
    from distillery.verify.code import CodeVerifier
    from distillery.verify.config import CodeSettings

    with pytest.raises(RuntimeError, match="does not work here"):
        CodeVerifier(CodeSettings(python="/opt/no-such-python", sandbox=SETTINGS), threshold=0.9)
