"""Ingest as a shuffle: split files give every shard exactly what a task reading every file would have kept (the
design before the shuffle, written out here as the reference), and the step reads each input byte about once."""

from __future__ import annotations

import gzip
import json
import logging
import pathlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distillery.core.recipe import parse_recipe
from distillery.core.stage import ShardContext
from distillery.core.store import RunDir
from distillery.ingest import stage as ingest_stage
from distillery.ingest.readers import FileStats, read_rows
from distillery.ingest.stage import parse_row, plan_slices, shard_of

NUM_SHARDS = 4


def _inputs(root: Path) -> list[dict[str, Any]]:
    plain = root / "plain.jsonl"
    lines = []
    for n in range(600):
        if n % 97 == 5:
            lines.append(b"{not json")
        elif n % 89 == 7:
            lines.append(b"")
        else:
            lines.append(json.dumps({"prompt": f"Plain question {n % 550}?",
                                     "category": "math"}).encode())
    plain.write_bytes(b"\n".join(lines) + b"\n")
    zipped = root / "zipped.jsonl.gz"
    zipped.write_bytes(gzip.compress(b"".join(json.dumps({"prompt": f"Zipped {n}?", "category": "IF"}).encode() + b"\n"
                                              for n in range(50))))
    rows = [f"Row {n}: {' '.join(str(n * k * 7919 % 10007) for k in range(80))}?" for n in range(120)]
    table = pa.table({"prompt": [row if n % 31 else None for n, row in enumerate(rows)] + ["Plain question 3?"],
                      "category": ["code"] * 121})
    parquet = root / "rows.parquet"
    pq.write_table(table, parquet, row_group_size=10)
    return [{"path": str(plain)}, {"path": str(zipped)}, {"path": str(parquet)}]


def _reference(recipe_inputs: list[Any]) -> list[list[tuple[str, str, str]]]:
    """Per shard, (kind, key, where) in order, as every task reading every file and keeping its ids made them
    (a kept record's outcome has no `where`)."""
    shards: list[list[tuple[str, str, str]]] = [[] for _ in range(NUM_SHARDS)]
    first_seen: list[dict[str, str]] = [{} for _ in range(NUM_SHARDS)]
    for index, spec in enumerate(recipe_inputs):
        for row in read_rows(spec.path, FileStats(str(spec.path))):
            record, _ = parse_row(row, spec)
            key = row.where if record is None else record["id"]
            shard = shard_of(key, NUM_SHARDS)
            if record is None:
                shards[shard].append(("quarantined", f"{row.where}#{index}", row.where))
            elif key in first_seen[shard]:
                shards[shard].append(("rejected", f"{key}@{row.where}#{index}", row.where))
            else:
                first_seen[shard][key] = row.where
                shards[shard].append(("kept", key, ""))
    return shards


def _by_hand(stage: Any, run: Path) -> tuple[list[list[tuple[str, str, str]]], list[dict[str, Any]]]:
    """Every scan, the merge and every process, as the runner orders them."""

    def context(shard: int) -> ShardContext:
        return ShardContext(RunDir(run), "ingest", None, shard, NUM_SHARDS, logging.getLogger("test.shuffle"))

    for shard in range(NUM_SHARDS):
        stage.scan(iter(()), context(shard))
    stage.merge(context(0))
    shards, stats = [], []
    for shard in range(NUM_SHARDS):
        ctx = context(shard)
        shards.append([(o.kind, o.key, o.where) for o in stage.process(stage.read_inputs(ctx), ctx)])
        stats.append(ctx.stats)
    return shards, stats


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of 4 KiB, so these small files are cut into several."""
    monkeypatch.setattr(ingest_stage, "MIN_PART_BYTES", 4096)


def test_split_files_give_every_shard_the_same_records_in_the_same_order(tmp_path: Path, small_parts: None) -> None:
    recipe = parse_recipe({"name": "shuffle", "run_dir": str(tmp_path / "run"), "num_shards": NUM_SHARDS,
                           "steps": {"ingest": {"inputs": _inputs(tmp_path)}}})
    stage = recipe.build_stage("ingest")
    slices = plan_slices(stage.config.inputs, NUM_SHARDS)
    assert sum(s.input == 0 for s in slices) > 1 and sum(s.input == 2 for s in slices) > 1, "files are split"
    assert [s.part for s in slices if s.input == 1] == [None], "a gzip file is read whole"
    got, stats = _by_hand(stage, tmp_path / "run")
    want = _reference(stage.config.inputs)
    assert got == want
    assert sum(kind == "quarantined" for shard in got for kind, _, _ in shard) == 7 + 4
    assert sum(kind == "rejected" for shard in got for kind, _, _ in shard) > 40, "repeats, and one across files"
    plain = [entry for shard in stats for entry in shard["files"] if entry["path"].endswith("plain.jsonl")]
    assert {entry["lines"] for entry in plain} == {600} and sum(e["in_shard"] for e in plain) == 600 - 7


def test_the_inputs_are_read_about_once_not_once_per_shard(tmp_path: Path, small_parts: None,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = _inputs(tmp_path)
    read: dict[str, int] = {}
    real_open = pathlib.Path.open

    class Counted:
        def __init__(self, handle: Any, name: str) -> None:
            self._handle, self._name = handle, name

        def _count(self, data: bytes) -> bytes:
            read[self._name] = read.get(self._name, 0) + len(data)
            return data

        def read(self, *args: Any) -> bytes:
            return self._count(self._handle.read(*args))

        def readline(self, *args: Any) -> bytes:
            return self._count(self._handle.readline(*args))

        def __getattr__(self, name: str) -> Any:
            return getattr(self._handle, name)

        def __enter__(self) -> Counted:
            return self

        def __exit__(self, *exc: object) -> None:
            self._handle.close()

    def counting_open(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, mode, *args, **kwargs)
        return Counted(handle, self.name) if self.parent == tmp_path and mode == "rb" else handle

    recipe = parse_recipe({"name": "shuffle", "run_dir": str(tmp_path / "run"), "num_shards": NUM_SHARDS,
                           "steps": {"ingest": {"inputs": inputs}}})
    stage = recipe.build_stage("ingest")
    slices = plan_slices(stage.config.inputs, NUM_SHARDS)
    with monkeypatch.context() as counting:
        counting.setattr(pathlib.Path, "open", counting_open)
        _by_hand(stage, tmp_path / "run")
    sniffs = (NUM_SHARDS + 1) * 4096  # every scan and the merge plan the slices from each file's first bytes
    for name in ("plain.jsonl", "zipped.jsonl.gz"):
        size = (tmp_path / name).stat().st_size
        parts = sum(Path(inputs[s.input]["path"]).name == name for s in slices)
        longest = max(len(line) for line in (tmp_path / name).read_bytes().split(b"\n")) + 1
        assert size <= read[name] <= size + parts * longest + sniffs, (name, read[name], size)
    plain = (tmp_path / "plain.jsonl").stat().st_size
    assert read["plain.jsonl"] < 2 * plain, "a task per shard reading every file read it once per shard"
