"""The result every verifier returns, and the protocol a verifier implements."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from distillery.schema.records import Query


class Verdict(BaseModel):
    """A score in [0, 1], whether it reaches the threshold, which verifier gave it, and why."""

    model_config = ConfigDict(extra="forbid")

    score: float = Field(ge=0.0, le=1.0)
    passed: bool
    verifier: str
    details: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def failed(cls, verifier: str, reason: str, **details: Any) -> Verdict:
        """Score 0 with a reason: broken structure, no answer, a crashed worker, a judge that said nothing."""
        return cls(score=0.0, passed=False, verifier=verifier, details={"reason": reason, **details})

    @classmethod
    def unanswered(cls, verifier: str, reason: str, **details: Any) -> Verdict:
        """Score 0 because the response states no final answer (eval counts these apart from wrong answers)."""
        return cls.failed(verifier, reason, no_answer=True, **details)

    @property
    def no_answer(self) -> bool:
        return bool(self.details.get("no_answer"))


class CategoryVerifier(Protocol):
    """One category's checker; `threshold` turns its score into `passed`."""

    name: str

    @classmethod
    def from_config(cls, config: Any, judge: Any = None) -> CategoryVerifier:
        """Built from a step's `VerifyConfig` (and the judge model, for the LLM judge)."""
        ...

    def verify_batch(self, pairs: list[tuple[Query, str]]) -> list[Verdict]:
        """One verdict per (query, response), in order."""
        ...

    def close(self) -> None:
        """Stop worker processes, release models."""
        ...
