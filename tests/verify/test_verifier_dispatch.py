"""build_verifier: dispatch by category in one batch, order kept, and a config that fails early."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from distillery.schema.records import Reference, make_query
from distillery.schema.records import TestCase as CodeTest
from distillery.llm.protocol import Completion, Conversation, Sampling
from distillery.verify import Verdict, VerifyConfig, build_verifier
from distillery.verify.sandbox import SandboxSettings


class ScriptedJudge:
    """A stand-in judge for dispatch tests only (the real judge runs in test_models.py)."""

    name = "scripted"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def chat(self, conversations: list[Conversation], sampling: Sampling, seeds: list[int] | None = None) -> list[Completion]:
        self.prompts.extend(c[-1]["content"] for c in conversations)
        return [Completion(text="Score: 9" if "Paris" in c[-1]["content"].split("Candidate answer:")[-1] else "Score: 2") for c in conversations]

    def close(self) -> None:
        """Nothing to release."""


def test_config_defaults_and_errors() -> None:
    config = VerifyConfig()
    assert config.threshold == 0.9 and config.code.max_tests == 10
    assert config.verifiers["math"] == "math" and config.verifiers["instruction_following"] == "ifeval"
    assert VerifyConfig(verifiers={"chat": "ifeval"}).verifiers["math"] == "math"
    with pytest.raises(ValidationError, match="reward.model is not set"):
        VerifyConfig(verifiers={"chat": "reward"})
    with pytest.raises(ValidationError, match="unknown categories"):
        VerifyConfig(verifiers={"poetry": "judge"})
    with pytest.raises(ValidationError):
        VerifyConfig(math={"wrkers": 2})
    assert VerifyConfig.model_validate(config.model_dump(mode="json")) == config


@pytest.mark.slow
def test_mixed_batch_goes_to_each_categorys_verifier_in_order() -> None:
    config = VerifyConfig(math={"workers": 1}, code={"sandbox": SandboxSettings(uid_base=62200, uid_count=4, lock_dir="/tmp/distillery-sandbox-uids-tests")})
    judge = ScriptedJudge()
    math = make_query("math", [{"role": "user", "content": "1/2 as a decimal?"}], Reference(answer=r"\frac{1}{2}"))
    code = make_query("code", [{"role": "user", "content": "double it"}], Reference(tests=[CodeTest(input="2\n", output="4\n")]))
    ifeval = make_query("instruction_following", [{"role": "user", "content": "no commas"}], Reference(instructions=[{"id": "punctuation:no_comma", "kwargs": {}}]))
    science = make_query("science", [{"role": "user", "content": "Capital of France?"}], Reference(answer="Paris"))
    pairs = [
        (math, r"<think>ok</think><answer>\boxed{0.5}</answer>"),
        (code, "<think>ok</think><answer>```python\nprint(int(input()) * 2)\n```</answer>"),
        (ifeval, "<think>a, b</think><answer>No commas here</answer>"),
        (science, "<think>ok</think><answer>Paris</answer>"),
        (math, r"\boxed{0.6}"),
        (science, "<think>ok</think><answer>Lyon</answer>"),
        (ifeval, "<think>ok</think><answer>One, two</answer>"),
    ]
    with build_verifier(config, judge=judge) as verifier:
        verdicts = verifier.verify_batch(pairs)
        single = verifier.verify(math, r"\boxed{1/2}")
    assert all(isinstance(v, Verdict) for v in verdicts)
    assert [v.verifier for v in verdicts] == ["math_verify", "code_sandbox", "ifeval", "llm_judge", "math_verify", "llm_judge", "ifeval"]
    assert [v.passed for v in verdicts] == [True, True, True, True, False, False, False]
    assert [v.details["well_formed"] for v in verdicts] == [True, True, True, True, False, True, True]
    assert verdicts[3].score == pytest.approx(0.9) and verdicts[5].score == pytest.approx(0.2)
    assert "Reference answer:\nParis" in judge.prompts[0]
    assert single.passed
