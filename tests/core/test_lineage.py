"""Lineages as one type: parsing and naming round-trip, report order, comparison pairs."""

from __future__ import annotations

import pytest

from distillery.core.lineage import Lineage


@pytest.mark.parametrize("name, teacher, variant", [
    ("am-thinking-v1", "am-thinking-v1", None),
    ("am-thinking-v1+t0.8", "am-thinking-v1", "t0.8"),
    ("r1+keep_all", "r1", "keep_all"),
])
def test_a_name_parses_into_teacher_and_variant_and_prints_back(name: str, teacher: str, variant: str | None) -> None:
    lineage = Lineage.parse(name)
    assert (lineage.teacher, lineage.variant) == (teacher, variant)
    assert str(lineage) == name


def test_order_puts_known_teachers_first_and_each_teachers_own_data_before_its_variants() -> None:
    names = [Lineage.parse(n) for n in ["zeta", "am+b", "r1+a", "am", "r1"]]
    ordered = sorted(names, key=lambda lineage: lineage.sort_key(["r1", "am"]))
    assert [str(lineage) for lineage in ordered] == ["r1", "r1+a", "am", "am+b", "zeta"]


def test_pairs_are_lineages_of_one_teacher_or_one_variant_of_two_teachers() -> None:
    assert Lineage.parse("am").pairs_with(Lineage.parse("am+strict")) == "variants"
    assert Lineage.parse("am+strict").pairs_with(Lineage.parse("r1+strict")) == "teachers"
    assert Lineage.parse("am").pairs_with(Lineage.parse("r1")) == "teachers"
    assert Lineage.parse("am+long").pairs_with(Lineage.parse("r1+strict")) is None
