"""Multiple choice (MMLU-, GPQA-style queries): the option letter a response chooses, scored by exact match.

A query is multiple choice when its reference answer is a single option letter and its prompt lists the
options, as `(A) ...` or `A. ...`/`A) ...` lines (`is_multiple_choice`); the registry sends such queries here
whatever their category, instead of to the LLM judge.

The choice is read from the answer part of the response only (never from `<think>`), from every place it
states a final answer: `\\boxed{C}`, "The answer is (C)", "The correct answer is (D)", "Answer: C", "The
answer is Congress (B)", or an
answer part that is just the letter (`<answer>C</answer>`, `(C) 0.17 kJ/mol`). Naming two different
letters as the answer, in one statement ("(C) or (D)") or in two, is wrong: a verifier that picked one of
them would reward hedging.
"""

from __future__ import annotations

import re
from typing import Self

from distillery.schema.records import Query
from distillery.schema.responses import parse_response
from distillery.llm.protocol import ChatModel
from distillery.verify.config import VerifyConfig
from distillery.verify.verdict import Verdict

NAME = "multiple_choice"

_LETTER = r"[A-J]"
_REFERENCE = re.compile(rf"\(?({_LETTER})\)?\.?")
_OPTION_LINE = re.compile(rf"^[ \t]*(?:\*\*)?(?:\(({_LETTER})\)|({_LETTER})[.):])(?:\*\*)?[ \t]+\S", re.MULTILINE)
_OPTION_INLINE = re.compile(rf"(?<![\w(])\(({_LETTER})\)[ \t]*[^\s)]")
_BOX = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_MARKUP = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}|[$*]")
_CHOSEN = rf"\(?\s*({_LETTER})\s*\)?"
_FURTHER = rf"(?:\s*(?:,|/|&|\bor\b|\band\b)\s*\(?({_LETTER})\)?(?![\w]))?"
_STATEMENT = re.compile(
    r"(?i:final answer|(?:correct|right|best) (?:answer|option|choice)|answer(?: choice)?)"
    rf"\s*(?i:is|:|=|would be|should be)\s*:?\s*(?i:option |choice )?{_CHOSEN}(?![\w]){_FURTHER}"
)
_NAMED_THEN_LETTER = re.compile(
    r"(?i:final answer|(?:correct|right|best) (?:answer|option|choice)|answer)\s*(?i:is|:)\s+"
    rf"(?!(?i:not|neither)\b)[\w'-]+(?:\s+[\w'-]+){{0,4}}\s*\(({_LETTER})\)(?![\w])"
)
""""The answer is Congress (B)": the option's text first, its letter after, a few words at most."""
_WHOLE = re.compile(rf"\(?({_LETTER})\)?[.:)]?(?:\s+\S.*)?", re.DOTALL)


def reference_letter(answer: str | None) -> str | None:
    """The option letter a reference answer is (`C`, `(C)`, `C.`), or None."""
    match = _REFERENCE.fullmatch((answer or "").strip())
    return match.group(1) if match else None


def option_letters(prompt: str) -> set[str]:
    """The letters the prompt lists as options: `(A) ...` anywhere, or `A. ...` / `A) ...` at a line start."""
    letters = {first or second for first, second in _OPTION_LINE.findall(prompt)}
    return letters | set(_OPTION_INLINE.findall(prompt))


def is_multiple_choice(query: Query) -> bool:
    """A reference that is a single option letter, and a prompt listing options A, B and that letter."""
    letter = reference_letter(query.reference.answer)
    if letter is None:
        return False
    listed = option_letters(query.prompt)
    return {"A", "B", letter} <= listed


def chosen_letters(answer_part: str) -> list[str]:
    """Every letter the answer part names as its answer, in order (one per statement, two for "(C) or (D)")."""
    named: list[tuple[int, str]] = []
    for match in _BOX.finditer(answer_part):
        inner = _MARKUP.sub(r"\1", match.group(1)).strip()
        whole = re.fullmatch(rf"\(?({_LETTER})\)?(?:[.:)\s].*)?", inner, re.DOTALL)
        if whole:
            named.append((match.start(), whole.group(1)))
    plain = _MARKUP.sub(r"\1", answer_part)
    for match in _STATEMENT.finditer(plain):
        named.extend((match.start(), letter) for letter in match.groups() if letter)
    stated = {position for position, _ in named}
    named.extend((match.start(), match.group(1)) for match in _NAMED_THEN_LETTER.finditer(plain) if match.start() not in stated)
    if not named:
        bare = _MARKUP.sub(r"\1", answer_part).strip()
        whole = _WHOLE.fullmatch(bare) if len(bare) <= 300 else None
        if whole and (len(bare) == len(whole.group(1)) or bare[0] == "(" or bare[1] in ".:)"):
            named.append((0, whole.group(1)))
    return [letter for _, letter in sorted(named)]


class ChoiceVerifier:
    """Scores 1.0 when the response chooses exactly the reference letter, else 0.0."""

    name = NAME

    @classmethod
    def from_config(cls, config: VerifyConfig, judge: ChatModel | None = None) -> Self:
        """Built by the verifier registry from a step's `verify:` settings."""
        return cls(config.threshold)

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def verify_batch(self, pairs: list[tuple[Query, str]]) -> list[Verdict]:
        return [self.verify(query, response) for query, response in pairs]

    def verify(self, query: Query, response: str) -> Verdict:
        reference = reference_letter(query.reference.answer)
        if reference is None:
            return Verdict.failed(self.name, "reference answer is not an option letter", reference=query.reference.answer)
        parsed = parse_response(response)
        letters = chosen_letters(parsed.answer)
        if not letters:
            return Verdict.unanswered(self.name, "no option letter found", reference=reference, structure=parsed.problem)
        if len(set(letters)) > 1:
            return Verdict.failed(self.name, f"names several letters: {', '.join(sorted(set(letters)))}", reference=reference)
        score = 1.0 if letters[0] == reference else 0.0
        details = {"chosen": letters[0], "reference": reference, "structure": parsed.problem}
        return Verdict(score=score, passed=score >= self.threshold, verifier=self.name, details=details)

    def close(self) -> None:
        """Nothing to release."""
