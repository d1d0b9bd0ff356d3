"""`VerifyConfig`: which verifier scores each category and how; embedded in generation and eval recipes.

Every default works on a CPU machine: math in two worker processes, code in the bubblewrap sandbox, the
embedded SmolLM2-135M-Instruct as judge. A reward model has no embedded default: set `reward.model`
before mapping a category to "reward".
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from distillery.core.config import StrictModel
from distillery.schema.responses import DEFAULT_FALLBACKS, AnswerSource
from distillery.verify.sandbox import SandboxLimits, SandboxSettings

VerifierName = Literal["math", "code", "ifeval", "judge", "reward", "choice"]


class MathSettings(StrictModel):
    workers: int = Field(2, ge=1, description="Worker processes running Math-Verify.")
    timeout_s: int = Field(5, ge=1, description="Math-Verify's own parse and compare timeouts per item (SIGALRM in the worker).")
    hard_timeout_s: float = Field(30.0, gt=0, description="Wall-clock seconds after which a stuck worker is killed and the item times out (a few Math-Verify timeouts fit).")
    float_rounding: int = Field(6, ge=0, description="Decimal places Math-Verify rounds floats to before comparing.")
    fallbacks: list[AnswerSource] = Field(list(DEFAULT_FALLBACKS), description="Where the final answer is looked for in the answer part, in order.")
    exact_decimals: bool = Field(True, description="A bare decimal must equal an exact gold exactly, or to its places when the question asks for a decimal or rounding; False: always to its places.")


def _compile_limits() -> SandboxLimits:
    return SandboxLimits(wall_s=60.0, cpu_s=30, memory_mb=2048, max_processes=64, max_file_mb=64, max_output_kb=256, tmpfs_mb=256)


class CodeSettings(StrictModel):
    max_tests: int = Field(10, ge=1, description="Most tests run per answer (the paper uses up to 10).")
    parallelism: int = Field(2, ge=1, description="Tests (sandboxes) running at once per verifier.")
    limits: SandboxLimits = Field(default_factory=SandboxLimits, description="Limits of each test run.")
    compile_limits: SandboxLimits = Field(default_factory=_compile_limits, description="Limits of the C++ compile step.")
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings, description="Uid range and lock files of the sandbox.")
    python: str = Field("/usr/bin/python3", description="Python interpreter that runs answers (under /usr, visible in the sandbox).")
    cxx: str = Field("/usr/bin/g++", description="C++ compiler (under /usr, visible in the sandbox).")
    cxx_flags: list[str] = Field(["-O2", "-std=c++17"], description="C++ compile flags.")
    float_tolerance: float = Field(1e-6, ge=0, description="Absolute/relative tolerance when comparing numeric output tokens.")


class IFEvalSettings(StrictModel):
    mode: Literal["strict", "loose"] = Field("strict", description="IFEval strict, or loose (also tries the response without first/last line and markdown).")


DEFAULT_JUDGE_TEMPLATE = (
    "You are grading an answer against a reference answer.\n\n"
    "Question:\n{question}\n\nReference answer:\n{reference}\n\nCandidate answer:\n{answer}\n\n"
    "Does the candidate answer agree with the reference answer? Grade it from 0 to 10, where 10 means fully "
    "correct and 0 means wrong. End your reply with a line of its own holding only the grade, in the form\n"
    "Score: N"
)
DEFAULT_JUDGE_TEMPLATE_NO_REFERENCE = (
    "You are grading an assistant's answer to a user's request.\n\n"
    "Request:\n{question}\n\nAnswer:\n{answer}\n\n"
    "How helpful, correct and complete is the answer? Grade it from 0 to 10. End your reply with a line of its "
    "own holding only the grade, in the form\n"
    "Score: N"
)


class JudgeSettings(StrictModel):
    model: str | None = Field(None, description="Judge model folder for the transformers backend; None = embedded SmolLM2-135M-Instruct.")
    template: str = Field(DEFAULT_JUDGE_TEMPLATE, description="Prompt with {question}, {reference}, {answer} for queries with a reference.")
    template_no_reference: str = Field(DEFAULT_JUDGE_TEMPLATE_NO_REFERENCE, description="Prompt with {question}, {answer} for queries without one.")
    max_score: float = Field(10.0, gt=0, description="The top of the scale the template asks for; scores are divided by it.")
    max_tokens: int = Field(64, ge=1, description="Most tokens the judge may write.")
    temperature: float = Field(0.0, ge=0, description="Judge sampling temperature (0 = greedy).")
    max_answer_chars: int = Field(8000, ge=1, description="Answers longer than this are cut (from the start) before judging.")


class RewardSettings(StrictModel):
    model: str | None = Field(None, description="Sequence-classification reward model folder (required when a category uses 'reward').")
    mapping: Literal["sigmoid", "linear"] = Field("sigmoid", description="sigmoid((r - shift) / scale), or linear (r - low) / (high - low) clipped.")
    shift: float = Field(0.0, description="Sigmoid centre.")
    scale: float = Field(1.0, gt=0, description="Sigmoid temperature.")
    low: float = Field(-5.0, description="Linear mapping: reward that maps to 0.")
    high: float = Field(5.0, description="Linear mapping: reward that maps to 1.")
    max_length: int = Field(2048, ge=16, description="Tokens kept of prompt + answer.")
    batch_size: int = Field(8, ge=1, description="Pairs scored per forward pass.")


DEFAULT_VERIFIERS: dict[str, VerifierName] = {
    "math": "math",
    "code": "code",
    "science": "judge",
    "instruction_following": "ifeval",
    "chat": "judge",
    "general": "judge",
}


class VerifyConfig(StrictModel):
    """How answers are scored: a verifier per category, each with its settings, and the pass threshold."""

    threshold: float = Field(0.9, ge=0, le=1, description="An answer passes when its score reaches this.")
    verifiers: dict[str, VerifierName] = Field(default_factory=lambda: dict(DEFAULT_VERIFIERS), description="Verifier per category.")
    route_multiple_choice: bool = Field(True, description="Score any query whose reference is an option letter and whose prompt lists options with the choice verifier, whatever its category.")
    math: MathSettings = Field(default_factory=MathSettings, description="Math-Verify settings.")
    code: CodeSettings = Field(default_factory=CodeSettings, description="Code sandbox settings.")
    ifeval: IFEvalSettings = Field(default_factory=IFEvalSettings, description="Instruction-following checks.")
    judge: JudgeSettings = Field(default_factory=JudgeSettings, description="LLM judge.")
    reward: RewardSettings = Field(default_factory=RewardSettings, description="Reward model.")

    @model_validator(mode="after")
    def _check(self) -> VerifyConfig:
        from distillery.schema.records import CATEGORIES

        unknown = sorted(set(self.verifiers) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"verifiers: unknown categories {unknown}; expected some of {list(CATEGORIES)}")
        self.verifiers = {**DEFAULT_VERIFIERS, **self.verifiers}
        if "reward" in self.verifiers.values() and not self.reward.model:
            raise ValueError("verifiers maps a category to 'reward' but reward.model is not set")
        return self
