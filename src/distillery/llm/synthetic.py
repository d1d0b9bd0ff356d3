"""A `ChatModel` that answers synthetic queries (`distillery synth`) as a deterministic model of a paper teacher.

`model` names the profile (`am-thinking-v1`, `qwen3-235b-a22b`, `deepseek-r1`; see `distillery.synth.teachers`);
options override its fields (`median_tokens`, `p99_tokens`, `zipf`, `layout`, `pass_rate`, `loop_rate`,
`untagged_rate`, `overlong_rate`) and `length_scale` shrinks every length for a rehearsal on CPUs. The task is
rebuilt from the prompt's `Problem ID` line, so the backend holds nothing per query; each answer depends only
on the profile and the attempt's seed. What each answer was written to be (`{correct, degenerate}`) travels in
the attempt's details under `backend.synthetic`, so a test can hold the real verifiers' verdicts against it.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Self

from distillery.llm.options import BackendConfigError, check_options
from distillery.llm.protocol import Completion, Conversation, ModelSpec, Sampling, answered
from distillery.synth.tasks import task_from_prompt
from distillery.synth.teachers import TeacherProfile, answer, profile


class SyntheticChatModel:
    """Answers in the teacher's layout, right or wrong, long or degenerate, as its profile draws them."""

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> Self:
        check_options(spec, cls, spec.options, {"model", "name"})
        try:
            return cls(spec.model, name=spec.name, **spec.options)
        except (TypeError, ValueError) as error:
            raise BackendConfigError(f"teacher {spec.name!r} (synthetic): {error}") from None

    def __init__(self, model: str, name: str | None = None, length_scale: float = 1.0, median_tokens: float | None = None,
                 p99_tokens: float | None = None, zipf: float | None = None, layout: str | None = None,
                 pass_rate: float | None = None, loop_rate: float | None = None, untagged_rate: float | None = None,
                 overlong_rate: float | None = None) -> None:
        if length_scale <= 0:
            raise ValueError(f"length_scale must be > 0, got {length_scale}")
        overrides: dict[str, Any] = {key: value for key, value in {
            "median_tokens": median_tokens, "p99_tokens": p99_tokens, "zipf": zipf, "layout": layout,
            "pass_rate": pass_rate, "loop_rate": loop_rate, "untagged_rate": untagged_rate,
            "overlong_rate": overlong_rate}.items() if value is not None}
        self.model = model
        self.name = name or model
        self.length_scale = length_scale
        self.profile: TeacherProfile = profile(model, **overrides)

    def _complete(self, conversation: Conversation, sampling: Sampling, seed: int | None) -> Completion:
        prompt = next(m["content"] for m in reversed(conversation) if m["role"] == "user")
        drawn = answer(task_from_prompt(prompt), self.profile, self.model, seed or 0, sampling.max_tokens,
                       self.length_scale)
        return Completion(text=drawn.text, prompt_tokens=sum(len(m["content"]) for m in conversation) // 4,
                          completion_tokens=drawn.tokens, finish_reason=drawn.finish_reason,
                          extra={"synthetic": drawn.label})

    def chat(self, conversations: list[Conversation], sampling: Sampling, seeds: list[int] | None = None) -> list[Completion]:
        seeds = seeds or [0] * len(conversations)
        return [self._complete(c, sampling, s) for c, s in zip(conversations, seeds, strict=True)]

    def submit(self, conversation: Conversation, sampling: Sampling, seed: int | None) -> Future[Completion]:
        return answered(lambda: self._complete(conversation, sampling, seed), ValueError)

    def engine_stats(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        """Nothing to release."""
