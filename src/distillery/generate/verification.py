"""Verification off the engine's path: answers are verified in background lanes while the engine generates.

One lane per verifier name. By default a lane is one thread that takes every answer queued for it, verifies
them as one batch through the shared `Verifier` (math-verify's worker pool pipelines a batch, and is not
thread-safe), and resolves each answer's future. A lane listed in `threads` (the code sandbox, whose
verifier is thread-safe) runs that many threads taking one answer each, so one slow test holds up only its
own thread. The verifiers' work runs in processes (math workers, sandboxes): the threads mostly wait. A slow
code test therefore never delays generation nor the math verdicts.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

from distillery.schema.records import Query
from distillery.generate.loop import BatchVerifier
from distillery.verify.verdict import Verdict

logger = logging.getLogger(__name__)

_Job = tuple[Query, str, "Future[Verdict]"]


class VerificationLanes:
    """Non-blocking `submit(query, response) -> Future[Verdict]` over a blocking `verify_batch`."""

    def __init__(self, verifier: BatchVerifier, lane_of: Callable[[Query], str], max_batch: int = 64,
                 threads: dict[str, int] | None = None) -> None:
        self.verifier = verifier
        self.lane_of = lane_of
        self.max_batch = max_batch
        self.threads = threads or {}
        self._queues: dict[str, queue.SimpleQueue[_Job | None]] = {}
        self._threads: list[threading.Thread] = []

    def submit(self, query: Query, response: str) -> Future[Verdict]:
        """Queue one answer on its category's lane (started on first use); call from one thread."""
        future: Future[Verdict] = Future()
        lane = self.lane_of(query)
        if lane not in self._queues:
            self._queues[lane] = queue.SimpleQueue()
            count = self.threads.get(lane, 1)
            for number in range(count):
                thread = threading.Thread(target=self._work, args=(self._queues[lane], 1 if count > 1 else self.max_batch),
                                          name=f"verify-{lane}-{number}", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._queues[lane].put((query, response, future))
        return future

    def _work(self, jobs: queue.SimpleQueue[_Job | None], max_batch: int) -> None:
        while True:
            first = jobs.get()
            if first is None:
                jobs.put(None)  # for this lane's other threads
                return
            batch = [first]
            while len(batch) < max_batch:
                try:
                    job = jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    jobs.put(None)
                    break
                batch.append(job)
            try:
                verdicts = self.verifier.verify_batch([(query, response) for query, response, _ in batch])
            except Exception as error:  # noqa: BLE001 - handed to the loop, which fails the shard with it
                for *_, future in batch:
                    future.set_exception(error)
            else:
                for (*_, future), verdict in zip(batch, verdicts, strict=True):
                    future.set_result(verdict)

    def close(self) -> None:
        """Let each lane finish what it holds, then stop it."""
        for jobs in self._queues.values():
            jobs.put(None)  # every thread of the lane passes it on
        for thread in self._threads:
            thread.join()
        self._queues.clear()
        self._threads.clear()
