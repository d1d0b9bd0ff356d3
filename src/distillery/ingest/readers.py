"""Input files -> rows, each with where it came from: JSON lines (plain or gzip) and Parquet, told apart by content.

A damaged row comes out as a `RawRow` with `problem` set, never as an exception; a file that cannot be read at all
raises `InputFileError` naming it. JSON lines are split on b"\\n" only (U+2028, U+2029 and U+0085 are text, not
line ends); CRLF endings and a UTF-8 BOM at the start of any line (files joined with `cat`) are accepted. A gzip
stream cut short, or corrupt part-way, yields every line before the damage and marks the file incomplete.
A `Part` reads a piece of a file, so that several tasks share one file: plain JSON lines by byte range (every line
that starts in the range; its lines numbered from 1 within the part), Parquet by row groups (rows numbered as in
the whole file).
Parquet values JSON cannot hold are kept losslessly: bytes as `{"$base64": ...}`, NaN and infinities as
`{"$float": "nan" | "inf" | "-inf"}`, dates and times as ISO 8601 text, decimals as their text.
"""

from __future__ import annotations

import base64
import datetime
import io
import logging
import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from distillery.schema import strictjson

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 2**20
PREVIEW_CHARS = 10_000
"""How much of a damaged line the quarantine keeps."""
_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 16


class InputFileError(ValueError):
    """A whole file that cannot be read; the message names the file and what was expected."""


@dataclass
class RawRow:
    """One line or row: its parsed JSON value, or `problem` saying why it has none."""

    where: str
    value: Any = None
    problem: str = ""
    raw: str = ""
    blank: bool = False
    number: int = 0
    """The line number (from 1, within the part read) or the Parquet row (from 0, within the file)."""


@dataclass(frozen=True)
class Part:
    """A piece of one file: bytes [start, stop) of plain JSON lines, or row groups [start, stop) of Parquet."""

    start: int
    stop: int


@dataclass
class FileStats:
    """What reading one file found: every line is a record (good or quarantined) or blank."""

    path: str
    format: str = ""
    lines: int = 0
    blank: int = 0
    problem: str = ""
    """Damage that ended the read early (a truncated gzip stream, an unreadable row group)."""
    stopped_at_limit: bool = False

    @property
    def complete(self) -> bool:
        return not self.problem and not self.stopped_at_limit

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "complete": self.complete}


def _named_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    return "jsonl.gz" if name.endswith(".gz") else "jsonl"


def sniff(path: Path) -> str:
    """The file's format from its first bytes (parquet, jsonl.gz or jsonl); a wrong suffix only warns."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
    except OSError as error:
        raise InputFileError(f"{path}: cannot open: {error.strerror}") from None
    named = _named_format(path)
    if head.startswith(b"PAR1"):
        found = "parquet"
    elif head.startswith(b"\x1f\x8b"):
        found = "jsonl.gz"
    elif named == "parquet":
        if not head:
            raise InputFileError(f"{path}: empty file; expected Parquet (or JSON lines)")
        if head.removeprefix(_BOM).lstrip()[:1] not in (b"{", b"["):
            raise InputFileError(f"{path}: neither Parquet (no PAR1 magic bytes) nor JSON lines; "
                                 f"it starts with {head[:16]!r}")
        found = "jsonl"
    else:
        found = "jsonl"
    if found != named:
        logger.warning("%s: named like %s but its content is %s; reading it as %s", path, named, found, found)
    return found


def open_parquet(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise InputFileError(f"{path}: unreadable Parquet metadata ({error}); the footer is missing or damaged: "
                             "was the file cut short?") from None


def check_readable(path: Path) -> None:
    """Fail now, naming the file, if its format cannot be read at all (used when a recipe is loaded)."""
    if sniff(path) == "parquet":
        open_parquet(path)


def read_rows(path: Path, stats: FileStats, limit: int | None = None,
              max_line_bytes: int = MAX_LINE_BYTES, part: Part | None = None,
              known_format: str | None = None) -> Iterator[RawRow]:
    """Every non-blank line or row of a file or of a `part` of it (at most `limit`), counting lines and blanks into
    `stats`. A gzip file is read whole. `known_format`: what `sniff` found earlier (not sniffed again)."""
    stats.format = known_format or sniff(path)
    if stats.format == "parquet":
        yield from _counted(_parquet_rows(path, stats, part), stats, limit)
        return
    with path.open("rb") as handle:
        if part is not None:
            if stats.format == "jsonl.gz":
                raise ValueError(f"{path}: a gzip file cannot be read in parts")
            yield from _counted(_json_lines(_LineRange(handle, part), path, max_line_bytes, lambda: ""), stats, limit)
        elif stats.format == "jsonl.gz":
            gunzip = _Gunzip(handle)
            yield from _counted(_json_lines(io.BufferedReader(gunzip, _CHUNK), path, max_line_bytes,
                                            lambda: gunzip.problem), stats, limit)
            stats.problem = stats.problem or gunzip.problem
        else:
            yield from _counted(_json_lines(handle, path, max_line_bytes, lambda: ""), stats, limit)


def _counted(rows: Iterator[RawRow], stats: FileStats, limit: int | None) -> Iterator[RawRow]:
    records = 0
    for row in rows:
        if row.blank:
            stats.lines += 1
            stats.blank += 1
            continue
        if limit is not None and records >= limit:
            stats.stopped_at_limit = True
            return
        stats.lines += 1
        records += 1
        yield row


def _preview(data: bytes) -> str:
    return data[: PREVIEW_CHARS * 4].decode("utf-8", "replace")[:PREVIEW_CHARS]


class _LineRange:
    """The lines of a file that start in bytes [start, stop): a line begun before `start` belongs to the part
    before (its rest is skipped), and the part's last line may run past `stop`."""

    def __init__(self, handle: BinaryIO, part: Part) -> None:
        self._handle = handle
        self._stop = part.stop
        self._position = 0
        if part.start > 0:
            handle.seek(part.start - 1)
            self._position = part.start - 1 + _skip_line(handle)
        self._at_line_start = True

    def readline(self, limit: int = -1) -> bytes:
        if self._at_line_start and self._position >= self._stop:
            return b""
        chunk = self._handle.readline(limit)
        self._position += len(chunk)
        self._at_line_start = chunk.endswith(b"\n")
        return chunk


def _json_lines(stream: BinaryIO | _LineRange, path: Path, max_line_bytes: int, damage: Callable[[], str]) -> Iterator[RawRow]:
    number = 0
    while raw := stream.readline(max_line_bytes + 1):
        number += 1
        where = f"{path}:{number}"
        terminated = raw.endswith(b"\n")
        if not terminated and len(raw) > max_line_bytes:
            size = len(raw) + _skip_line(stream)
            yield RawRow(where, problem=f"line of {size} bytes is longer than max_line_bytes ({max_line_bytes})",
                         raw=_preview(raw), number=number)
            continue
        content = raw[:-1] if terminated else raw
        content = content.removesuffix(b"\r")
        offset = 3 if content.startswith(_BOM) else 0
        content = content[offset:]
        if not content.strip():
            yield RawRow(where, blank=True, number=number)
        elif not terminated and damage():
            yield RawRow(where, problem=f"last line cut off ({damage()})", raw=_preview(content), number=number)
        else:
            row = _parse_line(where, content, offset)
            row.number = number
            yield row


def _skip_line(stream: BinaryIO | _LineRange) -> int:
    skipped = 0
    while chunk := stream.readline(_CHUNK):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


def _parse_line(where: str, content: bytes, offset: int) -> RawRow:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        return RawRow(where, problem=f"invalid UTF-8 at byte {error.start + offset} (expected UTF-8 text)",
                      raw=_preview(content))
    try:
        return RawRow(where, value=strictjson.loads(text), raw=text[:PREVIEW_CHARS])
    except strictjson.JSONError as error:
        return RawRow(where, problem=str(error), raw=text[:PREVIEW_CHARS])


class _Gunzip(io.RawIOBase):
    """Every member of a gzip file, decompressed. A stream that is cut short or corrupt ends early and sets
    `problem`; Python's gzip module raises instead, and the lines already decoded into its buffer are lost."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._inflate = zlib.decompressobj(wbits=31)
        self._out = memoryview(b"")
        self._finished = False
        self._consumed = 0
        self.problem = ""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out and not self._finished:
            self._out = memoryview(self._step())
        size = min(len(buffer), len(self._out))
        buffer[:size] = self._out[:size]
        self._out = self._out[size:]
        return size

    def _read(self) -> bytes:
        data = self._handle.read(_CHUNK)
        self._consumed += len(data)
        return data

    def _step(self) -> bytes:
        if self._inflate.eof:
            data = self._inflate.unused_data.lstrip(b"\x00")  # zero padding after a member is allowed
            while not data:
                more = self._read()
                if not more:
                    self._finished = True
                    return b""
                data = more.lstrip(b"\x00")
            self._inflate = zlib.decompressobj(wbits=31)
        else:
            data = self._inflate.unconsumed_tail or self._read()
            if not data:
                self.problem = f"gzip stream ends after {self._consumed} bytes, before its end marker (file cut short?)"
                self._finished = True
                return b""
        before = self._inflate.copy()
        try:
            return self._inflate.decompress(data, 4 * _CHUNK)
        except zlib.error as error:
            self.problem = f"corrupt gzip data near compressed byte {self._consumed}: {error}"
            self._finished = True
            return _salvage(before, data)


def _salvage(inflate: Any, data: bytes) -> bytes:
    """What `data` decompresses to before its damage: zlib raises without returning the output of the failing
    call, so feed it again a byte at a time (only ever done once, at the damage)."""
    out = []
    for index in range(len(data)):
        try:
            out.append(inflate.decompress(data[index:index + 1]))
        except zlib.error:
            break
    return b"".join(out)


def _parquet_rows(path: Path, stats: FileStats, part: Part | None) -> Iterator[RawRow]:
    import pyarrow as pa

    parquet = open_parquet(path)
    names = parquet.schema_arrow.names
    repeated = sorted({name for name in names if names.count(name) > 1})
    shared_problem = f"column names repeat ({', '.join(repeated)}); expected unique names" if repeated else ""
    groups = range(parquet.num_row_groups) if part is None else range(part.start, part.stop)
    row = sum(parquet.metadata.row_group(group).num_rows for group in range(groups.start))
    for group in groups:
        size = parquet.metadata.row_group(group).num_rows
        try:
            table = parquet.read_row_group(group)
        except (pa.ArrowException, OSError) as error:
            stats.problem = stats.problem or f"row group {group} is unreadable: {error}"
            for index in range(row, row + size):
                yield RawRow(f"{path}:row {index}",
                             problem=f"row group {group} of the Parquet file is unreadable: {error}", number=index)
            row += size
            continue
        columns = [_column_values(table.column(index)) for index in range(table.num_columns)]
        for offset in range(table.num_rows):
            value = {}
            problems = [shared_problem] if shared_problem else []
            for name, cells in zip(names, columns):
                cell = cells[offset]
                if isinstance(cell, _Unconvertible):
                    problems.append(f"column {name!r}: {cell.reason}")
                else:
                    value[name] = cell
            yield RawRow(f"{path}:row {row}", value=value, problem="; ".join(problems), number=row)
            row += 1


@dataclass(frozen=True)
class _Unconvertible:
    reason: str


def _column_values(column: Any) -> list[Any]:
    """A column's cells as JSON values; a cell Python cannot represent becomes `_Unconvertible`."""
    import pyarrow as pa

    try:
        cells = column.to_pylist()
    except (pa.ArrowException, ValueError, OverflowError):  # one bad cell (a year-10000 timestamp, bad UTF-8)
        cells = []
        for index in range(len(column)):
            try:
                cells.append(column[index].as_py())
            except (pa.ArrowException, ValueError, OverflowError) as error:
                cells.append(_Unconvertible(f"cannot convert this {column.type} cell to a Python value: {error}"))
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind) or \
            pa.types.is_boolean(kind) or pa.types.is_null(kind):
        return cells
    return [cell if isinstance(cell, _Unconvertible) else json_value(cell) for cell in cells]


def json_value(value: Any) -> Any:
    """A Python value from Arrow as JSON can hold it, losslessly (see the module docstring)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {str(key): json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(item) for item in value]
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)  # Decimal, timedelta: their exact text
