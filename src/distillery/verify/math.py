"""Math (and any gold-answer category): Math-Verify in worker processes, one verdict per item whatever happens.

Gold answers as MATH-500 stores them are bare LaTeX; Math-Verify's `parse` on a bare string can keep a
fragment (`3\\sqrt{2}` -> 3) or nothing (sets, intervals, `\\dfrac`). Wrapped in `\\boxed{}` the whole
expression is parsed, so a bare gold is boxed first, and a gold that still parses to nothing is a verdict
saying so rather than a silent wrong comparison.
"""

from __future__ import annotations

import logging
from itertools import product
from typing import Any

from distillery.core.records import Query
from distillery.core.responses import extract_final_answer, last_boxed, parse_response
from distillery.verify.config import MathSettings
from distillery.verify.pool import WorkerPool
from distillery.verify.verdict import Verdict

logger = logging.getLogger(__name__)

NAME = "math_verify"


def gold_text(answer: str) -> str:
    """The gold answer in a form Math-Verify parses whole: boxed unless it already has delimiters."""
    stripped = answer.strip()
    if "\\boxed" in stripped or stripped.startswith(("$", "\\(")):
        return stripped
    return f"\\boxed{{{stripped}}}"


def check_pair(payload: tuple[str, str, int, int]) -> dict[str, Any]:
    """Worker function: parse gold and prediction and compare them (Math-Verify timeouts need a main thread).

    Each (gold, prediction) candidate pair is compared on its own so that a timeout is reported as one
    instead of being folded into "not equal".
    """
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    gold, prediction, timeout_s, float_rounding = payload
    parsed_gold = parse(gold, parsing_timeout=timeout_s)
    if not parsed_gold:
        return {"error": "gold answer could not be parsed", "gold": gold}
    parsed_prediction = parse(prediction, parsing_timeout=timeout_s)
    result: dict[str, Any] = {"correct": False, "gold": str(parsed_gold[-1]), "prediction": None}
    if not parsed_prediction:
        return result
    result["prediction"] = str(parsed_prediction[-1])
    for gold_candidate, candidate in product(parsed_gold, parsed_prediction):
        try:
            if verify(gold_candidate, candidate, float_rounding=float_rounding, timeout_seconds=timeout_s, raise_on_error=True):
                result["correct"] = True
                return result
        except TimeoutException:
            result["timed_out"] = True
        except Exception as error:  # noqa: BLE001 - sympy raises almost anything on odd input; that candidate is not equal
            result["compare_error"] = f"{type(error).__name__}: {error}"[:200]
    return result


def prediction_text(response: str, settings: MathSettings) -> str | None:
    """The final answer to compare, boxed when it came from a \\boxed{} so it parses like the gold."""
    answer_part = parse_response(response).answer
    boxed = last_boxed(answer_part) if "boxed" in settings.fallbacks else None
    if boxed is not None:
        return f"\\boxed{{{boxed}}}"
    found = extract_final_answer(response, [source for source in settings.fallbacks if source != "boxed"])
    return f"${found}$" if found is not None and "$" not in found else found


class MathVerifier:
    """Scores 1.0 when the final answer is equivalent to `Reference.answer`, else 0.0."""

    name = NAME

    def __init__(self, settings: MathSettings, threshold: float) -> None:
        self.settings = settings
        self.threshold = threshold
        self._pool: WorkerPool | None = None

    @property
    def pool(self) -> WorkerPool:
        if self._pool is None:
            self._pool = WorkerPool(f"{__name__}:check_pair", self.settings.workers, self.settings.hard_timeout_s)
        return self._pool

    def verify_batch(self, pairs: list[tuple[Query, str]]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(pairs)
        payloads, slots = [], []
        for slot, (query, response) in enumerate(pairs):
            if not query.reference.answer:
                verdicts[slot] = Verdict.failed(self.name, "query has no reference answer")
                continue
            prediction = prediction_text(response, self.settings)
            if prediction is None:
                verdicts[slot] = Verdict.failed(self.name, "no final answer found", structure=parse_response(response).problem)
                continue
            payloads.append((gold_text(query.reference.answer), prediction, self.settings.timeout_s, self.settings.float_rounding))
            slots.append(slot)
        for slot, result in zip(slots, self.pool.map(payloads) if payloads else []):
            if not result.ok:
                verdicts[slot] = Verdict.failed(self.name, result.error)
            elif "error" in result.value:
                logger.warning("query %s: %s: %r", pairs[slot][0].id, result.value["error"], result.value["gold"])
                verdicts[slot] = Verdict.failed(self.name, result.value["error"], gold=result.value["gold"])
            else:
                score = 1.0 if result.value["correct"] else 0.0
                details = {key: value for key, value in result.value.items() if key != "correct"}
                verdicts[slot] = Verdict(score=score, passed=score >= self.threshold, verifier=self.name, details=details)
        return [verdict for verdict in verdicts if verdict is not None]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
