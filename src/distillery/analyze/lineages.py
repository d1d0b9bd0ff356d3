"""Order and pair lineages for comparison: a teacher's own data (named after the teacher) and the dataset
variants derived from it ("<teacher>+<variant>", see `distillery.core.recipe.lineage_teacher`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import combinations

from distillery.core.recipe import lineage_teacher, lineage_variant


def order_lineages(names: Iterable[str], teachers: Sequence[str] = ()) -> list[str]:
    """Each teacher's own lineage, then its variants in name order; teachers in `teachers` order first, then the
    rest by name (a lineage whose teacher the recipe no longer lists still shows)."""
    rank = {teacher: index for index, teacher in enumerate(teachers)}

    def key(name: str) -> tuple[int, str, bool, str]:
        teacher, variant = lineage_teacher(name), lineage_variant(name)
        return rank.get(teacher, len(rank)), teacher, variant is not None, variant or ""

    return sorted(set(names), key=key)


def comparison_pairs(lineages: Sequence[str]) -> list[tuple[str, str, str]]:
    """(a, b, kind) pairs worth a paired comparison, a before b in `lineages` order:

    "teachers": the same variant (or the plain data) of two teachers; "variants": two lineages of one teacher,
    the teacher's own data among them.
    """
    pairs = []
    for a, b in combinations(lineages, 2):
        if lineage_teacher(a) == lineage_teacher(b):
            pairs.append((a, b, "variants"))
        elif lineage_variant(a) == lineage_variant(b):
            pairs.append((a, b, "teachers"))
    return pairs
