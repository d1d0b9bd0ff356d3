"""The normalise step: each teacher's layout rewritten into <think>/<answer>, the original kept, changes recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillery.schema.records import Attempt, Trace, make_query
from distillery.schema.responses import parse_response
from distillery.core.stage import Item
from distillery.core.store import RunDir
from distillery.core.teachers import TeacherConfig
from distillery.filters.structure import check_structure
from distillery.generate.normalise import (
    ADDED_THINK_OPEN,
    WRAPPED_ANSWER,
    NormaliseConfig,
    NormaliseStage,
    normalise_response,
    normalise_trace,
)
from distillery.testing import make_stage, shard_context

# Shapes of real outputs: R1 with its own <think>; R1 behind the chat template that pre-fills "<think>\n";
# Qwen3 in non-thinking mode (an empty think block); a teacher that followed the tag prompt.
R1 = "<think>\nOkay, 2 + 2 is 4.\n</think>\n\nThe sum is $\\boxed{4}$."
R1_PREFILLED = "Okay, 2 + 2 is 4.\n</think>\n\nThe sum is $\\boxed{4}$."
QWEN3_NO_THINKING = "<think>\n\n</think>\n\nThe sum is 4."
TAGGED = "<think>2 + 2 is 4.</think>\n<answer>\\boxed{4}</answer>"


@pytest.mark.parametrize("layout", ["r1", "qwen3"])
def test_think_then_plain_answer_gets_answer_tags(layout: str) -> None:
    result = normalise_response(R1, layout)  # type: ignore[arg-type]
    assert result.changes == [WRAPPED_ANSWER] and not result.problem
    assert result.text == "<think>\nOkay, 2 + 2 is 4.\n</think>\n<answer>\nThe sum is $\\boxed{4}$.\n</answer>"
    parsed = check_structure(result.text)
    assert not isinstance(parsed, str), parsed
    assert (parsed.think, parsed.answer) == (parse_response(R1).think, parse_response(R1).answer)


def test_missing_opening_tag_is_put_back() -> None:
    result = normalise_response(R1_PREFILLED, "r1")
    assert result.changes == [ADDED_THINK_OPEN, WRAPPED_ANSWER]
    assert result.text.startswith("<think>\nOkay") and not isinstance(check_structure(result.text), str)


def test_what_normalising_does_not_hide() -> None:
    """Tags are added, never content: an empty think block stays empty and structure still rejects it."""
    result = normalise_response(QWEN3_NO_THINKING, "qwen3")
    assert result.changes == [WRAPPED_ANSWER] and check_structure(result.text) == "empty <think> block"
    for text, problem in [("<think>\nstill thinking when the tokens ran out", "no </think>"),
                          ("<think>a</think>\n\n", "nothing after </think>"),
                          ("<think>a</think>b</think>c", "more than one </think>"),
                          ("<think>a<think>b</think>c", "more than one <think>")]:
        result = normalise_response(text, "r1")
        assert (result.text, result.changes, result.problem) == (text, [], problem)


def test_tagged_responses_are_left_alone() -> None:
    for layout in ("tagged", "r1", "qwen3"):
        assert normalise_response(TAGGED, layout) == normalise_response(TAGGED, "tagged")  # type: ignore[arg-type]
        assert normalise_response(TAGGED, layout).text == TAGGED and normalise_response(TAGGED, layout).changes == []  # type: ignore[arg-type]
    untagged = normalise_response(R1, "tagged")
    assert untagged.text == R1 and untagged.problem == "no <answer> block"


def _trace(responses: list[str], accepted: int | None, teacher: str = "r1") -> Trace:
    query = make_query("math", [{"role": "user", "content": "What is 2 + 2?"}])
    attempts = [Attempt(index=i, seed=i, response=r, score=1.0 if i == accepted else 0.0, passed=i == accepted,
                        verifier="math_verify", details={"extracted": "4"}) for i, r in enumerate(responses)]
    return Trace(query=query, teacher=teacher, attempts=attempts, accepted=accepted,
                 think=parse_response(responses[accepted]).think if accepted is not None else "",
                 answer=parse_response(responses[accepted]).answer if accepted is not None else "")


def test_every_attempt_keeps_its_original_and_a_second_run_changes_nothing() -> None:
    trace = _trace([R1_PREFILLED, R1], accepted=1)
    summary = normalise_trace(trace, "r1")
    assert summary == {"layout": "r1", "changes": [WRAPPED_ANSWER]} == trace.metadata["normalised"]
    assert [a.original_response for a in trace.attempts] == [R1_PREFILLED, R1]
    assert trace.attempts[0].details["normalised"]["changes"] == [ADDED_THINK_OPEN, WRAPPED_ANSWER]
    assert trace.attempts[0].details["extracted"] == "4", "the verdict's details are kept"
    assert trace.answer == "The sum is $\\boxed{4}$." and "<answer>" in trace.response
    once = trace.model_dump()
    normalise_trace(trace, "r1")
    assert trace.model_dump() == once


TEACHERS = [TeacherConfig(name="r1", model="none"), TeacherConfig(name="smol", model="none")]


def test_stage_applies_each_teachers_layout_and_counts_changes(tmp_path: Path) -> None:
    config = NormaliseConfig(layouts={"r1": "r1"}, default="tagged")
    items = [Item(0, "a", _trace([R1], 0).model_dump(mode="json")), Item(1, "b", _trace([TAGGED], 0).model_dump(mode="json")),
             Item(2, "c", None, "file:3", problem="bad JSON"), Item(3, "d", _trace([R1_PREFILLED], None).model_dump(mode="json"))]
    results = {}
    for teacher in TEACHERS:
        ctx = shard_context(RunDir(tmp_path / "run"), "normalise", teacher=teacher.name)
        outcomes = {o.key: o for o in make_stage(NormaliseStage, config, teacher).process(iter(items), ctx)}
        results[teacher.name] = (outcomes, ctx.stats["normalise"])
    outcomes, stats = results["r1"]
    assert [outcomes[k].kind for k in "abcd"] == ["kept", "kept", "quarantined", "kept"]
    assert Trace.model_validate(outcomes["a"].record).metadata["normalised"]["changes"] == [WRAPPED_ANSWER]
    unaccepted = Trace.model_validate(outcomes["d"].record)
    assert unaccepted.metadata["normalised"]["changes"] == [] and "<answer>" in unaccepted.attempts[0].response
    assert stats == {"layout": "r1", "changed": 1, "unchanged": 2, WRAPPED_ANSWER: 1}
    outcomes, stats = results["smol"]
    assert Trace.model_validate(outcomes["a"].record).response == R1, "the default layout here, tagged, rewrites nothing"
    assert stats == {"layout": "tagged", "problem": 1, "unchanged": 2}


def test_a_teacher_without_a_layout_is_an_error() -> None:
    """A misspelt teacher name in `layouts` must not leave that teacher silently unnormalised."""
    with pytest.raises(ValueError, match=r"teacher 'r1' has no layout: name it in `layouts` \(which names \['deepseek-r1'\]\)"):
        make_stage(NormaliseStage, NormaliseConfig(layouts={"deepseek-r1": "r1"}), TEACHERS[0])
    assert make_stage(NormaliseStage, NormaliseConfig(default="qwen3"), TEACHERS[0]).layout == "qwen3"
