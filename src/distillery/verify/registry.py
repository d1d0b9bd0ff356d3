"""`build_verifier`: one object that scores any query, dispatching by category to the configured verifier.

Category verifiers are built on first use (a recipe with no code queries never starts a sandbox, one with
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


FACTORIES: dict[VerifierName, Callable[[VerifyConfig, ChatModel | None], CategoryVerifier]] = {
    "math": _math,
    "code": _code,
    "ifeval": _ifeval,
    "judge": _judge,
    "reward": _reward,
}


class Verifier:
    """Scores (query, response) pairs of any category; use as a context manager or call `close()`."""

    def __init__(self, config: VerifyConfig, judge: ChatModel | None = None) -> None:
        self.config = config
        self.judge = judge
        self._built: dict[str, CategoryVerifier] = {}

    def for_category(self, category: str) -> CategoryVerifier:
        """The verifier configured for `category`, built on first use."""
        name = self.config.verifiers[category]
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
        by_verifier: dict[str, list[int]] = defaultdict(list)
        for position, (query, _) in enumerate(pairs):
            by_verifier[self.config.verifiers[query.category]].append(position)
        verdicts: list[Verdict | None] = [None] * len(pairs)
        for positions in by_verifier.values():
            verifier = self.for_category(pairs[positions[0]][0].category)
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
