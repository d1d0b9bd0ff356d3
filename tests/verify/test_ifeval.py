"""IFEval checks: every instruction id in the packaged IFEval data has a following and a violating response,
in strict and loose mode, and the verifier scores the fraction followed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distillery.schema.records import Reference, make_query
from distillery.verify.config import IFEvalSettings
from distillery.verify.ifeval import CHECKS, IFEvalVerifier, check_instruction, loose_variants, split_sentences

ENGLISH = "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden porch"

# id -> (kwargs, following response, violating response)
CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "change_case:capital_word_frequency": (
        {"capital_frequency": 3, "capital_relation": "at least"},
        "This is VERY VERY IMPORTANT news.",
        "This is VERY important news.",
    ),
    "change_case:english_capital": ({}, ENGLISH.upper() + ".", ENGLISH + "."),
    "change_case:english_lowercase": ({}, ENGLISH.lower() + ".", ENGLISH + "."),
    "combination:repeat_prompt": (
        {"prompt_to_repeat": "Write a poem about cats."},
        "Write a poem about cats. Cats sleep all day.",
        "Cats sleep all day. Write a poem about cats.",
    ),
    "combination:two_responses": ({}, "First answer.\n******\nSecond answer.", "First answer.\n******\nFirst answer."),
    "detectable_content:number_placeholders": ({"num_placeholders": 2}, "Dear [name], you live at [address].", "Dear [name], hello."),
    "detectable_content:postscript": ({"postscript_marker": "P.S."}, "Hello.\n\nP.S. See you soon.", "Hello. See you soon."),
    "detectable_format:constrained_response": ({}, "My answer is yes.", "Yes, definitely."),
    "detectable_format:json_format": ({}, '```json\n{"a": 1, "b": [2, 3]}\n```', '{"a": 1,'),
    "detectable_format:multiple_sections": (
        {"num_sections": 2, "section_spliter": "SECTION"},
        "SECTION 1\nIntro here.\nSECTION 2\nBody here.",
        "SECTION 1\nIntro and body here.",
    ),
    "detectable_format:number_bullet_lists": ({"num_bullets": 2}, "* apples\n- pears", "Fruit:\n* apples\nThat is all."),
    "detectable_format:number_highlighted_sections": (
        {"num_highlights": 2},
        "Here is *the first part* and **the second part**.",
        "Here is *the first part* only.",
    ),
    "detectable_format:title": ({}, "<<A Day Out>>\nWe went to the sea.", "A Day Out\nWe went to the sea."),
    "keywords:existence": ({"keywords": ["banana", "Kiwi"]}, "A banana and a kiwi.", "A banana and an apple."),
    "keywords:forbidden_words": ({"forbidden_words": ["bad", "awful"]}, "A badge is fine.", "That was awful."),
    "keywords:frequency": ({"keyword": "cat", "frequency": 3, "relation": "at least"}, "cat Cat CAT", "cat cat"),
    "keywords:letter_frequency": ({"letter": "z", "let_frequency": 2, "let_relation": "less than"}, "A lazy day.", "Zebras buzz."),
    "language:response_language": (
        {"language": "de"},
        "Heute ist ein sehr schöner Tag und wir gehen zusammen in den großen Park spazieren.",
        "Today is a very nice day and we are going for a walk in the big park together.",
    ),
    "length_constraints:nth_paragraph_first_word": (
        {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "however"},
        "First paragraph.\n\nHowever, the second one.\n\nThird paragraph.",
        "First paragraph.\n\nBut the second one.\n\nThird paragraph.",
    ),
    "length_constraints:number_paragraphs": ({"num_paragraphs": 3}, "One.\n***\nTwo.\n***\nThree.", "One.\n***\nTwo."),
    "length_constraints:number_sentences": (
        {"num_sentences": 3, "relation": "less than"},
        "Dr. Smith arrived. He sat down.",
        "He arrived. He sat. He left. He came back.",
    ),
    "length_constraints:number_words": ({"num_words": 5, "relation": "at least"}, "one two three four five", "one two three"),
    "punctuation:no_comma": ({}, "No commas here at all.", "Well, here is one."),
    "startend:end_checker": ({"end_phrase": "Is there anything else I can help with?"}, "Done. Is there anything else I can help with?", "Is there anything else I can help with? Done."),
    "startend:quotation": ({}, '"Everything is quoted."', 'Nothing is "quoted".'),
}


def _benchmark_ids(benchmarks_dir: Path) -> set[str]:
    rows = (json.loads(line) for line in (benchmarks_dir / "ifeval" / "ifeval.jsonl").open())
    return {instruction_id for row in rows for instruction_id in row["instruction_id_list"]}


def test_every_benchmark_instruction_id_has_a_check_and_cases(benchmarks_dir: Path) -> None:
    ids = _benchmark_ids(benchmarks_dir)
    assert ids <= set(CHECKS), sorted(ids - set(CHECKS))
    assert ids <= set(CASES), sorted(ids - set(CASES))


@pytest.mark.parametrize("mode", ["strict", "loose"])
@pytest.mark.parametrize("instruction_id", sorted(CASES))
def test_following_passes_and_violating_fails(instruction_id: str, mode: str) -> None:
    kwargs, following, violating = CASES[instruction_id]
    assert check_instruction(instruction_id, kwargs, following, mode), f"{instruction_id} ({mode}) rejected {following!r}"
    assert not check_instruction(instruction_id, kwargs, violating, mode), f"{instruction_id} ({mode}) accepted {violating!r}"


def test_loose_mode_forgives_a_preamble_and_markdown_that_strict_does_not() -> None:
    response = "Sure, here it is:\n**\"Everything is quoted.\"**"
    assert not check_instruction("startend:quotation", {}, response, "strict")
    assert check_instruction("startend:quotation", {}, response, "loose")
    assert len(loose_variants("a\nb\nc")) == 8


def test_sentence_split_keeps_abbreviations_and_initials() -> None:
    assert split_sentences("Dr. Smith met J. R. Tolkien. They talked! Did they? Yes.") == [
        "Dr. Smith met J. R. Tolkien.",
        "They talked!",
        "Did they?",
        "Yes.",
    ]


@pytest.mark.parametrize(
    ("text", "count"),
    [
        # a sentence may end inside markdown emphasis or a closing quote (punkt splits these; a bare `.\s` rule did not)
        ("This part is **important.** The next part is not.", 2),
        ("It is *done.* We move on.", 2),
        ("She said \u201cwait.\u201d Then she left.", 2),
        ("He called it \u2018the end.\u2019 It was not.", 2),
        ('The sign read "closed." We went home.', 2),
        # list numbers that end a "sentence" count, as punkt counts them
        ("Steps:\n1. Mix the flour.\n2. Bake it.", 4),
        # an initial before a frequent capitalised word ends a sentence; before a name it does not
        ("We chose plan B. Then we waited.", 2),
        ("The author is J. R. Tolkien.", 1),
        ("Wait... then it happened.", 1),
        ("Wait... The door opened.", 2),
        ("Prices rose, e.g. in Paris.", 1),
        # after a list number, a token punkt cannot start a word with (`*`, `(`) has no case: a break either way
        ("1. **mix** the flour.", 2),
        ("1. (a) first", 2),
        # `."` then `,` unspaced: punkt ends the sentence after the period and cannot move the quote back
        ('{"title": "Hello world.", "body": "Next one."}', 2),
        # a `*` after the last period is a sentence of its own (punkt realigns quotes and brackets, never `*`)
        ("It is *done.*", 2),
        ("It is *done.* We go on.", 2),
        ('It ends "here."', 1),
    ],
)
def test_sentence_count_follows_punkt(text: str, count: int) -> None:
    assert len(split_sentences(text)) == count, split_sentences(text)


def test_capital_words_keep_hyphenated_words_whole() -> None:
    kwargs = {"capital_frequency": 2, "capital_relation": "less than"}
    assert check_instruction("change_case:capital_word_frequency", kwargs, "This is STATE-OF-THE-ART work.")
    assert not check_instruction("change_case:capital_word_frequency", kwargs, "This is STATE OF THE ART work.")
    assert check_instruction("change_case:capital_word_frequency", kwargs, "Made in the U.S.A today.")
    assert not check_instruction("change_case:capital_word_frequency", kwargs, "I DON'T know.")


def test_verifier_scores_the_fraction_followed_on_the_answer_part(benchmarks_dir: Path) -> None:
    row = json.loads((benchmarks_dir / "ifeval" / "ifeval.jsonl").open().readline())
    instructions = [{"id": i, "kwargs": k} for i, k in zip(row["instruction_id_list"], row["kwargs"])]
    query = make_query("instruction_following", [{"role": "user", "content": row["prompt"]}], Reference(instructions=instructions))
    verifier = IFEvalVerifier(IFEvalSettings(), threshold=0.9)
    words = " ".join(["word"] * 310)
    # no_comma, >= 3 highlighted sections, >= 300 words; the think part's commas must not count
    following = f"<think>Hmm, commas, commas.</think><answer>*one* *two* *three* {words}</answer>"
    one_violation = f"<think>ok</think><answer>*one* *two* *three*, {words}</answer>"
    assert verifier.verify(query, following).score == 1.0
    verdict = verifier.verify(query, one_violation)
    assert verdict.score == pytest.approx(2 / 3) and not verdict.passed
    assert verdict.details["followed"]["punctuation:no_comma"] is False


def test_unknown_ids_and_bad_kwargs_cost_only_their_own_instruction() -> None:
    verifier = IFEvalVerifier(IFEvalSettings(), threshold=0.5)
    instructions = [
        {"id": "punctuation:no_comma", "kwargs": {}},
        {"id": "made:up", "kwargs": {}},
        {"id": "length_constraints:number_words", "kwargs": {"num_words": 3, "relation": "at least", "typo": 1}},
        {"id": "length_constraints:number_sentences", "kwargs": {"num_sentences": 1, "relation": "exactly"}},
        {"id": "keywords:existence", "kwargs": {"keywords": ["fox"]}},
    ]
    query = make_query("instruction_following", [{"role": "user", "content": "x"}], Reference(instructions=instructions))
    verdict = verifier.verify(query, "<think>ok</think><answer>The quick brown fox.</answer>")
    assert verdict.score == pytest.approx(2 / 5) and not verdict.passed
    assert verdict.details["followed"]["punctuation:no_comma"] and verdict.details["followed"]["keywords:existence"]
    unchecked = verdict.details["unchecked"]
    assert unchecked["made:up"] == "unknown instruction id"
    assert "typo" in unchecked["length_constraints:number_words"]
    assert "relation" in unchecked["length_constraints:number_sentences"]
    assert "made:up: unknown instruction id" in verdict.details["reason"]
    none = make_query("instruction_following", [{"role": "user", "content": "y"}])
    assert verifier.verify(none, "answer").details["reason"] == "query has no instructions"


@pytest.mark.parametrize("mode", ["strict", "loose"])
def test_every_benchmark_row_runs_with_its_own_kwargs(benchmarks_dir: Path, mode: str) -> None:
    """Every (id, kwargs) of the 541 IFEval prompts is accepted by its check (a kwarg name mismatch raises)."""
    response = "<<Title>>\nSECTION 1\n* a point, with *a highlight*\n\nP.S. [name] My answer is yes."
    verifier = IFEvalVerifier(IFEvalSettings(mode=mode), threshold=0.9)
    scores = []
    for line in (benchmarks_dir / "ifeval" / "ifeval.jsonl").open():
        row = json.loads(line)
        instructions = [{"id": i, "kwargs": k} for i, k in zip(row["instruction_id_list"], row["kwargs"])]
        query = make_query("instruction_following", [{"role": "user", "content": row["prompt"]}], Reference(instructions=instructions))
        scores.append(verifier.verify(query, response).score)
    assert len(scores) == 541 and 0.0 < sum(scores) / len(scores) < 1.0
