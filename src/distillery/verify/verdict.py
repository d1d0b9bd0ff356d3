"""The result every verifier returns, the protocol a verifier implements, and the base of those built from
their own section of a step's `VerifyConfig`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from distillery.schema.records import Query

if TYPE_CHECKING:
    from distillery.llm.protocol import ChatModel
    from distillery.verify.config import VerifyConfig

SettingsT = TypeVar("SettingsT")


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


class SettingsVerifier(Generic[SettingsT]):
    """A verifier made from its own section of a step's `VerifyConfig` (`section`) and the pass threshold."""

    name: ClassVar[str]
    section: ClassVar[str]
    """The `VerifyConfig` field that holds this verifier's settings."""

    @classmethod
    def from_config(cls, config: VerifyConfig, judge: ChatModel | None = None) -> Self:
        """Built by the verifier registry from a step's `verify:` settings."""
        return cls(getattr(config, cls.section), config.threshold)

    def __init__(self, settings: SettingsT, threshold: float) -> None:
        self.settings = settings
        self.threshold = threshold
