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


SPREAD = """\
import os, sys, time
children, mib = int(sys.argv[1]), int(sys.argv[2])
for _ in range(children):
    if os.fork() == 0:
        block = bytearray(mib << 20)
        for offset in range(0, len(block), 4096):  # every page written and unique (no merging), so resident
            block[offset:offset + 16] = offset.to_bytes(8, "little") + os.getpid().to_bytes(8, "little")
        time.sleep(float(sys.argv[3]))
        os._exit(0)
for _ in range(children):
    os.wait()
print("all children held their memory")
"""
BUDGET_MB = 256
SLACK_MB = 128
"""What the host may lose beyond the budget: other programs on this shared machine (MemAvailable moved by up to
~150 MiB between runs), and under the uid watch what the children write within one poll interval (20 ms here:
peaks of 257-270 MiB were seen for this 256 MiB budget)."""


def _available_kib() -> int:
    with open("/proc/meminfo") as meminfo:
        return next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable:"))


def _run_measuring_host(program_dir: Path, argv: list[str], limits: SandboxLimits, settings: SandboxSettings):
    """Run the sandbox while sampling MemAvailable; (result, largest drop in MiB against the level just before)."""
    baseline = max(_available_kib() for _ in range(20))
    lowest = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            lowest[0] = min(lowest[0], _available_kib())
            done.wait(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = run_sandboxed(argv, program_dir, limits=limits, settings=settings)
    finally:
        done.set()
        sampler.join()
    return result, (baseline - lowest[0]) / 1024


@pytest.mark.parametrize("enforcement", ["uid_watch", "cgroup_v1", "cgroup_v2"])
def test_memory_spread_over_children_is_held_to_one_sandbox_budget(program_dir: Path, enforcement: str) -> None:
    _write(program_dir, "spread.py", SPREAD)
    settings = SETTINGS.model_copy(update={"memory_enforcement": enforcement})
    limits = SandboxLimits(wall_s=20, cpu_s=10, memory_mb=512, sandbox_memory_mb=BUDGET_MB)
    # Twice the budget in 4 children, each well under its own 512 MiB address-space limit.
    argv = [PYTHON, "/sandbox/spread.py", "4", str(BUDGET_MB // 2), "15"]
    try:
        result, drop_mb = _run_measuring_host(program_dir, argv, limits, settings)
    except RuntimeError as error:
        pytest.skip(str(error))
    assert result.memory_exceeded and not result.timed_out, result
    assert result.memory_limit.startswith(enforcement) and f"{BUDGET_MB} MiB" in result.memory_limit
    print(f"{enforcement}: host MemAvailable dropped {drop_mb:.0f} MiB; peak {result.peak_memory_bytes}")
    assert drop_mb <= BUDGET_MB + SLACK_MB, f"host lost {drop_mb:.0f} MiB under a {BUDGET_MB} MiB budget"
    assert result.wall_s < 10, "the sandbox should be killed when it passes the budget, not at the wall timeout"
    assert all(processes_of_uid(uid) == [] for uid in range(SETTINGS.uid_base, SETTINGS.uid_base + SETTINGS.uid_count))


def test_the_same_spread_under_a_larger_budget_really_takes_the_host_memory(program_dir: Path) -> None:
    """The control for the test above: the program does hold twice the budget when nothing stops it."""
    _write(program_dir, "spread.py", SPREAD)
    limits = SandboxLimits(wall_s=20, cpu_s=10, memory_mb=512, sandbox_memory_mb=4 * BUDGET_MB)
    argv = [PYTHON, "/sandbox/spread.py", "4", str(BUDGET_MB // 2), "1"]
    result, drop_mb = _run_measuring_host(program_dir, argv, limits, SETTINGS)
    assert result.exit_code == 0 and not result.memory_exceeded
    assert result.stdout == b"all children held their memory\n"
    # MemAvailable is shared with every other program here (it moved by +-150 MiB between runs), so the control
    # asserts the sandbox's own peak (the cgroup's, where there is one) rather than the host's drop.
    print(f"no whole-sandbox limit: host MemAvailable dropped {drop_mb:.0f} MiB; peak {result.peak_memory_bytes}")
    assert result.peak_memory_bytes is not None and result.peak_memory_bytes >= 2 * BUDGET_MB * 1024 * 1024


def test_proc_sys_is_read_only_inside(program_dir: Path) -> None:
    _write(program_dir, "sys.py", (
        "import os\n"
        "print(bool(os.statvfs('/proc/sys').f_flag & os.ST_RDONLY))\n"
        "try:\n"
        "    open('/proc/sys/kernel/hostname', 'w').write('x')\n"
        "except OSError as error:\n"
        "    print(error.errno)\n"
    ))
    result = run_sandboxed([PYTHON, "/sandbox/sys.py"], program_dir, settings=SETTINGS)
    assert result.stdout.split() == [b"True", b"30"], result  # EROFS, not just EACCES


def test_many_quick_runs_under_one_uid_do_not_run_out_of_processes(program_dir: Path) -> None:
    """bubblewrap leaves its pid-1 process as a zombie for init; zombies count against RLIMIT_NPROC, so without
    the sandbox reaping them, the 17th quick run under one uid failed with "Can't fork for pid 1"."""
    one_uid = SETTINGS.model_copy(update={"uid_base": SETTINGS.uid_base + SETTINGS.uid_count - 1, "uid_count": 1})
    limits = SandboxLimits(max_processes=4)
    results = [run_sandboxed([PYTHON, "-c", "print(1)"], program_dir, limits=limits, settings=one_uid)
               for _ in range(12)]
    assert [r.exit_code for r in results] == [0] * 12, [r.stderr for r in results if r.exit_code]
