"""Students of lineages: which eval folders are read, which pairs are compared, and the easy/hard length analysis
(synthetic samples with known correctness and lengths, not model output)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from distillery.core.store import RunDir
from distillery.evaluate.benchmarks import BenchmarkSpec
from distillery.analyze.paired import paired_comparisons
from distillery.analyze.student_lengths import length_analysis
from distillery.evaluate.samples import EvalSample
from distillery.analyze.eval_summary import summarize, summarize_samples
from distillery.testing import finish_shard


def answers(benchmark: str, correct: list[int], k: int, tokens: int) -> list[EvalSample]:
    """k samples per problem p{i}, the first correct[i] right; a wrong answer is 3x as long as a right one."""
    return [EvalSample(benchmark=benchmark, problem_id=f"p{i}", query_id=f"q{i}", sample=s, seed=s, model="m",
                       response="...", completion_tokens=tokens * (1 if s < c else 3) + s, score=float(s < c),
                       passed=s < c)
            for i, c in enumerate(correct) for s in range(k)]


def test_pairs_stay_within_one_eval_step() -> None:
    data = {f"{step}/{lineage}": answers("math500", correct, 2, 100)
            for step in ("eval", "eval_long")
            for lineage, correct in (("am", [2, 2, 1]), ("am+strict", [2, 0, 1]), ("r1", [0, 0, 1]))}
    summary = summarize_samples(data, [BenchmarkSpec(name="math500")])
    summary.origins = {student: tuple(student.split("/")) for student in data}  # type: ignore[misc]
    pairs = {(c.a, c.b): c for c in paired_comparisons(summary)}
    assert set(pairs) == {(f"{step}/{a}", f"{step}/{b}") for step in ("eval", "eval_long")
                          for a, b in (("am", "am+strict"), ("am", "r1"))}, "no pair across eval steps"
    assert pairs[("eval/am", "eval/am+strict")].kind == "variants"
    assert pairs[("eval/am", "eval/r1")].kind == "teachers"
    assert pairs[("eval/am", "eval/am+strict")].result.difference == pytest.approx((0 + 1 + 0) / 3)
    assert pairs[("eval/am", "eval/r1")].result.difference == pytest.approx((1 + 1 + 0) / 3)


def test_length_analysis_ratio_and_correctness() -> None:
    data = {"am": answers("math500", [2, 1, 0, 2], 2, 100) + answers("aime25", [1, 0, 0], 2, 1000),
            "r1": answers("math500", [2, 2], 2, 50)}
    summary = summarize_samples(data, [BenchmarkSpec(name="math500"), BenchmarkSpec(name="aime25")])
    analysis = length_analysis(summary)
    assert analysis.missing == [] and analysis.note == ""
    am, r1 = analysis.students
    easy = [s.completion_tokens for s in data["am"] if s.benchmark == "math500"]
    hard = [s.completion_tokens for s in data["am"] if s.benchmark == "aime25"]
    assert am.median_ratio == pytest.approx(np.median(hard) / np.median(easy))
    assert am.hard is not None and am.hard.correct.count == 1 and am.hard.correct.mean == 1000
    assert am.hard.incorrect.mean == pytest.approx(np.mean([3001, 3000, 3001, 3000, 3001]))
    assert r1.hard is None and r1.median_ratio is None and r1.easy is not None and r1.easy.incorrect.count == 0
    assert analysis.to_json()["students"]["r1"]["easy"]["incorrect"]["mean"] is None, "NaN written as null"
    only_easy = length_analysis(summarize_samples({"r1": data["r1"]}, [BenchmarkSpec(name="math500")]),
                                hard="aime24")
    assert only_easy.missing == ["aime24"] and "aime24" in only_easy.note


def test_summarize_reads_the_student_of_every_lineage(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    recipe = {"name": "lineages", "run_dir": str(run.root), "teachers": [{"name": "r1", "model": "m"},
                                                                         {"name": "am", "model": "m"}],
              "steps": {"generate": {}, "variants": {"rules": {"strict": {"threshold": 0.95}}},
                        "eval": {"benchmarks": ["math500"], "from_step": "sft", "shards": 1}}}
    run.recipe.write_text(yaml.safe_dump(recipe, sort_keys=False))
    for lineage, correct in (("am+strict", [1, 1]), ("am", [1, 0]), ("r1", [0, 0])):
        finish_shard(run, "eval", lineage, 0, [s.model_dump(mode="json") for s in answers("math500", correct, 1, 10)],
                     key=lambda record: f"{record['problem_id']}:{record['sample']}")
    summary = summarize(run.root)
    assert summary.students == ["r1", "r1+strict", "am", "am+strict"], "recipe order, variants after their teacher"
    assert summary.origins["am+strict"] == ("eval", "am+strict")
    assert summary.models["am+strict"] == str(run.hf_export("sft", "am+strict")), "the variant's own student"
    assert summary.models["am"] == str(run.hf_export("sft", "am"))
    assert summary.shards["am+strict"] == (1, 1) and summary.shards["r1+strict"] == (0, 1) and not summary.complete
    assert summary.result("r1+strict", "math500") is None
    assert summary.result("am+strict", "math500").pass1 == 1.0  # type: ignore[union-attr]
    assert summary.result("am", "math500").per_problem == {"p0": 1.0, "p1": 0.0}  # type: ignore[union-attr]
