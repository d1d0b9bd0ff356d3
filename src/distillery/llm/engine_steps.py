"""The engine's own view of a streaming run, one sample per engine step: how full its batch was.

The loop's count of requests in flight says what the loop handed over; this says what the engine did with
them. Per step: sequences that ran (produced a token), requests it held waiting, whether it had free slots
while the caller still had requests to send (the caller says so with `backlog`), and the time that step
took. From these: mean running and waiting per step, the share of steps (and the seconds) with free slots
while requests were due, tokens/s counted from the engine's first request, and time-to-full (first request
until a step first ran every request it held, or all its slots when it held more).

Written by the engine's thread, read by the loop's: every field is a number replaced whole, so a reader sees
a consistent-enough snapshot without a lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class StepLog:
    slots: int
    """Sequences the engine runs at once (vLLM's max_num_seqs)."""
    backlog: bool = True
    """Whether the caller has requests waiting to be sent (it clears this once its queue has drained)."""
    steps: int = 0
    running_sum: int = 0
    waiting_sum: int = 0
    starved_steps: int = 0
    """Steps that ran fewer than `slots` sequences while requests were due (held waiting, or the caller's backlog)."""
    starved_s: float = 0.0
    due_steps: int = 0
    """Steps taken while requests were due: the denominator of the starved share."""
    tokens: int = 0
    first_request_at: float | None = None
    full_at: float | None = None
    last_step_at: float | None = None

    def request_added(self) -> None:
        if self.first_request_at is None:
            self.first_request_at = time.perf_counter()

    def step(self, started: float, running: int, held: int) -> None:
        """One engine step that began at `started`, ran `running` sequences, with `held` requests in the engine."""
        now = time.perf_counter()
        waiting = max(0, held - running)
        self.steps += 1
        self.running_sum += running
        self.waiting_sum += waiting
        self.tokens += running
        if self.full_at is None and running >= min(self.slots, held):
            self.full_at = now
        if waiting or self.backlog:
            self.due_steps += 1
            if running < self.slots:
                self.starved_steps += 1
                self.starved_s += now - started
        self.last_step_at = now

    def stats(self) -> dict[str, float | int | None]:
        """JSON-ready figures, under names the shard's stats and `status` show."""
        if not self.steps or self.first_request_at is None or self.last_step_at is None:
            return {}
        span = self.last_step_at - self.first_request_at
        return {
            "engine_slots": self.slots,
            "engine_steps": self.steps,
            "engine_running_mean": round(self.running_sum / self.steps, 3),
            "engine_waiting_mean": round(self.waiting_sum / self.steps, 3),
            "engine_starved_step_share": round(self.starved_steps / self.due_steps, 4) if self.due_steps else 0.0,
            "engine_starved_s": round(self.starved_s, 3),
            "engine_tokens_per_s": round(self.tokens / span, 2) if span > 0 else None,
            "engine_time_to_full_s": (round(self.full_at - self.first_request_at, 3)
                                      if self.full_at is not None else None),
        }
