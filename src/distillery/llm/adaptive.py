"""Client concurrency that adapts to the server (AIMD), bounded by the teacher's `concurrency`.

A fixed concurrency is either too low (the server's batch runs half empty) or too high (requests wait in the
server's queue until they time out and are sent again, or a hosted API answers 429). The limit here:
- starts low and doubles per round trip while latency holds (slow start), then rises by one per round trip;
- halves on an overload signal: HTTP 429/503, a timeout, a refused or dropped connection;
- shrinks by a tenth when the server's own queue is longer than `queue_share` of the limit (vLLM's
  `vllm:num_requests_waiting`, read from its /metrics by the client and given to `observe_queue`): every
  batch slot is taken, so more requests in flight only wait longer. A server without that figure (a hosted
  API) is judged by latency instead: a tenth off when the latency per completion token exceeds
  `latency_tolerance` times the best seen recently. The queue is the server's own word on whether more
  requests would run at once; latency per token also grows with the batch itself, which can stop the latency
  rule below a full batch (benchmarks/bench_http_concurrency.py compares both against fixed limits).
A decrease happens at most once per round trip: failures of requests sent before the last decrease are the
same congestion and do not count again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class AdaptiveConcurrency:
    """An asyncio limit on requests in flight that moves between `floor` and `ceiling` (AIMD)."""

    def __init__(self, ceiling: int, is_overload: Callable[[BaseException], bool], start: int = 4, floor: int = 1,
                 backoff: float = 0.5, latency_tolerance: float = 2.0, baseline_drift: float = 0.002,
                 queue_share: float = 0.1) -> None:
        """`is_overload` says which failures mean the server is overloaded; `baseline_drift` lets the best
        latency seen rise slowly (per success), so a server that became slower for good is not chased forever."""
        if ceiling < 1 or not 1 <= floor <= ceiling:
            raise ValueError(f"need 1 <= floor ({floor}) <= ceiling ({ceiling})")
        self.ceiling, self.floor = ceiling, floor
        self.limit = float(min(max(start, floor), ceiling))
        self.is_overload = is_overload
        self.backoff, self.latency_tolerance, self.baseline_drift = backoff, latency_tolerance, baseline_drift
        self.in_flight = 0
        self.peak = int(self.limit)
        self.decreases = {"overload": 0, "latency": 0, "queue": 0}
        self.queue_share = queue_share
        self.server_waiting: float | None = None
        """The server's queue as last read (None: no such figure, judge by latency)."""
        self._slow_start = True
        self._epoch = 0  # bumped at every decrease
        self._best: float | None = None  # seconds per completion token, best seen (drifting up)
        self._changed = asyncio.Condition()

    async def run(self, request: Callable[[], Awaitable[T]], tokens: Callable[[T], int]) -> T:
        """`request()` once a slot is free; its outcome moves the limit. `tokens(result)` is the work it did."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1
        epoch, started = self._epoch, time.perf_counter()
        try:
            result = await request()
        except BaseException as error:
            if isinstance(error, Exception) and self.is_overload(error):
                self._decrease(epoch, self.backoff, "overload")
            raise
        finally:
            async with self._changed:
                self.in_flight -= 1
                self._changed.notify_all()
        self._observe(epoch, (time.perf_counter() - started) / max(tokens(result), 1))
        return result

    def observe_queue(self, waiting: float | None) -> None:
        """The server's count of requests waiting for a batch slot; None when it does not say."""
        self.server_waiting = waiting

    def _observe(self, epoch: int, per_token_s: float) -> None:
        drifted = per_token_s if self._best is None else self._best * (1 + self.baseline_drift)
        best = self._best = min(per_token_s, drifted)
        if self.server_waiting is not None:
            if self.server_waiting > max(1.0, self.queue_share * self.limit):
                self._decrease(epoch, 0.9, "queue")
                return
        elif per_token_s > self.latency_tolerance * best:
            self._decrease(epoch, 0.9, "latency")
            return
        if self._slow_start:
            self._set(self.limit + 1)
        else:
            self._set(self.limit + 1 / self.limit)

    def _decrease(self, epoch: int, factor: float, reason: str) -> None:
        if epoch != self._epoch or self.floor == self.ceiling:  # sent before the last decrease: same congestion
            return
        self._epoch += 1
        self._slow_start = False
        self.decreases[reason] += 1
        self._set(self.limit * factor)

    def _set(self, limit: float) -> None:
        grew = int(limit) > int(self.limit)
        self.limit = min(max(limit, float(self.floor)), float(self.ceiling))
        self.peak = max(self.peak, int(self.limit))
        if grew:
            asyncio.ensure_future(self._wake())

    async def _wake(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def stats(self) -> dict[str, float]:
        """For the shard's stats: the limit now and at its highest, and how often it was cut and why."""
        return {"concurrency_limit": float(int(self.limit)), "concurrency_peak": float(self.peak),
                "concurrency_ceiling": float(self.ceiling),
                "concurrency_overload_backoffs": float(self.decreases["overload"]),
                "concurrency_latency_backoffs": float(self.decreases["latency"]),
                "concurrency_queue_backoffs": float(self.decreases["queue"])}
