"""Math verification through real Math-Verify in worker processes: equivalences pass, wrong answers fail,
pathological inputs time out with a verdict while the rest of the batch completes."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from distillery.schema.records import Query, Reference, make_query
from distillery.verify.config import MathSettings
from distillery.verify.math import MathVerifier, gold_text
from distillery.verify.pool import WorkerPool

EQUIVALENT = [
    (r"\frac{1}{2}", r"<think>half</think><answer>The answer is $\boxed{0.5}$.</answer>"),
    (r"\dfrac{3}{4}", r"So we get \boxed{0.75}"),
    (r"3\sqrt{2}", r"\boxed{\sqrt{18}}"),
    (r"18+2\pi", r"\boxed{2\pi + 18}"),
    (r"\{1,2,3\}", r"\boxed{\{3, 2, 1\}}"),
    (r"[2,5)", r"\boxed{[2, 5)}"),
    (r"(-\infty, 0) \cup (1, \infty)", r"\boxed{(-\infty,0)\cup(1,\infty)}"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"\boxed{\left(3, \frac{\pi}{2}\right)}"),
    (r"10\%", r"\boxed{0.1}"),
    (r"25\%", r"\boxed{25\%}"),
    (r"\text{(C)}", r"\boxed{C}"),
    ("204", "<think>" + "Let me think step by step. " * 200 + "</think>\nAfter all that work, the total is \\boxed{204}. Done."),
    ("5", "no box, but the final answer is 5."),
]
WRONG = [
    (r"3\sqrt{2}", r"\boxed{3}"),
    (r"18+2\pi", r"\boxed{18}"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"\boxed{3}"),
    (r"[2,5)", r"\boxed{(2,5)}"),
    (r"\{1,2,3\}", r"\boxed{\{1,2\}}"),
    (r"\frac{1}{2}", r"\boxed{0.51}"),
    ("204", r"\boxed{205}"),
]


def _query(gold: str | None) -> Query:
    return make_query("math", [{"role": "user", "content": f"what is {gold}?"}], Reference(answer=gold))


@pytest.fixture(scope="module")
def verifier() -> MathVerifier:
    math_verifier = MathVerifier(MathSettings(workers=2, timeout_s=3, hard_timeout_s=20), threshold=0.9)
    yield math_verifier
    math_verifier.close()


def test_gold_is_boxed_so_it_parses_whole() -> None:
    from math_verify import parse

    assert gold_text(r"3\sqrt{2}") == r"\boxed{3\sqrt{2}}"
    assert gold_text(r"$x$") == "$x$"
    assert str(parse(gold_text(r"18+2\pi"))[0]) == "2*pi + 18"


def test_equivalent_answers_pass_and_wrong_ones_fail(verifier: MathVerifier) -> None:
    cases = [(gold, response, True) for gold, response in EQUIVALENT] + [(gold, response, False) for gold, response in WRONG]
    verdicts = verifier.verify_batch([(_query(gold), response) for gold, response, _ in cases])
    for (gold, response, expected), verdict in zip(cases, verdicts):
        assert verdict.passed is expected, (gold, response[-60:], verdict.details)
        assert verdict.score == (1.0 if expected else 0.0)
        assert verdict.verifier == "math_verify"


def test_pathological_input_times_out_while_the_batch_completes(verifier: MathVerifier) -> None:
    tower = r"\boxed{9^{9^{9^{9^9}}} - 9^{9^{9^{9^9}}}}"
    pairs = [(_query("2"), r"\boxed{2}"), (_query("5"), tower), (_query("7"), r"\boxed{7}"), (_query("0"), tower), (_query("1"), r"\boxed{1}")]
    verdicts = verifier.verify_batch(pairs)
    assert [verdict.passed for verdict in verdicts] == [True, False, True, False, True]
    assert verdicts[1].details.get("timed_out") or verdicts[1].details.get("reason") == "timeout"
    assert verdicts[3].details.get("timed_out") or verdicts[3].details.get("reason") == "timeout"


def test_missing_answer_and_gold_are_verdicts(verifier: MathVerifier) -> None:
    no_answer, no_gold, truncated = verifier.verify_batch(
        [(_query("3"), "I am not sure."), (_query(None), r"\boxed{3}"), (_query("3"), "<think>still thinking \\boxed{3}")]
    )
    assert not no_answer.passed and no_answer.details["reason"] == "no final answer found"
    assert not no_gold.passed and no_gold.details["reason"] == "query has no reference answer"
    assert not truncated.passed and truncated.details["structure"] == "unterminated <think> block"


def test_every_math500_gold_parses_to_something(benchmarks_dir: Path) -> None:
    """The bare-gold pitfall: every MATH-500 answer, boxed, must verify against itself."""
    golds = [json.loads(line)["answer"] for line in (benchmarks_dir / "math500" / "math500.jsonl").open()]
    math_verifier = MathVerifier(MathSettings(workers=2), threshold=0.9)
    try:
        verdicts = math_verifier.verify_batch([(_query(gold), f"\\boxed{{{gold}}}") for gold in golds])
    finally:
        math_verifier.close()
    failures = [(gold, verdict.details) for gold, verdict in zip(golds, verdicts) if not verdict.passed]
    assert failures == [], failures


def test_pool_replaces_dead_and_stuck_workers() -> None:
    with WorkerPool("signal:raise_signal", workers=2, hard_timeout_s=30) as pool:
        results = pool.map([signal.SIGWINCH, signal.SIGKILL, signal.SIGWINCH, 1000, signal.SIGWINCH])
        assert [result.ok for result in results] == [True, False, True, False, True]
        assert results[1].error == "worker died"
        assert results[3].error.startswith("OSError")
        assert pool.replaced == 1
    with WorkerPool("time:sleep", workers=2, hard_timeout_s=1.5) as pool:
        started = time.monotonic()
        results = pool.map([0.01, 1000, 0.01, 0.01, 1000, 0.01])
        assert [result.error for result in results] == ["", "timeout", "", "", "timeout", ""]
        assert time.monotonic() - started < 10
        assert pool.replaced == 2
        assert all(result.ok for result in pool.map([0.01] * 4))


def test_pool_replaces_a_worker_that_died_while_idle() -> None:
    with WorkerPool("time:sleep", workers=1, hard_timeout_s=30) as pool:
        assert pool.map([0.0])[0].ok
        pool.workers[0].process.kill()
        pool.workers[0].process.join()
        results = pool.map([0.0, 0.0])
        assert all(result.ok for result in results) and pool.replaced == 1
