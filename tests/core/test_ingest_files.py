"""Whole-file problems: one clear error naming the file, when the recipe is loaded if it can tell then, else when
the shard reads it; and the files that are read in part (truncation, `limit`) are never reported complete."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from distillery.cli import main
from distillery.core.recipe import parse_recipe
from distillery.core.stage import ShardContext
from distillery.core.store import Manifest, RunDir, iter_jsonl
from distillery.ingest.readers import FileStats, InputFileError, read_rows


def _recipe(tmp_path: Path, inputs: list[dict]) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"name": "files", "run_dir": str(tmp_path / "run"), "num_shards": 1,
                                    "steps": {"ingest": {"inputs": inputs}}}))
    return path


def _valid_parquet(path: Path) -> None:
    pq.write_table(pa.table({"prompt": ["What is 1 + 1?"] * 3, "category": ["math"] * 3}), path)


def _no_footer(path: Path) -> None:
    _valid_parquet(path)
    path.write_bytes(path.read_bytes()[:-40])


@pytest.mark.parametrize(("name", "build", "message"), [
    ("cut.parquet", _no_footer, "unreadable Parquet metadata"),
    ("garbage.parquet", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n not parquet"),
     "neither Parquet (no PAR1 magic bytes) nor JSON lines"),
    ("empty.parquet", lambda p: p.write_bytes(b""), "empty file; expected Parquet"),
])
def test_an_unreadable_file_fails_the_recipe_with_one_error_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, build, message: str) -> None:
    path = tmp_path / name
    build(path)
    assert main(["run", str(_recipe(tmp_path, [{"path": str(path)}]))]) == 2
    error = capsys.readouterr().err
    assert f"inputs[0].path: Value error, {path}: {message}" in error
    assert "Traceback" not in error and not (tmp_path / "run").exists(), "nothing runs"


def test_a_file_damaged_after_the_recipe_was_loaded_fails_its_shard_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    _valid_parquet(path)
    recipe = parse_recipe(yaml.safe_load(_recipe(tmp_path, [{"path": str(path)}]).read_text()))
    stage = recipe.build_stage("ingest")
    _no_footer(path)
    ctx = ShardContext(RunDir(tmp_path / "run"), "ingest", None, 0, 1, logging.getLogger("test"))
    with pytest.raises(InputFileError, match=f"^{path}: unreadable Parquet metadata"):
        stage.scan(iter(()), ctx)
    path.unlink()
    with pytest.raises(InputFileError, match=f"^{path}: cannot open"):
        list(read_rows(path, FileStats(str(path))))


def test_a_truncated_gzip_is_read_to_the_cut_and_reported_incomplete_in_the_manifest(tmp_path: Path) -> None:
    lines = [json.dumps({"prompt": f"Question {n}?", "category": "math"}).encode() + b"\n" for n in range(400)]
    whole = gzip.compress(b"".join(lines))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with gzip.open(path) as handle, pytest.raises(EOFError):  # what Python's own gzip does with it
        handle.read()
    assert main(["run", str(_recipe(tmp_path, [{"path": str(path)}]))]) == 0
    stage_dir = RunDir(tmp_path / "run").stage_dir("ingest")
    manifest = Manifest.load(stage_dir / "shard-00000.done.json")
    (entry,) = manifest.stats["files"]
    kept = list(iter_jsonl(stage_dir / "shard-00000.jsonl"))
    quarantined = list(iter_jsonl(stage_dir / "quarantine" / "shard-00000.jsonl"))
    assert manifest.stats["truncated_files"] == [str(path)]
    assert not entry["complete"] and "gzip stream ends" in entry["problem"]
    assert 100 < len(kept) < 400 and [q["where"] for q in quarantined] == [f"{path}:{len(kept) + 1}"]
    assert [r["messages"][0]["content"] for r in kept] == [f"Question {n}?" for n in range(len(kept))]
    assert entry["lines"] == len(kept) + 1 == manifest.inputs
    log = (tmp_path / "run" / "logs" / "ingest" / "shard-00000.process.log").read_text()
    assert f"{path} is incomplete" in log


def test_the_same_file_twice_is_all_duplicates_and_limit_marks_the_file_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Q{n}", "category": "math"}) + "\n" for n in range(5)) + "{bad\n")
    inputs = [{"path": str(path)}, {"path": str(path)}, {"path": str(path), "limit": 2, "source": "third"}]
    assert main(["run", str(_recipe(tmp_path, inputs))]) == 0
    stage_dir = RunDir(tmp_path / "run").stage_dir("ingest")
    manifest = Manifest.load(stage_dir / "shard-00000.done.json")
    first, second, third = manifest.stats["files"]
    assert (manifest.kept, manifest.rejected, manifest.quarantined) == (5, 5 + 2, 2)
    assert first["complete"] and second["complete"] and (first["lines"], second["lines"]) == (6, 6)
    assert not third["complete"] and third["stopped_at_limit"] and third["lines"] == 2
    assert manifest.stats["truncated_files"] == [], "a limit is not damage"


def test_a_misnamed_file_is_read_by_its_content_with_a_warning(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    gz = tmp_path / "plain-name.jsonl"
    gz.write_bytes(gzip.compress(json.dumps({"prompt": "Q1", "category": "math"}).encode() + b"\n"))
    stats = FileStats(str(gz))
    with caplog.at_level(logging.WARNING):
        rows = list(read_rows(gz, stats))
    assert [r.value["prompt"] for r in rows] == ["Q1"] and stats.format == "jsonl.gz"
    assert f"{gz}: named like jsonl but its content is jsonl.gz" in caplog.text
