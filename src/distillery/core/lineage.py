"""Lineages: whose data a per-teacher step runs on.

A lineage is a teacher's own data (named after the teacher, "am-thinking-v1") or a dataset variant derived from it
("am-thinking-v1+t0.8"). On disk, in manifests and on the command line it is that name; `Lineage` is the one place
that parses it, orders lineages for reports and pairs them for comparisons.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

SEPARATOR = "+"
"""Between a teacher's name and a dataset variant's in a lineage name."""

PairKind = Literal["teachers", "variants"]


@dataclass(frozen=True)
class Lineage:
    teacher: str
    variant: str | None = None
    """None for the teacher's own data."""

    @classmethod
    def parse(cls, name: str) -> Lineage:
        teacher, separator, variant = name.partition(SEPARATOR)
        return cls(teacher, variant if separator else None)

    def __str__(self) -> str:
        return f"{self.teacher}{SEPARATOR}{self.variant}" if self.variant is not None else self.teacher

    def sort_key(self, teachers: Sequence[str] = ()) -> tuple[int, str, bool, str]:
        """Teachers in `teachers` order first, then the rest by name; under each teacher its own data, then its
        variants by name."""
        rank = teachers.index(self.teacher) if self.teacher in teachers else len(teachers)
        return rank, self.teacher, self.variant is not None, self.variant or ""

    def pairs_with(self, other: Lineage) -> PairKind | None:
        """Whether a paired comparison of the two is worth making: "variants" (two lineages of one teacher, its own
        data among them), "teachers" (the same variant, or the plain data, of two teachers), else None."""
        if self.teacher == other.teacher:
            return "variants"
        if self.variant == other.variant:
            return "teachers"
        return None


def order_lineages(names: Iterable[str], teachers: Sequence[str] = ()) -> list[str]:
    """Lineage names in report order (`Lineage.sort_key`), each once; a lineage whose teacher the recipe no longer
    lists still shows."""
    return sorted(set(names), key=lambda name: Lineage.parse(name).sort_key(teachers))


def comparison_pairs(names: Sequence[str]) -> list[tuple[str, str, PairKind]]:
    """(a, b, kind) for every pair worth a paired comparison, a before b in `names` order (`Lineage.pairs_with`)."""
    pairs = []
    for a, b in combinations(names, 2):
        kind = Lineage.parse(a).pairs_with(Lineage.parse(b))
        if kind is not None:
            pairs.append((a, b, kind))
    return pairs
