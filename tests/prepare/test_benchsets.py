"""Benchmark sources: built-in local files, and the Hugging Face path (offline through a `datasets` builder)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from distillery.prepare.benchsets import BUILTIN, BenchmarkSource, load_benchmarks


def test_every_builtin_benchmark_loads_with_unique_ids(benchmarks_dir: Path) -> None:
    items = load_benchmarks([BenchmarkSource(name=name) for name in BUILTIN], benchmarks_dir)
    counts = {name: sum(i.benchmark == name for i in items) for name in BUILTIN}
    assert counts == {"aime24": 30, "aime25": 30, "math500": 500, "livecodebench": 879, "ifeval": 541}
    assert len({(i.benchmark, i.item_id) for i in items}) == len(items)
    assert all(i.text.strip() for i in items)


def test_hugging_face_source_reads_the_same_rows(benchmarks_dir: Path) -> None:
    local = load_benchmarks([BenchmarkSource(name="aime25")], benchmarks_dir)
    hub = load_benchmarks([BenchmarkSource(name="aime25-hub", hf_dataset="json", hf_split="train", text_field="problem",
                                           hf_data_files=[str(benchmarks_dir / "aime25" / "aime25.jsonl")])], None)
    assert [(i.item_id, i.text) for i in hub] == [(i.item_id, i.text) for i in local]


def test_unknown_benchmark_needs_a_source_and_a_field() -> None:
    with pytest.raises(ValidationError, match="not built in"):
        BenchmarkSource(name="gpqa")
    with pytest.raises(ValidationError, match="text_field"):
        BenchmarkSource(name="gpqa", file=Path("gpqa.jsonl"))
