"""Fingerprints and boilerplate on the real benchmark texts: what counts as content, what as shared wording."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from distillery.prepare.benchsets import BUILTIN, BenchmarkSource, load_benchmarks
from distillery.prepare.boilerplate import Boilerplate, words
from distillery.prepare.fingerprint import FingerprintIndex, fingerprint


@pytest.fixture(scope="module")
def items(benchmarks_dir: Path) -> list:
    return load_benchmarks([BenchmarkSource(name=name) for name in BUILTIN], benchmarks_dir)


def _text(items: list, item_id: str) -> str:
    return next(item.text for item in items if item.item_id == item_id)


def test_fingerprint_reads_numbers_expressions_variables_and_code_names() -> None:
    tokens = fingerprint("Find $m+n$ where $\\dfrac{m}{n}$ has 1,000 terms, twelve of them 0.50; "
                         "Input: nums = [1,3], def maxSum(self, nums)")
    assert {"n:1000", "n:12", "n:0.5", "n:1", "n:3", "t:\\fracmn", "v:m", "v:n", "c:nums", "c:maxSum"} <= set(tokens)
    assert "t:m+n" not in tokens, "spans under 4 characters are variables, not expressions"
    assert fingerprint("$\\frac mn$ and $\\left( x \\right)$") == fingerprint("$\\dfrac{m}{n}$ and $(x)$")


def test_a_translation_keeps_the_fingerprint_and_new_numbers_change_it(items: list) -> None:
    index = FingerprintIndex([item.text for item in items])
    target = next(i for i, item in enumerate(items) if item.item_id == "aime2025-I-04")
    german = ("Bestimmen Sie die Anzahl der geordneten Paare $(x,y)$, wobei $x$ und $y$ ganze Zahlen zwischen "
              "$-100$ und $100$ (einschließlich) sind, sodass $12x^2-xy-6y^2=0$ gilt.")
    other = _text(items, "aime2025-I-04").replace("100", "60").replace("12x^2", "15x^2").replace("6y^2", "2y^2")
    same, changed = index.compare(fingerprint(german), target), index.compare(fingerprint(other), target)
    assert same.numbers == pytest.approx(1.0) and same.content > 0.9
    assert changed.numbers < 0.5
    assert target in index.matches(fingerprint(german), 0.5)
    small = FingerprintIndex(["Compute 1 + 1.", "Compute 1 + 3.", "Add 1 and 3."])
    common = small.compare(fingerprint("Compute 1 + 1 twice."), 0)
    assert math.isnan(common.numbers), "common numbers alone tell nothing"


def test_stock_and_shared_phrases_are_boilerplate_problem_words_are_not(items: list) -> None:
    boiler = Boilerplate([item.text for item in items], window=6, min_items=3)
    aime = ("A fair coin is flipped $10$ times. The probability is $\\frac{m}{n}$, where $m$ and $n$ are relatively "
            "prime positive integers. Find $m+n$.")
    kept = boiler.content_words(aime)
    assert kept[:6] == ["a", "fair", "coin", "is", "flipped", "10"]
    assert "relatively" not in kept and "prime" not in kept
    atcoder = _text(items, "lcb-v5-0311")
    assert "standard" not in boiler.content_words(atcoder) and "takahashi" in boiler.content_words(atcoder)
    assert len(boiler.content_words(atcoder)) < len(words(atcoder))
