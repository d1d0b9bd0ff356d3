"""Paired comparisons of students: pass@1 of A minus pass@1 of B over the problems both were evaluated on,
per benchmark, for two teachers (same variant) or two lineages of one teacher (see `comparison_pairs`)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from distillery.core.lineage import comparison_pairs
from distillery.analyze.metrics import PairedDifference, paired_difference
from distillery.analyze.eval_summary import EvalSummary


@dataclass(frozen=True)
class PairedComparison:
    benchmark: str
    a: str
    b: str
    """Students (as `EvalSummary.students` names them)."""
    kind: str
    """"teachers" or "variants"."""
    result: PairedDifference


def paired_comparisons(summary: EvalSummary, seed: int = 0) -> list[PairedComparison]:
    """Every pair `comparison_pairs` proposes among the students of each eval step, on every benchmark both took."""
    by_step: dict[str, dict[str, str]] = defaultdict(dict)
    for student in summary.students:
        step, lineage = summary.origins.get(student, ("", student))
        by_step[step][lineage] = student
    found = []
    for students in by_step.values():
        for lineage_a, lineage_b, kind in comparison_pairs(list(students)):
            a, b = students[lineage_a], students[lineage_b]
            for spec in summary.benchmarks:
                result_a, result_b = summary.result(a, spec.name), summary.result(b, spec.name)
                if result_a is None or result_b is None:
                    continue
                difference = paired_difference(result_a.per_problem, result_b.per_problem, seed=seed)
                if difference.problems:
                    found.append(PairedComparison(spec.name, a, b, kind, difference))
    return found
