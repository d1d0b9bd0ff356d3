"""Exported rows as Parquet, one fixed schema per export format, whatever the rows hold.

`datasets.load_dataset("parquet", data_files=...)` reads the file as it is. The schema never depends on the data,
so files from two runs (or two variants) concatenate. Every column is nullable:

    am:       system: string
              conversations: list<struct<from: string, value: string, info: string, distillery: string,
                                         extra: string>>
              extra: string
    messages: messages: list<struct<role: string, content: string, extra: string>>
              category: string, source: string, reference: string, extra: string
    native:   key: string, the record's typed columns (`distillery.ops.record_columns`: query id, category,
              teacher, lineage, think, answer, verify score, attempts, token counts, perplexity, filter
              verdicts, ...), record: string

Strings are typed columns. A native row's typed columns are written as the row brings them (the export derives
them from its record) and ignored on read: `record` alone gives the row back. `info`, `distillery`, `reference` and `record` hold JSON text
(`json.loads` gives the value back), because their content drifts: a released AM row's `info` is an object, null
or JSON text, and the pipeline's own fields differ by stage and variant. `extra` holds the row's (or turn's)
remaining keys as a JSON object, null when there are none; a string column whose value is not a string (or is
null) also goes there, so `row_from_parquet` gives back exactly the row that was written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distillery.core.store import atomic_path
from distillery.ops import record_columns

EXTRA = "extra"


@dataclass(frozen=True)
class _Layout:
    """Which keys of a row are string columns, which JSON text, and which one is a list of sub-rows."""

    text: tuple[str, ...] = ()
    json: tuple[str, ...] = ()
    items: tuple[str, _Layout] | None = None
    typed: tuple[pa.Field, ...] = ()
    """Columns written as the row brings them (null when it does not) and left out on read."""
    fields: list[pa.Field] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        columns = [pa.field(name, pa.string()) for name in (*self.text, *self.json)]
        if self.items is not None:
            name, inner = self.items
            columns.insert(len(self.text), pa.field(name, pa.list_(pa.struct(inner.fields))))
        columns[len(self.text):len(self.text)] = self.typed
        object.__setattr__(self, "fields", [*columns, pa.field(EXTRA, pa.string())])

    def encode(self, row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {column.name: row[column.name] for column in self.typed if column.name in row}
        rest = {key: value for key, value in row.items() if key not in out}
        for name in self.text:
            if isinstance(rest.get(name), str):
                out[name] = rest.pop(name)
        for name in self.json:
            if name in rest:
                out[name] = json.dumps(rest.pop(name), ensure_ascii=False)
        if self.items is not None:
            name, inner = self.items
            value = rest.get(name)
            if isinstance(value, list) and all(isinstance(item, dict) for item in value):
                out[name] = [inner.encode(item) for item in rest.pop(name)]
        out[EXTRA] = json.dumps(rest, ensure_ascii=False) if rest else None
        return out

    def decode(self, encoded: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for name in self.text:
            if encoded.get(name) is not None:
                row[name] = encoded[name]
        for name in self.json:
            if encoded.get(name) is not None:
                row[name] = json.loads(encoded[name])
        if self.items is not None and encoded.get(self.items[0]) is not None:
            name, inner = self.items
            row[name] = [inner.decode(item) for item in encoded[name]]
        if encoded.get(EXTRA) is not None:
            row.update(json.loads(encoded[EXTRA]))
        return row


LAYOUTS = {
    "am": _Layout(text=("system",), items=("conversations", _Layout(text=("from", "value"),
                                                                    json=("info", "distillery")))),
    "messages": _Layout(text=("category", "source"), json=("reference",),
                        items=("messages", _Layout(text=("role", "content")))),
    "native": _Layout(text=("key",), json=("record",),
                      typed=tuple(record_columns.FIELDS)),
}


def schema(fmt: str) -> pa.Schema:
    return pa.schema(LAYOUTS[fmt].fields)


def parquet_row(row: dict[str, Any], fmt: str) -> dict[str, Any]:
    """An exported row (native: `{"key", "record"}`) -> its Parquet columns."""
    return LAYOUTS[fmt].encode(row)


def row_from_parquet(columns: dict[str, Any], fmt: str) -> dict[str, Any]:
    """A row read back from the Parquet file (e.g. from `datasets`) -> the exported row it was written from."""
    return LAYOUTS[fmt].decode(columns)


def write_parquet(path: Path, rows: Iterable[dict[str, Any]], fmt: str, batch_rows: int = 1024) -> int:
    """Stream `rows` into `path` atomically, one row group per `batch_rows` rows; return how many were written."""
    table_schema = schema(fmt)
    count = 0
    iterator = iter(rows)
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, table_schema) as writer:
        while batch := [parquet_row(row, fmt) for row in islice(iterator, batch_rows)]:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=table_schema))
            count += len(batch)
    return count
