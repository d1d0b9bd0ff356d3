"""Fingerprints and boilerplate on the real benchmark texts: what counts as content, what as shared wording."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from distillery.prepare.benchsets import BUILTIN, BenchmarkSource, load_benchmarks
from distillery.prepare.boilerplate import Boilerplate, words
from distillery.prepare.fingerprint import FingerprintIndex, fingerprint
from distillery.testing import public_contamination

SET = Path(__file__).resolve().parents[1] / "data" / "decontamination"


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


@pytest.fixture(scope="module")
def public() -> tuple[dict[str, str], dict[str, str]]:
    """The labelled set's queries and its GSM8K originals (MGSM translations of them among the queries)."""
    originals = load_benchmarks([public_contamination.index_source(SET)], None)
    return {row.id: row.text for row in public_contamination.load(SET)}, {item.item_id: item.text for item in originals}


def _numbers(text: str) -> set[str]:
    return {token for token in fingerprint(text) if token.startswith("n:")}


@pytest.mark.parametrize(("query", "written"), [
    ("translation-fr-gsm8k-test-0197", "thousands grouped by spaces: 23 786"),
    ("translation-ja-gsm8k-test-0197", "thousands grouped by commas after a kanji: が23,786"),
    ("translation-ru-gsm8k-test-0078", "a decimal comma: 2,50 $"),
    ("translation-de-gsm8k-test-0163", "the dollar sign after the number: 4 $"),
    ("translation-ru-gsm8k-test-0066", "a Russian number word: четыре"),
    ("translation-zh-gsm8k-test-0086", "Chinese numerals: 三次, 四次"),
    ("translation-bn-gsm8k-test-0071", "a Bengali number word: দুই"),
    ("translation-bn-gsm8k-test-0066", "a Bengali numeral with its classifier: চারটি"),
    ("translation-te-gsm8k-test-0066", "a Telugu number word: నాలుగు")])
def test_an_mgsm_translation_carries_every_number_of_its_gsm8k_original(
        public: tuple[dict[str, str], dict[str, str]], query: str, written: str) -> None:
    queries, originals = public
    original = originals[query.split("gsm8k-")[1]]
    assert _numbers(original) and _numbers(original) <= _numbers(queries[query]), written


def test_prices_are_not_math_and_words_that_only_look_like_numbers_are_not_numbers(
        public: tuple[dict[str, str], dict[str, str]]) -> None:
    queries, originals = public
    assert set(fingerprint(originals["test-0163"])) == {"n:3", "n:4", "n:5"}, "`$4. How much ... costs $5?`: prices"
    bengali = queries["translation-bn-gsm8k-test-0102"]
    assert "তিনি" in bengali and _numbers(bengali) == _numbers(originals["test-0102"]) == set(), \
        "তিনি (he) is not তিন (three) with a suffix"
    assert _numbers("nums = [1,3], (10,20)") == {"n:1", "n:3", "n:10", "n:20"}, "a list is not a decimal comma"


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
