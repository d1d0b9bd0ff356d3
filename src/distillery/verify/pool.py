"""A process pool where one bad item costs one verdict, not the pool.

concurrent.futures' ProcessPoolExecutor breaks as a whole when a worker dies and cannot cancel a running
item; math-verify's own timeouts use SIGALRM, which only fires in a process's main thread and cannot
interrupt long C computations (a huge integer power). So each worker here runs items in its main thread,
items are pipelined a few at a time per worker (IPC stays a small fraction of a ~1.5 ms item), and the
parent enforces a hard wall-clock limit on the item a worker is on: past it, or if the worker dies, the
worker is killed and replaced, that item gets an error result and the worker's queued items are re-sent.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Self

logger = logging.getLogger(__name__)


@dataclass
class PoolResult:
    ok: bool
    value: Any = None
    error: str = ""
    """"timeout", "worker died", or the exception the function raised."""


def _resolve(target: str) -> Callable[[Any], Any]:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def _worker_main(connection: Connection, target: str) -> None:
    function = _resolve(target)
    connection.send(_READY)
    while True:
        message = connection.recv()
        if message is None:
            return
        index, payload = message
        try:
            connection.send((index, True, function(payload)))
        except Exception as error:  # noqa: BLE001 - any failure is this item's result; the worker goes on
            connection.send((index, False, f"{type(error).__name__}: {error}"))


_READY = "ready"
"""A worker's first message: its imports are done, so the per-item clock may start (a cold start on a busy
node can take longer than an item's whole timeout)."""
START_TIMEOUT_S = 300.0


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    connection: Connection
    in_flight: deque[int] = field(default_factory=deque)
    head_started: float = 0.0
    answered: int = 0
    ready: bool = False


class WorkerPool:
    """Runs `target` ("module:function", a picklable payload -> picklable result) in `workers` processes."""

    def __init__(self, target: str, workers: int, hard_timeout_s: float, pipeline_depth: int = 4) -> None:
        self.target = target
        self.hard_timeout_s = hard_timeout_s
        self.pipeline_depth = pipeline_depth
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload([target.split(":")[0]])
        self.workers = [self._start() for _ in range(workers)]
        self.replaced = 0
        self.max_stillborn = 2 * workers + 2

    def _start(self) -> _Worker:
        parent_end, child_end = self.context.Pipe()
        process = self.context.Process(target=_worker_main, args=(child_end, self.target), daemon=True)
        process.start()
        child_end.close()
        return _Worker(process, parent_end)

    def _replace(self, worker: _Worker) -> _Worker:
        worker.process.kill()
        worker.process.join()
        worker.connection.close()
        self.replaced += 1
        return self._start()

    def map(self, payloads: Sequence[Any]) -> list[PoolResult]:
        """One result per payload, in order; every payload gets one even when workers hang or die."""
        results: list[PoolResult | None] = [None] * len(payloads)
        pending = deque(range(len(payloads)))
        stillborn = 0
        while pending or any(worker.in_flight for worker in self.workers):
            now = time.monotonic()
            for slot, worker in enumerate(self.workers):
                if not worker.in_flight and not worker.process.is_alive():
                    worker = self.workers[slot] = self._replace(worker)  # died idle: nobody to blame
                while pending and len(worker.in_flight) < self.pipeline_depth:
                    index = pending.popleft()
                    if not worker.in_flight:
                        worker.head_started = now
                    worker.in_flight.append(index)
                    try:
                        worker.connection.send((index, payloads[index]))
                    except (BrokenPipeError, OSError):
                        break  # found dead below, where its head item gets the verdict
            busy = [worker for worker in self.workers if worker.in_flight]
            next_deadline = min(worker.head_started + self._limit(worker) for worker in busy)
            ready = wait([worker.connection for worker in busy], timeout=max(0.0, next_deadline - time.monotonic()))
            for slot, worker in enumerate(self.workers):
                if not worker.in_flight:
                    continue
                failure = ""
                if worker.connection in ready:
                    try:
                        while worker.connection.poll():
                            message = worker.connection.recv()
                            if message == _READY:
                                worker.ready = True
                                worker.head_started = time.monotonic()
                                continue
                            index, ok, value = message
                            worker.in_flight.remove(index)
                            worker.answered += 1
                            results[index] = PoolResult(True, value) if ok else PoolResult(False, error=value)
                            worker.head_started = time.monotonic()
                    except (EOFError, OSError):
                        failure = "worker died"
                if not failure and not worker.process.is_alive() and not worker.connection.poll():
                    failure = "worker died"
                if not failure and worker.in_flight and time.monotonic() - worker.head_started > self._limit(worker):
                    failure = "timeout" if worker.ready else "worker did not start"
                if failure:
                    blamed = worker.in_flight.popleft()
                    logger.warning("verifier worker %s on item %d: replacing it", failure, blamed)
                    results[blamed] = PoolResult(False, error=failure)
                    pending.extendleft(reversed(worker.in_flight))
                    stillborn = stillborn + 1 if worker.answered == 0 and failure == "worker died" else 0
                    if stillborn > self.max_stillborn:
                        raise RuntimeError(f"{stillborn} verifier workers in a row died before answering: {self.target} cannot run")
                    self.workers[slot] = self._replace(worker)
        return [result for result in results if result is not None]

    def _limit(self, worker: _Worker) -> float:
        return self.hard_timeout_s if worker.ready else START_TIMEOUT_S

    def close(self) -> None:
        for worker in self.workers:
            try:
                worker.connection.send(None)
            except (BrokenPipeError, OSError):
                worker.process.kill()
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.connection.close()
        self.workers = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
