"""Scoring with the real verifiers: gold answers score 100%, shuffled answers about 0; code answers in the sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillery.evaluate.benchmarks import BenchmarkSpec, load_benchmark
from distillery.evaluate.samples import EvalSample
from distillery.evaluate.stage import CUT_OFF, EvalConfig, cut_off_policy
from distillery.verify import build_verifier


@pytest.fixture(scope="module")
def verifier(benchmarks_dir: Path):
    config = EvalConfig.model_validate({"benchmarks_dir": str(benchmarks_dir)})
    with build_verifier(config.verify) as built:
        yield built


def answer_with(final: str) -> str:
    return f"Working through the problem step by step gives the result.\n\nThe final answer is $\\boxed{{{final}}}$."


@pytest.mark.parametrize("name", ["aime24", "aime25", pytest.param("math500", marks=pytest.mark.slow)])
def test_gold_answers_score_100_percent_and_shuffled_about_0(verifier, benchmarks_dir: Path, name: str) -> None:
    queries = [row.query for row in load_benchmark(BenchmarkSpec(name=name), benchmarks_dir)]
    golds = [q.reference.answer for q in queries]
    gold_verdicts = verifier.verify_batch([(q, answer_with(gold)) for q, gold in zip(queries, golds)])
    failures = [(q.metadata["problem_id"], gold, v.details) for q, gold, v in zip(queries, golds, gold_verdicts) if v.score < 1]
    assert failures == []
    shuffled = golds[1:] + golds[:1]  # each problem gets the next problem's gold answer
    wrong = verifier.verify_batch([(q, answer_with(other)) for q, other in zip(queries, shuffled)])
    # Neighbouring problems sometimes share an answer (MATH-500 has several "2"s); those are really correct.
    coincide = sum(gold == other for gold, other in zip(golds, shuffled))
    passed = sum(v.score >= 1 for v in wrong)
    assert passed <= coincide + 0.01 * len(queries), (passed, coincide)


def test_no_answer_scores_zero(verifier, benchmarks_dir: Path) -> None:
    query = load_benchmark(BenchmarkSpec(name="aime24", limit=1), benchmarks_dir)[0].query
    [verdict] = verifier.verify_batch([(query, "I am not sure how to solve this.")])
    assert verdict.score == 0 and verdict.no_answer


def test_eval_reads_only_a_box_unless_the_recipe_opts_into_fallbacks(verifier, benchmarks_dir: Path) -> None:
    query = load_benchmark(BenchmarkSpec(name="aime24", limit=1), benchmarks_dir)[0].query
    unboxed = f"Adding the two cases gives the count. Therefore, the number of ways is {query.reference.answer}."
    [strict] = verifier.verify_batch([(query, unboxed)])
    assert strict.no_answer and strict.score == 0
    config = EvalConfig.model_validate({"benchmarks_dir": str(benchmarks_dir),
                                        "verify": {"math": {"fallbacks": ["boxed", "answer_is", "last_sentence"]}}})
    with build_verifier(config.verify) as lenient:
        [read] = lenient.verify_batch([(query, unboxed)])
    assert read.score == 1 and read.details["answer_source"] == "last_sentence"
    assert EvalSample(benchmark="aime24", problem_id="p", query_id=query.id, sample=0, seed=0, model="m",
                      response=unboxed, completion_tokens=9, score=1, passed=True, details=read.details).by_fallback


@pytest.mark.parametrize(("response", "finish_reason", "score", "no_answer"), [
    ("Let me try: if the answer is {gold} then the sum would be", "length", 0, True),
    ("Let me try: if the answer is {gold} then the sum would be", "stop", 1, False),
    ("So the total is $\\boxed{{{gold}}}$. Let me double-check by counting again: the first", "length", 1, False),
])
def test_a_response_cut_at_the_token_limit_has_only_its_box_read(benchmarks_dir: Path, response: str,
                                                                 finish_reason: str, score: int, no_answer: bool) -> None:
    query = load_benchmark(BenchmarkSpec(name="aime24", limit=1), benchmarks_dir)[0].query
    config = EvalConfig.model_validate({"benchmarks_dir": str(benchmarks_dir),
                                        "verify": {"math": {"fallbacks": ["boxed", "answer_is"]}}})
    with build_verifier(config.verify) as lenient:
        [verdict] = lenient.verify_batch([(query, response.format(gold=query.reference.answer))])
    verdict = cut_off_policy(verdict, finish_reason)
    assert (verdict.score, verdict.no_answer) == (score, no_answer)
    if no_answer:
        assert verdict.details["reason"] == CUT_OFF and verdict.details["answer_source"] == "answer_is"


STDIN_SOLUTION = """Here is my solution.
```python
t = int(input())
for _ in range(t):
    s = input().strip()
    mismatches = sum(a != b for a, b in zip(s, "abc"))
    print("YES" if mismatches in (0, 2) else "NO")
```"""

CALL_SOLUTION = """```python
class Solution:
    def countSeniors(self, details: List[str]) -> int:
        return sum(int(d[11:13]) > 60 for d in details)
```"""

WRONG_CALL_SOLUTION = CALL_SOLUTION.replace("> 60", ">= 0")


@pytest.mark.slow
def test_code_answers_run_against_the_benchmark_tests(verifier, benchmarks_dir: Path) -> None:
    rows = {row.problem_id: row.query for row in
            load_benchmark(BenchmarkSpec(name="livecodebench", where={}, limit=12), benchmarks_dir)}
    stdin_problem, call_problem = rows["lcb-v5-0000"], rows["lcb-v5-0009"]
    assert stdin_problem.reference.fn_name is None and call_problem.reference.fn_name == "countSeniors"
    verdicts = verifier.verify_batch([(stdin_problem, STDIN_SOLUTION), (call_problem, CALL_SOLUTION),
                                      (call_problem, WRONG_CALL_SOLUTION), (stdin_problem, "no code here")])
    assert [v.score >= 1 for v in verdicts] == [True, True, False, False], [v.details for v in verdicts]
