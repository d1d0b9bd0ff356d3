"""Memory of a whole sandbox, not of each process: RLIMIT_AS bounds one process, so a program that spreads its
memory over its children (up to RLIMIT_NPROC of them) would otherwise hold that many times the limit.

Three ways to hold one budget for all processes of a sandbox, the first the machine allows (`auto`):
- `cgroup_v2`: a child cgroup with memory.max (swap 0, oom.group) and pids.max; needs a cgroup v2 folder whose
  memory and pids controllers can be enabled for children (the root, or a delegated one: `cgroup_parent`);
- `cgroup_v1`: a child of this process's memory (and pids) cgroup with memory.limit_in_bytes and memsw;
- `uid_watch`, where there are no usable cgroups: each sandbox runs under its own leased uid, so its processes are
  the uid's processes; the sandbox sums their PSS (from /proc) every `memory_poll_s` and kills the uid once the sum
  passes the budget. It can overshoot by what the processes allocate within one poll interval, and it does not
  count the private /tmp (a tmpfs of `tmpfs_mb`), which a cgroup charges.
A cgroup's processes are attached before the program runs (the launcher waits on a pipe until the sandbox wrote
its pid into cgroup.procs), so nothing forks outside the limit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Literal, Protocol

logger = logging.getLogger(__name__)

MemoryEnforcement = Literal["auto", "cgroup_v2", "cgroup_v1", "uid_watch"]

MIB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE")


class MemoryGuard(Protocol):
    """One sandbox's memory budget. `description` says which limit is in force (it goes into verdicts)."""

    description: str
    needs_attach: bool

    def attach(self, pid: int) -> None:
        """Put the (gated, not yet running) launcher `pid` under the limit."""

    def over_budget(self) -> bool:
        """True once the sandbox passed its budget (polled while it runs and once after it ended)."""

    def peak_bytes(self) -> int | None:
        """The most memory the sandbox held, where it is known."""

    def close(self) -> None:
        """Remove what the guard created (its processes are already dead)."""


def processes_of_uid(uid: int, zombies: bool = False) -> list[int]:
    """Pids of live processes whose real uid is `uid`, from /proc (about 13 us a process); with `zombies`, of
    the uid's zombies that are this process's children instead."""
    key = b"\nUid:\t%d\t" % uid
    parent = b"\nPPid:\t%d\n" % os.getpid()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/status", os.O_RDONLY)
        except OSError:
            continue
        try:
            status = os.read(fd, 4096)
        except OSError:
            continue
        finally:
            os.close(fd)
        if key not in status:
            continue
        zombie = b"\nState:\tZ" in status
        if (zombie and parent in status) if zombies else not zombie:
            pids.append(int(name))
    return pids


def process_memory_bytes(pid: int) -> int:
    """Proportional set size of one process (shared pages split among their users), RSS where PSS is not
    readable, 0 when the process is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_bytes().splitlines():
            if line.startswith(b"Pss:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int(Path(f"/proc/{pid}/statm").read_bytes().split()[1]) * _PAGE
    return 0


class UidWatchGuard:
    """Sum the PSS of the uid's processes on every poll; over the budget, the caller kills the uid."""

    needs_attach = False

    def __init__(self, uid: int, budget_bytes: int, poll_s: float) -> None:
        self.uid = uid
        self.budget_bytes = budget_bytes
        self.description = (
            f"uid_watch: PSS sum of the sandbox uid's processes <= {budget_bytes // MIB} MiB, polled every {poll_s} s"
        )
        self._peak = 0

    def attach(self, pid: int) -> None:
        """Nothing to do: the watch finds the sandbox's processes by uid."""

    def over_budget(self) -> bool:
        total = sum(process_memory_bytes(pid) for pid in processes_of_uid(self.uid))
        self._peak = max(self._peak, total)
        return total > self.budget_bytes

    def peak_bytes(self) -> int | None:
        return self._peak

    def close(self) -> None:
        pass


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _counter(path: Path, key: str) -> int:
    """A `key value` line of a cgroup file such as memory.events (0 when absent)."""
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return 0


def _remove_cgroup(folder: Path) -> None:
    """rmdir once its processes are gone (a killed process leaves the cgroup a moment after it dies)."""
    for _ in range(100):
        try:
            folder.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)
    logger.warning("could not remove sandbox cgroup %s", folder)


def _fresh_cgroup(folder: Path) -> None:
    """Create the folder; a leftover of a crashed run (same leased uid, so nothing of it is running) is replaced."""
    if folder.exists():
        _remove_cgroup(folder)
    folder.mkdir(exist_ok=True)


class CgroupV2Guard:
    needs_attach = True

    def __init__(self, folder: Path, budget_bytes: int, max_processes: int) -> None:
        self.folder = folder
        _fresh_cgroup(folder)
        _write(folder / "memory.max", str(budget_bytes))
        if (folder / "memory.swap.max").exists():
            _write(folder / "memory.swap.max", "0")
        _write(folder / "memory.oom.group", "1")
        _write(folder / "pids.max", str(max_processes))
        self.description = f"cgroup_v2: memory.max {budget_bytes // MIB} MiB, swap 0, pids.max {max_processes}"

    def attach(self, pid: int) -> None:
        _write(self.folder / "cgroup.procs", str(pid))

    def over_budget(self) -> bool:
        return _counter(self.folder / "memory.events", "oom_kill") > 0

    def peak_bytes(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.folder / "memory.peak").read_text())
        return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            _write(self.folder / "cgroup.kill", "1")
        _remove_cgroup(self.folder)


class CgroupV1Guard:
    needs_attach = True

    def __init__(self, memory: Path, pids: Path | None, budget_bytes: int, max_processes: int) -> None:
        self.memory, self.pids = memory, pids
        _fresh_cgroup(memory)
        _write(memory / "memory.limit_in_bytes", str(budget_bytes))
        swap = memory / "memory.memsw.limit_in_bytes"
        if swap.exists():
            _write(swap, str(budget_bytes))  # memory plus swap: no swapping out of the budget
        pid_limit = "none (RLIMIT_NPROC only)"
        if pids is not None:
            _fresh_cgroup(pids)
            _write(pids / "pids.max", str(max_processes))
            pid_limit = str(max_processes)
        self.description = (
            f"cgroup_v1: memory.limit_in_bytes {budget_bytes // MIB} MiB"
            f"{', memsw too' if swap.exists() else ''}, pids.max {pid_limit}"
        )

    def attach(self, pid: int) -> None:
        _write(self.memory / "cgroup.procs", str(pid))
        if self.pids is not None:
            _write(self.pids / "cgroup.procs", str(pid))

    def over_budget(self) -> bool:
        return _counter(self.memory / "memory.oom_control", "oom_kill") > 0

    def peak_bytes(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.memory / "memory.max_usage_in_bytes").read_text())
        return None

    def close(self) -> None:
        _remove_cgroup(self.memory)
        if self.pids is not None:
            _remove_cgroup(self.pids)


def _mounts() -> list[tuple[str, str, str, str]]:
    """(root, mount point, fs type, super options) of each mount of this process."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        parts, tail_parts = fields.split(), tail.split()
        if len(parts) >= 5 and len(tail_parts) >= 3:
            mounts.append((parts[3], parts[4], tail_parts[0], tail_parts[2]))
    return mounts


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path per v1 controller, and under "" its v2 path."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _under_mount(mount_root: str, mount_point: str, path: str) -> Path:
    relative = os.path.relpath(path, mount_root) if path.startswith(mount_root) else path.lstrip("/")
    return Path(mount_point, relative).resolve() if relative != "." else Path(mount_point)


def _v2_parent(cgroup_parent: str | None) -> Path | None:
    """A cgroup v2 folder whose children get memory and pids limits, or None."""
    own = _own_cgroups().get("")
    for root, point, fstype, _ in _mounts():
        if fstype != "cgroup2":
            continue
        parent = Path(cgroup_parent) if cgroup_parent else _under_mount(root, point, own or "/")
        try:
            controllers = (parent / "cgroup.controllers").read_text().split()
            if not {"memory", "pids"} <= set(controllers):
                continue
            enabled = (parent / "cgroup.subtree_control").read_text().split()
            if not {"memory", "pids"} <= set(enabled):
                _write(parent / "cgroup.subtree_control", "+memory +pids")
        except OSError as error:
            logger.info("cgroup v2 at %s is not usable for sandboxes: %s", parent, error)
            continue
        return parent
    return None


def _v1_parents() -> tuple[Path, Path | None] | None:
    """This process's v1 memory cgroup folder (and pids folder), when they are mounted and writable."""
    own = _own_cgroups()
    found: dict[str, Path] = {}
    for root, point, fstype, options in _mounts():
        if fstype != "cgroup":
            continue
        for controller in ("memory", "pids"):
            if controller in options.split(",") and controller in own:
                found[controller] = _under_mount(root, point, own[controller])
    if "memory" not in found or not os.access(found["memory"], os.W_OK):
        return None
    pids = found.get("pids")
    return found["memory"], pids if pids is not None and os.access(pids, os.W_OK) else None


@lru_cache(maxsize=8)
def _detect(enforcement: MemoryEnforcement, cgroup_parent: str | None) -> tuple[str, tuple[Path, ...]]:
    if enforcement in ("auto", "cgroup_v2") and (parent := _v2_parent(cgroup_parent)) is not None:
        return "cgroup_v2", (parent,)
    if enforcement in ("auto", "cgroup_v1") and (parents := _v1_parents()) is not None:
        return "cgroup_v1", tuple(path for path in parents if path is not None)
    if enforcement not in ("auto", "uid_watch"):
        raise RuntimeError(f"sandbox memory enforcement {enforcement!r} is not available on this machine")
    return "uid_watch", ()


def open_guard(
    uid: int, budget_bytes: int, max_processes: int, enforcement: MemoryEnforcement, cgroup_parent: str | None,
    poll_s: float,
) -> MemoryGuard:
    """The guard for one sandbox run under `uid`; `auto` falls back to the uid watch if a cgroup cannot be made."""
    kind, parents = _detect(enforcement, cgroup_parent)
    name = f"distillery-sandbox-{uid}"
    try:
        if kind == "cgroup_v2":
            return CgroupV2Guard(parents[0] / name, budget_bytes, max_processes)
        if kind == "cgroup_v1":
            pids = parents[1] / name if len(parents) > 1 else None
            return CgroupV1Guard(parents[0] / name, pids, budget_bytes, max_processes)
    except OSError as error:
        if enforcement != "auto":
            raise
        logger.warning("could not make a %s for the sandbox (%s); watching its uid instead", kind, error)
    return UidWatchGuard(uid, budget_bytes, poll_s)
