"""`build_verifier`: one object that scores any query, dispatching by category to the configured verifier.

A multiple-choice query (a reference that is one option letter, options listed in the prompt; see
`choice.is_multiple_choice`) goes to the choice verifier whatever its category, unless
`route_multiple_choice` is off. Category verifiers are built on first use (a recipe with no code queries never starts a sandbox, one with
no chat queries never loads a judge) and shared between categories mapped to the same verifier.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterable
from typing import Self

from distillery.schema.records import Query
from distillery.core.registry import LazyRegistry
from distillery.schema.responses import parse_response
from distillery.llm.protocol import ChatModel
from distillery.verify.choice import is_multiple_choice
from distillery.verify.config import VerifierName, VerifyConfig
from distillery.verify.verdict import CategoryVerifier, Verdict

logger = logging.getLogger(__name__)


VERIFIERS: LazyRegistry[type[CategoryVerifier]] = LazyRegistry("verifier", {
    "math": "distillery.verify.math:MathVerifier",
    "code": "distillery.verify.code:CodeVerifier",
    "ifeval": "distillery.verify.ifeval:IFEvalVerifier",
    "judge": "distillery.verify.judge:JudgeVerifier",
    "reward": "distillery.verify.reward:RewardVerifier",
    "choice": "distillery.verify.choice:ChoiceVerifier",
})
"""Verifier name -> class, imported on first use; each is built with `from_config(config, judge)`."""


class Verifier:
    """Scores (query, response) pairs of any category; use as a context manager or call `close()`."""

    def __init__(self, config: VerifyConfig, judge: ChatModel | None = None) -> None:
        self.config = config
        self.judge = judge
        self._built: dict[str, CategoryVerifier] = {}
        self._building = threading.Lock()
        self._warming: threading.Thread | None = None

    def verifier_name(self, query: Query) -> VerifierName:
        """Which verifier scores `query`: the choice verifier for a multiple-choice query, else its category's."""
        if self.config.route_multiple_choice and is_multiple_choice(query):
            return "choice"
        return self.config.verifiers[query.category]

    def for_category(self, category: str) -> CategoryVerifier:
        """The verifier configured for `category`, built on first use."""
        return self._get(self.config.verifiers[category])

    def warm_up(self, queries: Iterable[Query]) -> None:
        """Start the verifiers these queries need on a background thread, so that their worker processes import
        (Math-Verify's take seconds) while the caller loads its model; a failure surfaces on first use."""
        names = sorted({self.verifier_name(query) for query in queries})

        def build() -> None:
            for name in names:
                try:
                    self._get(name)
                except Exception:  # noqa: BLE001 - built again, and raised, when first used
                    logger.debug("warming up the %s verifier failed", name, exc_info=True)

        self._warming = threading.Thread(target=build, name="verifier-warm-up", daemon=True)
        self._warming.start()

    def _get(self, name: VerifierName) -> CategoryVerifier:
        with self._building:
            if name not in self._built:
                logger.info("starting the %s verifier", name)
                self._built[name] = VERIFIERS.get(name).from_config(self.config, self.judge)
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
            batch = self._get(name).verify_batch([pairs[p] for p in positions])
            if len(batch) != len(positions):
                raise RuntimeError(f"the {name} verifier returned {len(batch)} verdicts for {len(positions)} answers")
            for position, verdict in zip(positions, batch, strict=True):
                verdict.details.setdefault("well_formed", parse_response(pairs[position][1]).well_formed)
                verdicts[position] = verdict
        missing = [position for position, verdict in enumerate(verdicts) if verdict is None]
        if missing:
            raise RuntimeError(f"no verdict for answers {missing}")
        return [verdict for verdict in verdicts if verdict is not None]

    def close(self) -> None:
        if self._warming is not None:
            self._warming.join()
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
