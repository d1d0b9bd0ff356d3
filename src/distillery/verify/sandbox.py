"""Run untrusted programs without a privileged container: bubblewrap namespaces + rlimits + a private uid.

Each run gets:
- its own user, pid, network, mount, ipc and uts namespaces (`bwrap --unshare-all`): no network, its
  processes die with the namespace, and it sees only a read-only /usr, its program folder (read-only unless
  compiling) and a small private tmpfs as /tmp; the host's other files and the environment are not there;
- an unprivileged uid leased exclusively from a range (a lock file per uid, so concurrent sandboxes and
  concurrent verifier processes never share one). RLIMIT_NPROC counts processes per uid and is ignored for
  root, so the lease is what makes the process limit real; it also lets cleanup find every leftover process
  by uid, even ones that escaped the process group with setsid;
- rlimits on address space, CPU time, processes, file size (stdout and stderr are files, so this also caps
  output) and a wall-clock timeout, after which the whole group and every process of the uid are killed;
- one memory budget for all its processes together (`sandbox_memory_mb`): a cgroup where the machine has usable
  ones, else a watch over the uid's processes (see `memory_guard`); the result says which limit was in force;
- a read-only /proc/sys.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import json
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from distillery.verify.memory_guard import MIB, MemoryEnforcement, MemoryGuard, open_guard, processes_of_uid

logger = logging.getLogger(__name__)

SANDBOX_ROOT = "/sandbox"
"""Where the program folder appears inside the sandbox."""


class SandboxLimits(BaseModel):
    """Resource limits of one sandboxed run."""

    model_config = ConfigDict(extra="forbid")

    wall_s: float = Field(10.0, gt=0, description="Wall-clock seconds before the whole sandbox is killed.")
    cpu_s: int = Field(5, ge=1, description="CPU seconds per process (RLIMIT_CPU).")
    memory_mb: int = Field(1024, ge=64, description="Address space per process in MiB (RLIMIT_AS).")
    sandbox_memory_mb: int | None = Field(
        None, ge=64, description="Memory of all the sandbox's processes together in MiB; default memory_mb."
    )
    max_processes: int = Field(16, ge=1, description="Processes and threads of the sandbox's uid (RLIMIT_NPROC).")
    max_file_mb: int = Field(16, ge=1, description="Largest file a program may write, in MiB (RLIMIT_FSIZE).")
    max_output_kb: int = Field(8192, ge=1, description="Most stdout (and stderr) kept, in KiB; more is an output-limit error.")
    tmpfs_mb: int = Field(64, ge=1, description="Size of the private /tmp in MiB.")

    @property
    def sandbox_budget_mb(self) -> int:
        return self.sandbox_memory_mb or self.memory_mb


class SandboxSettings(BaseModel):
    """Where the sandbox takes its uids and lock files from."""

    model_config = ConfigDict(extra="forbid")

    uid_base: int = Field(61000, ge=1000, description="First unprivileged uid leased to sandboxes.")
    uid_count: int = Field(64, ge=1, description="How many uids (so how many concurrent sandboxes on a host).")
    lock_dir: str = Field("/tmp/distillery-sandbox-uids", description="Lock files that make a uid lease exclusive across processes.")
    memory_enforcement: MemoryEnforcement = Field(
        "auto", description="How the memory budget is held: cgroup_v2, cgroup_v1, uid_watch, or auto (first usable)."
    )
    cgroup_parent: str | None = Field(
        None, description="A delegated cgroup v2 folder for the sandboxes' cgroups; default: this process's own cgroup."
    )
    memory_poll_s: float = Field(0.02, gt=0, description="Seconds between checks of a running sandbox's memory.")


@dataclass
class SandboxResult:
    """What a sandboxed run did. `started` is False when the sandbox failed to set up or exec the program
    (bwrap then reports no exit code of its own child)."""

    started: bool
    exit_code: int | None
    timed_out: bool
    stdout: bytes
    stderr: bytes
    output_limited: bool
    wall_s: float
    memory_exceeded: bool = False
    memory_limit: str = ""
    """Which whole-sandbox memory limit was in force (a guard's description)."""
    peak_memory_bytes: int | None = None

    @property
    def signal(self) -> int | None:
        """The signal that ended the program (bwrap reports it as 128 + signal)."""
        return self.exit_code - 128 if self.exit_code is not None and self.exit_code > 128 else None


@contextlib.contextmanager
def lease_uid(settings: SandboxSettings, wait_s: float = 60.0) -> Iterator[int]:
    """Hold one uid of the range exclusively (flock on a per-uid file) for the duration of the block."""
    lock_dir = Path(settings.lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        for uid in range(settings.uid_base, settings.uid_base + settings.uid_count):
            with open(lock_dir / f"{uid}.lock", "a") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                try:
                    kill_uid(uid)
                    yield uid
                finally:
                    kill_uid(uid)
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"no free sandbox uid in {settings.uid_base}..+{settings.uid_count} after {wait_s} s")
        time.sleep(0.05)


_PR_SET_CHILD_SUBREAPER = 36


@functools.cache
def _become_subreaper() -> None:
    """Adopt the sandboxes' orphans. bubblewrap's outer process exits without reaping its pid-1 child, which is then
    a zombie of the uid until init reaps it; init here reaps late, and zombies count against RLIMIT_NPROC, so after
    about `max_processes` quick runs under one uid the next one failed with "Can't fork for pid 1". Other orphans of
    this process's descendants come here too; only the sandbox uids' zombies are reaped (by `kill_uid`)."""
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        logger.warning("cannot become a child subreaper (errno %d): sandbox zombies are left to init",
                       ctypes.get_errno())


def _reap_zombies(uid: int) -> None:
    for pid in processes_of_uid(uid, zombies=True):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def kill_uid(uid: int, attempts: int = 50) -> None:
    """SIGKILL every process of the uid until none is left (a fork bomb may be spawning while we kill), then reap
    those of its zombies this process adopted."""
    for _ in range(attempts):
        pids = processes_of_uid(uid)
        if not pids:
            _reap_zombies(uid)
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    logger.error("processes of sandbox uid %d survived %d kill rounds: %s", uid, attempts, processes_of_uid(uid))


def output_cap(limits: SandboxLimits) -> int:
    """Bytes of stdout/stderr kept; also the file-size limit, so a program cannot write past it."""
    return min(limits.max_file_mb * 1024 * 1024, limits.max_output_kb * 1024)


def _gate(fd: int) -> list[str]:
    """Launcher that waits until the sandbox put it into its cgroup (a line on `fd`), so nothing runs outside it.
    bash, not dash: dash reads only one-digit descriptors."""
    return ["/bin/bash", "-c", f'read -r go <&{fd} && exec {fd}<&- && exec "$@"; exit 125', "gate"]


def _bwrap_argv(program_dir: Path, argv: list[str], limits: SandboxLimits, writable: bool, status_fd: int) -> list[str]:
    mib = MIB
    # /proc/sys of the host's proc mount: its namespaced entries follow the reader's namespaces, as in the fresh
    # /proc, and bubblewrap leaves it writable where the sandbox uid cannot write it anyway (it only covers what
    # the caller could write); read-only, a sysctl stays unwritable whatever the uid becomes inside.
    return [
        "prlimit",
        f"--as={limits.memory_mb * mib}",
        f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}",  # SIGXCPU at the soft limit, SIGKILL a second later
        f"--nproc={limits.max_processes}",
        f"--fsize={output_cap(limits)}",
        "--core=0",
        "--",
        "bwrap",
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--setenv", "PATH", "/usr/bin:/bin",
        "--setenv", "HOME", "/tmp",
        "--setenv", "LANG", "C.UTF-8",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/bin", "/bin",
        "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64",
        "--symlink", "usr/sbin", "/sbin",
        "--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache",
        "--ro-bind-try", "/etc/alternatives", "/etc/alternatives",
        "--dev", "/dev",
        "--proc", "/proc",
        "--ro-bind", "/proc/sys", "/proc/sys",
        "--size", str(limits.tmpfs_mb * mib),
        "--tmpfs", "/tmp",
        "--bind" if writable else "--ro-bind", str(program_dir), SANDBOX_ROOT,
        "--chdir", SANDBOX_ROOT if writable else "/tmp",
        "--json-status-fd", str(status_fd),
        *argv,
    ]


def run_sandboxed(
    argv: list[str],
    program_dir: Path,
    stdin: bytes = b"",
    limits: SandboxLimits | None = None,
    settings: SandboxSettings | None = None,
    writable: bool = False,
) -> SandboxResult:
    """Run `argv` inside a fresh sandbox where `program_dir` is mounted at /sandbox.

    `writable` mounts the folder read-write (compiling); the folder is then handed to the leased uid.
    """
    limits = limits or SandboxLimits()
    settings = settings or SandboxSettings()
    cap = output_cap(limits)
    _become_subreaper()
    with lease_uid(settings) as uid, tempfile.TemporaryDirectory(prefix="sandbox-io-") as io_dir:
        if writable:
            for path in [program_dir, *program_dir.rglob("*")]:
                os.chown(path, uid, uid)
        stdin_path = Path(io_dir, "stdin")
        stdin_path.write_bytes(stdin)
        guard = open_guard(
            uid, limits.sandbox_budget_mb * MIB, limits.max_processes, settings.memory_enforcement,
            settings.cgroup_parent, settings.memory_poll_s,
        )
        status_read, status_write = os.pipe()
        gate_read, gate_write = os.pipe()
        command = _bwrap_argv(program_dir, argv, limits, writable, status_write)
        if guard.needs_attach:
            command = [*_gate(gate_read), *command]
        started_at = time.monotonic()
        gate_open = True
        try:
            with open(stdin_path, "rb") as stdin_file, open(Path(io_dir, "stdout"), "w+b") as stdout_file, open(
                Path(io_dir, "stderr"), "w+b"
            ) as stderr_file:
                try:
                    process = subprocess.Popen(
                        command,
                        stdin=stdin_file,
                        stdout=stdout_file,
                        stderr=stderr_file,
                        user=uid,
                        group=uid,
                        extra_groups=[],
                        process_group=0,
                        env={"PATH": "/usr/bin:/bin"},
                        pass_fds=(status_write, gate_read),
                        close_fds=True,
                    )
                finally:
                    os.close(status_write)
                    os.close(gate_read)
                try:
                    if guard.needs_attach:
                        guard.attach(process.pid)
                        os.write(gate_write, b"go\n")
                finally:
                    os.close(gate_write)  # without "go" the launcher exits 125 and runs nothing
                    gate_open = False
                exit_code, timed_out, memory_exceeded = _wait(process, uid, guard, started_at + limits.wall_s, settings)
                wall_s = time.monotonic() - started_at
                stdout_file.seek(0)
                stdout = stdout_file.read(cap + 1)
                stderr_file.seek(0)
                stderr = stderr_file.read(cap + 1)
            memory_exceeded = memory_exceeded or guard.over_budget()
            peak = guard.peak_bytes()
        finally:
            if gate_open:
                os.close(gate_write)
            kill_uid(uid)
            guard.close()
        status = _read_status(status_read)
    return SandboxResult(
        started="exit-code" in status or timed_out or memory_exceeded,
        exit_code=status.get("exit-code", exit_code),
        timed_out=timed_out,
        stdout=stdout[:cap],
        stderr=stderr[:cap],
        output_limited=len(stdout) >= cap or len(stderr) >= cap,
        wall_s=wall_s,
        memory_exceeded=memory_exceeded,
        memory_limit=guard.description,
        peak_memory_bytes=peak,
    )


def _wait(
    process: subprocess.Popen, uid: int, guard: MemoryGuard, deadline: float, settings: SandboxSettings
) -> tuple[int | None, bool, bool]:
    """Wait for the sandbox, checking its memory every poll; (exit code, timed out, over the memory budget).
    On a timeout or an exceeded budget the whole group and every process of the uid are killed."""
    while True:
        remaining = deadline - time.monotonic()
        try:
            return process.wait(timeout=max(0.0, min(settings.memory_poll_s, remaining))), False, False
        except subprocess.TimeoutExpired:
            pass
        over = guard.over_budget()
        if over or remaining <= settings.memory_poll_s:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            kill_uid(uid)
            process.wait()
            if over:
                logger.info("sandbox of uid %d passed its memory budget (%s): killed", uid, guard.description)
            return None, not over, over


def _read_status(fd: int) -> dict:
    """Merge bwrap's JSON status lines (child-pid, then exit-code) into one dict."""
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    os.close(fd)
    status: dict = {}
    for line in b"".join(chunks).decode(errors="replace").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            status.update(json.loads(line))
    return status
