"""Benchmark loaders: the shared JSONL files, overrides, malformed rows, and the Hugging Face `datasets` path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillery.evaluate.benchmarks import BenchmarkSpec, load_benchmark


@pytest.mark.parametrize("name, problems, samples", [("aime24", 30, 64), ("aime25", 30, 64), ("math500", 500, 4),
                                                      ("livecodebench", 279, 16)])
def test_builtin_benchmarks_load_with_paper_defaults(benchmarks_dir: Path, name: str, problems: int, samples: int) -> None:
    spec = BenchmarkSpec.model_validate(name)
    rows = load_benchmark(spec, benchmarks_dir)
    assert spec.samples == samples
    assert len(rows) == problems
    assert all(row.query is not None for row in rows)
    assert len({row.problem_id for row in rows}) == problems
    assert len({row.query.id for row in rows}) == problems
    assert all(row.query.metadata["problem"] in row.query.prompt for row in rows)


def test_math_rows_carry_gold_answers(benchmarks_dir: Path) -> None:
    rows = load_benchmark(BenchmarkSpec(name="aime24"), benchmarks_dir)
    assert rows[0].problem_id == "aime2024-I-01" and rows[0].query.reference.answer == "204"
    assert all(row.query.reference.answer.isdigit() for row in rows)
    assert all(row.query.category == "math" and "\\boxed{}" in row.query.prompt for row in rows)
    math500 = load_benchmark(BenchmarkSpec(name="math500", limit=1), benchmarks_dir)
    assert math500[0].query.reference.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"


def test_livecodebench_rows_carry_tests_and_starter_code(benchmarks_dir: Path) -> None:
    rows = load_benchmark(BenchmarkSpec(name="livecodebench", where={}), benchmarks_dir)
    assert len(rows) == 879
    functional = [row.query for row in rows if row.query.reference.fn_name]
    stdin = [row.query for row in rows if not row.query.reference.fn_name]
    assert (len(functional), len(stdin)) == (381, 498)
    call = functional[0]
    assert call.reference.starter_code and call.reference.starter_code in call.prompt
    assert call.reference.fn_name in call.reference.starter_code
    assert all(q.reference.tests and q.category == "code" for q in functional + stdin)
    assert "standard input" in stdin[0].prompt


def test_overrides_slice_and_replace_the_source(benchmarks_dir: Path, tmp_path: Path) -> None:
    spec = BenchmarkSpec(name="math500", samples=2, limit=5, max_tokens=64)
    assert [r.problem_id for r in load_benchmark(spec, benchmarks_dir)] == [
        r.problem_id for r in load_benchmark(BenchmarkSpec(name="math500"), benchmarks_dir)[:5]]
    own = tmp_path / "mine.jsonl"
    own.write_text(json.dumps({"id": "q1", "problem": "What is 1+1?", "answer": "2"}) + "\n")
    custom = BenchmarkSpec(name="livecodebench", kind="math", file=own, fields={})
    assert custom.where == {} and custom.note == ""  # a replaced source drops the built-in filter and note
    rows = load_benchmark(custom, benchmarks_dir)
    assert [(r.problem_id, r.query.reference.answer) for r in rows] == [("q1", "2")]
    relative = BenchmarkSpec(name="tiny", file=Path("math500/math500.jsonl"), limit=2)
    assert len(load_benchmark(relative, benchmarks_dir)) == 2


def test_malformed_rows_are_reported_not_dropped(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([
        json.dumps({"id": "ok", "problem": "2+2?", "answer": "4"}),
        "{not json",
        json.dumps({"id": "no-answer", "problem": "3+3?"}),
        json.dumps(["a list"]),
        json.dumps({"id": "empty", "problem": "  ", "answer": "1"}),
    ]) + "\n")
    rows = load_benchmark(BenchmarkSpec(name="mine", file=path), tmp_path)
    assert len(rows) == 5
    assert rows[0].query is not None
    problems = [row.problem for row in rows[1:]]
    assert all(row.query is None for row in rows[1:])
    assert "not JSON" in problems[0] and "gold answer" in problems[1] and "JSON object" in problems[2]
    assert "empty" in problems[3]
    assert rows[1].where == f"{path}:2" and rows[1].raw.startswith("{not json")


def test_code_rows_without_tests_are_malformed(tmp_path: Path) -> None:
    path = tmp_path / "code.jsonl"
    path.write_text(json.dumps({"id": "c1", "question": "Print 1.", "tests": []}) + "\n")
    spec = BenchmarkSpec(name="code", kind="code", file=path, fields={"problem": "question", "tests": "tests"})
    [row] = load_benchmark(spec, tmp_path)
    assert row.query is None and "no code tests" in row.problem


def test_hugging_face_path_reads_through_datasets(benchmarks_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub itself is unreachable here: `datasets`' json builder over the local file runs the same code path."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    local = load_benchmark(BenchmarkSpec(name="aime25"), benchmarks_dir)
    spec = BenchmarkSpec(name="aime25", hf_dataset="json", hf_split="train",
                         hf_data_files=[str(benchmarks_dir / "aime25" / "aime25.jsonl")])
    assert spec.file is None
    from_hub = load_benchmark(spec, benchmarks_dir)
    assert [r.query.id for r in from_hub] == [r.query.id for r in local]
    assert [r.query.reference.answer for r in from_hub] == [r.query.reference.answer for r in local]
    assert from_hub[0].where.startswith("hf:json")
