"""The student-length analysis (the paper's Table 2 and its adaptive-length claim): does a student write longer
answers on hard problems and shorter ones on easy problems, and are its long answers the wrong ones?

Per student: generated tokens on an easy benchmark (default MATH-500) and a hard one (default AIME 2025), the
ratio of their medians (hard / easy; above 1: the student spends more tokens where problems are harder), and
per benchmark the length of correct against incorrect answers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from distillery.analyze.metrics import LengthStats, median_ratio
from distillery.analyze.eval_summary import BenchmarkResult, EvalSummary

EASY = "math500"
HARD = "aime25"


@dataclass(frozen=True)
class BenchmarkLengths:
    """One student's answers on one benchmark."""

    benchmark: str
    all: LengthStats
    correct: LengthStats
    incorrect: LengthStats
    truncated: float

    @classmethod
    def of(cls, result: BenchmarkResult) -> BenchmarkLengths:
        return cls(result.benchmark, result.lengths, result.lengths_correct, result.lengths_incorrect, result.truncated)


@dataclass(frozen=True)
class StudentLengths:
    student: str
    easy: BenchmarkLengths | None
    hard: BenchmarkLengths | None
    median_ratio: float | None
    """median tokens on the hard benchmark / median tokens on the easy one; None without both."""


@dataclass
class LengthAnalysis:
    easy: str
    hard: str
    missing: list[str]
    """Of easy and hard, the benchmarks no student was evaluated on."""
    students: list[StudentLengths] = field(default_factory=list)
    values: dict[tuple[str, str], list[int]] = field(default_factory=dict, repr=False)
    """(student, benchmark) -> generated tokens of each answer, for the plot."""

    @property
    def note(self) -> str:
        """What is missing, in words ("" when both benchmarks were evaluated)."""
        if not self.missing:
            return ""
        return (f"No student was evaluated on {' or '.join(self.missing)}: the hard/easy comparison needs both "
                f"{self.easy} (easy) and {self.hard} (hard) in an eval step's benchmarks.")

    def to_json(self) -> dict[str, Any]:
        return _no_nan({"easy": self.easy, "hard": self.hard, "missing": self.missing,
                        "students": {s.student: {k: v for k, v in asdict(s).items() if k != "student"}
                                     for s in self.students}})


def _no_nan(value: Any) -> Any:
    """NaN (an empty group's statistics) as null, so the JSON is valid."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value


def length_analysis(summary: EvalSummary, easy: str = EASY, hard: str = HARD) -> LengthAnalysis:
    evaluated = {benchmark for _, benchmark in summary.results}
    analysis = LengthAnalysis(easy, hard, [name for name in (easy, hard) if name not in evaluated])
    for student in summary.students:
        easy_result, hard_result = summary.result(student, easy), summary.result(student, hard)
        if easy_result is None and hard_result is None:
            continue
        for result in (easy_result, hard_result):
            if result is not None:
                analysis.values[(student, result.benchmark)] = result.length_values
        ratio = median_ratio(hard_result.length_values, easy_result.length_values) \
            if easy_result and hard_result else None
        analysis.students.append(StudentLengths(
            student, BenchmarkLengths.of(easy_result) if easy_result else None,
            BenchmarkLengths.of(hard_result) if hard_result else None, ratio))
    return analysis
