"""The record the eval stage writes: one sampled answer of one student to one benchmark problem, scored."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

VERIFIER_ERRORS = ("timeout", "worker died")
"""Verdict reasons that say nothing about the answer itself (it is scored 0); counted and reported."""


class EvalSample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    benchmark: str
    problem_id: str
    """The benchmark's own id of the problem (e.g. `aime2024-I-01`)."""
    query_id: str
    sample: int
    """Index of this sample among the problem's k samples."""
    seed: int
    model: str
    response: str
    completion_tokens: int
    prompt_tokens: int = 0
    finish_reason: str | None = None
    latency_s: float = 0.0
    score: float
    passed: bool
    verifier: str = ""
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def verifier_error(self) -> bool:
        return self.details.get("reason") in VERIFIER_ERRORS

    @property
    def no_answer(self) -> bool:
        """No final answer was found (scored 0 as such, not compared)."""
        return bool(self.details.get("no_answer"))

    @property
    def by_fallback(self) -> bool:
        """The answer scored was read by a fallback extractor (not a `\\boxed{}`)."""
        return self.details.get("answer_source") not in (None, "boxed") and not self.no_answer
