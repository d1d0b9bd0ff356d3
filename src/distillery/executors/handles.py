"""What `Executor.execute` hands back: one handle per task group run here, or per job array submitted, with the
state of each of its shards' tasks, so the command line can show them and wait for them.

Task states use SLURM's names (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ...) whichever executor ran
them; a handle sums its tasks up as PENDING, RUNNING, DONE, FAILED or CANCELLED.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence

FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
                          "DEADLINE"})
"""Task states after which the task runs no more (until someone submits it again)."""

PENDING, RUNNING, DONE, FAILED, CANCELLED = "PENDING", "RUNNING", "DONE", "FAILED", "CANCELLED"


class JobHandle(ABC):
    """The tasks of one group's shards, run or submitted by one `execute` call."""

    def __init__(self, key: str, shards: Sequence[int]) -> None:
        self.key = key
        """The task group's key (`generate/smol-a:process`)."""
        self.shards = list(shards)

    @property
    @abstractmethod
    def job_id(self) -> str | None:
        """The scheduler's id of what was submitted (job array ids, comma-separated); None when run here."""

    @abstractmethod
    def shard_states(self) -> dict[int, str]:
        """Shard index -> its task's state, as last seen (`refresh` asks the scheduler again)."""

    @classmethod
    def refresh(cls) -> None:
        """Ask the scheduler once, for every handle of this kind, what their tasks are doing now."""

    def state(self) -> str:
        """PENDING or RUNNING while a task may still run; then DONE (every task completed), CANCELLED (none ran:
        a dependency failed) or FAILED."""
        states = set(self.shard_states().values())
        if not states <= FINAL_STATES:
            return RUNNING if states & {"RUNNING", "COMPLETING"} else PENDING
        if states == {"COMPLETED"}:
            return DONE
        return CANCELLED if states == {"CANCELLED"} else FAILED

    def finished(self) -> bool:
        return self.state() not in (PENDING, RUNNING)

    def wait(self, poll_s: float = 30.0) -> str:
        """Block until no task of this handle runs any more; its final state."""
        wait_all([self], poll_s)
        return self.state()

    def __str__(self) -> str:
        counts = Counter(self.shard_states().values())
        tasks = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
        return f"{self.key:<36} {self.job_id or 'local':<14} {self.state():<9} {tasks}"


def all_done(handles: Sequence[JobHandle]) -> bool:
    """Whether every task of every handle completed (as last seen)."""
    return all(handle.state() == DONE for handle in handles)


def wait_all(handles: Sequence[JobHandle], poll_s: float = 30.0,
             on_change: Callable[[JobHandle], None] | None = None) -> None:
    """Poll every `poll_s` seconds (one scheduler query per kind of handle) until every handle is finished; call
    `on_change` with a handle whenever what it shows (`str`) changed, once at the start too."""
    shown: dict[int, str] = {}
    while True:
        for kind in {type(handle) for handle in handles}:
            kind.refresh()
        for handle in handles:
            line = str(handle)
            if on_change is not None and shown.get(id(handle)) != line:
                on_change(handle)
            shown[id(handle)] = line
        if all(handle.finished() for handle in handles):
            return
        time.sleep(poll_s)


class FinishedHandle(JobHandle):
    """Tasks that ran here and are over (a blocking executor's): each completed or failed, or none ran because a
    group it depends on failed."""

    def __init__(self, key: str, shards: Sequence[int], failures: dict[int, str] | None = None,
                 cancelled: bool = False) -> None:
        super().__init__(key, shards)
        self.failures = failures or {}
        """Shard index -> why its task failed."""
        self.cancelled = cancelled

    @property
    def job_id(self) -> None:
        return None

    def shard_states(self) -> dict[int, str]:
        if self.cancelled:
            return dict.fromkeys(self.shards, "CANCELLED")
        return {shard: "FAILED" if shard in self.failures else "COMPLETED" for shard in self.shards}
