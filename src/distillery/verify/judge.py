"""LLM judge (science, general, chat without a reward model): a prompt asking any `ChatModel` for a score.

The judge's reply is free text from a possibly weak model, so the score is read by a strict format only:
a line that is just the score (`Score: 7`, `**Score:** 7/10`, `7/10`), or a JSON object with a
`score` field (`{"score": 7}`). The last such score wins; a number anywhere else ("The answer is (D) 0.17
kJ/mol") is never taken for one. A value off the scale, or a reply without the format, is a verdict saying
so, not an exception.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Self

from distillery.schema.records import Query
from distillery.schema.responses import parse_response
from distillery.llm.protocol import ChatModel, ModelSpec, Sampling
from distillery.models import EMBEDDED
from distillery.verify.config import JudgeSettings, VerifyConfig
from distillery.verify.verdict import SettingsVerifier, Verdict

NAME = "llm_judge"

_NUMBER = r"(\d+(?:\.\d+)?)"
_LABEL = r"(?:final )?(?:score|rating|grade)[ \t*_]*[:=][ \t*_]*"
_SCALE = r"[ \t]*(?:/|out of)[ \t]*"
_SCORE_LINE = re.compile(
    rf"^[ \t>#*_-]*(?:{_LABEL}{_NUMBER}(?:{_SCALE}{_NUMBER})?|{_NUMBER}{_SCALE}{_NUMBER})[ \t*_.]*$",
    re.IGNORECASE | re.MULTILINE,
)
"""`Score: 7`, `Score: 7/10` or `7/10` alone on a line; a bare number is not a score (an echoed answer is one)."""
_JSON_OBJECT = re.compile(r"\{[^{}]*\}")


def _json_scores(text: str) -> list[tuple[int, float]]:
    scores = []
    for match in _JSON_OBJECT.finditer(text):
        try:
            value = json.loads(match.group(0))
        except ValueError:
            continue
        score = value.get("score") if isinstance(value, dict) else None
        if isinstance(score, (int, float)) and not isinstance(score, bool):
            scores.append((match.start(), float(score)))
    return scores


def parse_judge_score(text: str, max_score: float) -> float | None:
    """The judge's score as a fraction in [0, 1], or None when the reply states no score in the strict format.

    A score written against another scale ("4/5") is rescaled by that scale; a value off its scale is None.
    """
    found: list[tuple[int, float, float]] = [(position, value, max_score) for position, value in _json_scores(text)]
    for match in _SCORE_LINE.finditer(text):
        value, scale = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
        found.append((match.start(), float(value), float(scale) if scale else max_score))
    if not found:
        return None
    _, value, scale = max(found)
    return value / scale if scale > 0 and 0 <= value <= scale else None


class JudgeVerifier(SettingsVerifier[JudgeSettings]):
    """Asks the judge model to grade the answer part of each response against the reference answer."""

    name = NAME
    section = "judge"

    @classmethod
    def from_config(cls, config: VerifyConfig, judge: ChatModel | None = None) -> Self:
        """Built by the verifier registry from a step's `verify:` settings, with the run's judge model if any."""
        return cls(config.judge, config.threshold, judge)

    def __init__(self, settings: JudgeSettings, threshold: float, judge: ChatModel | None = None) -> None:
        super().__init__(settings, threshold)
        self._judge = judge
        self._owns_judge = judge is None

    @property
    def judge(self) -> ChatModel:
        if self._judge is None:
            from distillery.llm.build import build_chat_model

            spec = ModelSpec(name="judge", model=self.settings.model or EMBEDDED, backend="transformers")
            self._judge = build_chat_model(spec)
        return self._judge

    def prompt(self, query: Query, answer: str) -> str:
        answer = answer[-self.settings.max_answer_chars:]
        if query.reference.answer:
            return self.settings.template.format(question=query.prompt, reference=query.reference.answer, answer=answer)
        return self.settings.template_no_reference.format(question=query.prompt, answer=answer)

    def verify_batch(self, pairs: list[tuple[Query, str]]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(pairs)
        conversations, seeds, slots = [], [], []
        for slot, (query, response) in enumerate(pairs):
            answer = parse_response(response).answer
            if not answer:
                verdicts[slot] = Verdict.failed(self.name, "empty answer", structure=parse_response(response).problem)
                continue
            conversations.append([{"role": "user", "content": self.prompt(query, answer)}])
            seeds.append(int(hashlib.sha256(query.id.encode()).hexdigest()[:8], 16))
            slots.append(slot)
        if conversations:
            sampling = Sampling(temperature=self.settings.temperature, top_p=1.0, max_tokens=self.settings.max_tokens)
            for slot, completion in zip(slots, self.judge.chat(conversations, sampling, seeds)):
                score = parse_judge_score(completion.text, self.settings.max_score)
                details = {"judge": getattr(self.judge, "name", ""), "judge_output": completion.text[-500:]}
                if score is None:
                    verdicts[slot] = Verdict.failed(self.name, "judge reply has no score", **details)
                else:
                    verdicts[slot] = Verdict(score=score, passed=score >= self.threshold, verifier=self.name, details=details)
        return [verdict for verdict in verdicts if verdict is not None]

    def close(self) -> None:
        if self._owns_judge and self._judge is not None:
            self._judge.close()
            self._judge = None
