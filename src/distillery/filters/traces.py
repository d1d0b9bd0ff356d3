"""Reading the Trace records that every filter stage takes as input."""

from __future__ import annotations

from pydantic import ValidationError

from distillery.core.records import Trace
from distillery.core.stage import Item


def parse_trace(item: Item) -> Trace | str:
    """The trace an item carries, or why it cannot be one (the reason its item is quarantined)."""
    if item.record is None:
        return item.problem or "unreadable input"
    try:
        return Trace.model_validate(item.record)
    except ValidationError as error:
        first = error.errors()[0]
        return f"not a Trace record: {'.'.join(map(str, first['loc']))}: {first['msg']}"
