"""Typed values from the loosely typed fields of files other tools wrote.

Each function returns the value in our type or raises `FormatError` naming the field, what it expected and what
it got. Lenient where the meaning is clear (a number answer is its text, "1.0" is a score, "IF" is
instruction_following); strict where a guess would change the data (`str()` of a list is not an answer).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from distillery.schema import strictjson
from distillery.schema.records import CATEGORIES, TestCase


class FormatError(ValueError):
    """A record that does not fit the expected format; the message says which field and what was expected."""


CATEGORY_ALIASES: dict[str, str] = {
    "maths": "math", "mathematics": "math", "mathematical reasoning": "math",
    "coding": "code", "programming": "code", "code generation": "code",
    "stem": "science", "scientific reasoning": "science",
    "if": "instruction_following", "ifeval": "instruction_following", "instruction": "instruction_following",
    "instruction follow": "instruction_following", "instruction following": "instruction_following",
    "general chat": "chat", "conversation": "chat", "dialogue": "chat",
    "other": "general", "reasoning": "general",
}
"""Spellings seen in released datasets (AM uses "instruction follow" and "general chat"), compared after
lower-casing and collapsing spaces, hyphens and underscores."""

_SEPARATORS = re.compile(r"[\s_\-]+")


def kind(value: Any) -> str:
    """How a value reads in an error message: `null`, `a boolean`, `a number (3)`, `a list`, ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value!r:.40})"
    if isinstance(value, str):
        return f"a string ({value!r:.60})"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def category_name(value: Any, default: str | None = None, field: str = "category") -> str:
    """One of CATEGORIES from its name or an alias; `default` when the record has none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if default is None:
            raise FormatError(f"{field}: missing, and the input sets no default `category` "
                              f"(expected one of {', '.join(CATEGORIES)})")
        return category_name(default, None, field)
    if not isinstance(value, str):
        raise FormatError(f"{field}: expected a string naming one of {', '.join(CATEGORIES)}, got {kind(value)}")
    spelled = _SEPARATORS.sub(" ", value).strip().lower()
    name = spelled.replace(" ", "_")
    if name in CATEGORIES:
        return name
    if spelled in CATEGORY_ALIASES:
        return CATEGORY_ALIASES[spelled]
    raise FormatError(f"{field}: unknown category {value!r}; expected one of {', '.join(CATEGORIES)} "
                      f"or an alias ({', '.join(sorted(CATEGORY_ALIASES))})")


def answer_text(value: Any, field: str = "answer") -> str | None:
    """A reference answer's text: strings as they are, numbers as written; None when absent or empty."""
    if value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    raise FormatError(f"{field}: expected a string or a number, got {kind(value)} "
                      "(the text of a list, an object or a boolean is not an answer)")


def number(value: Any, field: str) -> float | None:
    """A finite number from a number or its text ("1.0", 1, 1.0 are all 1.0); None when absent."""
    if value is None:
        return None
    result = None
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            result = float(value.strip() if isinstance(value, str) else value)
        except (ValueError, OverflowError):
            result = None
    if result is None or not math.isfinite(result):
        raise FormatError(f"{field}: expected a finite number or its text, got {kind(value)}")
    return result


def text(value: Any, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise FormatError(f"{field}: expected a string, got {kind(value)}")


def decoded(value: Any, field: str, expected: str) -> Any:
    """`value`, or the JSON it holds when it is a string (released files store objects either way)."""
    if not isinstance(value, str):
        return value
    try:
        return strictjson.loads(value)
    except strictjson.JSONError as error:
        raise FormatError(f"{field}: expected {expected} or its JSON text; the text is not JSON: {error}") from None


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


_TESTS_EXPECTED = "a list of {input, output}, or {inputs: [...], outputs: [...], fn_name?}"


def tests_from_value(value: Any, field: str = "tests") -> tuple[list[TestCase], str | None]:
    """Code tests in either released layout (possibly as JSON text) -> (tests, fn_name)."""
    value = decoded(value, field, _TESTS_EXPECTED)
    if value is None or value == []:
        return [], None
    if isinstance(value, dict) and "inputs" in value and "outputs" in value:
        inputs, outputs = value["inputs"], value["outputs"]
        if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
            raise FormatError(f"{field}: expected `inputs` and `outputs` lists of the same length")
        fn_name = text(value.get("fn_name"), f"{field}.fn_name")
        return [TestCase(input=_as_text(i), output=_as_text(o)) for i, o in zip(inputs, outputs)], fn_name or None
    if isinstance(value, list) and all(isinstance(t, dict) and "input" in t and "output" in t for t in value):
        return [TestCase(input=_as_text(t["input"]), output=_as_text(t["output"])) for t in value], None
    raise FormatError(f"{field}: expected {_TESTS_EXPECTED}, got {kind(value)}")


_INSTRUCTION_ID = re.compile(r"[a-z_]+:[a-z_0-9]+")


def constraint_from_value(value: Any, field: str) -> list[dict[str, Any]]:
    """IFEval constraints from `{instruction_id_list, kwargs}` (an object or its JSON text), or from bare instruction
    ids without kwargs (`"punctuation:no_comma"`, or a list of ids): each of those takes no kwargs."""
    if isinstance(value, str) and _INSTRUCTION_ID.fullmatch(value.strip()):
        return [{"id": value.strip(), "kwargs": {}}]
    constraint = decoded(value, field, "{instruction_id_list, kwargs} or an instruction id")
    if constraint is None:
        return []
    if isinstance(constraint, list):
        return instructions_from_value(constraint, None, field)
    if not isinstance(constraint, dict):
        raise FormatError(f"{field}: expected {{instruction_id_list, kwargs}} or an instruction id, got {kind(constraint)}")
    return instructions_from_value(constraint.get("instruction_id_list"), constraint.get("kwargs"),
                                   f"{field}.instruction_id_list")


def instructions_from_value(ids: Any, kwargs: Any, field: str = "instruction_id_list") -> list[dict[str, Any]]:
    """IFEval-style constraints: instruction ids with one kwargs object (or null) each."""
    ids = decoded(ids, field, "a list of instruction ids")
    if ids is None:
        return []
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise FormatError(f"{field}: expected a list of instruction ids (strings), got {kind(ids)}")
    kwargs = decoded(kwargs, "kwargs", "a list of objects")
    if kwargs is None:
        kwargs = [None] * len(ids)
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or \
            not all(k is None or isinstance(k, dict) for k in kwargs):
        raise FormatError(f"kwargs: expected a list of {len(ids)} objects (one per instruction id), got {kind(kwargs)}")
    return [{"id": i, "kwargs": k or {}} for i, k in zip(ids, kwargs)]
