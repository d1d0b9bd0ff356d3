"""Instruction following: IFEval's verifiable-instruction checks, strict and loose; score = fraction followed.

Written here because the maintained packages (if-verifiable, lm-eval's ifeval) need NLTK's punkt data,
which is downloaded at run time and cannot be on these machines. The checks follow IFEval's published
definitions (google-research `instruction_following_eval/instructions.py`). Two need NLTK there and follow
its rules here: sentences are counted by punkt's decisions (`split_sentences`), and capital words are
counted over word tokens that keep a hyphenated word (and a dotted acronym) whole, as `word_tokenize` does.
Language detection uses `langdetect` (profiles ship with it).

An instruction id this module does not know, or kwargs its check does not take, costs that instruction only
(it counts as not followed and the verdict's details say why); the query's other instructions are scored.
"""

from __future__ import annotations

import collections
import itertools
import json
import re
from collections.abc import Callable
from functools import cache
from typing import Any

from distillery.schema.records import Query
from distillery.schema.responses import parse_response
from distillery.verify.config import IFEvalSettings
from distillery.verify.verdict import SettingsVerifier, Verdict

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


_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "inc", "ltd", "co", "corp", "no",
    "vol", "fig", "u.s", "u.k", "jan", "feb", "mar", "apr", "aug", "sept", "oct", "nov", "dec", "gen", "gov", "sen",
    "rep", "capt", "lt", "col", "ft", "mt", "approx", "dept", "est", "a.m", "p.m",
}
_COMMON_STARTERS = frozenset((
    "a", "an", "the", "this", "that", "these", "those", "it", "its", "he", "she", "they", "we", "you", "there",
    "then", "but", "and", "or", "so", "yet", "however", "if", "when", "while", "as", "after", "before", "because",
    "although", "though", "since", "once", "my", "our", "your", "his", "her", "their", "what", "why", "how", "who",
    "which", "where", "no", "yes", "not", "all", "some", "each", "every", "one", "two", "first", "second", "next",
    "finally", "also", "in", "on", "at", "for", "to", "of", "with", "by", "from", "here", "now", "today", "thus",
    "therefore", "instead", "still", "many", "most", "more", "other", "such", "both", "either", "neither", "only",
    "even", "just", "let", "please", "do", "does", "did", "is", "are", "was", "were", "be", "can", "could", "will",
    "would", "should", "may", "might", "must", "have", "has", "had"
))
"""Words a capitalised token after an initial or a number most likely starts a sentence with (punkt's
orthographic evidence, learnt from a corpus, says the same of such frequent words)."""
_CLOSERS = "\"')]}*_”’»"
_TOKEN = re.compile(r"\S+")
_OWN_TOKEN = "(\"`{[:;&#*@)}]-,"
"""Characters a punkt word cannot start with: each is a token of its own, neither upper nor lower case."""
_INNER_END = re.compile(r"[.!?][\"')\]}*]+(?=[^\s\"')\]}*_”’»])")
"""An end inside a token: punkt breaks after `.` before a quote or bracket when more text follows unspaced
(`."` then `,` in JSON-like text); its realignment moves the quote back only when whitespace follows it."""
_TRAILING_STAR = re.compile(r"(?<=[.!?])\*+$")
"""`*` right after the text's last period: punkt ends the sentence before it and never realigns a `*`, so it
is a sentence of its own (`It is *done.*` is two)."""


def _breaks_after(token: str, following: str) -> bool:
    """Whether punkt ends a sentence after `token` when `following` is the next token.

    `?` and `!` always end one, and a period after an ordinary word does whatever comes next. After an
    abbreviation or an ellipsis only a frequent word written capitalised starts a sentence; after an initial
    likewise (`J. R. Tolkien` is one sentence, `Plan B. Then` two); after a number anything but a
    lowercase word does.
    """
    core = token.rstrip(_CLOSERS)
    if not core or core[-1] not in ".!?":
        return False
    if core[-1] in "!?":
        return True
    next_word = following.lstrip(_CLOSERS + "(\"'“‘")
    starts_common = bool(next_word[:1].isupper()) and next_word.rstrip(".,;:!?").lower() in _COMMON_STARTERS
    stem = core.rstrip(".").lstrip(_CLOSERS + "(\"'“‘").lower()
    if core.endswith("..") or stem in _ABBREVIATIONS:
        return starts_common
    initial, number = bool(re.fullmatch(r"[^\W\d_]", stem)), bool(re.fullmatch(r"\d+", stem))
    if (initial or number) and following[:1] in _OWN_TOKEN:
        return following[:1] not in ";:,"  # punctuation never starts a sentence; a `*` or `(` is unknown: a break
    if initial:
        return starts_common
    if number:
        return not next_word[:1].islower()
    return True


def split_sentences(text: str) -> list[str]:
    """Sentences as punkt splits them: after `.`, `?` or `!` (closing quotes, brackets and markdown `*` may
    follow, as in `.**` or `.”`), before whitespace, unless `_breaks_after` says otherwise. A letterless
    piece such as a list number `1.` that ends a sentence is a sentence, as punkt counts it, and so is a `*`
    after the last period; a quote closed after a period and followed unspaced by more text (`."` `,`) ends one."""
    tokens = list(_TOKEN.finditer(text))
    sentences, start = [], 0
    for current, following in itertools.pairwise(tokens):
        inner = _INNER_END.search(current.group(0))
        if inner and _breaks_after(current.group(0)[:inner.start() + 1], current.group(0)[inner.start() + 1:]):
            sentences.append(text[start:current.start() + inner.start() + 1].strip())
            start = current.start() + inner.start() + 1
        if _breaks_after(current.group(0), following.group(0)):
            sentences.append(text[start:current.end()].strip())
            start = following.start()
    rest = text[start:].strip()
    trailing = _TRAILING_STAR.search(rest)
    if trailing and trailing.start() > 0:
        sentences += [rest[:trailing.start()], rest[trailing.start():]]
    elif rest:
        sentences.append(rest)
    return sentences


def _no_comma(response: str) -> bool:
    return "," not in response


_WORD_TOKEN = re.compile(r"\w+(?:[-.]\w+)*")
"""Word tokens as `nltk.word_tokenize` counts capitals over them: `STATE-OF-THE-ART` and `U.S.A` are one word;
a contraction is two (`DON'T` -> `DON`, `T`, like its `DO`, `N'T`)."""


def _capital_word_frequency(response: str, capital_frequency: int, capital_relation: str) -> bool:
    words = _WORD_TOKEN.findall(response)
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
    """Whether `response` follows one instruction; loose mode accepts any loose variant that does.

    Raises KeyError for an unknown id, TypeError or ValueError for kwargs the check does not take.
    """
    check = CHECKS[instruction_id]
    arguments = {key: value for key, value in kwargs.items() if value is not None}
    candidates = [response] if mode == "strict" else loose_variants(response)
    return any(candidate.strip() and check(candidate, **arguments) for candidate in candidates)


def _followed(item: dict[str, Any], answer: str, mode: str) -> tuple[bool, str]:
    """One instruction's result and, when it could not be checked, why."""
    instruction_id = str(item.get("id"))
    if instruction_id not in CHECKS:
        return False, "unknown instruction id"
    kwargs = item.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        return False, f"kwargs must be a mapping, got {type(kwargs).__name__}"
    try:
        return check_instruction(instruction_id, kwargs, answer, mode), ""
    except (TypeError, ValueError) as error:
        return False, f"bad kwargs {sorted(kwargs)}: {error}"


class IFEvalVerifier(SettingsVerifier[IFEvalSettings]):
    """Score = fraction of `Reference.instructions` the answer part of the response follows."""

    name = NAME
    section = "ifeval"

    def verify_batch(self, pairs: list[tuple[Query, str]]) -> list[Verdict]:
        return [self.verify(query, response) for query, response in pairs]

    def verify(self, query: Query, response: str) -> Verdict:
        instructions = query.reference.instructions
        if not instructions:
            return Verdict.failed(self.name, "query has no instructions")
        parsed = parse_response(response)
        results = [_followed(item, parsed.answer, self.settings.mode) for item in instructions]
        followed = [result for result, _ in results]
        score = sum(followed) / len(followed)
        details: dict[str, Any] = {
            "mode": self.settings.mode,
            "followed": dict(zip([str(item.get("id")) for item in instructions], followed)),
            "structure": parsed.problem,
        }
        unchecked = {str(item.get("id")): why for item, (_, why) in zip(instructions, results) if why}
        if unchecked:
            details["unchecked"] = unchecked
            details["reason"] = "; ".join(f"{instruction_id}: {why}" for instruction_id, why in unchecked.items())
        return Verdict(score=score, passed=score >= self.threshold, verifier=self.name, details=details)

    def close(self) -> None:
        """Nothing to release."""
