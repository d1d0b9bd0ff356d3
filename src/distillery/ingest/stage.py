"""`ingest`: JSONL, Parquet, AM-format and messages-format files -> Query records sharded by stable id.

Every task reads every input and keeps the records whose id hashes to its shard, so a shard's content depends
only on the inputs and the shard count (never on which task ran first). A malformed line (bad JSON, invalid
UTF-8, wrong types, missing fields) is quarantined with file:line and the reason; a repeated query id is rejected
as a duplicate of its first occurrence.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from distillery.core.formats import FormatError, query_from_am, query_from_messages
from distillery.core.recipe import InputPath
from distillery.core.records import Reference, make_query
from distillery.core.stage import Item, Outcome, RecordStage, ShardContext, StageConfig, register
from distillery.core.store import config_digest


class InputSpec(StageConfig):
    path: InputPath = Field(description="A .jsonl, .jsonl.gz or .parquet file.")
    format: Literal["messages", "am", "fields"] = Field("messages", description="messages: {messages, category?, reference?}; am: AM-Thinking-v1-Distilled; fields: flat rows mapped by `fields`.")
    category: str | None = Field(None, description="Category for records that carry none.")
    source: str | None = Field(None, description="Source name recorded on every query (default: the file name).")
    fields: dict[str, str] = Field(default_factory=dict, description="format=fields: our name -> column (prompt, answer, category, system).")
    limit: int | None = Field(None, ge=1, description="Read at most this many lines (for smoke runs).")


class IngestConfig(StageConfig):
    inputs: list[InputSpec] = Field(min_length=1, description="Files to read, in order; earlier files win on duplicate ids.")


def shard_of(key: str, num_shards: int) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % num_shards


def _read_lines(spec: InputSpec) -> Iterator[tuple[int, Any, str]]:
    """(line number, parsed JSON object or an exception, raw text) for every non-empty line/row of a file."""
    path = spec.path
    count = 0
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches():
            for row in batch.to_pylist():
                count += 1
                if spec.limit and count > spec.limit:
                    return
                yield count, row, ""
        return
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            count += 1
            if spec.limit and count > spec.limit:
                return
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield line_number, FormatError(f"invalid UTF-8 at byte {error.start}"), raw.decode("utf-8", "replace")
                continue
            try:
                yield line_number, json.loads(text), text
            except json.JSONDecodeError as error:
                yield line_number, FormatError(f"bad JSON: {error.msg} at column {error.colno}"), text


def _from_fields(row: Any, spec: InputSpec, source: str) -> Any:
    if not isinstance(row, dict):
        raise FormatError(f"expected a JSON object, got {type(row).__name__}")
    mapping = {"prompt": "prompt", "answer": "answer", "category": "category", "system": "system", **spec.fields}
    prompt = row.get(mapping["prompt"])
    if not isinstance(prompt, str):
        raise FormatError(f"{mapping['prompt']}: expected a string, got {type(prompt).__name__}")
    category = row.get(mapping["category"], spec.category)
    if category is None:
        raise FormatError(f"no category: column {mapping['category']!r} is missing and the input sets no default")
    messages = [{"role": "user", "content": prompt}]
    if isinstance(row.get(mapping["system"]), str):
        messages.insert(0, {"role": "system", "content": row[mapping["system"]]})
    answer = row.get(mapping["answer"])
    used = {mapping["prompt"], mapping["answer"], mapping["category"], mapping["system"]}
    try:
        return make_query(category, messages, Reference(answer=None if answer is None else str(answer)), source=source,
                          metadata={k: v for k, v in row.items() if k not in used})
    except ValueError as error:
        raise FormatError(str(error).splitlines()[0]) from None


def parse_row(row: Any, spec: InputSpec) -> dict[str, Any]:
    """One input row -> a Query dict; raises FormatError saying what is wrong."""
    source = spec.source or spec.path.name
    if isinstance(row, Exception):
        raise row
    if spec.format == "am":
        query, _ = query_from_am(row, spec.category, source)
    elif spec.format == "messages":
        query = query_from_messages(row, spec.category, source)
    else:
        query = _from_fields(row, spec, source)
    return query.model_dump(mode="json")


@register
class Ingest(RecordStage):
    name = "ingest"
    Config = IngestConfig

    def input_step(self) -> str | None:
        return None

    def input_digest(self, ctx: ShardContext) -> str:
        """External input: keyed by each file's path, size and modification time."""
        stats = []
        for spec in self.config.inputs:
            stat = Path(spec.path).stat()
            stats.append([str(spec.path), stat.st_size, stat.st_mtime_ns])
        return config_digest(stats)

    def read_inputs(self, ctx: ShardContext) -> Iterator[Item]:
        first_seen: dict[str, str] = {}
        position = 0
        for spec in self.config.inputs:
            for line_number, row, raw in _read_lines(spec):
                where = f"{spec.path}:{line_number}"
                try:
                    record = parse_row(row, spec)
                except (FormatError, ValueError) as error:
                    if shard_of(where, ctx.num_shards) == ctx.shard_index:
                        yield Item(position, where, None, where, problem=str(error), raw=raw[:10_000])
                        position += 1
                    continue
                key = record["id"]
                if shard_of(key, ctx.num_shards) != ctx.shard_index:
                    continue
                if key in first_seen:
                    yield Item(position, f"{key}@{where}", record, where, problem=f"duplicate of {first_seen[key]}")
                else:
                    first_seen[key] = where
                    yield Item(position, key, record, where)
                position += 1

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        for item in items:
            if item.record is None:
                yield Outcome.quarantined(item, item.problem)
            elif item.problem:
                yield Outcome.rejected(item, item.problem)
            else:
                yield Outcome.kept(item, item.record)
