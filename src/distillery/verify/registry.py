"""`build_verifier`: one object that scores any query, dispatching by category to the configured verifier.

A multiple-choice query (a reference that is one option letter, options listed in the prompt; see
`choice.is_multiple_choice`) goes to the choice verifier whatever its category, unless
`route_multiple_choice` is off. Category verifiers are built on first use (a recipe with no code queries never starts a sandbox, one with
no chat queries never loads a judge) and shared between categories mapped to the same verifier.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Self

from distillery.core.records import Query
from distillery.core.responses import parse_response
from distillery.llm.protocol import ChatModel
from distillery.verify.choice import ChoiceVerifier, is_multiple_choice
from distillery.verify.config import VerifierName, VerifyConfig
from distillery.verify.verdict import CategoryVerifier, Verdict

logger = logging.getLogger(__name__)


def _math(config: VerifyConfig, judge: ChatModel | None) -> CategoryVerifier:
    from distillery.verify.math import MathVerifier

    return MathVerifier(config.math, config.threshold)


def _code(config: VerifyConfig, judge: ChatModel | None) -> CategoryVerifier:
    from distillery.verify.code import CodeVerifier

    return CodeVerifier(config.code, config.threshold)


def _ifeval(config: VerifyConfig, judge: ChatModel | None) -> CategoryVerifier:
    from distillery.verify.ifeval import IFEvalVerifier

    return IFEvalVerifier(config.ifeval, config.threshold)


def _judge(config: VerifyConfig, judge: ChatModel | None) -> CategoryVerifier:
    from distillery.verify.judge import JudgeVerifier

    return JudgeVerifier(config.judge, config.threshold, judge)


def _reward(config: VerifyConfig, judge: ChatModel | None) -> CategoryVerifier:
    from distillery.verify.reward import RewardVerifier

    return RewardVerifier(config.reward, config.threshold)


def _choice(config: VerifyConfig, judge: ChatModel | None) -> CategoryVerifier:
    return ChoiceVerifier(config.threshold)


FACTORIES: dict[VerifierName, Callable[[VerifyConfig, ChatModel | None], CategoryVerifier]] = {
    "math": _math,
    "code": _code,
    "ifeval": _ifeval,
    "judge": _judge,
    "reward": _reward,
    "choice": _choice,
}


class Verifier:
    """Scores (query, response) pairs of any category; use as a context manager or call `close()`."""

    def __init__(self, config: VerifyConfig, judge: ChatModel | None = None) -> None:
        self.config = config
        self.judge = judge
        self._built: dict[str, CategoryVerifier] = {}

    def verifier_name(self, query: Query) -> VerifierName:
        """Which verifier scores `query`: the choice verifier for a multiple-choice query, else its category's."""
        if self.config.route_multiple_choice and is_multiple_choice(query):
            return "choice"
        return self.config.verifiers[query.category]

    def for_category(self, category: str) -> CategoryVerifier:
        """The verifier configured for `category`, built on first use."""
        return self._get(self.config.verifiers[category])

    def _get(self, name: VerifierName) -> CategoryVerifier:
        if name not in self._built:
            logger.info("starting the %s verifier", name)
            self._built[name] = FACTORIES[name](self.config, self.judge)
        return self._built[name]

    def verify(self, query: Query, response: str) -> Verdict:
        return self.verify_batch([(query, response)])[0]

    def verify_batch(self, pairs: list[tuple[Query, str]]) -> list[Verdict]:
        """One verdict per pair, in order; each category's pairs go to its verifier as one batch.

        Every verdict's details carry `well_formed` (the <think>/<answer> structure check).
        """
        by_verifier: dict[VerifierName, list[int]] = defaultdict(list)
        for position, (query, _) in enumerate(pairs):
            by_verifier[self.verifier_name(query)].append(position)
        verdicts: list[Verdict | None] = [None] * len(pairs)
        for name, positions in by_verifier.items():
            verifier = self._get(name)
            for position, verdict in zip(positions, verifier.verify_batch([pairs[p] for p in positions])):
                verdict.details.setdefault("well_formed", parse_response(pairs[position][1]).well_formed)
                verdicts[position] = verdict
        return [verdict for verdict in verdicts if verdict is not None]

    def close(self) -> None:
        for verifier in self._built.values():
            verifier.close()
        self._built = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_verifier(config: VerifyConfig, judge: ChatModel | None = None) -> Verifier:
    """The verifier a generation or eval stage uses; `judge` replaces the default judge model."""
    return Verifier(config, judge)
