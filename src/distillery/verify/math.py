"""Math (and any gold-answer category): Math-Verify in worker processes, one verdict per item whatever happens.

Final-answer policy. The answer is read from the answer part of the response only: the `<answer>...</answer>`
block, or the text after `</think>` (a whole untagged response is its own answer part; a `<think>` that never
closes has none). Nothing inside `<think>` ever counts, not even a `\\boxed{}`. Within the answer part the
sources of `MathSettings.fallbacks` are tried in order, by default: the last `\\boxed{}`, then the last
"the (final) answer is X", then the whole `<answer>` block, then a concluding last sentence. One answer is
compared, never any of several; its source is in the verdict's details (`answer_source`), and a response with
none is a verdict with `no_answer` set (eval counts those apart, and reads only boxes unless told otherwise).

Before Math-Verify sees them, both answers go through `math_forms.normalise_forms` (column vectors as tuples,
e-notation, digit separators, repeating decimals, number words, spellings of the imaginary unit), and an
inequality in one variable is compared with an interval as the set it describes. Two rules are stricter than
Math-Verify: answers naming different units (`5 m` for `5 cm`) are different answers, and a bare decimal
for an exact gold that is not itself a decimal (`0.3333` for `\\frac{1}{3}`) must equal it exactly, or when
the question asks for a decimal or rounding, to the places the decimal gives (`0.1429` for 1/7). Everything, normalising included, runs in the worker pool under
its timeouts.

Gold answers as MATH-500 stores them are bare LaTeX; Math-Verify's `parse` on a bare string can keep a
fragment (`3\\sqrt{2}` -> 3) or nothing (sets, intervals, `\\dfrac`). Wrapped in `\\boxed{}` the whole
expression is parsed, so a bare gold is boxed first, and a gold that still parses to nothing is a verdict
saying so rather than a silent wrong comparison.
"""

from __future__ import annotations

import logging
import re
from itertools import product
from typing import Any

from distillery.schema.records import Query
from distillery.schema.responses import AnswerSource, find_final_answer, parse_response
from distillery.verify.config import MathSettings
from distillery.verify.math_forms import (asks_for_approximation, decimal_literal, looks_like_digit, normalise_forms,
                                          units, word_answer)
from distillery.verify.pool import WorkerPool
from distillery.verify.verdict import SettingsVerifier, Verdict

logger = logging.getLogger(__name__)

NAME = "math_verify"
NO_ANSWER = "no final answer found"


def gold_text(answer: str) -> str:
    """The gold answer in a form Math-Verify parses whole: boxed unless it already has delimiters."""
    stripped = answer.strip()
    if "\\boxed" in stripped or stripped.startswith(("$", "\\(")):
        return stripped
    return f"\\boxed{{{stripped}}}"


def as_math(text: str) -> str:
    """A bare answer in `$...$` so Math-Verify reads it as LaTeX; prose ("42 square units") and delimited text stay."""
    if "$" in text or "\\(" in text or "\\[" in text:
        return text
    if re.search(r"(?<![\\A-Za-z])[A-Za-z]{3,}", re.sub(r"\\(?:text|mbox|mathrm)\s*\{[^{}]*\}", "", text)):
        return text
    return f"${text}$"


def _relations(value: Any) -> list[Any] | None:
    """The inequalities of an answer in one variable ("x < 2 or x > 3", which Math-Verify reads as a FiniteSet
    of two relations, gives two), or None when it is no such answer."""
    from sympy import FiniteSet
    from sympy.core.relational import Relational
    from sympy.logic.boolalg import And, Or

    relations = list(value.args) if isinstance(value, FiniteSet) else [value]
    if not relations or not all(isinstance(item, (Relational, And, Or)) for item in relations):
        return None
    if len(set().union(*(item.free_symbols for item in relations))) != 1:
        return None
    return relations


def _set_equal(gold: Any, prediction: Any, float_rounding: int, timeout_s: int) -> bool:
    """An interval against the inequality it describes (either way round); False for any other pair.

    The set is only solved for (sympy's `as_set`, slow) when the other side is a set that is no inequality.
    """
    from math_verify import verify
    from sympy import Set, Union

    gold_relations, prediction_relations = _relations(gold), _relations(prediction)
    if gold_relations is not None and prediction_relations is None and isinstance(prediction, Set):
        relations, other = gold_relations, prediction
    elif prediction_relations is not None and gold_relations is None and isinstance(gold, Set):
        relations, other = prediction_relations, gold
    else:
        return False
    described = Union(*(item.as_set() for item in relations))
    return bool(verify(other, described, float_rounding=float_rounding, timeout_seconds=timeout_s, raise_on_error=True))


def _decimal_matches(parsed_gold: list[Any], literal: str, rounded: bool) -> bool | None:
    """Whether a decimal equals a numeric gold exactly or, when `rounded`, to the places it gives (`0.1429` for
    1/7); None when the gold is no plain number."""
    from sympy import Expr, Rational, simplify

    for candidate in parsed_gold:
        if isinstance(candidate, Expr) and candidate.is_number:
            if not rounded:
                return bool(simplify(candidate - Rational(literal)) == 0)
            places = len(literal.split(".")[1])
            return bool(abs(candidate.evalf(places + 10) - Rational(literal)) <= Rational(1, 2 * 10**places) * (1 + Rational(1, 10**9)))
    return None


def check_pair(payload: tuple[str, str, bool, int, int, bool]) -> dict[str, Any]:
    """Worker function: normalise, parse and compare gold and prediction (Math-Verify timeouts need a main thread).

    Each (gold, prediction) candidate pair is compared on its own so that a timeout is reported as one
    instead of being folded into "not equal".
    """
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    gold_raw, prediction_raw, boxed, timeout_s, float_rounding, rounded_decimals = payload
    gold_form, prediction = normalise_forms(gold_raw), normalise_forms(prediction_raw)
    if looks_like_digit(prediction_raw) and not looks_like_digit(gold_raw):
        return {"correct": False, "gold": gold_raw, "prediction": prediction_raw, "reason": "a letter that looks like a digit"}
    words = word_answer(gold_form)
    if words is not None and words == word_answer(prediction):
        return {"correct": True, "gold": words, "prediction": words}
    gold = gold_text(gold_form)
    prediction = f"\\boxed{{{prediction}}}" if boxed else as_math(prediction)
    parsed_gold = parse(gold, parsing_timeout=timeout_s)
    if not parsed_gold:
        return {"error": "gold answer could not be parsed", "gold": gold}
    parsed_prediction = parse(prediction, parsing_timeout=timeout_s)
    result: dict[str, Any] = {"correct": False, "gold": str(parsed_gold[-1]), "prediction": None}
    if not parsed_prediction:
        return result
    result["prediction"] = str(parsed_prediction[-1])
    gold_units, predicted_units = units(gold_raw), units(prediction_raw)
    if gold_units and predicted_units and gold_units != predicted_units:
        result["reason"] = f"different units: {sorted(predicted_units)} for {sorted(gold_units)}"
        return result
    literal = decimal_literal(prediction)
    if literal is not None and not re.search(r"\d?\.\d", gold_raw):
        matches = _decimal_matches(parsed_gold, literal, rounded_decimals)
        if matches is not None:
            result["correct"] = matches
            if not matches:
                result["reason"] = "a decimal that is not the gold " + ("to its places" if rounded_decimals else "exactly")
            return result
    for gold_candidate, candidate in product(parsed_gold, parsed_prediction):
        try:
            if verify(gold_candidate, candidate, float_rounding=float_rounding, timeout_seconds=timeout_s, raise_on_error=True) \
                    or _set_equal(gold_candidate, candidate, float_rounding, timeout_s):
                result["correct"] = True
                return result
        except TimeoutException:
            result["timed_out"] = True
        except Exception as error:  # noqa: BLE001 - sympy raises almost anything on odd input; that candidate is not equal
            result["compare_error"] = f"{type(error).__name__}: {error}"[:200]
    return result


def prediction_text(response: str, settings: MathSettings) -> tuple[str, AnswerSource] | None:
    """The final answer to compare and its source (a \\boxed{} answer is boxed again, like the gold)."""
    found = find_final_answer(response, settings.fallbacks)
    return (found[1], found[0]) if found else None


class MathVerifier(SettingsVerifier[MathSettings]):
    """Scores 1.0 when the final answer is equivalent to `Reference.answer`, else 0.0."""

    name = NAME
    section = "math"

    def __init__(self, settings: MathSettings, threshold: float) -> None:
        super().__init__(settings, threshold)
        self._pool: WorkerPool | None = None

    @property
    def pool(self) -> WorkerPool:
        if self._pool is None:
            self._pool = WorkerPool(f"{__name__}:check_pair", self.settings.workers, self.settings.hard_timeout_s)
        return self._pool

    def verify_batch(self, pairs: list[tuple[Query, str]]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(pairs)
        payloads, slots, sources = [], [], []
        for slot, (query, response) in enumerate(pairs):
            if not query.reference.answer:
                verdicts[slot] = Verdict.failed(self.name, "query has no reference answer")
                continue
            prediction = prediction_text(response, self.settings)
            if prediction is None:
                verdicts[slot] = Verdict.unanswered(self.name, NO_ANSWER, structure=parse_response(response).problem)
                continue
            text, source = prediction
            rounded = not self.settings.exact_decimals or asks_for_approximation(query.prompt)
            payloads.append((query.reference.answer, text, source == "boxed", self.settings.timeout_s,
                             self.settings.float_rounding, rounded))
            slots.append(slot)
            sources.append(source)
        for slot, source, result in zip(slots, sources, self.pool.map(payloads) if payloads else []):
            if not result.ok:
                verdicts[slot] = Verdict.failed(self.name, result.error)
            elif "error" in result.value:
                logger.warning("query %s: %s: %r", pairs[slot][0].id, result.value["error"], result.value["gold"])
                verdicts[slot] = Verdict.failed(self.name, result.value["error"], gold=result.value["gold"])
            else:
                score = 1.0 if result.value["correct"] else 0.0
                details = {key: value for key, value in result.value.items() if key != "correct"}
                details["answer_source"] = source
                verdicts[slot] = Verdict(score=score, passed=score >= self.threshold, verifier=self.name, details=details)
        return [verdict for verdict in verdicts if verdict is not None]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
