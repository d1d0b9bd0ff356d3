"""`distillery export`: a step's kept records (of one teacher or variant lineage) as AM-Thinking-v1-Distilled,
messages, or native records, written as JSONL or Parquet; optionally a seeded uniform sample of them.

The sample (`limit`) is drawn without reading the step: the shard manifests' `kept` counts number every kept
record of the step 0..total-1 in shard order, `limit` of those global positions are drawn with
`random.Random(seed).sample`, and each shard holding a chosen position is read once, taking its chosen lines.
The output keeps that order (shard, then line), so the same seed gives the same file.

Every export writes a dataset card beside its file (`distillery.ops.card`); `export_folder` writes a folder that
`datasets.load_dataset(folder)` loads: the data under `data/`, the card as the folder's README.md.
"""

from __future__ import annotations

import json
import logging
import random
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from distillery.core.config import format_validation_error
from distillery.schema.formats import am_from_trace, messages_from_query
from distillery.core.integrity import size_mismatch
from distillery.ops.card import ExportStats, card_path, write_card
from distillery.ops.parquet import schema, write_parquet
from distillery.ops.provenance import provenance
from distillery.ops.record_columns import record_columns
from distillery.core.recipe import Recipe
from distillery.schema.records import Query, Trace
from distillery.core.inputs import RunInputs
from distillery.schema.keys import record_key
from distillery.core.store import Manifest, RunDir, ShardPaths, open_text, write_jsonl

logger = logging.getLogger("distillery.export")

FORMATS = ("am", "messages", "native")
CONTAINERS = ("jsonl", "parquet")


class ExportError(ValueError):
    """A request the run cannot answer: an unknown step or teacher, or a step that has not finished."""


@dataclass(frozen=True)
class ExportResult:
    written: int
    total: int
    """Kept records of the step (for this teacher or lineage); `written` < `total` when a limit sampled them."""
    card: Path | None = None


def convert_record(record: dict[str, Any], fmt: str) -> dict[str, Any]:
    """A kept record (trace or query) -> its row in `fmt`."""
    if fmt == "native":
        return record
    if "query" in record:
        trace = Trace.model_validate(record)
        return am_from_trace(trace) if fmt == "am" else messages_from_query(trace.query, trace.response)
    query = Query.model_validate(record)
    if fmt == "am":
        raise ExportError("AM format holds answered conversations: export a step with traces (generate or later)")
    return messages_from_query(query)


def _row(where: str, record: dict[str, Any], fmt: str) -> dict[str, Any]:
    try:
        return convert_record(record, fmt)
    except ValidationError as error:
        raise ExportError(f"a record is neither a trace nor a query, so it has no {fmt} form:\n"
                          f"{format_validation_error(where, error)}") from None
    except ExportError as error:
        raise ExportError(f"{where}: {error}") from None


def _check_names(run: RunDir, recipe: Recipe, step: str, teacher: str | None) -> None:
    steps = [spec.step for spec in recipe.steps]
    if step not in steps:
        raise ExportError(f"run {run.root} has no step {step!r}; its steps: {', '.join(steps)}")
    lineages = recipe.teachers_of(step)
    if lineages == [None]:
        if teacher is not None:
            raise ExportError(f"step {step!r} runs once for the run, not per teacher: drop --teacher {teacher}")
        return
    if teacher not in lineages:
        given = "pass --teacher" if teacher is None else f"it has no teacher or variant {teacher!r}"
        raise ExportError(f"step {step!r} runs per teacher: {given} (one of {', '.join(map(str, lineages))})")


def _finished_shards(run: RunDir, recipe: Recipe, step: str, teacher: str | None) -> list[tuple[ShardPaths, int]]:
    """Every shard of the step with its manifest's kept count, after checking that each finished and still
    matches its manifest."""
    label = f"step {step!r}" + (f" of {teacher!r}" if teacher else "")
    num_shards = recipe.build_stage(step, teacher).num_shards()
    missing, damaged, shards = [], [], []
    for shard_index in range(num_shards):
        paths = run.shard(step, teacher, shard_index, recipe.compress)
        if not paths.manifest.exists():
            missing.append(shard_index)
            continue
        manifest = Manifest.load(paths.manifest)
        problem = size_mismatch(paths, manifest)
        if problem is not None:
            damaged.append(f"{paths.output.name} ({problem})")
        shards.append((paths, manifest.kept))
    if missing:
        raise ExportError(f"{label} has not finished: {len(missing)} of {num_shards} shards have no manifest "
                          f"(shards {_ranges(missing)}); `distillery resume {run.root}` runs them")
    if damaged:
        raise ExportError(f"{label}: shards no longer match their manifests: {'; '.join(damaged)}; "
                          f"`distillery verify {run.root}` checks them")
    return shards


def _ranges(indices: Sequence[int]) -> str:
    spans: list[list[int]] = []
    for index in indices:
        if spans and index == spans[-1][1] + 1:
            spans[-1][1] = index
        else:
            spans.append([index, index])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def sample_positions(counts: Sequence[int], limit: int, seed: int) -> list[list[int]]:
    """`limit` positions drawn uniformly without replacement from all `sum(counts)` records, as each shard's
    sorted local line numbers; memory is O(limit), whatever the total."""
    offsets = [0]
    for count in counts:
        offsets.append(offsets[-1] + count)
    chosen = sorted(random.Random(seed).sample(range(offsets[-1]), limit))
    per_shard: list[list[int]] = [[] for _ in counts]
    for position in chosen:
        shard_index = bisect_left(offsets, position + 1) - 1
        per_shard[shard_index].append(position - offsets[shard_index])
    return per_shard


def _sampled(paths: Sequence[ShardPaths], per_shard: list[list[int]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The chosen lines of each shard, parsing only those and stopping after a shard's last chosen line (the
    shards were checked against their manifests before)."""
    for shard_paths, lines in zip(paths, per_shard, strict=True):
        if not lines:
            continue
        wanted = iter(lines)
        target = next(wanted)
        with open_text(shard_paths.output) as handle:
            for line_index, line in enumerate(handle):
                if line_index == target:
                    yield f"{shard_paths.output}:{line_index + 1}", json.loads(line)
                    target = next(wanted, None)
                    if target is None:
                        break


def _rows(records: Iterator[tuple[str, dict[str, Any]]], fmt: str, container: str, stats: ExportStats
          ) -> Iterator[dict[str, Any]]:
    """Each record's row in `fmt` (native Parquet: key, typed columns and the record), counted for the card."""
    for where, record in records:
        columns = record_columns(record)
        stats.add(columns)
        row = _row(where, record, fmt)
        yield {"key": record_key(row), "record": row, **columns} if fmt == "native" and container == "parquet" else row


def export_step(run: RunDir, recipe: Recipe, step: str, teacher: str | None, fmt: str, output: Path,
                container: str = "jsonl", limit: int | None = None, seed: int = 0,
                card_root: Path | None = None) -> ExportResult:
    """Write `step`'s kept records of `teacher` (a teacher or a `<teacher>+<variant>` lineage) to `output`;
    with `limit`, a seeded uniform sample of that many (all of them when the step holds no more). The dataset
    card goes into `card_root` (default: the output's folder)."""
    if fmt not in FORMATS or container not in CONTAINERS:
        raise ExportError(f"format {fmt!r} as {container!r}: expected a format of {FORMATS} as one of {CONTAINERS}")
    _check_names(run, recipe, step, teacher)
    shards = _finished_shards(run, recipe, step, teacher)
    counts = [kept for _, kept in shards]
    total = sum(counts)
    if limit is None or limit >= total:
        inputs = RunInputs(run, recipe, step, teacher)
        records: Iterator[tuple[str, dict[str, Any]]] = ((item.where, item.record) for item in inputs.everything())
    else:
        per_shard = sample_positions(counts, limit, seed)
        logger.info("sampling %d of %d kept records (seed %d) from %d of %d shards", limit, total, seed,
                    sum(1 for lines in per_shard if lines), len(counts))
        records = _sampled([paths for paths, _ in shards], per_shard)
    stats = ExportStats()
    rows = _rows(records, fmt, container, stats)
    if container == "parquet":
        written = write_parquet(output, rows, fmt)
    else:
        written, _ = write_jsonl(output, rows)
    root = output.parent if card_root is None else card_root
    sample = f" (a seeded sample of {total}, seed {seed})" if written < total else ""
    card = write_card(card_path(root), provenance(run, recipe, step, teacher), stats,
                      output.resolve().relative_to(root.resolve()).as_posix(),
                      schema(fmt) if container == "parquet" else None, sample)
    return ExportResult(written, total, card)


def export_folder(run: RunDir, recipe: Recipe, step: str, teacher: str | None, fmt: str, folder: Path,
                  container: str = "parquet", limit: int | None = None, seed: int = 0) -> ExportResult:
    """A folder `datasets.load_dataset(folder)` loads: `data/<step>[-<lineage>].<container>` and its card."""
    name = f"{step}-{teacher}" if teacher else step
    data = folder / "data" / f"{name.replace('+', '-')}.{container}"
    data.parent.mkdir(parents=True, exist_ok=True)
    return export_step(run, recipe, step, teacher, fmt, data, container, limit, seed, card_root=folder)
