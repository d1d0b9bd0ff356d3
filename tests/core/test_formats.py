from __future__ import annotations

import copy
import json

from distillery.core.formats import am_from_trace, messages_from_query, query_from_am, query_from_messages
from distillery.core.records import Attempt, Reference, TestCase, Trace, make_query

AM_ROW = {
    "system": "You are a helpful assistant. Think first.",
    "conversations": [
        {"from": "human", "value": "Solve x+1=3.",
         "info": {"source": "NuminaMath", "category": "math", "ground_truth": "2", "test_case": None,
                  "instruction_constrain": None, "think_content": None, "answer_content": None,
                  "verify_score": None, "model_name": None, "ppl": None}},
        {"from": "assistant", "value": "<think>x=2</think>\n<answer>\\boxed{2}</answer>",
         "info": {"source": "NuminaMath", "category": "math", "ground_truth": None, "test_case": None,
                  "instruction_constrain": None, "think_content": "x=2", "answer_content": "\\boxed{2}",
                  "verify_score": 1.0, "model_name": "AM-Thinking-v1", "ppl": 1.83}},
    ],
}


def test_am_import_export_is_lossless() -> None:
    row = copy.deepcopy(AM_ROW)
    query, trace = query_from_am(row)
    assert query.category == "math" and query.reference.answer == "2" and query.source == "NuminaMath"
    assert trace is not None and trace.teacher == "AM-Thinking-v1" and trace.ppl == 1.83 and trace.think == "x=2"
    exported = am_from_trace(Trace.model_validate(json.loads(trace.model_dump_json())))
    assert exported == AM_ROW


def test_am_export_of_our_own_trace_reimports_to_the_same_fields() -> None:
    query = make_query("code", [{"role": "user", "content": "Print 3."}],
                       Reference(tests=[TestCase(input="", output="3")]), source="quickstart")
    trace = Trace(query=query, teacher="smol", attempts=[Attempt(index=0, seed=1, response="<think>t</think><answer>print(3)</answer>",
                                                                 score=1.0, passed=True, verifier="code")],
                  accepted=0, think="t", answer="print(3)", ppl=2.5)
    row = am_from_trace(trace)
    query2, trace2 = query_from_am(row)
    assert query2.id == query.id and query2.reference.tests == query.reference.tests
    assert trace2 is not None and trace2.response == trace.response and trace2.ppl == 2.5
    assert row["conversations"][-1]["info"]["verify_score"] == 1.0


def test_messages_import_export_is_lossless() -> None:
    row = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
           "category": "chat", "source": "sharegpt", "reference": {"answer": "hello"}, "conversation_id": 17}
    query = query_from_messages(row)
    assert query.metadata == {"conversation_id": 17}
    assert messages_from_query(query) == row
