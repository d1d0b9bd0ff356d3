"""Instruction following: IFEval's verifiable-instruction checks, strict and loose; score = fraction followed.

Written here because the maintained packages (if-verifiable, lm-eval's ifeval) need NLTK's punkt data,
which is downloaded at run time and cannot be on these machines. The checks follow IFEval's published
definitions (google-research `instruction_following_eval/instructions.py`); two differ in tokenisation:
sentences are split by a rule-based splitter instead of punkt, and capital words are counted over regex
word tokens instead of NLTK's word_tokenize. Language detection uses `langdetect` (profiles ship with it).
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Callable
from functools import cache
from typing import Any

from distillery.core.records import Query
from distillery.core.responses import parse_response
from distillery.verify.config import IFEvalSettings
from distillery.verify.verdict import Verdict

NAME = "ifeval"

Check = Callable[..., bool]


@cache
def _langdetect() -> Any:
    import langdetect

    langdetect.DetectorFactory.seed = 0
    return langdetect


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the text's language, or None when it has no detectable features."""
    langdetect = _langdetect()
    try:
        return langdetect.detect(text)
    except langdetect.LangDetectException:
        return None


def _compare(actual: int, relation: str, expected: int) -> bool:
    if relation == "less than":
        return actual < expected
    if relation == "at least":
        return actual >= expected
    raise ValueError(f"relation must be 'less than' or 'at least', got {relation!r}")


_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "inc", "ltd", "co", "no", "vol", "fig", "u.s"}
_BOUNDARY = re.compile(r"[.!?]+[\"')\]]*\s+")


def split_sentences(text: str) -> list[str]:
    """Rule-based sentence split after . ! ? and whitespace, except after common abbreviations and initials.

    Pieces without a letter (a list number "3.") are not sentences.
    """
    pieces, start = [], 0
    for match in _BOUNDARY.finditer(text):
        last_word = text[start:match.start()].split()[-1:] or [""]
        stem = last_word[0].lower().rstrip(".")
        if match.group(0).startswith(".") and (stem in _ABBREVIATIONS or re.fullmatch(r"[a-z]", stem)):
            continue
        pieces.append(text[start:match.end()])
        start = match.end()
    pieces.append(text[start:])
    return [piece.strip() for piece in pieces if re.search(r"[^\W\d_]", piece)]


def _no_comma(response: str) -> bool:
    return "," not in response


def _capital_word_frequency(response: str, capital_frequency: int, capital_relation: str) -> bool:
    words = re.findall(r"\w+", response)
    return _compare(sum(word.isupper() for word in words), capital_relation, capital_frequency)


def _english_capital(response: str) -> bool:
    return response.isupper() and detect_language(response) == "en"


def _english_lowercase(response: str) -> bool:
    return response.islower() and detect_language(response) == "en"


def _repeat_prompt(response: str, prompt_to_repeat: str) -> bool:
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())


def _two_responses(response: str) -> bool:
    parts = response.split("******")
    valid = []
    for index, part in enumerate(parts):
        if part.strip():
            valid.append(part)
        elif index not in (0, len(parts) - 1):
            return False
    return len(valid) == 2 and valid[0].strip() != valid[1].strip()


def _number_placeholders(response: str, num_placeholders: int) -> bool:
    return len(re.findall(r"\[.*?\]", response)) >= num_placeholders


def _postscript(response: str, postscript_marker: str) -> bool:
    marker = postscript_marker.strip()
    if marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(marker.lower()) + r".*$"
    return bool(re.findall(pattern, response.lower(), flags=re.MULTILINE))


def _constrained_response(response: str) -> bool:
    return any(option in response.strip() for option in ("My answer is yes.", "My answer is no.", "My answer is maybe."))


def _json_format(response: str) -> bool:
    text = response.strip()
    for prefix in ("```json", "```Json", "```JSON", "```"):
        text = text.removeprefix(prefix)
    text = text.removesuffix("```").strip()
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _multiple_sections(response: str, num_sections: int, section_spliter: str) -> bool:
    sections = re.split(r"\s?" + re.escape(section_spliter) + r"\s?\d+\s?", response)
    return len(sections) - 1 >= num_sections


def _number_bullet_lists(response: str, num_bullets: int) -> bool:
    stars = re.findall(r"^\s*\*[^\*].*$", response, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", response, flags=re.MULTILINE)
    return len(stars) + len(dashes) == num_bullets


def _number_highlighted_sections(response: str, num_highlights: int) -> bool:
    single = re.findall(r"\*[^\n\*]*\*", response)
    double = re.findall(r"\*\*[^\n\*]*\*\*", response)
    found = sum(bool(h.strip("*").strip()) for h in single) + sum(bool(h.removeprefix("**").removesuffix("**").strip()) for h in double)
    return found >= num_highlights


def _title(response: str) -> bool:
    return any(title.lstrip("<").rstrip(">").strip() for title in re.findall(r"<<[^\n]+>>", response))


def _existence(response: str, keywords: list[str]) -> bool:
    return all(re.search(re.escape(keyword), response, flags=re.IGNORECASE) for keyword in keywords)


def _forbidden_words(response: str, forbidden_words: list[str]) -> bool:
    return not any(re.search(r"\b" + re.escape(word) + r"\b", response, flags=re.IGNORECASE) for word in forbidden_words)


def _frequency(response: str, keyword: str, frequency: int, relation: str) -> bool:
    return _compare(len(re.findall(re.escape(keyword), response, flags=re.IGNORECASE)), relation, frequency)


def _letter_frequency(response: str, letter: str, let_frequency: int, let_relation: str) -> bool:
    return _compare(collections.Counter(response.lower())[letter.lower()], let_relation, let_frequency)


def _response_language(response: str, language: str) -> bool:
    detected = detect_language(response)
    return detected is None or detected == language


def _nth_paragraph_first_word(response: str, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    paragraphs = re.split(r"\n\n", response)
    count = sum(bool(paragraph.strip()) for paragraph in paragraphs)
    if nth_paragraph > count:
        return False
    paragraph = paragraphs[nth_paragraph - 1].strip()
    if not paragraph:
        return False
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    found = re.match(r"[^.,?!'\"]*", word).group(0).lower()
    return count == num_paragraphs and found == first_word.lower()


def _number_paragraphs(response: str, num_paragraphs: int) -> bool:
    paragraphs = re.split(r"\s?\*\*\*\s?", response)
    count = len(paragraphs)
    for index, paragraph in enumerate(paragraphs):
        if not paragraph.strip():
            if index in (0, len(paragraphs) - 1):
                count -= 1
            else:
                return False
    return count == num_paragraphs


def _number_sentences(response: str, num_sentences: int, relation: str) -> bool:
    return _compare(len(split_sentences(response)), relation, num_sentences)


def _number_words(response: str, num_words: int, relation: str) -> bool:
    return _compare(len(re.findall(r"\w+", response)), relation, num_words)


def _end_checker(response: str, end_phrase: str) -> bool:
    return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def _quotation(response: str) -> bool:
    text = response.strip()
    return len(text) > 1 and text[0] == '"' and text[-1] == '"'


CHECKS: dict[str, Check] = {
    "change_case:capital_word_frequency": _capital_word_frequency,
    "change_case:english_capital": _english_capital,
    "change_case:english_lowercase": _english_lowercase,
    "combination:repeat_prompt": _repeat_prompt,
    "combination:two_responses": _two_responses,
    "detectable_content:number_placeholders": _number_placeholders,
    "detectable_content:postscript": _postscript,
    "detectable_format:constrained_response": _constrained_response,
    "detectable_format:json_format": _json_format,
    "detectable_format:multiple_sections": _multiple_sections,
    "detectable_format:number_bullet_lists": _number_bullet_lists,
    "detectable_format:number_highlighted_sections": _number_highlighted_sections,
    "detectable_format:title": _title,
    "keywords:existence": _existence,
    "keywords:forbidden_words": _forbidden_words,
    "keywords:frequency": _frequency,
    "keywords:letter_frequency": _letter_frequency,
    "language:response_language": _response_language,
    "length_constraints:nth_paragraph_first_word": _nth_paragraph_first_word,
    "length_constraints:number_paragraphs": _number_paragraphs,
    "length_constraints:number_sentences": _number_sentences,
    "length_constraints:number_words": _number_words,
    "punctuation:no_comma": _no_comma,
    "startend:end_checker": _end_checker,
    "startend:quotation": _quotation,
}


def loose_variants(response: str) -> list[str]:
    """IFEval's loose mode: the response, without its first line, last line or both, each also without '*'."""
    lines = response.split("\n")
    bases = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return [variant for base in bases for variant in (base, base.replace("*", ""))]


def check_instruction(instruction_id: str, kwargs: dict[str, Any], response: str, mode: str = "strict") -> bool:
    """Whether `response` follows one instruction; loose mode accepts any loose variant that does."""
    check = CHECKS[instruction_id]
    arguments = {key: value for key, value in kwargs.items() if value is not None}
    candidates = [response] if mode == "strict" else loose_variants(response)
    return any(candidate.strip() and check(candidate, **arguments) for candidate in candidates)


class IFEvalVerifier:
    """Score = fraction of `Reference.instructions` the answer part of the response follows."""

    name = NAME

    def __init__(self, settings: IFEvalSettings, threshold: float) -> None:
        self.settings = settings
        self.threshold = threshold

    def verify_batch(self, pairs: list[tuple[Query, str]]) -> list[Verdict]:
        return [self.verify(query, response) for query, response in pairs]

    def verify(self, query: Query, response: str) -> Verdict:
        instructions = query.reference.instructions
        if not instructions:
            return Verdict.failed(self.name, "query has no instructions")
        unknown = sorted({str(item.get("id")) for item in instructions} - set(CHECKS))
        if unknown:
            return Verdict.failed(self.name, f"unknown instruction ids {unknown}")
        parsed = parse_response(response)
        answer = parsed.answer
        followed = [check_instruction(item["id"], item.get("kwargs") or {}, answer, self.settings.mode) for item in instructions]
        score = sum(followed) / len(followed)
        details = {
            "mode": self.settings.mode,
            "followed": dict(zip([item["id"] for item in instructions], followed)),
            "structure": parsed.problem,
        }
        return Verdict(score=score, passed=score >= self.threshold, verifier=self.name, details=details)

    def close(self) -> None:
        """Nothing to release."""
