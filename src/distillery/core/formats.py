"""Import and export of the released dataset formats, lossless both ways.

- AM-Thinking-v1-Distilled: `{system, conversations: [{from: human|assistant, value, info: {source, category,
  ground_truth, test_case, instruction_constrain, think_content, answer_content, verify_score, model_name, ppl}}]}`.
- OpenAI-style messages: `{messages: [{role, content}], ...}` plus our optional `category`, `reference`, `source`.

Import keeps every field it has no typed home for in `metadata`, and export lays our fields over it, so
`export(import(x)) == x` for records in either format.
"""

from __future__ import annotations

import json
from typing import Any

from distillery.core.records import (
    CATEGORIES,
    Attempt,
    Message,
    Query,
    Reference,
    TestCase,
    Trace,
    make_query,
)

AM_CATEGORY_ALIASES = {"if": "instruction_following", "instruction following": "instruction_following",
                       "other": "general", "general chat": "chat", "reasoning": "general"}
_ROLE_FROM_AM = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_AM_FROM_ROLE = {"user": "human", "assistant": "assistant", "system": "system"}


class FormatError(ValueError):
    """A record that does not fit the expected format; the message says which field and what was expected."""


def _category(value: Any, default: str | None) -> str:
    if value is None:
        if default is None:
            raise FormatError("no category: the record has none and the input sets no default `category`")
        return default
    if not isinstance(value, str):
        raise FormatError(f"category: expected a string, got {type(value).__name__}")
    name = AM_CATEGORY_ALIASES.get(value.strip().lower(), value.strip().lower())
    if name not in CATEGORIES:
        raise FormatError(f"category: expected one of {list(CATEGORIES)} (or {sorted(AM_CATEGORY_ALIASES)}), got {value!r}")
    return name


def _tests_from_am(test_case: Any) -> tuple[list[TestCase], str | None]:
    """AM/LiveCodeBench-style tests: {"inputs": [...], "outputs": [...], "fn_name": ...} (possibly JSON text)."""
    if isinstance(test_case, str):
        try:
            test_case = json.loads(test_case)
        except json.JSONDecodeError:
            return [], None
    if isinstance(test_case, dict) and isinstance(test_case.get("inputs"), list) and isinstance(test_case.get("outputs"), list):
        tests = [TestCase(input=_as_text(i), output=_as_text(o)) for i, o in zip(test_case["inputs"], test_case["outputs"])]
        return tests, test_case.get("fn_name")
    return [], None


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _constraints_from_am(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return []
    if isinstance(value, dict) and isinstance(value.get("instruction_id_list"), list):
        kwargs = value.get("kwargs") or [{}] * len(value["instruction_id_list"])
        return [{"id": i, "kwargs": k or {}} for i, k in zip(value["instruction_id_list"], kwargs)]
    return []


def query_from_am(row: Any, default_category: str | None = None, source: str = "") -> tuple[Query, Trace | None]:
    """An AM record -> its Query, and the Trace of its assistant turn when it has one."""
    if not isinstance(row, dict):
        raise FormatError(f"expected a JSON object, got {type(row).__name__}")
    conversations = row.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise FormatError("conversations: expected a non-empty list of {from, value, info}")
    messages: list[Message] = []
    for index, turn in enumerate(conversations):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) or turn.get("from") not in _ROLE_FROM_AM:
            raise FormatError(f"conversations[{index}]: expected {{from: human|assistant, value: str, info: {{...}}}}")
        messages.append(Message(role=_ROLE_FROM_AM[turn["from"]], content=turn["value"]))
    if isinstance(row.get("system"), str) and row["system"]:
        messages.insert(0, Message(role="system", content=row["system"]))
    last_user = max(i for i, m in enumerate(messages) if m.role == "user") if any(m.role == "user" for m in messages) else None
    if last_user is None:
        raise FormatError("conversations: no human turn")
    question_turn = conversations[last_user - (1 if messages[0].role == "system" else 0)]
    info = question_turn.get("info") or {}
    tests, fn_name = _tests_from_am(info.get("test_case"))
    reference = Reference(
        answer=info.get("ground_truth") if isinstance(info.get("ground_truth"), str) else None,
        tests=tests, fn_name=fn_name, instructions=_constraints_from_am(info.get("instruction_constrain")),
    )
    query = make_query(_category(info.get("category"), default_category), messages[: last_user + 1], reference,
                       source=info.get("source") or source, metadata={"am": {"row": row}})
    trace = None
    if last_user + 1 < len(messages):
        answer_turn = conversations[-1]
        answer_info = answer_turn.get("info") or {}
        score = answer_info.get("verify_score")
        attempt = Attempt(index=0, seed=0, response=answer_turn["value"], score=score,
                          passed=None if score is None else score >= 0.9, verifier="released")
        trace = Trace(query=query, teacher=answer_info.get("model_name") or "released", attempts=[attempt], accepted=0,
                      think=answer_info.get("think_content") or "", answer=answer_info.get("answer_content") or "",
                      ppl=answer_info.get("ppl"))
    return query, trace


def am_from_trace(trace: Trace) -> dict[str, Any]:
    """A trace -> an AM record; a trace imported from AM comes back byte-for-byte equal."""
    original = trace.query.metadata.get("am", {}).get("row")
    if original is not None and _same_response(original, trace):
        return original
    query = trace.query
    system = next((m.content for m in query.messages if m.role == "system"), "")
    turns: list[dict[str, Any]] = []
    for message in query.messages:
        if message.role == "system":
            continue
        turns.append({"from": _AM_FROM_ROLE[message.role], "value": message.content, "info": _empty_info(query)})
    ref = query.reference
    turns[-1]["info"].update({
        "ground_truth": ref.answer,
        "test_case": json.dumps({"inputs": [t.input for t in ref.tests], "outputs": [t.output for t in ref.tests],
                                 "fn_name": ref.fn_name}) if ref.tests else None,
        "instruction_constrain": json.dumps({"instruction_id_list": [c["id"] for c in ref.instructions],
                                             "kwargs": [c.get("kwargs", {}) for c in ref.instructions]}) if ref.instructions else None,
    })
    verdict = trace.verdict
    answer_info = _empty_info(query)
    answer_info.update({"think_content": trace.think, "answer_content": trace.answer,
                        "verify_score": verdict.score if verdict else None, "model_name": trace.teacher, "ppl": trace.ppl})
    turns.append({"from": "assistant", "value": trace.response, "info": answer_info})
    return {"system": system, "conversations": turns}


def _same_response(original: dict[str, Any], trace: Trace) -> bool:
    last = original["conversations"][-1]
    return last.get("from") != "human" and last.get("value") == trace.response and \
        (last.get("info") or {}).get("ppl") == trace.ppl


def _empty_info(query: Query) -> dict[str, Any]:
    return {"source": query.source, "category": query.category, "ground_truth": None, "test_case": None,
            "instruction_constrain": None, "think_content": None, "answer_content": None, "verify_score": None,
            "model_name": None, "ppl": None}


_MESSAGES_KNOWN = {"messages", "category", "reference", "source"}


def query_from_messages(row: Any, default_category: str | None = None, source: str = "") -> Query:
    """`{messages, category?, reference?, source?, ...}` -> Query; unknown fields go to metadata."""
    if not isinstance(row, dict):
        raise FormatError(f"expected a JSON object, got {type(row).__name__}")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise FormatError("messages: expected a non-empty list of {role, content}")
    parsed = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) or \
                message.get("role") not in ("system", "user", "assistant"):
            raise FormatError(f"messages[{index}]: expected {{role: system|user|assistant, content: str}}, got {message!r:.120}")
        parsed.append(Message(role=message["role"], content=message["content"]))
    if not any(m.role == "user" for m in parsed):
        raise FormatError("messages: no user turn")
    reference = row.get("reference") or {}
    if not isinstance(reference, dict):
        raise FormatError("reference: expected an object with answer/tests/fn_name/instructions")
    try:
        ref = Reference.model_validate(reference)
    except ValueError as error:
        raise FormatError(f"reference: {error}") from None
    metadata = {k: v for k, v in row.items() if k not in _MESSAGES_KNOWN}
    return make_query(_category(row.get("category"), default_category), parsed, ref,
                      source=row.get("source") if isinstance(row.get("source"), str) else source, metadata=metadata)


def messages_from_query(query: Query, response: str | None = None) -> dict[str, Any]:
    """Query (and optionally an answer) -> a messages record; inverse of `query_from_messages`."""
    row: dict[str, Any] = dict(query.metadata)
    row.pop("am", None)
    messages = [m.model_dump() for m in query.messages]
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    row.update({"messages": messages, "category": query.category, "source": query.source})
    reference = query.reference.model_dump(exclude_defaults=True)
    if reference:
        row["reference"] = reference
    return row
