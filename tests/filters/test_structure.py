"""The structure filter: think-then-answer format with non-empty parts, and the student-token cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillery.filters.structure import StructureConfig, StructureStage, check_structure
from distillery.testing import as_items, make_stage, make_trace, run_stage


@pytest.mark.parametrize(
    ("response", "problem"),
    [
        ("<think>reason</think><answer>42</answer>", None),
        ("  <think>\nreason\n</think>\n\n<answer>42</answer>\n", None),
        ("<think>reason</think>", "empty answer"),
        ("<think>a</think><think>b</think><answer>1</answer>", "more than one <think>"),
        ("<think>a</think><answer>1</answer><answer>2</answer>", "more than one <answer>"),
        ("<think>reason<answer>42</answer>", "unterminated <think>"),
        ("reason</think><answer>42</answer>", "no <think> opening tag"),
        ("<think>   </think><answer>42</answer>", "empty <think>"),
        ("<think>reason</think><answer>  </answer>", "empty answer"),
        ("<think>reason</think>so<answer>42</answer>", "text between </think> and <answer>"),
        ("<think>reason</think><answer>42</answer> p.s.", "text after </answer>"),
        ("preamble <think>reason</think><answer>42</answer>", "text before <think>"),
        ("<think>reason</think>The answer is 42.", "no <answer> block"),
        ("The answer is 42.", "no <think> block"),
    ],
)
def test_structure_rules(response: str, problem: str | None) -> None:
    result = check_structure(response)
    if problem is None:
        assert not isinstance(result, str) and result.think == "reason" and result.answer == "42"
    else:
        assert isinstance(result, str) and problem in result


def test_formats_without_answer_tags() -> None:
    parsed = check_structure("<think>reason</think>\nThe answer is 42.", require_answer_tags=False)
    assert not isinstance(parsed, str) and parsed.answer == "The answer is 42."
    assert check_structure("<think>reason</think>  ", require_answer_tags=False) == "empty answer"


def test_stage_caps_tokens_with_the_student_tokenizer(recipe, run, smollm2_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    short = make_trace("What is 1 + 1?", "<think>One plus one.</think><answer>2</answer>")
    long = make_trace("Count.", "<think>" + " ".join(str(i) for i in range(200)) + "</think><answer>done</answer>")
    broken = make_trace("Broken?", "<think>never closed")
    unanswered = make_trace("Hard?", "<think>x</think><answer>y</answer>", accepted=False)
    conversation = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 1 + 1?"}, {"role": "assistant", "content": short.response}], tokenize=False)
    short_tokens = len(tokenizer(conversation, add_special_tokens=False)["input_ids"])
    stage = make_stage(StructureStage, StructureConfig(max_tokens=short_tokens + 20, tokenizer=str(smollm2_dir), batch_size=2), recipe.teachers[0])
    outcomes = {o.key: o for o in run_stage(stage, run, [as_items([short, long, broken, unanswered])])[0]}
    kept = outcomes[short.query.id]
    assert kept.kind == "kept"
    assert kept.record["metadata"]["student_tokens"] == short_tokens
    assert (kept.record["think"], kept.record["answer"]) == ("One plus one.", "2")
    assert outcomes[long.query.id].kind == "rejected" and "over the cap" in outcomes[long.query.id].reason
    assert outcomes[long.query.id].record["metadata"]["student_tokens"] > short_tokens + 20
    assert outcomes[broken.query.id].kind == "rejected" and "unterminated" in outcomes[broken.query.id].reason
    assert outcomes[unanswered.query.id].kind == "rejected"


def test_plain_answers_pass_only_when_think_is_optional() -> None:
    assert isinstance(check_structure("4 + 4 = 8"), str)
    kept = check_structure("4 + 4 = 8", require_answer_tags=False, require_think=False)
    assert not isinstance(kept, str) and kept.answer == "4 + 4 = 8" and kept.think == ""
    assert check_structure("   ", require_answer_tags=False, require_think=False) == "empty response"
    assert isinstance(check_structure("<think>x</think>", require_answer_tags=False, require_think=False), str)
