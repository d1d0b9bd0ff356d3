"""The report over a run with dataset variants: every lineage compared, paired differences over the same problems,
and the student-length analysis on MATH-500 (easy) against AIME 2025 (hard).

The run is built in the test (shards faked as the runner finishes them): traces for two teachers, a length variant
of each from the recipe's `variants` step, and eval shards of four students answering real benchmark problems,
each answer scored by the real Math-Verify verifier against the benchmark's own answer.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest
import yaml

from distillery.analyze.report import build_report
from distillery.schema.records import Attempt, Trace, make_query
from distillery.core.store import RunDir
from distillery.data import benchmarks_dir
from distillery.evaluate.benchmarks import BenchmarkSpec, load_benchmark
from distillery.analyze.metrics import bootstrap_ci
from distillery.evaluate.samples import EvalSample
from distillery.evaluate.stage import EvalConfig
from distillery.testing import finish_shard
from distillery.verify import build_verifier

K = 4
"""Samples per problem."""
STUDENTS = {
    # lineage: (math500 problems answered, correct samples out of K on problem i, tokens on (easy, hard))
    "alpha": (8, lambda i: (i % 3) + 2, (300, 2400)),
    "alpha+short": (6, lambda i: (i % 2) + 1, (200, 260)),
    "beta": (8, lambda i: i % 2, (500, 900)),
    "beta+short": (8, lambda i: 1, (150, 160)),
}
AIME_PROBLEMS = 6


def _trace(teacher: str, index: int, tokens: int, variant: str | None = None) -> dict[str, Any]:
    category = ("math", "math", "code")[index % 3]
    query = make_query(category, [{"role": "user", "content": f"{teacher} question {index}"}])
    attempt = Attempt(index=0, seed=0, response="<think>t</think><answer>a</answer>", score=1.0, passed=True,
                      completion_tokens=tokens)
    trace = Trace(query=query, teacher=teacher, attempts=[attempt], accepted=0, response_tokens=tokens,
                  ppl=2.0 + index % 4, metadata={"variant": {"name": variant}} if variant else {})
    return trace.model_dump(mode="json")


def _answers(lineage: str, rows: list, correct: int, tokens: int, benchmark: str) -> list[tuple[EvalSample, str]]:
    """K answers per problem, the first `correct(i)` of problem i with the benchmark's answer; incorrect answers
    twice as long as correct ones (a few tokens apart per sample)."""
    out = []
    for index, row in enumerate(rows):
        for sample in range(K):
            right = sample < correct(index)
            answer = row.query.reference.answer if right else "987654321"
            sample_tokens = (tokens if right else 2 * tokens) + 7 * sample + index
            record = EvalSample(benchmark=benchmark, problem_id=row.problem_id, query_id=row.query.id, sample=sample,
                                seed=sample, model=lineage, response=f"<think>...</think> So \\boxed{{{answer}}}",
                                completion_tokens=sample_tokens, finish_reason="stop", score=0.0, passed=False)
            out.append((record, row))
    return out


def _eval_key(record: dict[str, Any]) -> str:
    """The key the eval stage gives a sample's item."""
    return f"{record['benchmark']}:{record['problem_id']}:{record['sample']}"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[EvalSample]]]:
    run = RunDir(tmp_path_factory.mktemp("variants") / "run")
    run.root.mkdir()
    recipe = {"name": "variants-test", "run_dir": str(run.root),
              "teachers": [{"name": "alpha", "model": "m"}, {"name": "beta", "model": "m"}],
              "steps": {"generate": {}, "structure": {}, "variants": {"rules": {"short": {"length": "uniform"}}},
                        "eval": {"benchmarks": ["math500", "aime25"], "from_step": "sft", "shards": 1}}}
    run.recipe.write_text(yaml.safe_dump(recipe, sort_keys=False))
    for teacher, count in (("alpha", 12), ("beta", 9)):
        traces = [_trace(teacher, i, 100 + 10 * i) for i in range(count)]
        finish_shard(run, "generate", teacher, 0, traces)
        finish_shard(run, "structure", teacher, 0, traces[:-1], [(traces[-1], "malformed structure: empty answer")])
        finish_shard(run, "variants", f"{teacher}+short", 0,
                     [_trace(teacher, i, 50 + i, "short") for i in range(0, count - 1, 2)],
                     stats={"needs_new_attempts": count // 3, "rule": "length", "reject_reasons": {}})
    math500 = load_benchmark(BenchmarkSpec(name="math500"), benchmarks_dir())
    aime25 = load_benchmark(BenchmarkSpec(name="aime25"), benchmarks_dir())[:AIME_PROBLEMS]
    pending = {}
    for lineage, (easy_problems, correct, (easy_tokens, hard_tokens)) in STUDENTS.items():
        pending[lineage] = (_answers(lineage, math500[:easy_problems], correct, easy_tokens, "math500")
                            + _answers(lineage, aime25, lambda i, easy=correct: easy(i) // 2 + (i == 0), hard_tokens, "aime25"))
    with build_verifier(EvalConfig(benchmarks=[]).verify) as verifier:
        flat = [pair for pairs in pending.values() for pair in pairs]
        verdicts = iter(verifier.verify_batch([(row.query, record.response) for record, row in flat]))
    scored = {}
    for lineage, pairs in pending.items():
        scored[lineage] = []
        for record, _ in pairs:
            verdict = next(verdicts)
            scored[lineage].append(record.model_copy(update={"score": verdict.score, "passed": verdict.score >= 1.0}))
        finish_shard(run, "eval", lineage, 0, [s.model_dump(mode="json") for s in scored[lineage]], key=_eval_key)
    return run.root, scored


class _Tables(HTMLParser):
    """Rows of every table with a class, by class; each row a list of cell texts (group rows included)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table" and dict(attrs).get("class"):
            self._table = dict(attrs)["class"]
            self.tables[self._table] = []
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _per_problem(samples: list[EvalSample], benchmark: str) -> dict[str, float]:
    problems: dict[str, list[bool]] = {}
    for sample in samples:
        if sample.benchmark == benchmark:
            problems.setdefault(sample.problem_id, []).append(sample.passed)
    return {problem: sum(flags) / len(flags) for problem, flags in problems.items()}


def _lengths(samples: list[EvalSample], benchmark: str, passed: bool | None = None) -> list[int]:
    return [s.completion_tokens for s in samples if s.benchmark == benchmark and passed in (None, s.passed)]


@pytest.fixture(scope="module")
def report(run: tuple[Path, dict]) -> tuple[_Tables, dict[str, Any]]:
    """The report with the default easy and hard sets: the page's tables and report.json."""
    root, _ = run
    path = build_report(root)
    page = _Tables()
    page.feed(path.read_text())
    return page, json.loads((root / "report" / "report.json").read_text())


def test_every_lineage_is_compared_grouped_under_its_teacher(run: tuple[Path, dict], report: tuple) -> None:
    root, scored = run
    assert all(any(s.passed for s in samples) and not all(s.passed for s in samples) for samples in scored.values()), \
        "the verifier accepted the benchmark's answers and rejected the others"
    page, numbers = report
    rows = page.tables["lineages"]
    assert [row[0] for row in rows[1:]] == ["alpha", "alpha", "alpha+short", "beta", "beta", "beta+short"], \
        "a group row per teacher, its own data first, then its variants"
    table = {row[0]: row for row in rows[1:] if len(row) > 1}
    assert table["alpha"][1:3] == ["structure", "11"] and table["alpha+short"][1:3] == ["variants", "6"]
    assert table["beta"][1:3] == ["structure", "8"] and table["beta+short"][1:3] == ["variants", "4"]
    assert table["alpha"][3] == f"{np.mean([100 + 10 * i for i in range(11)]):,.0f}"
    assert table["alpha+short"][4] == f"{np.median([50 + i for i in range(0, 11, 2)]):,.0f}"
    assert table["alpha+short"][7] == "code 33% · math 67%"
    assert numbers["lineage_order"] == ["alpha", "alpha+short", "beta", "beta+short"]
    for lineage, samples in scored.items():
        per_problem = _per_problem(samples, "math500")
        pass1 = np.mean(list(per_problem.values()))
        low, high = bootstrap_ci(list(per_problem.values()))
        math500 = [s for s in samples if s.benchmark == "math500"]
        unanswered = 100 * sum(s.no_answer for s in math500) / len(math500)
        assert table[lineage][8] == f"{100 * pass1:.1f} ({100 * low:.1f}–{100 * high:.1f}) · no answer {unanswered:.1f}%"
        entry = numbers["lineages"][lineage]
        assert entry["scores"]["eval"]["math500"]["pass1"] == pytest.approx(pass1)
        assert entry["scores"]["eval"]["math500"]["problems"] == len(per_problem)
    assert "lineage_lengths.png" in page.images
    pixels = matplotlib.image.imread(root / "report" / "lineage_lengths.png")
    assert pixels.shape[1] > 300 and pixels.std() > 0.01
    variant = numbers["lineages"]["alpha+short"]
    assert (variant["teacher"], variant["variant"], variant["dataset_step"], variant["records"]) == (
        "alpha", "short", "variants", 6)
    assert variant["category_shares"] == pytest.approx({"code": 2 / 6, "math": 4 / 6})
    assert variant["dataset_figures"] == {"needs_new_attempts": 4}, "numbers of the variant's manifest, nothing else"
    assert numbers["lineages"]["alpha"]["dataset_figures"] == {}
    assert "alpha+short (variants): needs_new_attempts 4" in (root / "report" / "report.html").read_text()
    assert variant["perplexity"]["mean"] == pytest.approx(np.mean([2.0 + i % 4 for i in range(0, 11, 2)]))


def test_paired_differences_are_taken_over_the_problems_both_students_answered(run: tuple[Path, dict], report: tuple) -> None:
    _, scored = run
    page, numbers = report
    found = {(p["benchmark"], p["a"], p["b"]): p for p in numbers["paired_differences"]}
    assert {(a, b, p["kind"]) for (bench, a, b), p in found.items() if bench == "math500"} == {
        ("alpha", "alpha+short", "variants"), ("alpha", "beta", "teachers"),
        ("alpha+short", "beta+short", "teachers"), ("beta", "beta+short", "variants")}
    alpha, variant = _per_problem(scored["alpha"], "math500"), _per_problem(scored["alpha+short"], "math500")
    common = sorted(set(alpha) & set(variant))
    assert len(common) == 6 < len(alpha)
    pair = found[("math500", "alpha", "alpha+short")]
    assert pair["problems"] == 6
    assert pair["difference"] == pytest.approx(np.mean([alpha[p] - variant[p] for p in common]))
    assert pair["pass1_a"] == pytest.approx(np.mean([alpha[p] for p in common]))
    assert pair["ci"] == pytest.approx(list(bootstrap_ci([alpha[p] - variant[p] for p in common])))
    hard = found[("aime25", "alpha", "beta")]
    assert hard["problems"] == AIME_PROBLEMS and hard["difference"] == pytest.approx(
        np.mean(list(_per_problem(scored["alpha"], "aime25").values()))
        - np.mean(list(_per_problem(scored["beta"], "aime25").values())))
    rows = {(row[0], row[1], row[2]): row for row in page.tables["paired"][1:]}
    assert rows[("math500", "alpha", "alpha+short")][4:] == [
        "6", f"{100 * pair['pass1_a']:.1f}", f"{100 * pair['pass1_b']:.1f}", f"{100 * pair['difference']:+.1f}",
        f"{100 * pair['ci'][0]:+.1f} to {100 * pair['ci'][1]:+.1f}"]


def test_student_lengths_on_easy_and_hard_sets(run: tuple[Path, dict], report: tuple) -> None:
    root, scored = run
    page, numbers = report
    analysis = numbers["student_lengths"]
    assert (analysis["easy"], analysis["hard"], analysis["missing"]) == ("math500", "aime25", [])
    rows = {row[0]: row for row in page.tables["student-lengths"][1:]}
    assert list(rows) == list(STUDENTS)
    for lineage, samples in scored.items():
        easy, hard = _lengths(samples, "math500"), _lengths(samples, "aime25")
        entry = analysis["students"][lineage]
        assert entry["median_ratio"] == pytest.approx(np.median(hard) / np.median(easy))
        assert rows[lineage][5] == f"{np.median(hard) / np.median(easy):.2f}"
        for side, benchmark in (("easy", "math500"), ("hard", "aime25")):
            assert entry[side]["correct"]["mean"] == pytest.approx(np.mean(_lengths(samples, benchmark, True)))
            assert entry[side]["incorrect"]["mean"] == pytest.approx(np.mean(_lengths(samples, benchmark, False)))
            assert entry[side]["correct"]["mean"] < entry[side]["incorrect"]["mean"]
    ratios = {lineage: analysis["students"][lineage]["median_ratio"] for lineage in STUDENTS}
    assert ratios["alpha"] > 4 and 0.8 < ratios["beta+short"] < 1.6, "long on hard problems, or not"
    assert "eval-lengths-easy-hard.png" in page.images
    pixels = matplotlib.image.imread(root / "report" / "eval-lengths-easy-hard.png")
    assert pixels.shape[0] > 200 and pixels.std() > 0.01


def test_a_missing_benchmark_is_named(run: tuple[Path, dict]) -> None:
    root, _ = run
    path = build_report(root, easy="math500", hard="aime24")
    numbers = json.loads((root / "report" / "report.json").read_text())
    assert numbers["student_lengths"]["missing"] == ["aime24"]
    assert all(entry["hard"] is None and entry["median_ratio"] is None
               for entry in numbers["student_lengths"]["students"].values())
    assert "No student was evaluated on aime24" in path.read_text()
