"""Answer classes the held-out grades showed wrong, each as a class: a letter standing for a digit, a scalar in
front of a vector or matrix, ordinals, word answers, a final answer in a concluding last sentence, and a sentence
that judges an answer ("our answer is correct") instead of stating one. Golds are MATH-500's own (by id); the
comparison is the real Math-Verify, run in this process (`check_pair` is the worker function)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillery.schema.responses import DEFAULT_FALLBACKS, find_final_answer
from distillery.verify.math import check_pair
from distillery.verify.math_forms import looks_like_digit


@pytest.fixture(scope="module")
def gold(benchmarks_dir: Path) -> dict[str, str]:
    rows = map(json.loads, (benchmarks_dir / "math500" / "math500.jsonl").open())
    return {row["id"]: row["answer"] for row in rows}


def _equal(gold: str, prediction: str) -> bool:
    return check_pair((gold, prediction, True, 5, 6, True))["correct"]


@pytest.mark.parametrize(("gold_answer", "prediction"), [
    ("10", "1O"), ("10", "l0"), ("15", "1S"), ("0", "O"), ("0", "1O0"), ("1", "l"), ("5", "S"), ("20", "2O"),
])
def test_a_letter_that_looks_like_a_digit_is_never_that_digit(gold_answer: str, prediction: str) -> None:
    result = check_pair((gold_answer, prediction, True, 5, 6, True))
    assert not result["correct"] and result["reason"] == "a letter that looks like a digit"


def test_real_digits_and_letters_elsewhere_are_still_read() -> None:
    assert _equal("10", "10") and _equal("0", "0")
    for answer in ("2lb", "10\\log 10", "\\sqrt{10}", "3x + 1", "10\\text{ Oz}", "x_1 + x_2", "I"):
        assert not looks_like_digit(answer), answer


@pytest.mark.parametrize(("problem", "prediction", "equal"), [
    ("test/precalculus/1300.json", "\\frac{1}{3}\\begin{pmatrix} -1 \\\\ 2 \\\\ 5 \\end{pmatrix}", True),
    ("test/precalculus/625.json", "\\frac{8}{49}\\begin{pmatrix} 2 \\\\ 6 \\\\ 3 \\end{pmatrix}", True),
    ("test/precalculus/625.json", "\\frac{8}{49}\\begin{pmatrix} 2 \\\\ 6 \\\\ 4 \\end{pmatrix}", False),
    ("test/precalculus/263.json", "-\\begin{pmatrix} 2 \\\\ 14 \\\\ 7 \\end{pmatrix}", True),
    ("test/precalculus/263.json", "-2\\begin{pmatrix} 1 \\\\ 7 \\\\ 3.5 \\end{pmatrix}", True),
    ("test/precalculus/263.json", "2\\begin{pmatrix} -1 \\\\ -7 \\\\ 3 \\end{pmatrix}", False),
    ("test/precalculus/398.json", "\\frac{1}{5}(1, -18)", True),
    ("test/precalculus/920.json", "-\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}", True),
    ("test/precalculus/920.json", "-\\begin{pmatrix} 1 & 0 \\\\ 0 & -1 \\end{pmatrix}", False),
])
def test_a_scalar_times_a_vector_or_matrix_equals_its_expanded_form(gold: dict[str, str], problem: str,
                                                                    prediction: str, equal: bool) -> None:
    assert _equal(gold[problem], prediction) is equal


@pytest.mark.parametrize(("prediction", "equal"), [
    ("12^{\\mathrm{th}}", True), ("12^{\\text{th}}", True), ("12^{th}", True), ("12th", True), ("12\\text{th}", True),
    ("twelfth", True), ("21^{\\mathrm{st}}", False), ("13th", False),
])
def test_ordinals_are_their_number(prediction: str, equal: bool) -> None:
    assert _equal("12", prediction) is equal


@pytest.mark.parametrize(("problem", "prediction", "equal"), [
    ("test/algebra/1349.json", "Evelyn", True), ("test/algebra/1349.json", "\\text{evelyn}.", True),
    ("test/algebra/1349.json", "Navin", False), ("test/prealgebra/105.json", "East", True),
    ("test/prealgebra/105.json", "the east", True), ("test/prealgebra/105.json", "west", False),
    ("test/intermediate_algebra/128.json", "\\textbf{even}", True), ("test/intermediate_algebra/128.json", "odd", False),
    ("test/intermediate_algebra/860.json", "an ellipse", True), ("test/intermediate_algebra/860.json", "hyperbola", False),
])
def test_word_answers_compare_as_words(gold: dict[str, str], problem: str, prediction: str, equal: bool) -> None:
    assert _equal(gold[problem], prediction) is equal


def test_short_letter_groups_stay_algebra() -> None:
    assert _equal("xy", "yx"), "two letters are a product of variables, compared by Math-Verify"


@pytest.mark.parametrize(("answer_part", "expected"), [
    ("Adding the cases gives 7 + 5. Therefore, the total number of ways is 12.", "12"),
    ("So with $r = 2.5$, the area is 19.6.", "19.6"),
    ("Hence $x = 7$.", "7"),
    ("Thus, $f(x) = x^2+1$.", "x^2+1"),
    ("Let me check: 3 + 4 = 7. Then we add 5 more.", None),
    ("We get 12. Thus our answer is correct.", None),
    ("Therefore the result is not an integer.", None),
])
def test_a_concluding_last_sentence_is_read_with_the_fallbacks_on(answer_part: str, expected: str | None) -> None:
    found = find_final_answer(answer_part, DEFAULT_FALLBACKS)
    assert (found[1] if found else None) == expected
    assert find_final_answer(answer_part, ["boxed"]) is None


@pytest.mark.parametrize("response", [
    "x = 3 satisfies both equations, so our answer is correct.",
    "<think>x = 3</think>The answer is right: substituting back works.",
    "Checking again, the final answer is verified.",
])
def test_a_sentence_that_judges_the_answer_states_none(response: str) -> None:
    assert find_final_answer(response, DEFAULT_FALLBACKS) is None


def test_the_answer_is_still_read_when_it_states_one() -> None:
    assert find_final_answer("So the final answer is 5.", DEFAULT_FALLBACKS) == ("answer_is", "5")
    assert find_final_answer("The correct answer is twelve.", DEFAULT_FALLBACKS) == ("answer_is", "twelve")


def test_only_a_short_last_sentence_is_read_as_a_conclusion() -> None:
    long_sentence = "Therefore, after " + "checking one more case and " * 40 + "the total is 12."
    assert find_final_answer(long_sentence, ["last_sentence"]) is None
    assert find_final_answer("Therefore, the total is 12.", ["last_sentence"]) == ("last_sentence", "12")
