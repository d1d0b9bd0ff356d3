"""Reading the Trace records that every filter stage takes as input, and the screening every filter shares."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pydantic import ValidationError

from distillery.schema.records import Trace
from distillery.core.stage import Item, Outcome


def parse_trace(item: Item) -> Trace | str:
    """The trace an item carries, or why it cannot be one (the reason its item is quarantined)."""
    if item.record is None:
        return item.problem or "unreadable input"
    try:
        return Trace.model_validate(item.record)
    except ValidationError as error:
        first = error.errors()[0]
        return f"not a Trace record: {'.'.join(map(str, first['loc']))}: {first['msg']}"


def screen_traces(items: Iterable[Item], unaccepted: str = "no accepted response"
                  ) -> Iterator[Outcome | tuple[Item, Trace]]:
    """What every filter does first: quarantine an item that is not a trace, reject (pass on as dropped) a trace
    with no accepted response, and hand on the rest as (item, trace) for the filter's own check."""
    for item in items:
        trace = parse_trace(item)
        if isinstance(trace, str):
            yield Outcome.quarantined(item, trace)
        elif trace.accepted is None:
            yield Outcome.rejected(item, unaccepted)
        else:
            yield item, trace


def accepted_traces(items: Iterable[Item]) -> Iterator[tuple[Item, Trace]]:
    """The (item, trace) pairs a corpus-wide scan counts: every well-formed trace with an accepted response."""
    for entry in screen_traces(items):
        if not isinstance(entry, Outcome):
            yield entry
