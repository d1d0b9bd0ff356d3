"""JSON as RFC 8259 defines it, for untrusted input: anything Python's `json` accepts but cannot write back
unchanged, or that would crash a later stage, is an error that says what was expected.

Refused: NaN/Infinity (not JSON), numbers that overflow a double (1e400 would become inf), duplicate keys
(Python silently keeps the last), lone surrogate escapes ("\\ud800" cannot be encoded as UTF-8, so writing the
record would fail), and nesting deeper than `MAX_DEPTH` (records nest a few levels more, and the serialisers
have limits of their own; thousands of levels make `json.loads` raise RecursionError, not JSONDecodeError).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 100
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class JSONError(ValueError):
    """Text that is not strict JSON; the message says what is wrong and what was expected."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JSONError(f"duplicate key {key!r} in one object (expected each key once)")
            seen.add(key)
    return result


def _constant(name: str) -> Any:
    raise JSONError(f"{name} is not JSON (expected a finite number or null)")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JSONError(f"number {text[:40]} overflows a double (expected a finite number)")
    return value


def loads(text: str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one JSON document strictly; raises JSONError."""
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_constant=_constant, parse_float=_float)
    except JSONError:
        raise
    except RecursionError:
        raise JSONError(f"JSON nested too deep to parse (expected at most {max_depth} levels)") from None
    except json.JSONDecodeError as error:
        raise JSONError(f"bad JSON: {error.msg} at column {error.colno}") from None
    except ValueError as error:  # an integer over sys.get_int_max_str_digits() digits
        raise JSONError(f"bad JSON number: {error}") from None
    deep = text.count("[") + text.count("{") > max_depth
    surrogates = _SURROGATE_ESCAPE.search(text) is not None
    if deep or surrogates:
        check(value, max_depth, strings=surrogates)
    return value


def check(value: Any, max_depth: int = MAX_DEPTH, strings: bool = True) -> None:
    """Raise JSONError if `value` nests deeper than `max_depth` or (with `strings`) holds a lone surrogate."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = list(node.values())
            if strings:
                children.extend(node)
        elif isinstance(node, list):
            children = node
        else:
            if strings and isinstance(node, str):
                _encodable(node)
            continue
        if depth > max_depth:
            raise JSONError(f"JSON nested {depth}+ levels deep (expected at most {max_depth})")
        stack.extend((child, depth + 1) for child in children)


def _encodable(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise JSONError(f"lone surrogate \\u{ord(text[error.start]):04x} in a string at character {error.start} "
                        "(expected valid Unicode: a surrogate escape must be half of a pair)") from None
