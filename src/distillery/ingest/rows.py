"""One parsed input row -> a Query, whatever its layout.

Layouts: AM-Thinking-v1-Distilled `conversations`, OpenAI-style `messages`, or a flat query row (`prompt`, or
`problem`/`question` as released benchmark files name it, with `answer`, `category`, `system`, `tests`,
`fn_name`, `starter_code`, `instruction_id_list` + `kwargs`). With format `auto` the layout is detected per
row, so one file may mix them. Columns with no typed home stay in `metadata` with their values and types.
"""

from __future__ import annotations

from typing import Any, Literal

from distillery.schema.coerce import (
    FormatError,
    answer_text,
    category_name,
    instructions_from_value,
    kind,
    tests_from_value,
    text,
)
from distillery.schema.formats import query_from_am, query_from_messages
from distillery.schema.records import Message, Query, Reference, make_query

RowFormat = Literal["auto", "messages", "am", "fields"]
FIELD_NAMES = ("prompt", "answer", "category", "system", "tests", "fn_name", "starter_code",
               "instruction_id_list", "kwargs")
"""Our names for the columns of a flat query row; `InputSpec.fields` maps them to a file's own column names."""
PROMPT_COLUMNS = ("prompt", "problem", "question")
"""Where a flat row's prompt is looked for, in order, unless `fields` names its column."""


def query_from_row(row: Any, row_format: RowFormat, default_category: str | None, source: str,
                   fields: dict[str, str]) -> Query:
    """Raises FormatError saying which field is wrong and what was expected."""
    if not isinstance(row, dict):
        raise FormatError(f"expected a JSON object, got {kind(row)}")
    layout = detect_layout(row, fields) if row_format == "auto" else row_format
    if layout == "am":
        return query_from_am(row, default_category, source, with_trace=False)[0]
    if layout == "messages":
        return query_from_messages(row, default_category, source)
    return query_from_fields(row, default_category, source, fields)


def detect_layout(row: dict[str, Any], fields: dict[str, str]) -> str:
    if "conversations" in row:
        return "am"
    if "messages" in row:
        return "messages"
    if _prompt_column(row, fields) is not None:
        return "fields"
    columns = [fields["prompt"]] if "prompt" in fields else list(PROMPT_COLUMNS)
    raise FormatError(f"expected a `messages` list, AM `conversations`, or a prompt column ({', '.join(columns)}); "
                      f"the row has {', '.join(sorted(row)[:12]) or 'no fields'}")


def _prompt_column(row: dict[str, Any], fields: dict[str, str]) -> str | None:
    if "prompt" in fields:
        return fields["prompt"] if fields["prompt"] in row else None
    return next((column for column in PROMPT_COLUMNS if column in row), None)


def query_from_fields(row: dict[str, Any], default_category: str | None, source: str,
                      fields: dict[str, str]) -> Query:
    column = {name: fields.get(name, name) for name in FIELD_NAMES}
    column["prompt"] = _prompt_column(row, fields) or column["prompt"]
    prompt = row.get(column["prompt"])
    if not isinstance(prompt, str) or not prompt.strip():
        raise FormatError(f"{column['prompt']}: expected a non-empty string (the prompt), got {kind(prompt)}")
    messages = [Message(role="user", content=prompt)]
    system = text(row.get(column["system"]), column["system"])
    if system:
        messages.insert(0, Message(role="system", content=system))
    tests, fn_name = tests_from_value(row.get(column["tests"]), column["tests"])
    used = {column[name] for name in ("prompt", "answer", "category", "system", "tests", "fn_name", "starter_code")}
    ids = row.get(column["instruction_id_list"])
    if ids is not None:
        used |= {column["instruction_id_list"], column["kwargs"]}
    reference = Reference(
        answer=answer_text(row.get(column["answer"]), column["answer"]),
        tests=tests,
        fn_name=text(row.get(column["fn_name"]), column["fn_name"]) or fn_name,
        starter_code=text(row.get(column["starter_code"]), column["starter_code"]) or None,
        instructions=instructions_from_value(ids, row.get(column["kwargs"]), column["instruction_id_list"]),
    )
    return make_query(category_name(row.get(column["category"]), default_category, column["category"]), messages,
                      reference, source=source, metadata={k: v for k, v in row.items() if k not in used})
