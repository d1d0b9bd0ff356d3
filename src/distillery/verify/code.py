"""Code: run the answer's program against the query's tests in the sandbox; score = fraction passed.

Tests follow LiveCodeBench: stdin/stdout (`fn_name` unset), or call style where each input line is one
JSON argument of `Solution().<fn_name>` (or a top-level function) and the output is the JSON return value.
Python and C++ (compiled once, in the sandbox too: a hostile #include is as untrusted as the program).
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import signal
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from distillery.schema.records import Query, TestCase
from distillery.schema.responses import parse_response
from distillery.verify.config import CodeSettings
from distillery.verify.sandbox import SANDBOX_ROOT, SandboxLimits, SandboxResult, run_sandboxed
from distillery.verify.verdict import SettingsVerifier, Verdict

logger = logging.getLogger(__name__)

NAME = "code_sandbox"

TestVerdict = Literal[
    "accepted", "wrong_answer", "time_limit", "memory_limit", "runtime_error", "output_limit", "compile_error", "sandbox_error"
]

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+#-]*)[^\n]*\n(.*?)```", re.DOTALL)
_LANGUAGE_TAGS = {"python": {"python", "python3", "py"}, "cpp": {"cpp", "c++", "cc", "cxx"}}
_MEMORY_MARKERS = (b"MemoryError", b"std::bad_alloc", b"Cannot allocate memory")

CALL_HARNESS = """\
import json, sys
source = open("/sandbox/solution.py").read()
namespace = {"__name__": "solution"}
exec(compile("from typing import *\\nfrom collections import *\\nimport math, heapq, bisect, itertools, functools\\n", "prelude", "exec"), namespace)
exec(compile(source, "solution.py", "exec"), namespace)
name = sys.argv[1]
function = getattr(namespace["Solution"](), name) if "Solution" in namespace else namespace[name]
arguments = [json.loads(line) for line in sys.stdin.read().splitlines() if line.strip()]
sys.stdout.write(json.dumps(function(*arguments)))
"""


@dataclass
class TestRun:
    verdict: TestVerdict
    wall_s: float
    detail: str = ""
    memory_limit: str = ""


def _done(run: TestRun) -> Future[TestRun]:
    future: Future[TestRun] = Future()
    future.set_result(run)
    return future


def extract_code(response: str, language: str) -> str | None:
    """The last fenced code block of the answer in `language` (or untagged); None when there is none."""
    answer = parse_response(response).answer or response
    blocks = _FENCE.findall(answer) or _FENCE.findall(response)
    wanted = _LANGUAGE_TAGS.get(language, {language})
    tagged = [code for tag, code in blocks if tag.lower() in wanted]
    untagged = [code for tag, code in blocks if not tag]
    chosen = tagged or untagged
    return chosen[-1] if chosen else None


def _numbers_close(expected: str, actual: str, tolerance: float) -> bool:
    try:
        a, b = float(expected), float(actual)
    except ValueError:
        return False
    return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)


def stdout_matches(expected: str, actual: str, tolerance: float) -> bool:
    """Whitespace-insensitive token comparison; numeric tokens compare within `tolerance`."""
    expected_tokens, actual_tokens = expected.split(), actual.split()
    return len(expected_tokens) == len(actual_tokens) and all(
        e == a or _numbers_close(e, a, tolerance) for e, a in zip(expected_tokens, actual_tokens)
    )


def _json_equal(expected: Any, actual: Any, tolerance: float) -> bool:
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        return len(expected) == len(actual) and all(_json_equal(e, a, tolerance) for e, a in zip(expected, actual))
    if isinstance(expected, float) or isinstance(actual, float):
        return isinstance(actual, (int, float)) and math.isclose(expected, actual, rel_tol=tolerance, abs_tol=tolerance)
    return expected == actual


def call_output_matches(expected: str, actual: str, tolerance: float) -> bool:
    """Compare JSON return values (LiveCodeBench's functional tests store the expected value as JSON)."""
    try:
        return _json_equal(json.loads(expected), json.loads(actual), tolerance)
    except json.JSONDecodeError:
        return expected.strip() == actual.strip()


def classify(result: SandboxResult, limits: SandboxLimits) -> TestVerdict | None:
    """The verdict of a run that did not finish cleanly; None when it exited 0 (its output decides)."""
    if not result.started:
        return "sandbox_error"
    if result.memory_exceeded:
        return "memory_limit"
    if result.timed_out or result.signal == signal.SIGXCPU or result.signal == signal.SIGKILL and result.wall_s >= limits.cpu_s:
        return "time_limit"
    if result.output_limited:
        return "output_limit"
    if result.exit_code != 0:
        return "memory_limit" if any(marker in result.stderr for marker in _MEMORY_MARKERS) else "runtime_error"
    return None


def check_sandbox(settings: CodeSettings) -> None:
    """Fail at start, not as a verdict per answer, where the sandbox cannot run here (no bubblewrap,
    no unprivileged user namespaces, an interpreter outside /usr)."""
    missing = [tool for tool in ("bwrap", "prlimit") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"the code sandbox needs {missing} (Debian: apt-get install bubblewrap util-linux)")
    folder = Path(tempfile.mkdtemp(prefix="distillery-code-check-"))
    try:
        folder.chmod(0o755)
        result = run_sandboxed([settings.python, "-c", "print(6 * 7)"], folder, settings=settings.sandbox)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if not result.started or result.stdout.strip() != b"42":
        raise RuntimeError(f"the code sandbox does not work here: {result.stderr.decode(errors='replace')[-500:]}")


class CodeVerifier(SettingsVerifier[CodeSettings]):
    """Runs up to `max_tests` tests per answer, `parallelism` sandboxes at a time."""

    name = NAME
    section = "code"

    def __init__(self, settings: CodeSettings, threshold: float) -> None:
        super().__init__(settings, threshold)
        check_sandbox(settings)
        self._executor = ThreadPoolExecutor(max_workers=settings.parallelism, thread_name_prefix="sandbox")

    def verify_batch(self, pairs: list[tuple[Query, str]]) -> list[Verdict]:
        """All answers' compiles, then all their tests, share one pool of `parallelism` sandboxes."""
        prepared = [self._executor.submit(self._prepare, query, response) for query, response in pairs]
        scheduled: list[Verdict | tuple[Query, Path, list[Future[TestRun]]]] = []
        for (query, _), future in zip(pairs, prepared):
            outcome = future.result()
            if isinstance(outcome, Verdict):
                scheduled.append(outcome)
                continue
            program_dir, argv, build_failure, tests = outcome
            if build_failure is not None:
                runs = [_done(build_failure) for _ in tests]
            else:
                runs = [self._executor.submit(self._run_test, program_dir, argv, test, query.reference.fn_name) for test in tests]
            scheduled.append((query, program_dir, runs))
        verdicts = []
        for item in scheduled:
            if isinstance(item, Verdict):
                verdicts.append(item)
                continue
            query, program_dir, futures = item
            try:
                verdicts.append(self._verdict(query, [future.result() for future in futures]))
            finally:
                shutil.rmtree(program_dir, ignore_errors=True)
        return verdicts

    def verify(self, query: Query, response: str) -> Verdict:
        return self.verify_batch([(query, response)])[0]

    def _verdict(self, query: Query, runs: list[TestRun]) -> Verdict:
        passed = sum(run.verdict == "accepted" for run in runs)
        score = passed / len(runs)
        details = {
            "tests": len(runs),
            "passed": passed,
            "verdicts": [run.verdict for run in runs],
            "first_failure": next((f"{run.verdict}: {run.detail}"[:500] for run in runs if run.verdict != "accepted"), ""),
            "language": query.reference.language,
            "sandbox_memory_limit": next((run.memory_limit for run in runs if run.memory_limit), ""),
        }
        return Verdict(score=score, passed=score >= self.threshold, verifier=self.name, details=details)

    def _prepare(self, query: Query, response: str) -> Verdict | tuple[Path, list[str], TestRun | None, list[TestCase]]:
        """A verdict when there is nothing to run; else the program folder, run argv, failed build, tests."""
        reference = query.reference
        tests = reference.tests[: self.settings.max_tests]
        if not tests:
            return Verdict.failed(self.name, "query has no tests")
        if reference.fn_name and reference.language != "python":
            return Verdict.failed(self.name, f"call-style tests are supported for python only, not {reference.language}")
        code = extract_code(response, reference.language)
        if code is None:
            return Verdict.unanswered(self.name, f"no {reference.language} code block in the answer", structure=parse_response(response).problem)
        program_dir = Path(tempfile.mkdtemp(prefix="distillery-code-"))  # its parent must be enterable by the sandbox uid
        program_dir.chmod(0o755)
        argv, build_failure = self._write_program(program_dir, code, reference.language, reference.fn_name)
        return program_dir, argv, build_failure, tests

    def _write_program(self, program_dir: Path, code: str, language: str, fn_name: str | None) -> tuple[list[str], TestRun | None]:
        """Write the program (and compile it); return the argv of one test run and the failed build, if any."""
        if language == "python":
            (program_dir / "solution.py").write_text(code)
            (program_dir / "solution.py").chmod(0o644)
            if fn_name:
                (program_dir / "harness.py").write_text(CALL_HARNESS)
                (program_dir / "harness.py").chmod(0o644)
                return [self.settings.python, "-I", f"{SANDBOX_ROOT}/harness.py", fn_name], None
            return [self.settings.python, "-I", f"{SANDBOX_ROOT}/solution.py"], None
        (program_dir / "solution.cpp").write_text(code)
        compiled = run_sandboxed(
            [self.settings.cxx, *self.settings.cxx_flags, "-o", f"{SANDBOX_ROOT}/solution", f"{SANDBOX_ROOT}/solution.cpp"],
            program_dir,
            limits=self.settings.compile_limits,
            settings=self.settings.sandbox,
            writable=True,
        )
        if not compiled.started:
            return [], TestRun("sandbox_error", compiled.wall_s, compiled.stderr.decode(errors="replace")[-1000:])
        if compiled.timed_out or compiled.exit_code != 0 or not (program_dir / "solution").exists():
            reason = compiled.stderr.decode(errors="replace")[-1000:]
            if compiled.memory_exceeded:
                reason = f"compiler passed the memory budget ({compiled.memory_limit})"
            if compiled.timed_out:
                reason = "compiler timed out"
            return [], TestRun("compile_error", compiled.wall_s, reason or f"compiler exit code {compiled.exit_code}")
        return [f"{SANDBOX_ROOT}/solution"], None

    def _run_test(self, program_dir: Path, argv: list[str], test: TestCase, fn_name: str | None) -> TestRun:
        result = run_sandboxed(argv, program_dir, stdin=test.input.encode(), limits=self.settings.limits, settings=self.settings.sandbox)
        failure = classify(result, self.settings.limits)
        if failure == "sandbox_error":
            logger.warning("sandbox failed to start: %s", result.stderr.decode(errors="replace")[-300:])
        if failure is not None:
            detail = result.stderr.decode(errors="replace")[-300:]
            if failure == "memory_limit" and result.memory_exceeded:
                peak = result.peak_memory_bytes
                detail = f"the sandbox passed its memory budget ({result.memory_limit}); peak {peak} bytes"
            return TestRun(failure, result.wall_s, detail, result.memory_limit)
        actual = result.stdout.decode(errors="replace")
        compare = call_output_matches if fn_name else stdout_matches
        if compare(test.output, actual, self.settings.float_tolerance):
            return TestRun("accepted", result.wall_s, memory_limit=result.memory_limit)
        mismatch = f"expected {test.output[:100]!r}, got {actual[:100]!r}"
        return TestRun("wrong_answer", result.wall_s, mismatch, result.memory_limit)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
