"""Answered conversations in the released formats: the answer is the response, never part of the query, and an
AM export keeps what was imported and puts the pipeline's own fields beside it."""

from __future__ import annotations

import copy

import pytest

from distillery.schema.formats import (
    DISTILLERY_FIELDS,
    FormatError,
    am_from_trace,
    messages_from_query,
    query_from_am,
    query_from_messages,
)
from distillery.schema.records import Attempt, Trace

ANSWERED = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"},
                         {"role": "assistant", "content": "<think>2 + 2 = 4</think>\n\nIt is 4.", "reasoning_content": None}],
            "category": "math", "reference": {"answer": "4"}, "source": "r1-dump", "uuid": "a1"}


def test_a_messages_answer_is_split_off_the_query_and_put_back_on_export() -> None:
    query = query_from_messages(copy.deepcopy(ANSWERED))
    assert [m.role for m in query.messages] == ["system", "user"] and query.prompt == "What is 2 + 2?"
    assert query.id == query_from_messages({**ANSWERED, "messages": ANSWERED["messages"][:2]}).id
    assert messages_from_query(query) == ANSWERED, "the answer turn comes back as it came in, extra keys and all"
    ours = messages_from_query(query, "<think>t</think><answer>4</answer>")
    assert ours["messages"] == ANSWERED["messages"][:2] + [{"role": "assistant", "content": "<think>t</think><answer>4</answer>"}]


def test_earlier_turns_stay_in_the_query_and_two_trailing_answers_are_an_error() -> None:
    multi = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                          {"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"}], "category": "chat"}
    assert [m.content for m in query_from_messages(multi).messages] == ["Hi", "Hello", "2 + 2?"]
    doubled = {**multi, "messages": multi["messages"] + [{"role": "assistant", "content": "Four."}]}
    with pytest.raises(FormatError, match=r"at most one assistant turn .* got \['assistant', 'assistant'\]"):
        query_from_messages(doubled)


R1_ROW = {
    "system": "",
    "conversations": [
        {"from": "human", "value": "What is 2 + 2?",
         "info": {"source": "openr1", "category": "math", "ground_truth": "4", "test_case": None,
                  "instruction_constrain": None, "think_content": None, "answer_content": None,
                  "verify_score": None, "model_name": None, "ppl": None}},
        {"from": "assistant", "value": "<think>\n2 + 2 = 4\n</think>\n\nIt is $\\boxed{4}$.",
         "info": {"source": "openr1", "category": "math", "ground_truth": None, "test_case": None,
                  "instruction_constrain": None, "think_content": "2 + 2 = 4", "answer_content": "It is $\\boxed{4}$.",
                  "verify_score": 0.95, "model_name": "DeepSeek-R1", "ppl": 2.7}},
    ],
}


def _pipeline_trace(row: dict, ppl: float | None) -> Trace:
    """The trace `generate` makes of an imported row with a replay teacher, then perplexity's score if it ran."""
    query, released = query_from_am(copy.deepcopy(row))
    assert released is not None
    info = row["conversations"][-1]["info"]
    attempt = Attempt(index=0, seed=7, response=released.response, score=1.0, passed=True, verifier="math_verify",
                      details={"backend": {"info": info}})
    trace = Trace(query=query, teacher="r1", attempts=[attempt], accepted=0, think=released.think, answer=released.answer,
                  metadata={"model": "r1.jsonl", "backend": "replay"})
    if ppl is not None:
        trace.ppl = ppl
        trace.metadata.update({"ppl_tokens": 12, "ppl_model": "smollm2"})
    return trace


def test_which_verify_score_is_exported_does_not_depend_on_perplexity() -> None:
    before, after = am_from_trace(_pipeline_trace(R1_ROW, None)), am_from_trace(_pipeline_trace(R1_ROW, 5.25))
    for exported in (before, after):
        ours = exported["conversations"][-1].pop(DISTILLERY_FIELDS)
        assert exported == R1_ROW, "model_name, ground_truth, the released verify_score and ppl all survive"
        assert (ours["verify_score"], ours["verifier"], ours["model_name"]) == (1.0, "math_verify", "r1")
    assert "ppl" not in before["conversations"][-1].get(DISTILLERY_FIELDS, {})


def test_export_of_a_trace_replayed_from_an_am_file_keeps_the_released_info() -> None:
    """Queries from elsewhere, answers replayed from an AM file: its answer turn's info travels in the attempt."""
    trace = _pipeline_trace(R1_ROW, 5.25)
    trace.query.metadata.pop("am")
    exported = am_from_trace(trace)
    answer = exported["conversations"][-1]
    assert answer["info"] == R1_ROW["conversations"][-1]["info"] and answer["value"] == R1_ROW["conversations"][-1]["value"]
    assert answer[DISTILLERY_FIELDS]["ppl"] == 5.25 and exported["conversations"][0]["info"]["ground_truth"] == "4"


def test_an_imported_row_that_went_nowhere_comes_back_equal() -> None:
    _, released = query_from_am(copy.deepcopy(R1_ROW))
    assert released is not None and am_from_trace(released) == R1_ROW
