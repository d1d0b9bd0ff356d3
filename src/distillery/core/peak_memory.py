"""Peak resident memory of one task, even when several tasks run one after another in one process.

Linux keeps a process's high-water mark (VmHWM) and lets the process reset it (`5` to /proc/self/clear_refs),
so the runner resets it when a task starts and reads it when the task writes its manifest. Where that is not
allowed, the peak is `getrusage`'s, the process's whole life (a task in a fresh process: still its own).
"""

from __future__ import annotations

import re
import resource
import sys
from pathlib import Path

_HWM = re.compile(rb"VmHWM:\s+(\d+) kB")


def reset_peak_rss() -> bool:
    """Start measuring a new peak; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_bytes(b"5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """The peak resident memory since the last reset (or since the process started), in MiB."""
    try:
        found = _HWM.search(Path("/proc/self/status").read_bytes())
    except OSError:
        found = None
    if found is not None:
        return round(int(found.group(1)) / 1024, 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
