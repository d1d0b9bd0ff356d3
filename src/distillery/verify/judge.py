"""LLM judge (science, general, chat without a reward model): a prompt asking any `ChatModel` for a score.

The judge's reply is free text from a possibly weak model, so the score is read defensively: the last
`Score: N` (or `N/10`, or `N out of 10`) wins, values are clipped to the scale, and a reply with no number is
a verdict saying so, not an exception.
"""

from __future__ import annotations

import hashlib
import re

from distillery.core.records import Query
from distillery.core.responses import parse_response
from distillery.llm.protocol import ChatModel, ModelSpec, Sampling
from distillery.models import EMBEDDED
from distillery.verify.config import JudgeSettings
from distillery.verify.verdict import Verdict

NAME = "llm_judge"

_NUMBER = r"(\d+(?:\.\d+)?)"
_SCORE_PATTERNS = (
    re.compile(rf"score\s*(?:is|of)?\s*[:=]?\s*\**\s*{_NUMBER}\s*(?:/\s*{_NUMBER}|out of\s*{_NUMBER})?", re.IGNORECASE),
    re.compile(rf"{_NUMBER}\s*(?:/|out of)\s*{_NUMBER}", re.IGNORECASE),
    re.compile(rf"(?<![\w.]){_NUMBER}(?![\w.])"),
)


def parse_judge_score(text: str, max_score: float) -> float | None:
    """The judge's score as a fraction in [0, 1], or None when the reply holds no usable number.

    A score written against another scale ("4/5") is rescaled by that scale.
    """
    for pattern in _SCORE_PATTERNS:
        matches = pattern.findall(text)
        for groups in reversed(matches):
            groups = (groups,) if isinstance(groups, str) else groups
            value = float(groups[0])
            scale = next((float(g) for g in groups[1:] if g), max_score)
            if scale > 0 and 0 <= value <= scale:
                return value / scale
    return None


class JudgeVerifier:
    """Asks the judge model to grade the answer part of each response against the reference answer."""

    name = NAME

    def __init__(self, settings: JudgeSettings, threshold: float, judge: ChatModel | None = None) -> None:
        self.settings = settings
        self.threshold = threshold
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
