"""The selection rules of dataset variants: pure functions of a teacher's recorded attempts and lengths.

A variant is derived from what the run already holds (every attempt with its verdict), never from new
generations. These functions decide which attempt a variant takes; `distillery.variants.stage` applies the
teacher's filters to what they choose.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from distillery.schema.records import Trace


@dataclass(frozen=True)
class ThresholdChoice:
    attempt: int | None
    """Index of the attempt the loop would have accepted at the threshold; None when none reaches it."""
    needs_new_attempts: bool = False
    """No recorded attempt reaches the threshold, but the loop would have tried again (it stopped early because an
    attempt passed the run's own, lower threshold): only new generations can complete this query."""


def first_at(trace: Trace, threshold: float) -> int | None:
    """The index of the first attempt scoring at least `threshold`."""
    for index, attempt in enumerate(trace.attempts):
        if attempt.score is not None and attempt.score >= threshold:
            return index
    return None


def at_threshold(trace: Trace, threshold: float, max_attempts: int) -> ThresholdChoice:
    """What the regeneration loop would have accepted at `threshold`, given the same attempts.

    Attempt k's seed and text do not depend on the threshold, so the loop at t accepts the first recorded attempt
    scoring >= t. Below the run's threshold that attempt is always recorded (the loop went on at least that far);
    above it, a query may have no such attempt although it still had attempts left: it needs new attempts.
    """
    chosen = first_at(trace, threshold)
    if chosen is not None:
        return ThresholdChoice(chosen)
    return ThresholdChoice(None, needs_new_attempts=len(trace.attempts) < max_attempts)


LengthShape = Literal["uniform", "diverse"]


@dataclass(frozen=True)
class Sized:
    key: str
    category: str
    tokens: int


def _tie_break(key: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def sample_size(count: int, fraction: float) -> int:
    """How many of a category's `count` traces a length variant keeps: the same for every shape, so two length
    variants of one teacher have equal sizes and equal category mix."""
    return min(count, max(1, round(count * fraction))) if count else 0


def length_sample(rows: Iterable[Sized], shape: LengthShape, fraction: float, seed: int) -> set[str]:
    """Keys of a length-controlled sample, drawn per category at `sample_size` each.

    - `uniform`: the traces whose lengths are closest to the category's median (a narrow, homogeneous spread).
    - `diverse`: traces at evenly spaced length ranks, from the shortest to the longest (the full range).
    Ties are broken by a seeded hash of the key, so the sample is reproducible and independent of shard order.
    """
    by_category: dict[str, list[Sized]] = defaultdict(list)
    for row in rows:
        by_category[row.category].append(row)
    chosen: set[str] = set()
    for members in by_category.values():
        take = sample_size(len(members), fraction)
        ranked = sorted(members, key=lambda r: (r.tokens, _tie_break(r.key, seed)))
        if shape == "uniform":
            median = ranked[len(ranked) // 2].tokens
            picked = sorted(ranked, key=lambda r: (abs(r.tokens - median), _tie_break(r.key, seed)))[:take]
        else:
            step = (len(ranked) - 1) / (take - 1) if take > 1 else 0.0
            picked = [ranked[round(i * step)] for i in range(take)]
        chosen.update(row.key for row in picked)
    return chosen
