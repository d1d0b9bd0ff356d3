"""Scoring, tables and plots from eval records (synthetic records with known correctness, not model output)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import pytest

from distillery.evaluate.benchmarks import BenchmarkSpec
from distillery.analyze.eval_render import (
    accuracy_table,
    detail_table,
    length_table,
    render_html,
    render_markdown,
    render_plots,
    write_results,
)
from distillery.evaluate.samples import EvalSample
from distillery.analyze.eval_summary import score_benchmark, summarize_samples


def samples(benchmark: str, correct_per_problem: list[int], k: int, correct_len: int, wrong_len: int,
            timeouts: int = 0) -> list[EvalSample]:
    """k samples per problem, the first `correct` of each correct; the last `timeouts` wrong ones timed out."""
    rows = []
    for problem, correct in enumerate(correct_per_problem):
        for sample in range(k):
            passed = sample < correct
            rows.append(EvalSample(benchmark=benchmark, problem_id=f"p{problem}", query_id=f"q{problem}", sample=sample,
                                   seed=sample, model="m", response="...", completion_tokens=correct_len if passed else wrong_len,
                                   finish_reason="stop" if passed else "length", score=float(passed), passed=passed))
    wrong = [row for row in rows if not row.passed]
    for row in wrong[len(wrong) - timeouts:]:
        row.details = {"reason": "timeout"}
    return rows


@pytest.fixture
def two_students() -> tuple:
    benchmarks = [BenchmarkSpec(name="aime24"), BenchmarkSpec(name="math500"), BenchmarkSpec(name="livecodebench")]
    data = {
        "am": samples("aime24", [4, 2, 0, 4], 4, 100, 300) + samples("math500", [2, 2], 2, 50, 80),
        "r1": samples("aime24", [1, 0, 0, 3], 4, 120, 400) + samples("math500", [2, 0], 2, 60, 90),
    }
    return data, benchmarks


def test_score_benchmark_counts_per_problem() -> None:
    result = score_benchmark("am", "aime24", samples("aime24", [4, 2, 0, 4], 4, 100, 300, timeouts=2))
    assert (result.problems, result.samples, result.samples_per_problem) == (4, 16, (4, 4))
    assert result.pass1 == pytest.approx(10 / 16)
    assert result.pass_at_k[1] == pytest.approx(result.pass1)
    assert result.pass_at_k[4] == pytest.approx(3 / 4)
    assert sorted(result.pass_at_k) == [1, 2, 4]
    low, high = result.pass1_ci
    assert 0 <= low < result.pass1 < high <= 1
    assert result.lengths.mean == pytest.approx((10 * 100 + 6 * 300) / 16)
    assert (result.lengths_correct.mean, result.lengths_incorrect.mean) == (100, 300)
    assert result.truncated == pytest.approx(6 / 16)
    assert result.verifier_errors == 2


def test_no_answer_and_fallback_shares_stand_beside_pass1(two_students: tuple) -> None:
    data, benchmarks = two_students
    wrong = [row for row in data["am"] if row.benchmark == "aime24" and not row.passed]
    for row in wrong[:3]:
        row.details = {"reason": "no final answer found", "no_answer": True}
    for row in [row for row in data["am"] if row.benchmark == "aime24" and row.passed][:2]:
        row.details = {"answer_source": "answer_is"}
    summary = summarize_samples(data, benchmarks)
    result = summary.result("am", "aime24")
    assert result is not None and (result.no_answer, result.by_fallback) == (3 / 16, 2 / 16)
    _, _, rows, notes = accuracy_table(summary)
    assert rows[0][1].endswith("· no answer 18.8%") and rows[1][1].endswith("· no answer 0.0%")
    assert any(note.startswith("no answer:") for note in notes)
    _, header, detail_rows, _ = detail_table(summary)
    cells = dict(zip(header, detail_rows[0]))
    assert (cells["No answer (%)"], cells["Answer by fallback (%)"]) == ("18.8", "12.5")
    assert "no answer 18.8%" in render_markdown(summary) and "no answer 18.8%" in render_html(summary)


def test_tables_have_the_paper_layout(two_students: tuple) -> None:
    data, benchmarks = two_students
    summary = summarize_samples(data, benchmarks)
    caption, header, rows, notes = accuracy_table(summary)
    assert header == ["Model", "AIME 2024", "MATH-500", "LiveCodeBench"]
    assert [row[0] for row in rows] == ["am", "r1"]
    assert rows[0][1].startswith("**62.5**") and rows[1][1].startswith("25.0 (")
    assert rows[0][2].startswith("**100.0**") and rows[1][2].startswith("50.0")
    assert rows[0][3] == "–"  # no LiveCodeBench samples
    assert any("public tests only" in note for note in notes)
    _, _, length_rows, _ = length_table(summary)
    assert length_rows[0][1] == f"{(10 * 100 + 6 * 300) / 16:,.0f}" and length_rows[1][2] == "75"
    markdown = render_markdown(summary)
    assert "| am | **62.5**" in markdown and "Average generation length (tokens)" in markdown


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.open: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        if tag not in ("img", "br", "meta"):
            self.open.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open.pop() == tag, f"</{tag}> does not close <{self.open[-1:]}>"


def test_html_fragment_and_plots(two_students: tuple, tmp_path: Path) -> None:
    data, benchmarks = two_students
    summary = summarize_samples({"a<b": data["am"], "r1": data["r1"]}, benchmarks)
    images = render_plots(summary, tmp_path)
    assert sorted(p.name for p in images) == ["eval-lengths-aime24.png", "eval-lengths-correctness.png",
                                              "eval-lengths-math500.png"]
    for image in images:
        pixels = matplotlib.image.imread(image)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400 and pixels.std() > 0.01
    fragment = render_html(summary, images)
    parser = _Collector()
    parser.feed(fragment)
    assert parser.open == []
    assert parser.tags.count("table") == 3 and "html" not in parser.tags
    assert sorted(parser.images) == sorted(p.name for p in images)
    assert "a&lt;b" in fragment and "<b>62.5</b>" in fragment


def test_write_results_files(two_students: tuple, tmp_path: Path) -> None:
    data, benchmarks = two_students
    paths = write_results(summarize_samples(data, benchmarks), tmp_path / "out")
    assert all(path.exists() for path in paths.values())
    assert "AIME 2024" in paths["markdown"].read_text()
    import json

    saved = json.loads(paths["json"].read_text())
    assert {(r["student"], r["benchmark"]) for r in saved["results"]} == {("am", "aime24"), ("am", "math500"),
                                                                         ("r1", "aime24"), ("r1", "math500")}
