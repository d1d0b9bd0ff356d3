"""Record fidelity on real public files (the packaged benchmark copies, as their publishers lay them out): answers
keep their text, a `tests` column becomes the reference tests, IFEval constraints become instructions, numbers in
the other columns stay numbers of the same type; the same rows as Parquet give the same records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distillery.core.recipe import parse_recipe
from ingest_cases import ingest_by_hand
from distillery.data import benchmarks_dir


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_real_benchmark_files_ingest_with_every_field_kept(tmp_path: Path) -> None:
    root = benchmarks_dir()
    math500, lcb = root / "math500" / "math500.jsonl", root / "livecodebench" / "lcb_v5_public_tests.jsonl"
    ifeval, ifeval_ids = root / "ifeval" / "input_data.jsonl", root / "ifeval" / "ifeval.jsonl"
    aime = root / "aime24" / "aime24.jsonl"
    lcb_parquet = tmp_path / "lcb.parquet"
    pq.write_table(pa.Table.from_pylist(_read(lcb)), lcb_parquet, row_group_size=200)
    inputs = [{"path": str(math500), "category": "math"}, {"path": str(aime), "category": "math"},
              {"path": str(lcb), "category": "code"}, {"path": str(ifeval), "category": "IF"},
              {"path": str(ifeval_ids), "category": "instruction following"},
              {"path": str(lcb_parquet), "category": "coding"}]
    recipe = parse_recipe({"name": "real", "run_dir": str(tmp_path / "run"), "steps": {"ingest": {"inputs": inputs}}})
    outcomes, stats = ingest_by_hand(recipe.build_stage("ingest"), tmp_path / "run")
    kept = [o.record for o in outcomes if o.kind == "kept"]
    rejected = [{"where": o.where, "reason": o.reason} for o in outcomes if o.kind == "rejected"]
    assert not [o for o in outcomes if o.kind == "quarantined"]
    assert sum(entry["lines"] for entry in stats["files"]) == len(outcomes)
    by_source: dict[str, list[dict[str, Any]]] = {}
    for record in kept:
        by_source.setdefault(record["source"], []).append(record)

    math_rows = {row["id"]: row for row in _read(math500)}
    assert len(by_source["math500.jsonl"]) == len(math_rows)
    for record in by_source["math500.jsonl"]:
        row = math_rows[record["metadata"]["id"]]
        assert record["messages"] == [{"role": "user", "content": row["problem"]}]
        assert record["reference"]["answer"] == row["answer"]
        assert record["metadata"] == {k: v for k, v in row.items() if k not in ("problem", "answer")}
        assert type(record["metadata"]["level"]) is int
    assert {r["metadata"]["answer_raw"] for r in by_source["aime24.jsonl"]} == {r["answer_raw"] for r in _read(aime)}

    lcb_rows = {row["id"]: row for row in _read(lcb)}
    assert len(by_source["lcb_v5_public_tests.jsonl"]) == len(lcb_rows)
    for record in by_source["lcb_v5_public_tests.jsonl"]:
        row, reference = lcb_rows[record["metadata"]["id"]], record["reference"]
        assert record["category"] == "code" and record["messages"][0]["content"] == row["question"]
        pairs = [(t["input"], t["output"]) for t in row["tests"]]
        assert [(t["input"], t["output"]) for t in reference["tests"]] == pairs
        assert reference["fn_name"] == row["fn_name"] and reference["starter_code"] == (row["starter_code"] or None)
        assert record["metadata"]["tests_are_public_only"] is True and "tests" not in record["metadata"]

    ifeval_rows = {row["key"]: row for row in _read(ifeval)}
    assert len(by_source["input_data.jsonl"]) == len(ifeval_rows)
    for record in by_source["input_data.jsonl"]:
        row = ifeval_rows[record["metadata"]["key"]]
        assert record["category"] == "instruction_following"
        assert record["reference"]["instructions"] == [{"id": i, "kwargs": k} for i, k in
                                                       zip(row["instruction_id_list"], row["kwargs"])]
    duplicates = {r["where"].rsplit(":", 1)[0] for r in rejected}
    assert duplicates == {str(ifeval_ids), str(lcb_parquet)}, "the same question from a second file is one query"
    assert len(rejected) == len(ifeval_rows) + len(lcb_rows)
