"""Multiple choice: the letter a response chooses, on a labelled set of MMLU-Pro / GPQA-style questions and
R1-style replies (tests/verify/data/choice_responses.jsonl); which queries count as multiple choice; and the
registry sending them to this verifier instead of the judge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distillery.schema.records import Reference, make_query
from distillery.verify import VerifyConfig, build_verifier
from distillery.verify.choice import ChoiceVerifier, chosen_letters, is_multiple_choice, option_letters

RESPONSES = Path(__file__).parent / "data" / "choice_responses.jsonl"


def _rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in RESPONSES.open()]


def _query(question: str, reference: str | None, category: str = "science"):
    return make_query(category, [{"role": "user", "content": question}], Reference(answer=reference))


def test_labelled_responses() -> None:
    rows = _rows()
    assert len(rows) >= 40 and sum(row["label"] for row in rows) >= 20 and sum(not row["label"] for row in rows) >= 10
    verifier = ChoiceVerifier(threshold=0.9)
    wrong = []
    for row in rows:
        query = _query(row["question"], row["reference"])
        assert is_multiple_choice(query), row["question"][:60]
        verdict = verifier.verify(query, row["response"])
        assert verdict.score in (0.0, 1.0) and verdict.verifier == "multiple_choice"
        if verdict.passed != row["label"]:
            wrong.append((row["kind"], row["response"][-60:], verdict.details))
    assert wrong == []


@pytest.mark.parametrize(
    ("answer_part", "letters"),
    [
        ("The answer is (D) 0.17 kJ/mol", ["D"]),
        ("The correct answer is (D).", ["D"]),
        (r"So we get $\boxed{C}$.", ["C"]),
        (r"$\boxed{\text{(B)}}$", ["B"]),
        ("Answer: C", ["C"]),
        ("**Answer:** (A)", ["A"]),
        ("C", ["C"]),
        ("(C) 4 A", ["C"]),
        ("A cat is an animal.", []),
        ("The answer is a bit subtle.", []),
        ("Option A is wrong because of friction. The answer is (C).", ["C"]),
        ("The answer is (B) or (C).", ["B", "C"]),
        (r"The answer is (B). \boxed{D}", ["B", "D"]),
        ("The answer is Congress (B).", ["B"]),
    ],
)
def test_chosen_letters(answer_part: str, letters: list[str]) -> None:
    assert chosen_letters(answer_part) == letters


def test_two_letters_and_no_letter_are_verdicts_with_reasons() -> None:
    query = _query("Pick one.\n(A) red\n(B) blue\n(C) green", "B")
    verifier = ChoiceVerifier(threshold=0.9)
    assert verifier.verify(query, "<think>x</think>The answer is (B) or (C).").details["reason"] == "names several letters: B, C"
    assert verifier.verify(query, "<think>The answer is (B)</think>It is blue.").details["reason"] == "no option letter found"
    assert verifier.verify(_query("Pick.\n(A) x\n(B) y", "blue"), "B").details["reason"] == "reference answer is not an option letter"


@pytest.mark.parametrize(
    ("question", "reference", "expected"),
    [
        ("Which is a noble gas?\nA. Neon\nB. Oxygen\nC. Nitrogen", "A", True),
        ("Which is a noble gas?\n(A) Neon\n(B) Oxygen\n(C) Nitrogen", "(A)", True),
        ("Which is a noble gas? (A) Neon (B) Oxygen (C) Nitrogen", "A", True),
        ("Options:\nA) Neon\nB) Oxygen\nC) Nitrogen\nD) Carbon", "D.", True),
        ("Which is a noble gas?\nA. Neon\nB. Oxygen", "C", False),
        ("Which is a noble gas?", "A", False),
        ("Which is a noble gas?\nA. Neon\nB. Oxygen", "Neon", False),
        ("Let A and B be sets. Is (A) empty?", "A", False),
        ("Name the capital of France.", "Paris", False),
    ],
)
def test_is_multiple_choice(question: str, reference: str, expected: bool) -> None:
    assert is_multiple_choice(_query(question, reference)) is expected


def test_option_letters_from_real_prompt_layouts() -> None:
    mmlu_pro = "Question: ...\nOptions:\nA. 1\nB. 2\nC. 3\nD. 4\nE. 5\nF. 6\nG. 7\nH. 8\nI. 9\nJ. 10\nAnswer: Let's think step by step."
    assert option_letters(mmlu_pro) == set("ABCDEFGHIJ")
    assert option_letters("What is 2 + 2? (A) 3 (B) 4 (C) 5") == {"A", "B", "C"}


def test_registry_routes_multiple_choice_past_the_judge() -> None:
    mc = _query("Which is a noble gas?\nA. Neon\nB. Oxygen", "A")
    general = _query("Which is a noble gas?\n(A) Neon\n(B) Oxygen", "A", category="general")
    open_science = _query("Capital of France?", "Paris")
    with build_verifier(VerifyConfig()) as verifier:
        assert [verifier.verifier_name(query) for query in (mc, general, open_science)] == ["choice", "choice", "judge"]
        verdicts = verifier.verify_batch([(mc, "<think>Neon is inert.</think><answer>A</answer>"), (general, "Answer: B")])
        assert [(v.verifier, v.passed) for v in verdicts] == [("multiple_choice", True), ("multiple_choice", False)]
        assert verdicts[0].details["well_formed"] and not verdicts[1].details["well_formed"]
        assert "judge" not in verifier._built
    with build_verifier(VerifyConfig(route_multiple_choice=False)) as verifier:
        assert verifier.verifier_name(mc) == "judge"
    assert VerifyConfig(verifiers={"science": "choice"}).verifiers["science"] == "choice"
