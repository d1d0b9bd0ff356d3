"""Lineage names: a teacher's own data is named after the teacher, a dataset variant derived from it
"<teacher>+<variant>"; every step from the variants step on writes one folder per lineage."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import combinations

SEPARATOR = "+"


def split_lineage(name: str) -> tuple[str, str | None]:
    """(teacher, variant) of a lineage name; variant is None for the teacher's own data."""
    teacher, separator, variant = name.partition(SEPARATOR)
    return teacher, (variant if separator else None)


def order_lineages(names: Iterable[str], teachers: Sequence[str] = ()) -> list[str]:
    """Each teacher's own lineage, then its variants in name order; teachers in `teachers` order first, then the
    rest by name (a lineage whose teacher the recipe no longer lists still shows)."""
    unique = set(names)
    rank = {teacher: index for index, teacher in enumerate(teachers)}

    def key(name: str) -> tuple[int, str, int, str]:
        teacher, variant = split_lineage(name)
        return rank.get(teacher, len(rank)), teacher, variant is not None, variant or ""

    return sorted(unique, key=key)


def comparison_pairs(lineages: Sequence[str]) -> list[tuple[str, str, str]]:
    """(a, b, kind) pairs worth a paired comparison, a before b in `lineages` order:

    "teachers": the same variant (or the plain data) of two teachers; "variants": two lineages of one teacher,
    the teacher's own data among them.
    """
    pairs = []
    for a, b in combinations(lineages, 2):
        (teacher_a, variant_a), (teacher_b, variant_b) = split_lineage(a), split_lineage(b)
        if teacher_a == teacher_b:
            pairs.append((a, b, "variants"))
        elif variant_a == variant_b:
            pairs.append((a, b, "teachers"))
    return pairs
