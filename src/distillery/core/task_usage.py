"""What one task used: its peak resident memory and its CPU seconds, even when several tasks run one after
another in one process (a local run's light tasks).

Linux keeps a process's memory high-water mark (VmHWM) and lets the process reset it (`5` to
/proc/self/clear_refs), so the runner resets it when a task starts and reads it when the task writes its
manifest. Where that is not allowed the peak is `getrusage`'s over the process's life (a task in a fresh
process, as on a cluster or in a local worker: still its own). CPU seconds are the process's user + system time
since the task started, plus its finished children's (math workers, sandboxes) over the same span.
"""

from __future__ import annotations

import re
import resource
import sys
from pathlib import Path
from typing import Any

_HWM = re.compile(rb"VmHWM:\s+(\d+) kB")
_RSS = re.compile(rb"VmRSS:\s+(\d+) kB")
_started_cpu = 0.0
_started_rss_mb = 0.0


def _cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _status_mb(field: re.Pattern[bytes]) -> float | None:
    try:
        found = field.search(Path("/proc/self/status").read_bytes())
    except OSError:
        return None
    return round(int(found.group(1)) / 1024, 1) if found else None


def start_task() -> None:
    """Start measuring a new task: reset the memory high-water mark where allowed, note the CPU time and the
    resident memory the task starts with (in a long-lived process: what earlier tasks left loaded)."""
    global _started_cpu, _started_rss_mb
    try:
        Path("/proc/self/clear_refs").write_bytes(b"5")
    except OSError:
        pass
    _started_cpu = _cpu_s()
    _started_rss_mb = _status_mb(_RSS) or 0.0


def peak_rss_mb() -> float:
    """The peak resident memory since the last reset (or since the process started), in MiB."""
    found = _status_mb(_HWM)
    if found is not None:
        return found
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def task_usage() -> dict[str, Any]:
    """`{peak_rss_mb, start_rss_mb, cpu_s}` of the task since `start_task`: what the runner adds to its
    manifest's stats. `peak_rss_mb - start_rss_mb` is what the task itself added to the process."""
    return {"peak_rss_mb": peak_rss_mb(), "start_rss_mb": _started_rss_mb, "cpu_s": round(_cpu_s() - _started_cpu, 3)}
