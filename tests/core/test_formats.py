from __future__ import annotations

import copy
import json

import pytest

from distillery.schema.formats import FormatError, am_from_trace, messages_from_query, query_from_am, query_from_messages
from distillery.schema.records import Attempt, Query, Reference, TestCase, Trace, make_query

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


def _typed(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def _with_info(row: dict, human: object = None, answer: object = None) -> dict:
    row = copy.deepcopy(row)
    if human is not None:
        row["conversations"][0]["info"] = human(row["conversations"][0]["info"]) if callable(human) else human
    if answer is not None:
        row["conversations"][1]["info"] = answer(row["conversations"][1]["info"]) if callable(answer) else answer
    return row


def _set(**fields: object):
    return lambda info: {**info, **fields}


_TESTS = {"inputs": ["1 2\n"], "outputs": ["3\n"], "fn_name": None}
_CONSTRAINT = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [None]}
DRIFTED = {
    "info as JSON text, verify_score '1.0', ppl '1.83'": (
        _with_info(AM_ROW, json.dumps, lambda i: json.dumps({**i, "verify_score": "1.0", "ppl": "1.83"})),
        {"answer": "2", "score": 1.0, "ppl": 1.83, "teacher": "AM-Thinking-v1"}),
    "verify_score 1 (int)": (_with_info(AM_ROW, answer=_set(verify_score=1)), {"score": 1.0}),
    "verify_score 0.5 as text fails the 0.9 bar": (_with_info(AM_ROW, answer=_set(verify_score="0.5")),
                                                   {"score": 0.5, "passed": False}),
    "human info missing, answer info null": (
        {**AM_ROW, "conversations": [{"from": "human", "value": "Solve x+1=3."},
                                     {**AM_ROW["conversations"][1], "info": None}]},
        {"answer": None, "category": "science", "score": None, "teacher": "released"}),
    "ground_truth a number": (_with_info(AM_ROW, _set(ground_truth=2)), {"answer": "2"}),
    "user/gpt roles": (_with_info({**AM_ROW, "conversations": [{**AM_ROW["conversations"][0], "from": "user"},
                                                               {**AM_ROW["conversations"][1], "from": "gpt"}]}),
                       {"answer": "2", "teacher": "AM-Thinking-v1"}),
    "test_case an object": (_with_info(AM_ROW, _set(category="code", ground_truth=None, test_case=_TESTS)),
                            {"tests": [("1 2\n", "3\n")], "category": "code"}),
    "test_case JSON text": (_with_info(AM_ROW, _set(category="code", ground_truth=None, test_case=json.dumps(_TESTS))),
                            {"tests": [("1 2\n", "3\n")]}),
    "instruction_constrain an object": (
        _with_info(AM_ROW, _set(category="instruction follow", instruction_constrain=_CONSTRAINT)),
        {"instructions": [{"id": "punctuation:no_comma", "kwargs": {}}], "category": "instruction_following"}),
    "instruction_constrain JSON text": (
        _with_info(AM_ROW, _set(category="IF", instruction_constrain=json.dumps(_CONSTRAINT))),
        {"instructions": [{"id": "punctuation:no_comma", "kwargs": {}}]}),
    "instruction_constrain a bare instruction id": (
        _with_info(AM_ROW, _set(category="IF", instruction_constrain="punctuation:no_comma")),
        {"instructions": [{"id": "punctuation:no_comma", "kwargs": {}}], "category": "instruction_following"}),
    "instruction_constrain a list of bare ids": (
        _with_info(AM_ROW, _set(category="IF", instruction_constrain=["punctuation:no_comma", "change_case:english_lowercase"])),
        {"instructions": [{"id": "punctuation:no_comma", "kwargs": {}}, {"id": "change_case:english_lowercase", "kwargs": {}}]}),
}


@pytest.mark.parametrize("name", DRIFTED)
def test_am_schema_drift_imports_typed_values_and_keeps_the_row_exactly(name: str) -> None:
    row, want = DRIFTED[name]
    untouched = copy.deepcopy(row)
    query, trace = query_from_am(row, default_category="science")
    assert _typed(query.metadata["am"]["row"]) == _typed(untouched) and _typed(row) == _typed(untouched)
    reloaded = Query.model_validate_json(query.model_dump_json())
    assert _typed(reloaded.metadata["am"]["row"]) == _typed(untouched), "the kept row survives a JSON round trip"
    assert trace is not None and trace.response == row["conversations"][1]["value"]
    got = {"answer": query.reference.answer, "category": query.category, "score": trace.attempts[0].score,
           "passed": trace.attempts[0].passed, "ppl": trace.ppl, "teacher": trace.teacher,
           "tests": [(t.input, t.output) for t in query.reference.tests], "instructions": query.reference.instructions}
    assert {key: got[key] for key in want} == want


def test_a_damaged_released_score_fails_the_trace_import_but_not_the_query() -> None:
    row = _with_info(AM_ROW, answer=_set(verify_score="high", ppl=None))
    expected = r"info.verify_score: expected a finite number or its text, got a string \('high'\)"
    with pytest.raises(FormatError, match=expected):
        query_from_am(row)
    query, trace = query_from_am(row, with_trace=False)
    assert trace is None and query.reference.answer == "2"
    with pytest.raises(FormatError, match="info.ppl"):
        query_from_am(_with_info(AM_ROW, answer=_set(ppl="NaN")))


def test_a_trace_line_holds_each_attempts_text_once() -> None:
    from distillery.schema.records import Attempt, Trace, make_query

    reasoning = "step " * 400
    response = f"<think>{reasoning}</think><answer>42</answer>"
    query = make_query("math", [{"role": "user", "content": "What is 6 x 7?"}])
    trace = Trace(query=query, teacher="t", attempts=[Attempt(index=0, seed=0, response=response, score=1.0,
                                                              passed=True)], accepted=0)
    line = trace.model_dump_json()
    assert line.count(reasoning) == 1
    assert (trace.think, trace.answer) == (reasoning.strip(), "42")
    assert Trace.model_validate_json(line).think == trace.think
    old = json.loads(line) | {"think": reasoning, "answer": "42"}  # a record written before the change
    assert Trace.model_validate(old).answer == "42"
