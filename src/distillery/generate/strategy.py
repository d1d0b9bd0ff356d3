"""Regeneration strategies: how many attempts of one query are generated at once.

- `sequential`: one attempt at a time; the next is generated only after the previous one failed.
- `parallel(n)`: a wave of n attempts at once (the engine shares their prompt's KV cache through prefix
  caching); the next wave only if none of the wave passed.

Either way the accepted attempt is the lowest attempt index that passes and attempt k has the seed of
(seed, query, teacher, k), so with deterministic generation both strategies accept the same answer; parallel
spends more generations per query (whole waves are generated and recorded) to finish in fewer rounds.

The recipe chooses per teacher and category, in the generate step's config:
`strategy: {default: sequential, math: parallel(4), r1/code: parallel(2), r1/default: sequential}`;
the most specific key wins: `teacher/category`, then `category`, then `teacher/default`, then `default`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import get_args

from distillery.schema.records import Category

_PARALLEL = re.compile(r"^parallel\((\d+)\)$")


@dataclass(frozen=True)
class Strategy:
    samples: int
    """Attempts generated per wave: 1 for sequential."""

    def wave(self, done: int, max_attempts: int) -> list[int]:
        """Attempt indices of the next wave after `done` attempts."""
        return list(range(done, min(done + self.samples, max_attempts)))

    def __str__(self) -> str:
        return "sequential" if self.samples == 1 else f"parallel({self.samples})"


SEQUENTIAL = Strategy(1)


def parse_strategy(text: str) -> Strategy:
    """`sequential` or `parallel(n)` with n >= 1."""
    spelled = text.strip().replace(" ", "")
    if spelled == "sequential":
        return SEQUENTIAL
    match = _PARALLEL.match(spelled)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"strategy {text!r}: expected 'sequential' or 'parallel(n)' with n >= 1")
    return Strategy(int(match.group(1)))


def check_strategy_table(table: dict[str, str]) -> dict[str, str]:
    """Validate keys (`default`, a category, `teacher/category`, `teacher/default`) and values; return as is."""
    categories = set(get_args(Category))
    for key, value in table.items():
        parse_strategy(value)
        scope = key.split("/", 1)[-1]
        if scope != "default" and scope not in categories:
            raise ValueError(f"strategy key {key!r}: expected 'default', a category ({', '.join(sorted(categories))}), "
                             "'teacher/category' or 'teacher/default'")
    return table


def strategy_for(table: dict[str, str], teacher: str, category: str) -> Strategy:
    """The most specific entry of `table` for this teacher and category; sequential when none matches."""
    for key in (f"{teacher}/{category}", category, f"{teacher}/default", "default"):
        if key in table:
            return parse_strategy(table[key])
    return SEQUENTIAL
