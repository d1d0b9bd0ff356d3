"""The structure filter: think-then-answer format with non-empty parts, and the student-token cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillery.schema.records import Trace
from distillery.filters.structure import MixedLayoutsError, StructureConfig, StructureStage, check_structure
from distillery.testing import as_items, make_stage, make_trace, run_stage, shard_context


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
    kept_trace = Trace.model_validate(kept.record)
    assert (kept_trace.think, kept_trace.answer) == ("One plus one.", "2")  # derived on read, not stored
    assert "think" not in kept.record
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


def test_a_set_that_mixes_layouts_is_refused_across_shards(recipe, run, smollm2_dir: Path) -> None:
    """Each shard alone is uniform; together they would mix tagged and untagged answers in one SFT set."""
    tagged = [make_trace(f"What is {i} + {i}?", f"<think>Double {i}.</think><answer>{2 * i}</answer>") for i in range(3)]
    untagged = [make_trace(f"What is {i} * 2?", f"<think>Double {i}.</think>\n\nIt is {2 * i}.") for i in range(2)]
    permissive = StructureConfig(require_answer_tags=False, tokenizer=str(smollm2_dir))
    stage = make_stage(StructureStage, permissive, recipe.teachers[0])
    with pytest.raises(MixedLayoutsError, match=r"mix layouts \{'tagged': 3, 'untagged': 2\}.*normalise"):
        run_stage(stage, run, [as_items(tagged), as_items(untagged)])
    reported = make_stage(StructureStage, permissive.model_copy(update={"mixed_layouts": "report"}), recipe.teachers[0])
    shards = run_stage(reported, run, [as_items(tagged), as_items(untagged)])
    assert [sorted(o.record["metadata"]["layout"] for o in shard if o.kind == "kept") for shard in shards] == [
        ["tagged"] * 3, ["untagged"] * 2]
    assert reported.merge(shard_context(run, "structure", 0, 2)) == {"layouts": {"tagged": 3, "untagged": 2}, "mixed": True}


def test_the_default_rules_keep_one_layout_and_reject_the_rest_with_a_reason(recipe, run, smollm2_dir: Path) -> None:
    traces = [make_trace("Tagged?", "<think>t</think><answer>a</answer>"), make_trace("Bare?", "<think>t</think>a"),
              make_trace("Plain?", "a")]
    stage = make_stage(StructureStage, StructureConfig(tokenizer=str(smollm2_dir)), recipe.teachers[0])
    outcomes = sorted(run_stage(stage, run, [as_items(traces)])[0], key=lambda o: o.position)
    assert [(o.kind, o.reason) for o in outcomes] == [
        ("kept", ""), ("rejected", "malformed structure: no <answer> block"), ("rejected", "malformed structure: no <think> block")]
    assert stage.merge(shard_context(run, "structure", 0, 1)) == {"layouts": {"tagged": 1}, "mixed": False}
