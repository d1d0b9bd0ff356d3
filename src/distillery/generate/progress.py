"""Progress of one generation shard: items done, acceptance by category, tokens/s, engine idle time, ETA.

Logged after every batch (batch loop) or every few seconds (streaming loop) and kept in `ShardContext.stats`,
which the runner writes into the manifest that `distillery status` reads. The streaming loop also reports
engine metrics: requests in flight (time-weighted mean and max), the share of time with nothing in the
engine, verification queue depth, KV-cache use (where the backend exposes it), back-pressure time, and
accepted traces per hour of this shard's wall time; the mean in flight until the loop's queue drained (after
that only the tail is left, which no loop can fill); and the engine's own step log (`llm.engine_steps`:
sequences running and waiting per step, steps with free slots while requests were due, time-to-full).

Tokens/s count from the engine's first request, not from the shard's start: loading the engine is reported
apart (`engine_start_s`). The clock stops when the loop ends (`stop`), so stats read later do not dilute.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from distillery.core.console import PROGRESS


@dataclass
class GenerationProgress:
    total: int
    """Queries this run of the shard has to finish (a resumed shard counts only the unfinished ones)."""
    started: float = field(default_factory=time.perf_counter)
    done: int = 0
    accepted: int = 0
    attempts: int = 0
    batches: int = 0
    completion_tokens: int = 0
    generate_s: float = 0.0
    verify_s: float = 0.0
    done_by_category: Counter[str] = field(default_factory=Counter)
    accepted_by_category: Counter[str] = field(default_factory=Counter)
    attempts_to_accept: Counter[int] = field(default_factory=Counter)
    """How many attempts each accepted query needed (1 = first try)."""
    streaming: bool = False
    max_in_flight: int = 0
    in_flight_max: int = 0
    in_flight_area: float = 0.0
    """Integral of requests in flight over time (request-seconds)."""
    engine_busy_s: float = 0.0
    """Time with at least one request in the engine."""
    verify_queue_area: float = 0.0
    verify_queue_max: int = 0
    backpressure_s: float = 0.0
    backpressure_episodes: int = 0
    kv_cache_samples: int = 0
    kv_cache_sum: float = 0.0
    kv_cache_max: float = 0.0
    kv_cache_last: float | None = None
    engine_last: dict[str, float] = field(default_factory=dict)
    """The backend's latest own report (vLLM: running/waiting requests; HTTP: transient retries)."""
    engine_steps: dict[str, float] = field(default_factory=dict)
    """The engine's own step log (`llm.engine_steps.StepLog.stats`), where the backend keeps one."""
    first_request_at: float | None = None
    stopped_at: float | None = None
    backlog_area: float = 0.0
    """Integral of requests in flight over the time the loop still had requests to send."""
    backlog_s: float = 0.0
    _tracked_at: float | None = None
    _state: tuple[int, int, bool, bool] = (0, 0, False, True)

    def track(self, in_flight: int, verify_depth: int, held_back: bool, backlog: bool = True) -> None:
        """Account the time since the last call to the previous state, then remember this one. `backlog`: the
        loop still has requests to send (false once its queue has drained)."""
        now = time.perf_counter()
        if self._tracked_at is not None:
            dt = now - self._tracked_at
            flying, depth, held, waiting = self._state
            self.in_flight_area += dt * flying
            self.engine_busy_s += dt if flying else 0.0
            self.verify_queue_area += dt * depth
            self.backpressure_s += dt if held else 0.0
            if waiting and self.first_request_at is not None:
                self.backlog_area += dt * flying
                self.backlog_s += dt
        if held_back and not self._state[2]:
            self.backpressure_episodes += 1
        if in_flight:
            self.request_sent()
        self._tracked_at = now
        self._state = (in_flight, verify_depth, held_back, backlog)
        self.in_flight_max = max(self.in_flight_max, in_flight)
        self.verify_queue_max = max(self.verify_queue_max, verify_depth)

    def add_attempt(self, completion_tokens: int) -> None:
        self.attempts += 1
        self.completion_tokens += completion_tokens

    def request_sent(self) -> None:
        """The engine got its first request now, unless it already had one."""
        if self.first_request_at is None:
            self.first_request_at = time.perf_counter()

    def stop(self) -> None:
        self.stopped_at = time.perf_counter()

    def add_engine_sample(self, engine: dict[str, float]) -> None:
        self.engine_steps = {key: value for key, value in engine.items() if key.startswith("engine_")}
        self.engine_last = {key: value for key, value in engine.items() if not key.startswith("engine_")}
        usage = engine.get("kv_cache_usage")
        if usage is not None:
            self.kv_cache_samples += 1
            self.kv_cache_sum += usage
            self.kv_cache_max = max(self.kv_cache_max, usage)
            self.kv_cache_last = usage

    def add_batch(self, requests: int, completion_tokens: int, generate_s: float, verify_s: float) -> None:
        self.batches += 1
        self.attempts += requests
        self.completion_tokens += completion_tokens
        self.generate_s += generate_s
        self.verify_s += verify_s

    def finish(self, category: str, accepted_attempt: int | None) -> None:
        self.done += 1
        self.done_by_category[category] += 1
        if accepted_attempt is not None:
            self.accepted += 1
            self.accepted_by_category[category] += 1
            self.attempts_to_accept[accepted_attempt + 1] += 1

    @property
    def elapsed_s(self) -> float:
        return (self.stopped_at or time.perf_counter()) - self.started

    @property
    def generating_s(self) -> float:
        """Time since the engine's first request (all of `elapsed_s` before it has one)."""
        return (self.stopped_at or time.perf_counter()) - (self.first_request_at or self.started)

    def eta_s(self) -> float | None:
        if not self.done:
            return None
        return self.elapsed_s / self.done * (self.total - self.done)

    def stats(self) -> dict[str, Any]:
        """JSON-ready figures for the manifest."""
        elapsed, span = self.elapsed_s, self.generating_s
        return {
            "queries": self.done,
            "accepted": self.accepted,
            "acceptance_rate": round(self.accepted / self.done, 4) if self.done else None,
            "acceptance_by_category": {
                category: {"done": count, "accepted": self.accepted_by_category[category],
                           "rate": round(self.accepted_by_category[category] / count, 4)}
                for category, count in sorted(self.done_by_category.items())
            },
            "attempts": self.attempts,
            "attempts_to_accept": {str(k): v for k, v in sorted(self.attempts_to_accept.items())},
            "batches": self.batches,
            "completion_tokens": self.completion_tokens,
            "tokens_per_s": self._tokens_per_s(),
            "engine_start_s": (round(self.first_request_at - self.started, 3)
                               if self.first_request_at is not None else None),
            "generate_s": round(self.generate_s, 3),
            "verify_s": round(self.verify_s, 3),
            "engine_idle_fraction": round(1 - self._busy_s() / span, 4) if span > 0 else None,
            "elapsed_s": round(elapsed, 3),
            "accepted_per_hour": round(3600 * self.accepted / elapsed, 1) if elapsed > 0 else None,
            **(self._streaming_stats(span) if self.streaming else {}),
        }

    def _tokens_per_s(self) -> float | None:
        """Completion tokens per second since the engine's first request."""
        span = self.generating_s
        return round(self.completion_tokens / span, 2) if span > 0 else None

    def _busy_s(self) -> float:
        return self.engine_busy_s if self.streaming else self.generate_s

    def _streaming_stats(self, elapsed: float) -> dict[str, Any]:
        """Figures over `elapsed`, the time since the engine's first request."""
        sampled = self.kv_cache_samples > 0
        return {
            "loop": "streaming",
            "max_in_flight": self.max_in_flight,
            "requests_in_flight_mean": round(self.in_flight_area / elapsed, 2) if elapsed > 0 else None,
            "requests_in_flight_max": self.in_flight_max,
            "slot_use": round(self.in_flight_area / (elapsed * self.max_in_flight), 4) if elapsed > 0 else None,
            "requests_in_flight_mean_until_drain": (round(self.backlog_area / self.backlog_s, 2)
                                                    if self.backlog_s > 0 else None),
            "verify_queue_mean": round(self.verify_queue_area / elapsed, 2) if elapsed > 0 else None,
            "verify_queue_max": self.verify_queue_max,
            "backpressure_s": round(self.backpressure_s, 3),
            "backpressure_episodes": self.backpressure_episodes,
            "kv_cache_usage_mean": round(self.kv_cache_sum / self.kv_cache_samples, 4) if sampled else None,
            "kv_cache_usage_max": round(self.kv_cache_max, 4) if sampled else None,
            "engine_last": {key: round(value, 4) for key, value in self.engine_last.items()},
            **self.engine_steps,
        }

    def log(self, logger: logging.Logger) -> None:
        eta = self.eta_s()
        by_category = " ".join(f"{c}={self.accepted_by_category[c]}/{n}" for c, n in sorted(self.done_by_category.items()))
        elapsed = self.generating_s
        if self.streaming:
            stats = self._streaming_stats(elapsed)
            logger.info(
                "generate: %d/%d done, %d accepted (%s), %d attempts, %.1f tokens/s, in flight %s (max %d of %d), "
                "engine running %s of %s per step, engine idle %.1f%%, verify queue %s (max %d), KV cache %s, "
                "back-pressure %.1fs, ETA %s",
                self.done, self.total, self.accepted, by_category or "-", self.attempts,
                self._tokens_per_s() or 0.0, stats["requests_in_flight_mean"],
                self.in_flight_max, self.max_in_flight, self.engine_steps.get("engine_running_mean", "?"),
                self.engine_steps.get("engine_slots", "?"),
                100 * (1 - self.engine_busy_s / elapsed) if elapsed > 0 else 0.0,
                stats["verify_queue_mean"], self.verify_queue_max,
                f"{100 * self.kv_cache_last:.0f}%" if self.kv_cache_last is not None else "?", self.backpressure_s,
                f"{eta:.0f}s" if eta is not None else "?", extra=PROGRESS,
            )
            return
        logger.info(
            "generate: %d/%d done, %d accepted (%s), %d attempts, %.1f tokens/s, verify %.0f%% of time, ETA %s",
            self.done, self.total, self.accepted, by_category or "-", self.attempts, self._tokens_per_s() or 0.0,
            100 * self.verify_s / elapsed if elapsed > 0 else 0.0,
            f"{eta:.0f}s" if eta is not None else "?", extra=PROGRESS,
        )
