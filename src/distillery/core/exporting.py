"""`distillery export`: a step's kept records as AM-Thinking-v1-Distilled, messages, or native JSONL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillery.core.formats import am_from_trace, messages_from_query
from distillery.core.recipe import Recipe
from distillery.core.records import Query, Trace
from distillery.core.runner import RunInputs
from distillery.core.store import RunDir, write_jsonl


def _convert(record: dict[str, Any], fmt: str) -> dict[str, Any]:
    if fmt == "native":
        return record
    if "query" in record:
        trace = Trace.model_validate(record)
        return am_from_trace(trace) if fmt == "am" else messages_from_query(trace.query, trace.response)
    query = Query.model_validate(record)
    if fmt == "am":
        raise ValueError("AM format holds answered conversations: export a step with traces (generate or later)")
    return messages_from_query(query)


def export_step(run: RunDir, recipe: Recipe, step: str, teacher: str | None, fmt: str, output: Path) -> int:
    if teacher is None and recipe.teachers_of(step) != [None]:
        raise ValueError(f"step {step!r} runs per teacher: pass --teacher (one of {recipe.teachers_of(step)})")

    def rows() -> Iterator[dict[str, Any]]:
        for item in RunInputs(run, recipe, step, teacher).everything():
            yield _convert(item.record, fmt)

    count, _ = write_jsonl(output, rows())
    return count
