"""A record's stable key: what journals, resume and digests identify it by."""

from __future__ import annotations

from typing import Any


def record_key(record: dict[str, Any]) -> str:
    """A query's id; for a trace, the id of the query it answers, or the key a dataset variant gave it when it keeps
    several attempts of one query (`metadata.variant.key`, "<query id>#<attempt>")."""
    if "id" in record:
        return str(record["id"])
    variant_key = record.get("metadata", {}).get("variant", {}).get("key")
    return str(variant_key or record["query"]["id"])
