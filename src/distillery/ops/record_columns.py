"""Typed columns of a run's own record (a trace or a query), for the `native` Parquet export.

Every column is nullable: a query has no teacher or answer, a record of another step (an eval sample, a packed
row) has none of these and keeps only its `record` column. Fields are read through the schema's accessors
(`Trace.think`, `Trace.answer`, `Trace.verdict`, `Query.prompt`), never from raw keys, so the columns stay right
however a trace stores its text. Nested only where the data is a list: the attempts and the n-gram hits.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from distillery.core.lineage import Lineage
from distillery.schema.records import Query, Trace

_ATTEMPT = pa.struct([("index", pa.int64()), ("seed", pa.int64()), ("score", pa.float64()), ("passed", pa.bool_()),
                      ("verifier", pa.string()), ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()),
                      ("latency_s", pa.float64()), ("finish_reason", pa.string())])
_NGRAM_HIT = pa.struct([("ngram", pa.string()), ("count", pa.int64())])

FIELDS = [
    pa.field("query_id", pa.string()), pa.field("category", pa.string()), pa.field("source", pa.string()),
    pa.field("prompt", pa.string()), pa.field("teacher", pa.string()), pa.field("lineage", pa.string()),
    pa.field("variant", pa.string()), pa.field("think", pa.string()), pa.field("answer", pa.string()),
    pa.field("verify_score", pa.float64()), pa.field("verifier", pa.string()), pa.field("accepted_attempt", pa.int64()),
    pa.field("num_attempts", pa.int64()), pa.field("attempts", pa.list_(_ATTEMPT)),
    pa.field("prompt_tokens", pa.int64()), pa.field("response_tokens", pa.int64()),
    pa.field("student_tokens", pa.int64()), pa.field("perplexity", pa.float64()), pa.field("ppl_model", pa.string()),
    pa.field("layout", pa.string()), pa.field("ngram_hits", pa.list_(_NGRAM_HIT)),
]
"""The typed columns, in file order (before the lossless `record` column)."""


def record_columns(record: Any) -> dict[str, Any]:
    """The typed columns of one record; {} (all null) for a record that is neither a trace nor a query."""
    if not isinstance(record, dict):
        return {}
    try:
        if "query" in record:
            return _trace_columns(Trace.model_validate(record))
        return _query_columns(Query.model_validate(record))
    except ValidationError:
        return {}


def _query_columns(query: Query) -> dict[str, Any]:
    return {"query_id": query.id, "category": query.category, "source": query.source, "prompt": query.prompt}


def _trace_columns(trace: Trace) -> dict[str, Any]:
    verdict = trace.verdict
    metadata = trace.metadata
    variant = (metadata.get("variant") or {}).get("name")
    hits = [hit for hit in metadata.get("ngram_hits") or [] if isinstance(hit, dict)]
    return {
        **_query_columns(trace.query),
        "teacher": trace.teacher,
        "lineage": str(Lineage(trace.teacher, variant or None)),
        "variant": variant,
        "think": trace.think if verdict is not None else None,
        "answer": trace.answer if verdict is not None else None,
        "verify_score": verdict.score if verdict is not None else None,
        "verifier": verdict.verifier if verdict is not None else None,
        "accepted_attempt": trace.accepted,
        "num_attempts": len(trace.attempts),
        "attempts": [attempt.model_dump(include=set(_ATTEMPT.names)) for attempt in trace.attempts],
        "prompt_tokens": verdict.prompt_tokens if verdict is not None else None,
        "response_tokens": trace.response_tokens,
        "student_tokens": _int_or_none(metadata.get("student_tokens")),
        "perplexity": trace.ppl,
        "ppl_model": metadata.get("ppl_model"),
        "layout": metadata.get("layout"),
        "ngram_hits": [{"ngram": str(hit.get("ngram")), "count": _int_or_none(hit.get("count"))} for hit in hits],
    }


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None
