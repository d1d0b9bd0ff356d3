"""Split a response into its `<think>` and `<answer>` parts, and pull out the final answer.

Broken structure (a truncated think block, two answer blocks) is reported in `problem`, never raised:
the caller turns it into a verdict. The final answer is only ever looked for in the answer part: a
`\\boxed{}` the model wrote while thinking never counts, whatever the answer part says.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

AnswerSource = Literal["boxed", "answer_tag", "answer_is", "last_sentence", "last_number", "last_line"]
DEFAULT_FALLBACKS: tuple[AnswerSource, ...] = ("boxed", "answer_is", "answer_tag", "last_sentence")
"""A box wins, then a "the answer is X" sentence, then the whole `<answer>` part (the pipeline's own format),
then a concluding last sentence ("Therefore, the total is 12.")."""

_TAG = re.compile(r"</?(think|answer)>")
_VERDICT_WORDS = r"(?:correct|incorrect|right|wrong|valid|invalid|consistent|reasonable|confirmed|verified|as follows|below|given by|the same|not)\b"
"""What follows "answer is" when a sentence judges an answer instead of stating one ("our answer is correct")."""
_ANSWER_IS = re.compile(
    r"(?:final answer|(?:the )?(?:correct |right )?answer)\**\s*(?:is|:)\s*:?\**\s*"
    rf"(?![\s:*]*{_VERDICT_WORDS}|\W*$)(.+?)\s*(?:\.\s*$|\.\s+|\n|$)", re.IGNORECASE
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z$\\])|\n+")
_CONCLUSION = re.compile(
    r"^\W*(?:therefore|thus|hence|so|in conclusion|in summary|finally|consequently|this means|which means|that means)\b"
    r".*(?:\b(?:is|are|equals|was|comes to|works out to)\b|=)\s*(?:exactly\s+|approximately\s+|about\s+)?"
    rf"(?!\s*{_VERDICT_WORDS})(?P<answer>[^=]+?)\s*[.!]?\s*$", re.IGNORECASE
)
CONCLUSION_CHARS = 400
"""Longest last sentence read as a conclusion (the pattern backtracks quadratically in its length)."""
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


@dataclass(frozen=True)
class ParsedResponse:
    think: str
    answer: str
    well_formed: bool
    problem: str = ""


@functools.lru_cache(maxsize=4096)
def parse_response(text: str) -> ParsedResponse:
    """`<think>T</think>` then an answer, either bare or as `<answer>A</answer>`; anything else is a problem.

    A response without tags is taken whole as the answer (not well formed). A think block that never
    closes (a truncated generation) has no answer. Cached: the verifier, the structure filter and the record's
    derived parts all ask about the same attempt, and it is parsed once.
    """
    counts = {tag: len(re.findall(rf"<{tag}>", text)) for tag in ("think", "/think", "answer", "/answer")}
    if counts["think"] > 1 or counts["/think"] > 1:
        return ParsedResponse("", text.strip(), False, "more than one <think> block")
    if counts["answer"] > 1 or counts["/answer"] > 1:
        return ParsedResponse("", text.strip(), False, "more than one <answer> block")
    think, rest, problems = "", text, []
    if counts["/think"]:
        before, rest = text.split("</think>", 1)
        if counts["think"] and "<think>" not in before:
            return ParsedResponse("", text.strip(), False, "</think> before <think>")
        think = before.split("<think>", 1)[1] if counts["think"] else before
        if not counts["think"]:
            problems.append("no <think> opening tag")
    elif counts["think"]:
        return ParsedResponse(text.split("<think>", 1)[1].strip(), "", False, "unterminated <think> block")
    else:
        problems.append("no <think> block")
    if "<answer>" in rest:
        outside, inside = rest.split("<answer>", 1)
        if "</answer>" in outside:
            problems.append("</answer> before <answer>")
        elif outside.strip():
            problems.append("text between </think> and <answer>")
        if "</answer>" in inside:
            inside, trailing = inside.split("</answer>", 1)
            if trailing.strip():
                problems.append("text after </answer>")
        else:
            problems.append("unterminated <answer> block")
        answer = inside
    elif "</answer>" in rest:
        answer = rest.split("</answer>", 1)[0]
        problems.append("</answer> without <answer>")
    else:
        answer = rest
        if counts["answer"] or counts["/answer"]:
            problems.append("answer tag inside the think block")
    answer = answer.strip()
    if not answer:
        problems.append("empty answer")
    return ParsedResponse(think.strip(), answer, not problems, "; ".join(problems))


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) with balanced braces, or None."""
    found = None
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for position in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[position], 0)
            if depth == 0:
                found = text[start:position]
                break
    return found.strip() if found is not None else None


def concluding_answer(answer_part: str) -> str | None:
    """X of a last sentence that concludes ("Thus, the total number of ways is 12.", "So x = 7."), else None."""
    sentences = [piece.strip() for piece in _SENTENCE_END.split(_TAG.sub("", answer_part)) if piece.strip()]
    if not sentences or len(sentences[-1]) > CONCLUSION_CHARS:
        return None
    match = _CONCLUSION.match(sentences[-1].strip("*_ "))
    if match is None:
        return None
    answer = match.group("answer").strip().strip("*_").strip()
    if answer.count("$") % 2:  # the sentence's `$...$` began before the `=` the answer follows
        answer = answer.strip("$").strip()
    return answer or None


def find_final_answer(text: str, fallbacks: Sequence[AnswerSource] = DEFAULT_FALLBACKS) -> tuple[AnswerSource, str] | None:
    """The final answer of a response and the source it came from: each source in `fallbacks` is tried in order.

    Sources: `boxed` (last \\boxed{}), `answer_is` ("the answer is X", not "our answer is correct"),
    `answer_tag` (the whole <answer> part, when the response has that tag), `last_sentence` (X in a last
    sentence that concludes: "Therefore, the area is 12."), `last_number`, `last_line`. All of them look only
    at the answer part of the response (`parse_response(text).answer`), so nothing inside <think> is ever read.
    """
    parsed = parse_response(text)
    answer_part = parsed.answer
    for source in fallbacks:
        found: str | None = None
        if source == "boxed":
            found = last_boxed(answer_part)
        elif source == "answer_tag":
            tagged = "<answer>" in text.rsplit("</think>", 1)[-1] and "more than one" not in parsed.problem
            found = answer_part if tagged else None
        elif source == "answer_is":
            matches = _ANSWER_IS.findall(answer_part)
            found = matches[-1].strip().strip("$").strip() if matches else None
        elif source == "last_sentence":
            found = concluding_answer(answer_part)
        elif source == "last_number":
            numbers = _NUMBER.findall(answer_part)
            found = numbers[-1].replace(",", "") if numbers else None
        elif source == "last_line":
            lines = [line.strip() for line in _TAG.sub("", answer_part).splitlines() if line.strip()]
            found = lines[-1] if lines else None
        if found:
            return source, found
    return None


def extract_final_answer(text: str, fallbacks: Sequence[AnswerSource] = DEFAULT_FALLBACKS) -> str | None:
    """The final answer of a response (see `find_final_answer`), or None."""
    found = find_final_answer(text, fallbacks)
    return found[1] if found else None
