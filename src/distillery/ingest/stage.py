"""`ingest`: JSONL (plain or gzip), Parquet, AM-format and messages-format files -> Query records sharded by id.

Every task reads every input and keeps the records whose id hashes to its shard, so a shard's content depends
only on the inputs and the shard count (never on which task ran first). No record can fail its file or shard:
a damaged line or row (bad JSON, invalid UTF-8, wrong types, missing fields) is quarantined with `file:line`
(`file:row N` for Parquet, 0-based) and a reason saying what was expected; a repeated query id is rejected as a
duplicate of its first occurrence. A file that cannot be read at all fails with one error naming it (when the
recipe is loaded, if it can tell then). The manifest's `files` stat accounts for every line of every file
(lines = records in all shards + blank) and `truncated_files` lists the files whose damage ended the read early.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from distillery.schema.coerce import FormatError, category_name
from distillery.core.recipe import InputPath
from distillery.core.stage import Item, Outcome, RecordStage, ShardContext, StageConfig, register
from distillery.core.store import config_digest
from distillery.ingest.readers import MAX_LINE_BYTES, PREVIEW_CHARS, FileStats, RawRow, check_readable, read_rows
from distillery.ingest.rows import FIELD_NAMES, RowFormat, query_from_row

logger = logging.getLogger(__name__)


class InputSpec(StageConfig):
    path: InputPath = Field(description="A JSON-lines file (.jsonl, .jsonl.gz) or Parquet; the format is read "
                                        "from the content.")
    format: RowFormat = Field("auto", description="auto: detect each row's layout (AM `conversations`, `messages`, "
                                                  "or a flat row with prompt/problem/question); am, messages, fields: "
                                                  "insist on one.")
    category: str | None = Field(None, description="Category for records that carry none (a name or an alias such "
                                                   "as IF, coding).")
    source: str | None = Field(None, description="Source name recorded on every query (default: the file name).")
    fields: dict[str, str] = Field(default_factory=dict, description="Flat rows: our name -> the file's column, "
                                                                     f"for {', '.join(FIELD_NAMES)}.")
    limit: int | None = Field(None, ge=1, description="Read at most this many records (for smoke runs).")
    max_line_bytes: int = Field(MAX_LINE_BYTES, ge=1, description="A longer JSON line is quarantined without being "
                                                                   "read into memory.")

    @field_validator("path")
    @classmethod
    def _readable(cls, path: Path, info: ValidationInfo) -> Path:
        if (info.context or {}).get("check_paths", True):
            check_readable(path)
        return path

    @field_validator("category")
    @classmethod
    def _known_category(cls, category: str | None) -> str | None:
        return None if category is None else category_name(category)

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, fields: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(fields) - set(FIELD_NAMES))
        if unknown:
            raise ValueError(f"unknown field name(s) {', '.join(unknown)}; expected some of {', '.join(FIELD_NAMES)}")
        return fields


class IngestConfig(StageConfig):
    inputs: list[InputSpec] = Field(min_length=1, description="Files to read, in order; earlier files win on "
                                                              "duplicate ids.")


def shard_of(key: str, num_shards: int) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % num_shards


def parse_row(row: RawRow, spec: InputSpec) -> tuple[dict[str, Any] | None, str]:
    """(the Query as a JSON dict, "") or (None, why the row cannot be one). Never raises for a bad record."""
    if row.problem:
        return None, row.problem
    try:
        query = query_from_row(row.value, spec.format, spec.category, spec.source or spec.path.name, spec.fields)
        return query.model_dump(mode="json"), ""
    except FormatError as error:
        return None, str(error)
    except ValidationError as error:
        first = error.errors()[0]
        return None, f"{'.'.join(str(part) for part in first['loc']) or 'record'}: {first['msg']}"
    except Exception as error:  # the promise is that no record fails its shard; this one is logged to be fixed
        logger.exception("%s: unexpected error while reading this record", row.where)
        return None, f"unexpected {type(error).__name__} while reading this record: {error}"


def _preview(row: RawRow) -> str:
    if row.raw:
        return row.raw
    try:
        return json.dumps(row.value, ensure_ascii=False)[:PREVIEW_CHARS]
    except (TypeError, ValueError, RecursionError):
        return repr(row.value)[:PREVIEW_CHARS]


@register
class Ingest(RecordStage):
    name = "ingest"
    Config = IngestConfig

    def input_step(self) -> str | None:
        return None

    def input_digest(self, ctx: ShardContext) -> str:
        """External input: keyed by each file's path, size and modification time (stat once per stage object: status
        checks every shard of the step with one)."""
        return self._files_digest

    @functools.cached_property
    def _files_digest(self) -> str:
        stats = []
        for spec in self.config.inputs:
            stat = Path(spec.path).stat()
            stats.append([str(spec.path), stat.st_size, stat.st_mtime_ns])
        return config_digest(stats)

    def read_inputs(self, ctx: ShardContext) -> Iterator[Item]:
        first_seen: dict[str, str] = {}
        position = 0
        files: list[dict[str, Any]] = []
        ctx.stats["files"] = files
        ctx.stats["truncated_files"] = []
        for index, spec in enumerate(self.config.inputs):
            stats = FileStats(str(spec.path))
            in_shard = quarantined = 0
            for row in read_rows(spec.path, stats, spec.limit, spec.max_line_bytes):
                record, problem = parse_row(row, spec)
                key = row.where if record is None else record["id"]
                if shard_of(key, ctx.num_shards) != ctx.shard_index:
                    continue
                if record is None:
                    item = Item(position, f"{row.where}#{index}", None, row.where, problem=problem, raw=_preview(row))
                    quarantined += 1
                elif key in first_seen:
                    item = Item(position, f"{key}@{row.where}#{index}", record, row.where,
                                problem=f"duplicate of {first_seen[key]}")
                else:
                    first_seen[key] = row.where
                    item = Item(position, key, record, row.where)
                in_shard += 1
                position += 1
                yield item
            files.append({**stats.as_dict(), "in_shard": in_shard, "quarantined_in_shard": quarantined})
            if stats.problem:
                ctx.stats["truncated_files"].append(str(spec.path))
                ctx.logger.warning("%s is incomplete: %s", spec.path, stats.problem)

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        for item in items:
            if item.record is None:
                yield Outcome.quarantined(item, item.problem)
            elif item.problem:
                yield Outcome.rejected(item, item.problem)
            else:
                yield Outcome.kept(item, item.record)
