"""`ingest`: JSONL (plain or gzip), Parquet, AM-format and messages-format files -> Query records sharded by id.

A shard holds the records whose id hashes to it, in input order, so its content depends only on the inputs and the
shard count (never on which task ran first or how the inputs were cut for reading: see `Ingest`). No record can fail its file or shard:
a damaged line or row (bad JSON, invalid UTF-8, wrong types, missing fields) is quarantined with `file:line`
(`file:row N` for Parquet, 0-based) and a reason saying what was expected; a repeated query id is rejected as a
duplicate of its first occurrence. A file that cannot be read at all fails with one error naming it (when the
recipe is loaded, if it can tell then). The manifest's `files` stat accounts for every line of every file
(lines = records in all shards + blank) and `truncated_files` lists the files whose damage ended the read early.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from distillery.schema.coerce import FormatError, category_name
from distillery.core.recipe import InputPath
from distillery.core.stage import Item, Outcome, ShardContext, StageConfig, TwoPassStage, register
from distillery.core.store import config_digest, read_json, write_json
from distillery.ingest.buckets import read_bucket, write_buckets
from distillery.ingest.readers import (
    MAX_LINE_BYTES,
    PREVIEW_CHARS,
    FileStats,
    Part,
    RawRow,
    check_readable,
    open_parquet,
    read_rows,
    sniff,
)
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


MIN_PART_BYTES = 1 << 20
"""A plain JSON-lines or Parquet file is cut into about one part per shard, none smaller than this."""


@dataclass(frozen=True)
class Slice:
    """One scan's piece of the inputs: input `input` whole (`part` None: gzip, `limit`, a small file) or a part."""

    input: int
    format: str
    part: Part | None

    def to_json(self) -> list[Any]:
        return [self.input, self.format, None if self.part is None else [self.part.start, self.part.stop]]

    @classmethod
    def from_json(cls, value: list[Any]) -> Slice:
        return cls(value[0], value[1], None if value[2] is None else Part(*value[2]))


def plan_slices(inputs: list[InputSpec], num_shards: int) -> list[Slice]:
    """The inputs cut into about `num_shards` slices, in input order: from the files' sizes, formats and row
    groups, so every task of the step computes the same plan."""
    sizes = [Path(spec.path).stat().st_size for spec in inputs]
    target = max(MIN_PART_BYTES, -(-sum(sizes) // num_shards))
    slices = []
    for index, (spec, size) in enumerate(zip(inputs, sizes)):
        kind = sniff(spec.path)
        pieces = 1 if spec.limit is not None or kind == "jsonl.gz" else -(-size // target)
        units = open_parquet(spec.path).num_row_groups if kind == "parquet" else size
        pieces = min(pieces, units)
        if pieces <= 1:
            slices.append(Slice(index, kind, None))
            continue
        slices.extend(Slice(index, kind, Part(units * k // pieces, units * (k + 1) // pieces)) for k in range(pieces))
    return slices


def _line(row: dict[str, Any]) -> bytes:
    return (json.dumps(row, ensure_ascii=False) + "\n").encode()


@register
class Ingest(TwoPassStage):
    """A shuffle in three phases, so that every input byte is read once (a task reading every file and keeping its
    own ids would read the inputs once per shard):
    - scan task i reads the slices i, i+S, ... of the inputs (`plan_slices`: byte ranges of JSON lines aligned to
      line starts, Parquet row groups, whole gzip files) and writes each slice's parsed records into one file
      grouped by the shard their id hashes to (`buckets`), the damaged rows in a group of their own;
    - the merge adds up each file's lines across its slices (the line numbers of later slices start there), sends
      the damaged rows to the shard their `file:line` hashes to, and writes `plan.json`;
    - process task j reads its group of every slice in slice order, so its items come in input order and the
      first occurrence of an id wins, as before.
    """

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

    def _slice_file(self, ctx: ShardContext, index: int, suffix: str = ".jsonl") -> Path:
        return ctx.global_dir / "slices" / f"slice-{index:05d}{suffix}"

    def scan(self, items: Iterable[Item], ctx: ShardContext) -> None:
        """Reads the files itself (an ingest step has no input step, so `items` is empty)."""
        rows = 0
        for index, piece in enumerate(plan_slices(self.config.inputs, ctx.num_shards)):
            if index % ctx.num_shards == ctx.shard_index:
                rows += self._scan_slice(index, piece, ctx)
        ctx.stats["rows"] = rows

    def _scan_slice(self, index: int, piece: Slice, ctx: ShardContext) -> int:
        spec = self.config.inputs[piece.input]
        stats = FileStats(str(spec.path))

        def routed() -> Iterator[tuple[int, bytes]]:
            for row in read_rows(spec.path, stats, spec.limit, spec.max_line_bytes, piece.part, piece.format):
                record, problem = parse_row(row, spec)
                if record is None:
                    yield ctx.num_shards, _line({"s": index, "n": row.number, "p": problem, "raw": _preview(row)})
                else:
                    yield shard_of(record["id"], ctx.num_shards), _line({"s": index, "n": row.number, "q": record})

        rows = write_buckets(self._slice_file(ctx, index), routed(), ctx.num_shards + 1)
        write_json(self._slice_file(ctx, index, ".json"), stats.as_dict())
        return rows

    def merge(self, ctx: ShardContext) -> dict[str, Any]:
        slices = plan_slices(self.config.inputs, ctx.num_shards)
        files = [FileStats(str(spec.path)) for spec in self.config.inputs]
        first_line: list[int] = []
        for index, piece in enumerate(slices):
            found = read_json(self._slice_file(ctx, index, ".json"))
            total = files[piece.input]
            first_line.append(total.lines)
            total.format = found["format"]
            total.lines += found["lines"]
            total.blank += found["blank"]
            total.problem = total.problem or found["problem"]
            total.stopped_at_limit = total.stopped_at_limit or found["stopped_at_limit"]

        def damaged() -> Iterator[tuple[int, bytes]]:
            for index, piece in enumerate(slices):
                for row in read_bucket(self._slice_file(ctx, index), ctx.num_shards):
                    row["w"] = self._where(piece, row["n"], first_line[index])
                    yield shard_of(row["w"], ctx.num_shards), _line(row)

        quarantined = write_buckets(ctx.global_dir / "damaged.jsonl", damaged(), ctx.num_shards)
        write_json(ctx.global_dir / "plan.json", {"slices": [piece.to_json() for piece in slices],
                                                  "first_line": first_line,
                                                  "files": [stats.as_dict() for stats in files]})
        return {"slices": len(slices), "lines": sum(stats.lines for stats in files), "damaged_rows": quarantined}

    def _where(self, piece: Slice, number: int, first_line: int) -> str:
        path = self.config.inputs[piece.input].path
        return f"{path}:row {number}" if piece.format == "parquet" else f"{path}:{first_line + number}"

    def read_inputs(self, ctx: ShardContext) -> Iterator[Item]:
        plan = read_json(ctx.global_dir / "plan.json")
        slices = [Slice.from_json(value) for value in plan["slices"]]
        first_seen: dict[str, str] = {}
        in_shard = [0] * len(self.config.inputs)
        quarantined = [0] * len(self.config.inputs)
        good = (row for index in range(len(slices)) for row in read_bucket(self._slice_file(ctx, index), ctx.shard_index))
        damaged = read_bucket(ctx.global_dir / "damaged.jsonl", ctx.shard_index)
        for position, row in enumerate(heapq.merge(good, damaged, key=lambda row: (row["s"], row["n"]))):
            piece = slices[row["s"]]
            source = piece.input
            in_shard[source] += 1
            if "q" not in row:
                quarantined[source] += 1
                yield Item(position, f"{row['w']}#{source}", None, row["w"], problem=row["p"], raw=row["raw"])
                continue
            record, where = row["q"], self._where(piece, row["n"], plan["first_line"][row["s"]])
            key = record["id"]
            if key in first_seen:
                yield Item(position, f"{key}@{where}#{source}", record, where, problem=f"duplicate of {first_seen[key]}")
            else:
                first_seen[key] = where
                yield Item(position, key, record, where)
        ctx.stats["files"] = [{**stats, "in_shard": in_shard[index], "quarantined_in_shard": quarantined[index]}
                              for index, stats in enumerate(plan["files"])]
        ctx.stats["truncated_files"] = [stats["path"] for stats in plan["files"] if stats["problem"]]
        for stats in plan["files"]:
            if stats["problem"]:
                ctx.logger.warning("%s is incomplete: %s", stats["path"], stats["problem"])

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        for item in items:
            if item.record is None:
                yield Outcome.quarantined(item, item.problem)
            elif item.problem:
                yield Outcome.rejected(item, item.problem)
            else:
                yield Outcome.kept(item, item.record)
