"""Local executor: every task on this machine, in-process or in a pool of worker processes.

It goes through the same `run_task` as a cluster array task, so a local run and a SLURM run write the same
files. Light (cpu-kind) tasks run in this process; engine, model and multi-rank tasks each get a fresh process,
as on a cluster, so one task's engine state (vLLM registers kernels process-wide) never leaks into the next.
Multi-rank tasks (tensor-parallel training) get one process per rank with a loopback rendezvous.

Those processes are forked from a fork server that imported, once, what the run's model steps import
(`Stage.preload`: vLLM alone is ~6 s of imports on 2 cores, and the quickstart starts eleven model tasks), and each
gets this process's environment as it is when the task starts, as a spawned process would.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.forkserver
import os
import socket
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing.context import BaseContext

from distillery.core.console import CONSOLE, is_quiet, setup_console
from distillery.core.plan import TaskGroup
from distillery.core.runner import run_task
from distillery.executors import Executor
from distillery.executors.handles import DONE, FinishedHandle, JobHandle
from distillery.executors.warm_imports import LOG_ENV, PRELOAD_ENV

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def task_context(preload: Iterable[str], log: str) -> BaseContext:
    """The multiprocessing context model tasks start in: a fork server that first imported `preload` (its output
    to `log`). The server is started once per process: a later run in the same process (a test session) finds it
    with what the first asked for, which only costs that run the imports it lacks."""
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(["distillery.executors.warm_imports"])
    os.environ.update({PRELOAD_ENV: ",".join(sorted(set(preload))), LOG_ENV: log})
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        os.environ.pop(PRELOAD_ENV)
        os.environ.pop(LOG_ENV)
    return context


def _task_init(environ: dict[str, str], verbose: bool) -> None:
    """A forked task starts with the environment of the process that asked for it, not the fork server's."""
    os.environ.clear()
    os.environ.update(environ)
    setup_console(verbose)


def _rank_entry(run_dir: str, step: str, lineage: str | None, phase: str, shard_index: int, rank: int,
                world_size: int, port: int, verbose: bool, environ: dict[str, str]) -> None:
    _task_init(environ, verbose)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank)})
    run_task(run_dir, step, lineage, phase, shard_index, rank=rank, world_size=world_size)


def run_ranks(context: BaseContext, run_dir: str, group: TaskGroup, shard_index: int) -> None:
    """One process per rank, all of the same task; fails if any rank fails."""
    port = free_port()
    processes = [context.Process(target=_rank_entry, args=(run_dir, group.step, group.lineage, group.phase, shard_index,
                                                           rank, group.world_size, port, not is_quiet(),
                                                           dict(os.environ)))
                 for rank in range(group.world_size)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [rank for rank, process in enumerate(processes) if process.exitcode != 0]
    if failed:
        raise RuntimeError(f"{group.key} shard {shard_index}: ranks {failed} failed (exit codes "
                           f"{[processes[r].exitcode for r in failed]})")


class LocalExecutor(Executor):
    """Runs every task on this machine and returns when all have run."""

    blocking = True
    exclusive = True

    def execute(self, groups: list[TaskGroup]) -> list[JobHandle]:
        handles: dict[str, FinishedHandle] = {}
        run_dir = str(self.run.root)
        workers = self.recipe.executor.workers
        self._step_started: dict[tuple[str, str | None], float] = {}
        self._context: BaseContext | None = None
        self._preload = {module for group in groups if group.job_kind != "cpu" or group.world_size > 1
                         for module in self.recipe.build_stage(group.step, group.lineage).preload()}
        for group in groups:
            blocked = [d for d in group.depends_on if d in handles and handles[d].state() != DONE]
            if blocked:
                logger.error("%s: not run, it depends on failed %s", group.key, blocked)
                handles[group.key] = FinishedHandle(group.key, group.shards, cancelled=True)
                continue
            started = time.perf_counter()
            failures = self._run_group(run_dir, group, workers)
            self.timings[group.key] = time.perf_counter() - started
            handles[group.key] = FinishedHandle(group.key, group.shards, dict(failures))
            for shard_index, error in failures:
                log = self.run.log_dir(group.step, group.lineage) / f"shard-{shard_index:05d}.{group.phase}.log"
                logger.error("%s shard %d failed: %s (log: %s)", group.key, shard_index, error, log)
        return list(handles.values())

    def context(self) -> BaseContext:
        """The fork server's context, started on the first task that needs a process of its own."""
        if self._context is None:
            log = self.run.root / "logs" / "preload.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            self._context = task_context(self._preload, str(log))
        return self._context

    def _run_group(self, run_dir: str, group: TaskGroup, workers: int) -> list[tuple[int, str]]:
        """Run the group's shards. The terminal gets one line when a step (of a teacher) starts and one when it
        ends, whatever its phases (a spawned task reports its progress itself, its output captured in its log as
        an in-process task's is)."""
        failures: list[tuple[int, str]] = []
        results: list[dict] = []
        shards = len(group.shards)
        step = (group.step, group.lineage)
        label = group.step if group.lineage is None else f"{group.step}/{group.lineage}"
        if step not in self._step_started:
            self._step_started[step] = time.perf_counter()
            logger.info("%s: %d shard%s", label, shards, "" if shards == 1 else "s", extra=CONSOLE)
        if group.world_size > 1:
            for shard_index in group.shards:
                try:
                    run_ranks(self.context(), run_dir, group, shard_index)
                except RuntimeError as error:
                    failures.append((shard_index, str(error)))
        elif (workers == 1 or len(group.shards) == 1) and group.job_kind == "cpu":
            for shard_index in group.shards:
                try:
                    results.append(run_task(run_dir, group.step, group.lineage, group.phase, shard_index))
                except Exception as error:  # noqa: BLE001 - one shard's failure must not stop its siblings
                    failures.append((shard_index, f"{type(error).__name__}: {error}"))
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(group.shards)), mp_context=self.context(),
                                     max_tasks_per_child=1, initializer=_task_init,
                                     initargs=(dict(os.environ), not is_quiet())) as pool:
                futures = {pool.submit(run_task, run_dir, group.step, group.lineage, group.phase, shard_index): shard_index
                           for shard_index in group.shards}
                for future in as_completed(futures):
                    error = future.exception()
                    if error is not None:
                        failures.append((futures[future], f"{type(error).__name__}: {error}"))
                    else:
                        results.append(future.result())
        if failures or group.phase in ("process", "task"):
            counts = ""
            if results and all("kept" in result for result in results):
                counts = f", kept {sum(r['kept'] for r in results)} of {sum(r.get('inputs', 0) for r in results)}"
            outcome = f"{group.phase} FAILED" if failures else f"{shards}/{shards} done"
            logger.info("%s: %s in %.1fs%s", label, outcome, time.perf_counter() - self._step_started[step], counts,
                        extra=CONSOLE)
        return failures
