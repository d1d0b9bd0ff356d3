"""The report's comparison of lineages (each teacher's data and the dataset variants derived from it), the
paired differences between students, and the student-length analysis: HTML sections and their JSON numbers."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from distillery.analyze.collect import LineageStats, RunStats
from distillery.core.lineage import Lineage, order_lineages
from distillery.analyze.paired import PairedComparison
from distillery.analyze.student_lengths import BenchmarkLengths, LengthAnalysis
from distillery.analyze.eval_render import score_cell
from distillery.analyze.eval_summary import BenchmarkResult, EvalSummary

Scores = dict[str, dict[str, BenchmarkResult]]
"""Lineage -> "<benchmark>" (one eval step) or "<step>: <benchmark>" -> result."""


def distribution(values: Sequence[float]) -> dict[str, float] | None:
    """Count, mean and percentiles of a sample; None when empty."""
    if not len(values):
        return None
    return {"count": len(values), "mean": float(np.mean(values)),
            **{f"p{q}": float(np.percentile(values, q)) for q in (5, 25, 50, 75, 90, 95)}}


def scores_by_lineage(summary: EvalSummary | None) -> tuple[list[str], Scores]:
    """(score columns, scores): one column per benchmark, prefixed by the eval step when a run has several."""
    if summary is None:
        return [], {}
    steps = sorted({step for step, _ in summary.origins.values()})
    columns: list[str] = []
    scores: Scores = {}
    for (student, benchmark), result in summary.results.items():
        step, lineage = summary.origins.get(student, ("", student))
        column = benchmark if len(steps) <= 1 else f"{step}: {benchmark}"
        scores.setdefault(lineage, {})[column] = result
        if column not in columns:
            columns.append(column)
    order = [spec.name for spec in summary.benchmarks]
    columns.sort(key=lambda c: (c.rpartition(": ")[0], order.index(c.rpartition(": ")[2])))
    return columns, scores


def compared_lineages(stats: RunStats, scores: Scores) -> list[str]:
    return order_lineages([*stats.lineages, *scores], stats.teacher_order)


def _mix(stats: LineageStats | None) -> str:
    if stats is None or not stats.final_categories:
        return "–"
    total = sum(stats.final_categories.values())
    return " · ".join(f"{c} {100 * n / total:.0f}%" for c, n in sorted(stats.final_categories.items()))


def _stat(values: Sequence[float], what: str, pattern: str = "{:,.0f}") -> str:
    if not len(values):
        return "–"
    value = float(np.mean(values)) if what == "mean" else float(np.percentile(values, float(what)))
    return pattern.format(value)


def _score(result: BenchmarkResult | None) -> str:
    return "–" if result is None else score_cell(result)


def lineage_section(stats: RunStats, summary: EvalSummary | None) -> str:
    """One row per lineage, grouped under its teacher: the final dataset and the student's pass@1 (%)."""
    columns, scores = scores_by_lineage(summary)
    header = ["Lineage", "Dataset step", "Records", "Mean tokens", "Median", "90th pct", "Mean perplexity",
              "Category mix"] + [f"{c} pass@1 %" for c in columns]
    body, group = [], None
    for name in compared_lineages(stats, scores):
        teacher = Lineage.parse(name).teacher
        if teacher != group:
            group = teacher
            body.append(f'<tr class="group"><th colspan="{len(header)}">{html.escape(teacher)}</th></tr>')
        data = stats.lineages.get(name)
        lengths = data.final_lengths if data else []
        ppl = data.final_ppl if data else []
        cells = [name, (data.final_step if data else None) or "–", f"{len(lengths):,}" if data else "–",
                 _stat(lengths, "mean"), _stat(lengths, "50"), _stat(lengths, "90"),
                 _stat(ppl, "mean", "{:,.2f}") + (f" (n={len(ppl):,})" if ppl else ""), _mix(data)]
        cells += [_score(scores.get(name, {}).get(column)) for column in columns]
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    figures = "".join(
        f"<li>{html.escape(data.name)} ({html.escape(data.final_step or '')}): "
        + html.escape(", ".join(f"{key} {value:,}" for key, value in sorted(data.final_figures.items()))) + "</li>"
        for data in stats.ordered() if data.variant is not None and data.final_figures)
    return ("<h2>Lineages: teachers and their dataset variants</h2>\n"
            "<p class='note'>Final dataset: the kept records of each lineage's last trace step (what pack trains on). "
            "Tokens: response tokens. Perplexity: of the final records that carry one. pass@1 of the student "
            "trained on the lineage, in parentheses its 95% bootstrap interval over problems, then the share of its "
            "answers with no final answer found.</p>\n"
            f"<table class='lineages'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>\n"
            + (f"<p class='note'>What each variant's step reports about it:</p><ul class='variant-figures'>{figures}</ul>\n"
               if figures else ""))


def paired_section(comparisons: list[PairedComparison]) -> str:
    if not comparisons:
        return ""
    header = ["Benchmark", "A", "B", "Kind", "Problems", "A pass@1 %", "B pass@1 %", "A − B (points)", "95% interval"]
    rows = []
    for c in comparisons:
        r = c.result
        cells = [c.benchmark, c.a, c.b, c.kind, str(r.problems), f"{100 * r.mean_a:.1f}", f"{100 * r.mean_b:.1f}",
                 f"{100 * r.difference:+.1f}", f"{100 * r.ci[0]:+.1f} to {100 * r.ci[1]:+.1f}"]
        rows.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return ("<h2>Paired differences over the same problems</h2>\n"
            "<p class='note'>pass@1 of A minus B on the problems both students were evaluated on; the interval is a "
            "paired bootstrap over those problems (an interval that excludes 0 is a difference the benchmark "
            "resolves). Kind: two teachers with the same variant, or two lineages of one teacher.</p>\n"
            f"<table class='paired'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>\n")


def _lengths_cells(lengths: BenchmarkLengths | None) -> list[str]:
    if lengths is None:
        return ["–", "–"]

    def mean(value: float) -> str:
        return "–" if math.isnan(value) else f"{value:,.0f}"

    return [f"{lengths.all.median:,.0f} (n={lengths.all.count:,})",
            (f"{mean(lengths.correct.mean)} / {mean(lengths.incorrect.mean)} "
             f"(n={lengths.correct.count:,} / {lengths.incorrect.count:,})")]


def length_section(analysis: LengthAnalysis, image: str | None) -> str:
    """The paper's adaptive-length check: per student, easy vs hard medians, their ratio, correct vs incorrect."""
    easy, hard = analysis.easy, analysis.hard
    header = ["Student", f"{easy} median tokens", f"{easy} mean tokens correct / incorrect",
              f"{hard} median tokens", f"{hard} mean tokens correct / incorrect", f"Median ratio {hard} / {easy}"]
    rows = []
    for row in analysis.students:
        cells = [row.student, *_lengths_cells(row.easy), *_lengths_cells(row.hard),
                 "–" if row.median_ratio is None else f"{row.median_ratio:.2f}"]
        rows.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    note = analysis.note or ("A ratio above 1: the student writes longer answers on the hard set; the paper reports "
                             "this for students of the stronger teacher.")
    return ("<h2>Student generation length: easy vs hard</h2>\n"
            f"<p class='note'>{html.escape(note)}</p>\n"
            + (f"<table class='student-lengths'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>\n"
               if rows else "")
            + (f'<div><img src="{html.escape(image)}" alt="easy vs hard lengths"></div>\n' if image else ""))


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def lineage_numbers(stats: RunStats, summary: EvalSummary | None) -> dict[str, Any]:
    """report.json "lineages": per lineage its final dataset and its student's scores per eval step."""
    by_step: dict[str, dict[str, dict[str, Any]]] = {}
    if summary is not None:
        for (student, benchmark), result in summary.results.items():
            step, lineage = summary.origins.get(student, ("", student))
            by_step.setdefault(lineage, {}).setdefault(step, {})[benchmark] = {
                "student": student, "pass1": result.pass1, "pass1_ci": [_finite(v) for v in result.pass1_ci],
                "no_answer": result.no_answer, "by_fallback": result.by_fallback,
                "problems": result.problems, "samples": result.samples}
    numbers = {}
    for name in order_lineages([*stats.lineages, *by_step], stats.teacher_order):
        lineage = Lineage.parse(name)
        teacher, variant = lineage.teacher, lineage.variant
        data = stats.lineages.get(name)
        categories = dict(sorted(data.final_categories.items())) if data else {}
        total = sum(categories.values())
        numbers[name] = {
            "teacher": teacher, "variant": variant, "dataset_step": data.final_step if data else None,
            "records": len(data.final_lengths) if data else None,
            "lengths": distribution(data.final_lengths) if data else None,
            "perplexity": distribution(data.final_ppl) if data else None,
            "categories": categories, "category_shares": {c: n / total for c, n in categories.items()},
            "dataset_figures": data.final_figures if data else {},
            "scores": by_step.get(name, {}),
        }
    return numbers


def paired_numbers(comparisons: list[PairedComparison]) -> list[dict[str, Any]]:
    """report.json "paired_differences"."""
    return [{"benchmark": c.benchmark, "a": c.a, "b": c.b, "kind": c.kind, "problems": c.result.problems,
             "pass1_a": c.result.mean_a, "pass1_b": c.result.mean_b, "difference": c.result.difference,
             "ci": [_finite(v) for v in c.result.ci]} for c in comparisons]
