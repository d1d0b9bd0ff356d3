"""Lineage names: a teacher's own data and the dataset variants derived from it."""

from __future__ import annotations

from distillery.core.lineage import comparison_pairs, order_lineages


def test_variants_are_grouped_under_their_teacher_in_recipe_order() -> None:
    names = ["r1+uniform", "am", "zeta", "r1", "am+uniform", "am+keep_all", "r1+uniform"]
    assert order_lineages(names, ["r1", "am"]) == ["r1", "r1+uniform", "am", "am+keep_all", "am+uniform", "zeta"]
    assert order_lineages(["b+x", "a"]) == ["a", "b+x"], "a variant whose teacher is unknown still shows"


def test_pairs_compare_teachers_under_one_variant_and_the_lineages_of_one_teacher() -> None:
    pairs = comparison_pairs(["am", "am+strict", "am+long", "r1", "r1+strict"])
    assert pairs == [
        ("am", "am+strict", "variants"), ("am", "am+long", "variants"), ("am", "r1", "teachers"),
        ("am+strict", "am+long", "variants"), ("am+strict", "r1+strict", "teachers"), ("r1", "r1+strict", "variants"),
    ]
    assert ("am+long", "r1", "teachers") not in pairs and not any(a == "am+long" and b == "r1+strict" for a, b, _ in pairs)
