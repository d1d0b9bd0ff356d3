"""The selection rules of dataset variants: pure functions of a teacher's recorded attempts and lengths.

A variant is derived from what the run already holds (every attempt with its verdict), never from new
generations. These functions decide which attempt a variant takes; `distillery.variants.stage` applies the
teacher's filters to what they choose.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

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


def tie_break(key: str, seed: int) -> int:
    """A seeded 64-bit hash of a trace's key: the order among traces of equal length, independent of shard order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big")


def sample_size(count: int, fraction: float) -> int:
    """How many of a category's `count` traces a length variant keeps: the same for every shape, so two length
    variants of one teacher have equal sizes and equal category mix."""
    return min(count, max(1, round(count * fraction))) if count else 0


def length_sample(categories: np.ndarray, tokens: np.ndarray, ties: np.ndarray, shape: LengthShape,
                  fraction: float) -> np.ndarray:
    """Which traces a length-controlled sample keeps (a mask), drawn per category at `sample_size` each, from one
    row per trace: its category's code, its length and its `tie_break` (20 bytes a trace, never the traces).

    - `uniform`: the traces whose lengths are closest to the category's median (a narrow, homogeneous spread).
    - `diverse`: traces at evenly spaced length ranks, from the shortest to the longest (the full range).
    Ties are broken by `ties`, so the sample is reproducible and independent of shard order.
    """
    chosen = np.zeros(len(tokens), dtype=bool)
    for code in np.unique(categories):
        members = np.flatnonzero(categories == code)
        take = sample_size(len(members), fraction)
        ranked = members[np.lexsort((ties[members], tokens[members]))]
        if shape == "uniform":
            distance = np.abs(tokens[ranked] - tokens[ranked[len(ranked) // 2]])
            picked = ranked[np.lexsort((ties[ranked], distance))][:take]
        else:
            step = (len(ranked) - 1) / (take - 1) if take > 1 else 0.0
            picked = ranked[np.array([round(i * step) for i in range(take)], dtype=np.int64)]
        chosen[picked] = True
    return chosen
