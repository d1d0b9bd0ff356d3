"""Code verifier on real LiveCodeBench problems (public tests from the packaged benchmarks): solutions written
here pass, wrong ones fail with the right verdict; stdin and call style, Python and C++."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillery.schema.records import Query, Reference, make_query
from distillery.schema.records import TestCase as CodeTest
from distillery.verify.code import CodeVerifier, call_output_matches, extract_code, stdout_matches
from distillery.verify.config import CodeSettings
from distillery.verify.sandbox import SandboxLimits, SandboxSettings

SANDBOX = SandboxSettings(uid_base=62100, uid_count=8, lock_dir="/tmp/distillery-sandbox-uids-tests")

CARDS_PY = """t = int(input())
for _ in range(t):
    s = input().strip()
    print("YES" if sum(a != b for a, b in zip(s, "abc")) != 3 or s == "abc" else "NO")
"""
CARDS_ALWAYS_YES = "t = int(input())\nfor _ in range(t):\n    input()\n    print('YES')\n"
CARDS_CPP = """#include <iostream>
#include <string>
int main() { int t; std::cin >> t; while (t--) { std::string s; std::cin >> s; int d = 0;
  for (int i = 0; i < 3; i++) d += s[i] != "abc"[i]; std::cout << (d != 3 ? "YES" : "NO") << "\\n"; } }
"""
ELECTION_PY = "n, t, a = map(int, input().split())\nprint('Yes' if t > n // 2 or a > n // 2 else 'No')\n"
ELECTION_CRASH = "n, t, a = map(int, input().split())\nprint(['Yes', 'No'][n + 100])\n"
ELECTION_SLOW = "n, t, a = map(int, input().split())\nwhile n > 0:\n    n += 1\n"
SENIORS = "class Solution:\n    def countSeniors(self, details: List[str]) -> int:\n        return sum(int(d[11:13]) > 60 for d in details)\n"
SENIORS_WRONG = "class Solution:\n    def countSeniors(self, details: List[str]) -> int:\n        return 0\n"
MATRIX_SUM = """class Solution:
    def matrixSum(self, nums: List[List[int]]) -> int:
        rows = [sorted(row, reverse=True) for row in nums]
        return sum(max(column) for column in zip(*rows))
"""
MAXIMUM_OR = """class Solution:
    def maximumOr(self, nums: List[int], k: int) -> int:
        n = len(nums)
        prefix, suffix = [0] * (n + 1), [0] * (n + 1)
        for i in range(n):
            prefix[i + 1] = prefix[i] | nums[i]
        for i in range(n - 1, -1, -1):
            suffix[i] = suffix[i + 1] | nums[i]
        return max(prefix[i] | (nums[i] << k) | suffix[i + 1] for i in range(n))
"""


def _lcb_query(row: dict, language: str = "python") -> Query:
    return make_query(
        "code",
        [{"role": "user", "content": row["question"]}],
        Reference(
            tests=[CodeTest(input=test["input"], output=test["output"]) for test in row["tests"]],
            fn_name=row["fn_name"],
            starter_code=row["starter_code"] or None,
            language=language,
        ),
        source="livecodebench",
    )


def _answer(code: str, language: str = "python") -> str:
    return f"<think>\nLet me write it.\n</think>\n<answer>\nHere is my solution:\n```{language}\n{code}```\n</answer>"


@pytest.fixture(scope="module")
def lcb(benchmarks_dir: Path) -> dict[str, dict]:
    rows = (json.loads(line) for line in (benchmarks_dir / "livecodebench" / "lcb_v5_public_tests.jsonl").open())
    return {row["id"]: row for row in rows}


@pytest.fixture(scope="module")
def verifier() -> CodeVerifier:
    limits = SandboxLimits(wall_s=5.0, cpu_s=2)
    with_settings = CodeVerifier(CodeSettings(parallelism=2, limits=limits, sandbox=SANDBOX), threshold=0.9)
    yield with_settings
    with_settings.close()


@pytest.mark.slow
def test_livecodebench_solutions_pass_and_wrong_ones_fail(lcb: dict[str, dict], verifier: CodeVerifier) -> None:
    cases = [
        ("lcb-v5-0000", "python", CARDS_PY, 1.0, "accepted"),
        ("lcb-v5-0000", "python", CARDS_ALWAYS_YES, 0.0, "wrong_answer"),
        ("lcb-v5-0000", "cpp", CARDS_CPP, 1.0, "accepted"),
        ("lcb-v5-0615", "python", ELECTION_PY, 1.0, "accepted"),
        ("lcb-v5-0615", "python", ELECTION_CRASH, 0.0, "runtime_error"),
        ("lcb-v5-0615", "python", ELECTION_SLOW, 0.0, "time_limit"),
        ("lcb-v5-0009", "python", SENIORS, 1.0, "accepted"),
        ("lcb-v5-0009", "python", SENIORS_WRONG, 0.5, "wrong_answer"),
        ("lcb-v5-0010", "python", MATRIX_SUM, 1.0, "accepted"),
        ("lcb-v5-0011", "python", MAXIMUM_OR, 1.0, "accepted"),
    ]
    pairs = [(_lcb_query(lcb[problem], language), _answer(code, language)) for problem, language, code, *_ in cases]
    verdicts = verifier.verify_batch(pairs)
    for (problem, language, _, score, verdict_name), verdict in zip(cases, verdicts):
        assert verdict.score == pytest.approx(score), (problem, language, verdict.details)
        assert verdict.passed == (score >= 0.9)
        assert verdict_name in verdict.details["verdicts"], (problem, verdict.details)
        assert verdict.details["tests"] == len(lcb[problem]["tests"])


def test_answer_without_code_is_a_verdict(lcb: dict[str, dict], verifier: CodeVerifier) -> None:
    verdict = verifier.verify(_lcb_query(lcb["lcb-v5-0615"]), "<think>hmm</think><answer>Print Yes.</answer>")
    assert verdict.score == 0.0 and not verdict.passed
    assert "no python code block" in verdict.details["reason"]


def test_max_tests_caps_the_tests_run(lcb: dict[str, dict]) -> None:
    settings = CodeSettings(max_tests=1, sandbox=SANDBOX)
    with_cap = CodeVerifier(settings, threshold=0.9)
    try:
        verdict = with_cap.verify(_lcb_query(lcb["lcb-v5-0009"]), _answer(SENIORS_WRONG))
    finally:
        with_cap.close()
    assert verdict.details["tests"] == 1 and verdict.details["verdicts"] == ["wrong_answer"]


def test_extract_code_prefers_the_language_and_the_last_block() -> None:
    text = "```python\nprint(1)\n```\nthen\n```cpp\nint main(){}\n```\n```python\nprint(2)\n```"
    assert extract_code(text, "python") == "print(2)\n"
    assert extract_code(text, "cpp") == "int main(){}\n"
    assert extract_code("```\nprint(3)\n```", "python") == "print(3)\n"
    assert extract_code("no code", "python") is None


def test_output_comparison() -> None:
    assert stdout_matches("YES\nNO\n", "YES \nNO", 1e-6)
    assert not stdout_matches("YES\nNO\n", "YES\nYES\n", 1e-6)
    assert stdout_matches("0.3333333", "0.33333331", 1e-6)
    assert not stdout_matches("1", "1 2", 1e-6)
    assert call_output_matches("[1, 2]", "[1,2]", 1e-6)
    assert call_output_matches("0.5", "0.5000000001", 1e-6)
    assert not call_output_matches("true", "false", 1e-6)


def test_memory_words_on_stderr_of_a_clean_exit_do_not_make_a_memory_limit(lcb: dict[str, dict], verifier: CodeVerifier) -> None:
    code = "import sys\nsys.stderr.write('MemoryError std::bad_alloc\\n')\n" + ELECTION_PY
    verdict = verifier.verify(_lcb_query(lcb["lcb-v5-0615"]), _answer(code))
    assert verdict.passed and set(verdict.details["verdicts"]) == {"accepted"}
