"""Progress of one generation shard: items done, acceptance by category, tokens/s, engine idle time, ETA.

Logged after every batch and kept in `ShardContext.stats`, which the runner writes into the manifest that
`distillery status` reads.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


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
        return time.perf_counter() - self.started

    def eta_s(self) -> float | None:
        if not self.done:
            return None
        return self.elapsed_s / self.done * (self.total - self.done)

    def stats(self) -> dict[str, Any]:
        """JSON-ready figures for the manifest."""
        elapsed = self.elapsed_s
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
            "tokens_per_s": round(self.completion_tokens / elapsed, 2) if elapsed > 0 else None,
            "generate_s": round(self.generate_s, 3),
            "verify_s": round(self.verify_s, 3),
            "engine_idle_fraction": round(1 - self.generate_s / elapsed, 4) if elapsed > 0 else None,
            "elapsed_s": round(elapsed, 3),
        }

    def log(self, logger: logging.Logger) -> None:
        eta = self.eta_s()
        by_category = " ".join(f"{c}={self.accepted_by_category[c]}/{n}" for c, n in sorted(self.done_by_category.items()))
        elapsed = self.elapsed_s
        logger.info(
            "generate: %d/%d done, %d accepted (%s), %d attempts, %.1f tokens/s, verify %.0f%% of time, ETA %s",
            self.done, self.total, self.accepted, by_category or "-", self.attempts,
            self.completion_tokens / elapsed if elapsed > 0 else 0.0,
            100 * self.verify_s / elapsed if elapsed > 0 else 0.0,
            f"{eta:.0f}s" if eta is not None else "?",
        )
