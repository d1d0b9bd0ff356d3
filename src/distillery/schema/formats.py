"""Import and export of the released dataset formats, lossless both ways.

- AM-Thinking-v1-Distilled: `{system, conversations: [{from: human|assistant, value, info: {source, category,
  ground_truth, test_case, instruction_constrain, think_content, answer_content, verify_score, model_name, ppl}}]}`.
- OpenAI-style messages: `{messages: [{role, content}], ...}` plus our optional `category`, `reference`, `source`.

Import keeps every field it has no typed home for in `metadata`, and export gives the imported fields back as they
came and puts the pipeline's own (its verdict, perplexity, normalised text) beside them, under `distillery` in the
answer turn, so `export(import(x)) == x` for records in either format. An answered `messages` record's last
assistant turn is the response, never part of the query. An AM row is kept whole, exactly as parsed, in
`query.metadata["am"]["row"]`: the released files drift in types (`info` as an object, null or JSON text;
`verify_score` as 1, 1.0 or "1.0"; `ppl` as text; `ground_truth` as a number; `test_case` and
`instruction_constrain` as objects or JSON text), and export reproduces each field with the type it came in.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from distillery.schema.coerce import (
    FormatError,
    answer_text,
    category_name,
    decoded,
    constraint_from_value,
    kind,
    number,
    tests_from_value,
    text,
)
from distillery.schema.records import Attempt, Message, Query, Reference, Trace, make_query

__all__ = ["DISTILLERY_FIELDS", "FormatError", "am_from_trace", "messages_from_query", "query_from_am",
           "query_from_messages", "reference_from_value", "split_response"]

_ROLE_FROM_AM = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_AM_FROM_ROLE = {"user": "human", "assistant": "assistant", "system": "system"}


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _am_turns(row: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(role, text, info) per turn; `info` may be missing, null, an object or an object's JSON text."""
    conversations = row.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise FormatError("conversations: expected a non-empty list of {from, value, info}, "
                          f"got {kind(conversations)}")
    turns = []
    for index, turn in enumerate(conversations):
        where = f"conversations[{index}]"
        if not isinstance(turn, dict):
            raise FormatError(f"{where}: expected an object {{from, value, info}}, got {kind(turn)}")
        role = turn.get("from")
        if not isinstance(role, str) or role.lower() not in _ROLE_FROM_AM:
            raise FormatError(f"{where}.from: expected one of {', '.join(_ROLE_FROM_AM)}, got {kind(role)}")
        if not isinstance(turn.get("value"), str):
            raise FormatError(f"{where}.value: expected a string, got {kind(turn.get('value'))}")
        info = decoded(_blank_to_none(turn.get("info")), f"{where}.info", "an object")
        info = {} if info is None else info
        if not isinstance(info, dict):
            raise FormatError(f"{where}.info: expected an object, null or an object's JSON text, got {kind(info)}")
        turns.append((_ROLE_FROM_AM[role.lower()], turn["value"], info))
    return turns


def _am_reference(field: Callable[[str], Any]) -> Reference:
    test_case = _blank_to_none(field("test_case"))
    if isinstance(test_case, str) and not test_case.lstrip().startswith(("{", "[")):
        tests, fn_name = [], None  # assert-style test code: no typed home, kept in the original row
    else:
        tests, fn_name = tests_from_value(test_case, "info.test_case")
    instructions = constraint_from_value(_blank_to_none(field("instruction_constrain")), "info.instruction_constrain")
    return Reference(answer=answer_text(field("ground_truth"), "info.ground_truth"), tests=tests, fn_name=fn_name,
                     instructions=instructions)


def query_from_am(row: Any, default_category: str | None = None, source: str = "",
                  with_trace: bool = True) -> tuple[Query, Trace | None]:
    """An AM record -> its Query, and the Trace of its assistant turn when it has one (and `with_trace`: query
    ingest passes False, so a damaged released score does not lose the query).

    Query fields (category, source, ground_truth, test_case, instruction_constrain) are read from the last human
    turn's info, falling back to the answer turn's info where the question's has none.
    """
    if not isinstance(row, dict):
        raise FormatError(f"expected a JSON object, got {kind(row)}")
    turns = _am_turns(row)
    system = text(row.get("system"), "system")
    users = [index for index, (role, _, _) in enumerate(turns) if role == "user"]
    if not users:
        raise FormatError("conversations: expected at least one human turn")
    last_user = users[-1]
    answers = [index for index, (role, _, _) in enumerate(turns) if role == "assistant" and index > last_user]
    answer_info = turns[answers[-1]][2] if answers else {}

    def field(name: str) -> Any:
        value = turns[last_user][2].get(name)
        return answer_info.get(name) if value is None else value

    messages = [Message(role="system", content=system)] if system else []
    messages += [Message(role=role, content=value) for role, value, _ in turns[: last_user + 1]]
    info_source = field("source")
    query = make_query(category_name(field("category"), default_category, "info.category"), messages,
                       _am_reference(field), metadata={"am": {"row": row}},
                       source=info_source if isinstance(info_source, str) and info_source else source)
    if not answers or not with_trace:
        return query, None
    score = number(answer_info.get("verify_score"), "info.verify_score")
    attempt = Attempt(index=0, seed=0, response=turns[answers[-1]][1], score=score,
                      passed=None if score is None else score >= 0.9, verifier="released")
    trace = Trace(query=query, teacher=text(answer_info.get("model_name"), "info.model_name") or "released",
                  attempts=[attempt], accepted=0, ppl=number(answer_info.get("ppl"), "info.ppl"))
    return query, trace


DISTILLERY_FIELDS = "distillery"
"""Key of the object, beside `info` in an exported answer turn, that holds what this pipeline measured."""


VARIANT_FIELDS = ("variant",)
"""Trace metadata a dataset variant adds: {name, attempt, score[, key]} (see `distillery.variants.stage`)."""


def am_from_trace(trace: Trace) -> dict[str, Any]:
    """A trace -> an AM record. `value` and `info` say what the teacher wrote and what came with it: a row
    imported from AM comes back with every field as it came in, however far the trace went through the
    pipeline. What the pipeline made of it goes beside `info`, under `distillery` (see `_our_fields`), and
    only when it has something of its own, so exporting a row that was only imported gives it back equal."""
    original = trace.query.metadata.get("am", {}).get("row")
    row = _question_part(original) if original is not None else _fresh_question(trace.query)
    released = _released_turn(original, trace)
    turn = copy.deepcopy(released) if released is not None else _fresh_answer(trace)
    ours = _our_fields(trace, released)
    if ours:
        turn[DISTILLERY_FIELDS] = ours
    row["conversations"].append(turn)
    return row


def _am_role(value: Any) -> str | None:
    return _ROLE_FROM_AM.get(value.lower()) if isinstance(value, str) else None


def _question_part(original: dict[str, Any]) -> dict[str, Any]:
    """The imported row up to its last human turn, every field as it came in."""
    row = copy.deepcopy(original)
    turns = row["conversations"]
    last_human = max(i for i, t in enumerate(turns) if _am_role(t.get("from")) == "user")
    row["conversations"] = turns[: last_human + 1]
    return row


def _fresh_question(query: Query) -> dict[str, Any]:
    system = next((m.content for m in query.messages if m.role == "system"), "")
    turns = [{"from": _AM_FROM_ROLE[m.role], "value": m.content, "info": _empty_info(query)}
             for m in query.messages if m.role != "system"]
    ref = query.reference
    turns[-1]["info"].update({
        "ground_truth": ref.answer,
        "test_case": json.dumps({"inputs": [t.input for t in ref.tests], "outputs": [t.output for t in ref.tests],
                                 "fn_name": ref.fn_name}) if ref.tests else None,
        "instruction_constrain": json.dumps({"instruction_id_list": [c["id"] for c in ref.instructions],
                                             "kwargs": [c.get("kwargs", {}) for c in ref.instructions]}) if ref.instructions else None,
    })
    return {"system": system, "conversations": turns}


def _released_turn(original: dict[str, Any] | None, trace: Trace) -> dict[str, Any] | None:
    """The imported answer turn this trace's accepted response is: the one in the imported row, or the one a
    replay teacher served from an AM file (its `info` travels in the attempt's details); None for a new answer."""
    verdict = trace.verdict
    if verdict is None:
        return None
    text = verdict.original_response
    if original is not None:
        last = original["conversations"][-1]
        if _am_role(last.get("from")) == "assistant" and last.get("value") == text:
            return last
    info = verdict.details.get("backend", {}).get("info")
    return {"from": "assistant", "value": text, "info": info} if isinstance(info, dict) else None


def _fresh_answer(trace: Trace) -> dict[str, Any]:
    verdict = trace.verdict
    info = _empty_info(trace.query)
    info.update({"think_content": trace.think, "answer_content": trace.answer,
                 "verify_score": verdict.score if verdict else None, "model_name": trace.teacher, "ppl": trace.ppl})
    return {"from": "assistant", "value": verdict.original_response if verdict else "", "info": info}


def _our_fields(trace: Trace, released: dict[str, Any] | None) -> dict[str, Any]:
    """What the pipeline has of its own for a trace, each under the AM name it sits beside:
    `model_name` (the recipe's teacher, once `generate` made the trace), `verify_score` and `verifier` (our verdict), `ppl` and `ppl_model`
    (the perplexity step), `value` (the response after a `normalise` step rewrote its layout) and `normalised`
    (what that step changed), and a dataset variant's `variant` mark: its name, the attempt it took and that attempt's score."""
    verdict = trace.verdict
    ours: dict[str, Any] = {}
    if released is None or "backend" in trace.metadata:
        ours["model_name"] = trace.teacher
    if verdict is not None and verdict.verifier not in (None, "released"):
        ours.update(verify_score=verdict.score, verifier=verdict.verifier)
    if "ppl_tokens" in trace.metadata:
        ours.update(ppl=trace.ppl, ppl_model=trace.metadata.get("ppl_model"))
    if verdict is not None and verdict.response != verdict.original_response:
        ours["value"] = verdict.response
    if "normalised" in trace.metadata:
        ours["normalised"] = trace.metadata["normalised"]
    ours.update({key: trace.metadata[key] for key in VARIANT_FIELDS if key in trace.metadata})
    return ours


def _empty_info(query: Query) -> dict[str, Any]:
    return {"source": query.source, "category": query.category, "ground_truth": None, "test_case": None,
            "instruction_constrain": None, "think_content": None, "answer_content": None, "verify_score": None,
            "model_name": None, "ppl": None}


_MESSAGES_KNOWN = {"messages", "category", "reference", "source"}
_REFERENCE_FIELDS = ", ".join(Reference.model_fields)


def reference_from_value(value: Any, field: str = "reference") -> Reference:
    """A `reference` object (or its JSON text); answers and tests in any layout `coerce` accepts."""
    value = decoded(_blank_to_none(value), field, "an object")
    if value is None:
        return Reference()
    if not isinstance(value, dict):
        raise FormatError(f"{field}: expected an object with {_REFERENCE_FIELDS}, got {kind(value)}")
    unknown = sorted(set(value) - set(Reference.model_fields))
    if unknown:
        raise FormatError(f"{field}: unknown field(s) {', '.join(unknown)}; expected some of {_REFERENCE_FIELDS}")
    tests, fn_name = tests_from_value(value.get("tests"), f"{field}.tests")
    fields = {**value, "answer": answer_text(value.get("answer"), f"{field}.answer"), "tests": tests,
              "fn_name": text(value.get("fn_name"), f"{field}.fn_name") or fn_name}
    try:
        return Reference.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        raise FormatError(f"{field}.{location}: {first['msg']}, got {kind(first.get('input'))}") from None


def query_from_messages(row: Any, default_category: str | None = None, source: str = "") -> Query:
    """`{messages, category?, reference?, source?, ...}` -> Query; unknown fields go to metadata."""
    if not isinstance(row, dict):
        raise FormatError(f"expected a JSON object, got {kind(row)}")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise FormatError(f"messages: expected a non-empty list of {{role, content}}, got {kind(messages)}")
    parsed = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) or \
                message.get("role") not in ("system", "user", "assistant"):
            raise FormatError(f"messages[{index}]: expected {{role: system|user|assistant, content: str}}, "
                              f"got {message!r:.120}")
        parsed.append(Message(role=message["role"], content=message["content"]))
    if not any(m.role == "user" for m in parsed):
        raise FormatError("messages: expected at least one user turn")
    parsed, answer = split_response(parsed, messages)
    metadata = {k: v for k, v in row.items() if k not in _MESSAGES_KNOWN}
    if answer is not None:
        metadata["messages"] = {"response": answer}
    return make_query(category_name(row.get("category"), default_category), parsed,
                      reference_from_value(row.get("reference")),
                      source=row.get("source") if isinstance(row.get("source"), str) else source, metadata=metadata)


def split_response(parsed: list[Message], raw: list[Any]) -> tuple[list[Message], dict[str, Any] | None]:
    """(the query's turns: up to the last user turn, the answer turn after it as it came in, or None).

    A messages record of an answered conversation ends with the assistant's answer: it is the response, never
    part of the query, or a teacher would be sent it and filters would count and condition on it twice.
    """
    last_user = max(i for i, m in enumerate(parsed) if m.role == "user")
    after = parsed[last_user + 1:]
    if not after:
        return parsed, None
    if len(after) > 1 or after[0].role != "assistant":
        raise FormatError(f"messages: expected at most one assistant turn (the answer) after the last user turn, "
                          f"got {[m.role for m in after]}")
    return parsed[: last_user + 1], raw[-1]


def messages_from_query(query: Query, response: str | None = None) -> dict[str, Any]:
    """Query (and optionally an answer) -> a messages record; inverse of `query_from_messages`.

    Without `response`, an answer that came in with the query is put back as it was."""
    row: dict[str, Any] = dict(query.metadata)
    row.pop("am", None)
    imported = row.pop("messages", {}).get("response")
    messages = [m.model_dump() for m in query.messages]
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    elif imported is not None:
        messages.append(imported)
    row.update({"messages": messages, "category": query.category, "source": query.source})
    reference = query.reference.model_dump(exclude_defaults=True)
    if reference:
        row["reference"] = reference
    return row
