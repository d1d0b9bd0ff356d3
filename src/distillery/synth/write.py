"""Write a synthetic query corpus: one JSONL file per category, streamed, with planted duplicates.

A share of rows repeat an earlier row of their category with its spacing changed (`dedup` must drop them: the
normalised text is equal, the id is not) or with one word added (`near_dedup` must drop them), so the
preparation steps have the work the paper's sources give them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillery.core.store import write_jsonl
from distillery.synth.tasks import MIX, category_counts, make_task


def category_rows(seed: int, category: str, count: int, duplicates: float = 0.01,
                  near_duplicates: float = 0.01) -> Iterator[dict[str, Any]]:
    """`count` ingest rows of one category: tasks 0..count-1, a planted share of them copies of the one before."""
    rng = random.Random(f"{seed}:{category}:copies")
    previous: dict[str, Any] | None = None
    for index in range(count):
        roll = rng.random()
        if previous is not None and roll < duplicates + near_duplicates:
            copy = dict(previous)
            copy["prompt"] = (copy["prompt"].replace(" ", "  ", 1) if roll < duplicates
                              else copy["prompt"] + " Thanks.")
            yield copy
            continue
        previous = make_task(seed, category, index).row()
        yield previous


def write_queries(out_dir: Path, n: int, seed: int, mix: dict[str, float] = MIX, duplicates: float = 0.01,
                  near_duplicates: float = 0.01) -> dict[str, int]:
    """Write `n` queries split over `mix` into `out_dir/<category>.jsonl`; returns the rows per file."""
    written = {}
    for category, count in category_counts(n, mix).items():
        rows = category_rows(seed, category, count, duplicates, near_duplicates)
        written[category], _ = write_jsonl(out_dir / f"{category}.jsonl", rows)
    return written
