from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from distillery.cli import main
from distillery.core.store import Manifest, RunDir, iter_jsonl

GOOD = {"category": "math", "messages": [{"role": "user", "content": "What is 1 + 1?"}], "reference": {"answer": "2"}}


def _run(tmp_path: Path, inputs: list[dict], num_shards: int = 3) -> RunDir:
    recipe = {"name": "ingest-test", "run_dir": str(tmp_path / "run"), "num_shards": num_shards,
              "steps": {"ingest": {"inputs": inputs}}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path)]) == 0
    return RunDir(tmp_path / "run")


def _collect(run: RunDir, kind: str) -> list[dict]:
    directory = run.stage_dir("ingest") / kind if kind != "kept" else run.stage_dir("ingest")
    return [row for path in sorted(directory.glob("shard-*.jsonl")) for row in iter_jsonl(path)]


def test_malformed_lines_are_quarantined_with_file_line_and_reason_and_counts_reconcile(tmp_path: Path) -> None:
    source = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps(GOOD).encode(),                                                       # 1 good
        b'{"category": "math", "messages": [',                                           # 2 bad JSON
        json.dumps({"category": "math", "messages": "What is 2?"}).encode(),             # 3 wrong type
        b'{"category": "math", "messages": [{"role": "user", "content": "caf\xe9"}]}',   # 4 invalid UTF-8
        json.dumps({"category": "math"}).encode(),                                       # 5 missing field
        json.dumps({"category": "code", "messages": [{"role": "user", "content": 7}]}).encode(),  # 6 wrong type
        json.dumps({**GOOD, "messages": [{"role": "user", "content": "What is 2 + 2?"}]}).encode(),  # 7 good
        json.dumps(GOOD).encode(),                                                       # 8 duplicate of 1
        json.dumps([1, 2]).encode(),                                                     # 9 not an object
    ]
    source.write_bytes(b"\n".join(lines) + b"\n")
    run = _run(tmp_path, [{"path": str(source)}])

    kept = _collect(run, "kept")
    quarantined = {row["where"]: row["reason"] for row in _collect(run, "quarantine")}
    rejected = _collect(run, "rejected")
    assert sorted(r["messages"][0]["content"] for r in kept) == ["What is 1 + 1?", "What is 2 + 2?"]
    assert set(quarantined) == {f"{source}:{n}" for n in (2, 3, 4, 5, 6, 9)}
    assert "bad JSON" in quarantined[f"{source}:2"]
    assert "messages" in quarantined[f"{source}:3"] and "list" in quarantined[f"{source}:3"]
    assert "invalid UTF-8 at byte" in quarantined[f"{source}:4"]
    assert "messages" in quarantined[f"{source}:5"]
    assert "content: str" in quarantined[f"{source}:6"]
    assert "JSON object" in quarantined[f"{source}:9"]
    assert [r["reason"] for r in rejected] == [f"duplicate of {source}:1"]

    manifests = [Manifest.load(p) for p in sorted(run.stage_dir("ingest").glob("*.done.json"))]
    assert all(m.reconciles() for m in manifests)
    assert sum(m.inputs for m in manifests) == len(lines)
    assert sum(m.kept for m in manifests) == 2 and sum(m.quarantined for m in manifests) == 6


def test_ids_are_stable_across_formats_and_shard_placement_depends_only_on_id(tmp_path: Path) -> None:
    messages_file = tmp_path / "m.jsonl"
    messages_file.write_text(json.dumps(GOOD) + "\n")
    parquet_file = tmp_path / "p.parquet"
    pq.write_table(pa.table({"problem": ["  what is 1 + 1?"], "answer": ["2"]}), parquet_file)
    am_file = tmp_path / "am.jsonl"
    am_file.write_text(json.dumps({"system": "", "conversations": [
        {"from": "human", "value": "What is 1 +  1?", "info": {"category": "math", "ground_truth": "2", "source": "am"}},
        {"from": "assistant", "value": "<think>1+1</think><answer>2</answer>", "info": {"model_name": "t"}}]}) + "\n")
    run = _run(tmp_path, [{"path": str(messages_file)},
                          {"path": str(parquet_file), "format": "fields", "category": "math",
                           "fields": {"prompt": "problem"}},
                          {"path": str(am_file), "format": "am"}])
    kept = _collect(run, "kept")
    rejected = _collect(run, "rejected")
    assert len(kept) == 1 and len(rejected) == 2, "the same question in three formats is one query"
    assert all(r["reason"].startswith(f"duplicate of {messages_file}:1") for r in rejected)
