"""The dataset card every export writes, on the quickstart recipe with its steps faked as the runner leaves them
(`finish_shard`): the folder loads with `datasets.load_dataset`, and the card names the whole lineage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
import pytest
import yaml

from distillery.cli import main
from distillery.core.recipe import Recipe, parse_recipe
from distillery.core.store import RunDir
from distillery.core.versions import code_version
from distillery.ops.card import MARK, ExportStats, length_summary
from distillery.ops.exporting import export_folder, export_step
from distillery.schema.records import Attempt, Query, Trace
from distillery.testing import finish_shard, quickstart_query_records

QUICKSTART = Path(__file__).resolve().parents[2] / "jobs" / "quickstart.yaml"
LINEAGE = "smol-warm+strict"
QUERY_STEPS = ("ingest", "clean", "dedup", "near_dedup", "decontaminate")
TRACE_STEPS = ("generate", "perplexity", "ngram", "structure")


def _inputs(tmp_path: Path, queries: list[Query]) -> list[dict[str, Any]]:
    """Two input files: one beside a dataset card declaring `license: mit`, one beside a LICENSE file."""
    specs = []
    for name, part, (declaration, text) in (
            ("carded", queries[:15], ("README.md", "---\nlicense: mit\n---\n# queries\n")),
            ("licensed", queries[15:], ("LICENSE", "\nApache License 2.0\n..."))):
        folder = tmp_path / name
        folder.mkdir()
        (folder / declaration).write_text(text)
        path = folder / "queries.jsonl"
        path.write_text("".join(json.dumps({"messages": [m.model_dump() for m in q.messages], "category": q.category})
                                + "\n" for q in part))
        specs.append({"path": str(path), "source": name})
    return specs


def _trace(query: Query, index: int) -> dict[str, Any]:
    answer = f"<think>{'step ' * (index % 5 + 1)}</think>\n\nThe answer is {index}."
    attempts = [Attempt(index=0, seed=index, response=answer, score=1.0, passed=True, verifier=f"{query.category}-v",
                        prompt_tokens=12, completion_tokens=8 + index % 5)]
    trace = Trace(query=query, teacher="smol-warm", attempts=attempts, accepted=0, response_tokens=8 + index % 5,
                  ppl=2.0, metadata={"variant": {"name": "strict", "attempt": 0, "score": 1.0}})
    return trace.model_dump(mode="json")


def _quickstart_run(tmp_path: Path) -> tuple[RunDir, Recipe, int]:
    """The quickstart recipe over two licensed input files; every step up to `variants` finished for smol-warm,
    with drops (and their reasons) in decontaminate and ngram. Returns the run, its recipe, the exported count."""
    queries = quickstart_query_records()
    data = yaml.safe_load(QUICKSTART.read_text())
    data["run_dir"] = str(tmp_path / "run")
    data["steps"]["ingest"]["inputs"] = _inputs(tmp_path, queries)
    data["steps"]["variants"]["rules"]["strict"] = {"threshold": 1.0, "teachers": ["smol-warm"]}  # a threshold rule
    recipe = parse_recipe(data, source=str(QUICKSTART))
    run = RunDir(recipe.run_dir)
    run.root.mkdir(parents=True)
    run.recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    kept = [query.model_dump(mode="json") for query in queries]
    for step in QUERY_STEPS:
        dropped = [(kept.pop(), "matches math500 item 12 (cosine 0.97)")] if step == "decontaminate" else []
        finish_shard(run, step, None, 0, kept, dropped,
                     stats={"reject_reasons": {"matches math500 item # (cosine #)": 1}} if dropped else None)
    traces = [_trace(Query.model_validate(query), index) for index, query in enumerate(kept)]
    for step in TRACE_STEPS:
        dropped = [(traces.pop(), "1 distinct 20-gram(s) seen more than 20 times")] if step == "ngram" else []
        finish_shard(run, step, "smol-warm", 0, traces, dropped,
                     stats={"reject_reasons": {"# distinct #-gram(s) seen more than # times": 1}} if dropped else None)
    finish_shard(run, "variants", LINEAGE, 0, traces, stats={"rule": "accept the first attempt scoring >= 1.0"})
    return run, recipe, len(traces)


def test_an_exported_folder_loads_with_datasets_and_its_card_names_the_lineage(tmp_path: Path) -> None:
    run, recipe, count = _quickstart_run(tmp_path)
    folder = tmp_path / "dataset"
    result = export_folder(run, recipe, "variants", LINEAGE, "native", folder)
    assert result.written == count == 28 and result.card == folder / "README.md"
    loaded = datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(loaded) == count and set(loaded["lineage"]) == {LINEAGE}
    data_file = folder / "data" / "variants-smol-warm-strict.parquet"
    assert loaded.features == datasets.Features.from_arrow_schema(pq.read_schema(data_file))

    card = result.card.read_text()
    header_text, body = card.split("\n---\n", 1)
    header = yaml.safe_load(header_text.removeprefix("---\n"))
    assert header["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/variants-smol-warm-strict.parquet"}]}]
    assert {"text-generation"} <= set(header["task_categories"]) and header["license"] == "other"
    assert [f["name"] for f in header["dataset_info"]["features"]][:3] == ["key", "query_id", "category"]

    recipe_sha = hashlib.sha256(run.recipe.read_bytes()).hexdigest()
    assert MARK in body and f"recipe sha256: `{recipe_sha}`" in body and run.recipe.read_text().strip() in body
    assert f"`{code_version()}`" in body
    assert "- name: `smol-warm`" in body and "- engine: `vllm`" in body and "temperature 0.7" in body
    assert "reaches **0.9**" in body and "at most 3 attempts" in body and "| math | math | 14 |" in body
    assert "| verifier | records |\n|---|---|\n| math-v | 14 |" in body and "| code-v | 8 |" in body
    assert "| decontaminate | decontaminate | - | 1 | 30 | 29 | 1 | 0 | {threshold: 0.9, benchmarks: [" in body
    assert "| near_dedup | near_dedup | - | 1 | 30 | 30 | 0 | 0 | {jaccard_threshold: 0.85} |" in body
    assert "| ngram | ngram | smol-warm | 1 | 29 | 28 | 1 | 0 | - |" in body
    assert "Dropped by `decontaminate` (1)" in body and "| matches math500 item # (cosine #) | 1 |" in body
    assert "| # distinct #-gram(s) seen more than # times | 1 |" in body
    assert "- variant: `strict`" in body and "accept the first attempt scoring >= 1.0" in body
    assert "- settings: {threshold: 1.0, teachers: [smol-warm]}" in body
    assert "Decontaminated against: aime24, aime25, math500, ifeval." in body
    assert "| carded | mit (README.md) |" in body and "| licensed | Apache License 2.0 (LICENSE) |" in body
    assert "| math | 14 |" in body and "| instruction_following | 6 |" in body and "| smol-warm+strict | 28 |" in body
    assert "| answer tokens (accepted response) | 28 | 9.9 | 8 | 10 | 12 | 12 |" in body


def test_every_export_writes_its_card_beside_the_file_and_never_over_a_foreign_readme(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, recipe, count = _quickstart_run(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    result = export_step(run, recipe, "structure", "smol-warm", "am", out / "s.jsonl", limit=5, seed=1)
    card = result.card.read_text()
    assert result.card == out / "README.md" and "path: s.jsonl" in card and "features" not in card
    assert f"holds 5 records (a seeded sample of {count}, seed 1)" in card and "### Variant rule" not in card
    (out / "README.md").write_text("# my project\n")
    assert main(["export", str(run.root), "--step", "ingest", "-o", str(out / "q.jsonl")]) == 0
    assert (out / "README.md").read_text() == "# my project\n"
    assert "No decontamination step" in (out / "dataset-card.md").read_text()
    assert main(["export", str(run.root), "--step", "generate", "--teacher", "smol-warm", "--to-dir",
                 str(tmp_path / "d")]) == 0
    assert "wrote 29 records to" in capsys.readouterr().out
    assert len(datasets.load_dataset(str(tmp_path / "d"), split="train", cache_dir=str(tmp_path / "c"))) == 29


def test_length_summary_is_exact_over_a_histogram() -> None:
    stats = ExportStats()
    for tokens in (5, 1, 9, 3, 3, 100, 7, 2, 8, 4):
        stats.add({"response_tokens": tokens, "category": "math"})
    assert length_summary(stats.lengths["response_tokens"]) == {
        "count": 10, "mean": 14.2, "min": 1, "median": 4, "p90": 9, "max": 100}
    assert stats.categories == {"math": 10} and not stats.lengths["think_chars"]


def test_push_to_hub_without_credentials_says_so_after_a_complete_export(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """No token (whatever this machine has stored): the Hub is never contacted, the folder is still complete."""
    import huggingface_hub

    run, _, _ = _quickstart_run(tmp_path)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    folder = tmp_path / "d"
    assert main(["export", str(run.root), "--step", "ingest", "--to-dir", str(folder), "--push-to-hub", "o/n"]) == 2
    assert f"no Hugging Face credentials: set HF_TOKEN or run `hf auth login`, then push again; the export itself " \
           f"is complete in {folder}" in capsys.readouterr().err
    assert len(datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "c"))) == 30
    assert main(["export", str(run.root), "--step", "ingest", "-o", str(tmp_path / "q.jsonl"),
                 "--push-to-hub", "o/n"]) == 2
    assert "--push-to-hub uploads a folder: export with --to-dir DIR" in capsys.readouterr().err
