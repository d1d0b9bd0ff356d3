"""Response structure and final-answer extraction: broken structure is reported, never raised."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distillery.schema.responses import find_final_answer
from distillery.verify import extract_final_answer, parse_response


@pytest.mark.parametrize(
    ("text", "think", "answer", "well_formed", "problem"),
    [
        ("<think>\nwork\n</think>\n<answer>\n42\n</answer>", "work", "42", True, ""),
        ("<think>work</think>\nThe answer is 42.", "work", "The answer is 42.", True, ""),
        ("work</think>42", "work", "42", False, "no <think> opening tag"),
        ("<think>work that never ends", "work that never ends", "", False, "unterminated <think> block"),
        ("just an answer", "", "just an answer", False, "no <think> block"),
        ("<think>a</think><think>b</think>c", "", "<think>a</think><think>b</think>c", False, "more than one <think> block"),
        ("<think>a</think><answer>x</answer><answer>y</answer>", "", "<think>a</think><answer>x</answer><answer>y</answer>", False, "more than one <answer> block"),
        ("<think>a</think><answer>x", "a", "x", False, "unterminated <answer> block"),
        ("<think>a</think>intro<answer>x</answer>", "a", "x", False, "text between </think> and <answer>"),
        ("<think>a</think><answer>x</answer>tail", "a", "x", False, "text after </answer>"),
        ("<think>a</think><answer> </answer>", "a", "", False, "empty answer"),
        ("</think>x<think>", "", "</think>x<think>", False, "</think> before <think>"),
    ],
)
def test_parse_response(text: str, think: str, answer: str, well_formed: bool, problem: str) -> None:
    parsed = parse_response(text)
    assert (parsed.think, parsed.answer, parsed.well_formed, parsed.problem) == (think, answer, well_formed, problem)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*"ab1{}\\$ \n", "<think>", "</think>", "<answer>", "</answer>", "\\boxed{", "answer is "]), max_size=30))
def test_parsing_never_raises(pieces: list[str]) -> None:
    text = "".join(pieces)
    parsed = parse_response(text)
    assert parsed.well_formed == (parsed.problem == "")
    for sources in (["boxed", "answer_tag", "answer_is", "last_number", "last_line"], ["last_line"]):
        found = extract_final_answer(text, sources)
        assert found is None or isinstance(found, str)


def test_extract_final_answer_sources_and_order() -> None:
    text = r"<think>maybe \boxed{1}</think><answer>We get \boxed{\frac{1}{2}} and then \boxed{\{1, 2\}}.</answer>"
    assert extract_final_answer(text) == r"\{1, 2\}"
    assert extract_final_answer("<think>x</think>So the final answer is: 7.") == "7"
    assert extract_final_answer("<think>x</think><answer>seven</answer>", ["boxed", "answer_tag"]) == "seven"
    assert extract_final_answer("<think>x</think>total 1,234 apples", ["boxed", "last_number"]) == "1234"
    assert extract_final_answer("<think>x</think>line one\nline two\n", ["last_line"]) == "line two"
    assert extract_final_answer(r"<think>the answer is \boxed{3}", ["boxed", "answer_is"]) is None
    assert extract_final_answer("nothing to see", ["boxed"]) is None


def test_default_sources_read_the_answer_tag_and_never_the_think_block() -> None:
    assert extract_final_answer("<think>work</think>\n<answer>\n\\frac{14}{3}\n</answer>") == r"\frac{14}{3}"
    assert extract_final_answer(r"<think>so \boxed{12}</think><answer>13</answer>") == "13"
    assert extract_final_answer(r"<think>so \boxed{12}</think>The answer is 13.") == "13"
    assert extract_final_answer(r"<think>so \boxed{12}</think>") is None
    assert extract_final_answer(r"<think>so \boxed{12}</think><answer>The correct answer is 7.</answer>") == "7"
    assert find_final_answer(r"<think>x</think><answer>We get \boxed{5}.</answer>") == ("boxed", "5")
    assert find_final_answer("<think>x</think><answer>5</answer>") == ("answer_tag", "5")
    assert find_final_answer("<think><answer>4</answer></think>The sum is 5.") is None
