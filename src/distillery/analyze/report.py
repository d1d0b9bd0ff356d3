"""`distillery report RUN`: one HTML page comparing teachers side by side, with PNG plots and a JSON of every number.

First every lineage (each teacher's data and each dataset variant derived from it, grouped under the teacher):
final dataset size, token lengths, perplexity, category mix and the student's pass@1 with its interval, then
paired differences between students over the same problems and the student-length analysis (easy vs hard).
Then per teacher: token lengths of the final dataset (histogram, CDF, share under 1,024 and over 10,240 tokens),
the perplexity distribution, acceptance rate and attempts per category, verify scores, and how many records
each step kept, rejected (with the commonest reasons) and quarantined. When the run has an eval step, the
evaluation section (the paper's Tables 1 and 2) follows.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distillery.analyze.collect import LineageStats, RunStats, collect
from distillery.analyze.compare import (
    compared_lineages,
    distribution,
    length_section,
    lineage_numbers,
    lineage_section,
    paired_numbers,
    paired_section,
    scores_by_lineage,
)
from distillery.analyze.plots import LONG_TOKENS, SHORT_TOKENS, all_plots, lineage_lengths
from distillery.core.store import RunDir, atomic_write, write_json
from distillery.analyze.paired import paired_comparisons
from distillery.analyze.student_lengths import EASY, HARD, length_analysis
from distillery.analyze.eval_plots import easy_hard_lengths
from distillery.analyze.eval_render import render_html, render_plots
from distillery.analyze.eval_summary import EvalSummary, summarize

logger = logging.getLogger(__name__)

Row = tuple[str, list[str]]

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #eee; }
img { max-width: 48%; margin: 0.5%; border: 1px solid #ddd; }
.note { color: #666; font-size: 0.9em; }
tr.group th { background: #f6f6f6; text-align: left; }
"""


def _fmt(value: float | None, pattern: str = "{:,.1f}") -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else pattern.format(value)


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def _quantile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _per_teacher(teachers: list[LineageStats], label: str, value: Callable[[LineageStats], str]) -> Row:
    return label, [value(t) for t in teachers]


def length_rows(teachers: list[LineageStats]) -> list[Row]:
    def share(t: LineageStats, test: Callable[[np.ndarray], np.ndarray]) -> str:
        values = np.asarray(t.final_lengths)
        return _pct(int(test(values).sum()), values.size)

    return [
        _per_teacher(teachers, "traces", lambda t: f"{len(t.final_lengths):,}"),
        _per_teacher(teachers, "tokens counted with", lambda t: ", ".join(t.counted_with) or "–"),
        _per_teacher(teachers, "mean tokens", lambda t: _fmt(float(np.mean(t.final_lengths)) if t.final_lengths else None)),
        _per_teacher(teachers, "median", lambda t: _fmt(_quantile(t.final_lengths, 50), "{:,.0f}")),
        _per_teacher(teachers, "90th percentile", lambda t: _fmt(_quantile(t.final_lengths, 90), "{:,.0f}")),
        _per_teacher(teachers, "max", lambda t: _fmt(max(t.final_lengths) if t.final_lengths else None, "{:,.0f}")),
        _per_teacher(teachers, f"share < {SHORT_TOKENS:,} tokens", lambda t: share(t, lambda v: v < SHORT_TOKENS)),
        _per_teacher(teachers, f"share > {LONG_TOKENS:,} tokens", lambda t: share(t, lambda v: v > LONG_TOKENS)),
    ]


def perplexity_rows(teachers: list[LineageStats]) -> list[Row]:
    return [
        _per_teacher(teachers, "scored traces", lambda t: f"{len(t.ppl):,}"),
        _per_teacher(teachers, "mean", lambda t: _fmt(float(np.mean(t.ppl)) if t.ppl else None, "{:,.2f}")),
        *(_per_teacher(teachers, label, lambda t, q=q: _fmt(_quantile(t.ppl, q), "{:,.2f}"))
          for label, q in (("5th percentile", 5), ("median", 50), ("95th percentile", 95))),
    ]


def category_rows(teachers: list[LineageStats], quantity: str) -> list[Row]:
    categories = sorted({c for t in teachers for c in t.categories})
    rows = []
    for category in categories:
        cells = []
        for teacher in teachers:
            stats = teacher.categories.get(category)
            if stats is None or not stats.queries:
                cells.append("–")
            elif quantity == "acceptance":
                cells.append(f"{_pct(stats.accepted, stats.queries)} ({stats.accepted:,}/{stats.queries:,})")
            else:
                cells.append(f"{stats.attempts / stats.queries:.2f}")
        rows.append((category, cells))
    total = [(sum(c.queries for c in t.categories.values()), sum(c.accepted for c in t.categories.values()),
              sum(c.attempts for c in t.categories.values())) for t in teachers]
    if quantity == "acceptance":
        rows.append(("all", [f"{_pct(a, q)} ({a:,}/{q:,})" for q, a, _ in total]))
    else:
        rows.append(("all", [f"{n / q:.2f}" if q else "–" for q, _, n in total]))
    return rows


def score_rows(teachers: list[LineageStats]) -> list[Row]:
    return [
        _per_teacher(teachers, "attempts scored", lambda t: f"{len(t.attempt_scores):,}"),
        _per_teacher(teachers, "mean score, all attempts", lambda t: _fmt(float(np.mean(t.attempt_scores)) if t.attempt_scores else None, "{:.3f}")),
        _per_teacher(teachers, "share of attempts >= 0.9", lambda t: _pct(sum(s >= 0.9 for s in t.attempt_scores), len(t.attempt_scores))),
        _per_teacher(teachers, "mean score, accepted", lambda t: _fmt(float(np.mean(t.accepted_scores)) if t.accepted_scores else None, "{:.3f}")),
    ]


def funnel_rows(stats: RunStats, teachers: list[LineageStats]) -> list[Row]:
    rows = []
    for step in stats.steps:
        if not any(step in t.funnel for t in teachers):
            continue
        cells = []
        for teacher in teachers:
            counts = teacher.funnel.get(step)
            cells.append("–" if counts is None else
                         f"{counts.kept:,} of {counts.inputs:,} (rejected {counts.rejected:,}, quarantined {counts.quarantined:,})")
        rows.append((step, cells))
    return rows


def reason_rows(stats: RunStats, teachers: list[LineageStats], top: int = 3) -> list[Row]:
    rows = []
    for step in stats.steps:
        cells = []
        for teacher in teachers:
            counts = teacher.funnel.get(step)
            common = counts.reasons.most_common(top) if counts else []
            cells.append("<br>".join(f"{n:,}× {html.escape(reason)}" for reason, n in common) or "–")
        if any(cell != "–" for cell in cells):
            rows.append((step, cells))
    return rows


def html_table(caption: str, header: list[str], rows: list[Row], escape: bool = True) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr><td>" + html.escape(label) + "</td>" + "".join(f"<td>{html.escape(c) if escape else c}</td>" for c in cells) + "</tr>"
        for label, cells in rows
    )
    return f"<h2>{html.escape(caption)}</h2>\n<table><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>\n"


def _summary(stats: RunStats) -> EvalSummary | None:
    """The eval steps' scores, when the run has eval results."""
    eval_dirs = [stats.run_dir / step for step in stats.eval_steps]
    if not any(any(d.rglob("shard-*.done.json")) for d in eval_dirs if d.is_dir()):
        return None
    summary = summarize(stats.run_dir)
    return summary if summary.results else None


def _numbers(stats: RunStats, teachers: list[LineageStats]) -> dict[str, Any]:
    return {
        "run": stats.name,
        "steps": {"generation": stats.generation_step, "perplexity": stats.perplexity_step, "final": stats.final_step},
        "teachers": {
            t.name: {
                "lengths": distribution(t.final_lengths),
                "share_under_1024": float(np.mean(np.asarray(t.final_lengths) < SHORT_TOKENS)) if t.final_lengths else None,
                "share_over_10240": float(np.mean(np.asarray(t.final_lengths) > LONG_TOKENS)) if t.final_lengths else None,
                "perplexity": distribution(t.ppl),
                "accepted_scores": distribution(t.accepted_scores),
                "attempt_scores": distribution(t.attempt_scores),
                "categories": {c: vars(s) for c, s in sorted(t.categories.items())},
                "funnel": {step: {k: v for k, v in vars(c).items() if k != "reasons"} for step, c in t.funnel.items()},
            }
            for t in teachers
        },
    }


def build_report(run_dir: Path, easy: str = EASY, hard: str = HARD) -> Path:
    """Write <run>/report/report.html (plus PNG plots and report.json); return the page's path.

    `easy` and `hard` name the benchmarks of the student-length analysis.
    """
    stats = collect(Path(run_dir))
    teachers = list(stats.teachers.values())
    out_dir = RunDir(stats.run_dir).report_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = all_plots(teachers, out_dir)
    lineage_plot = lineage_lengths(stats.ordered(), out_dir / "lineage_lengths.png")
    if lineage_plot:
        plots["lineage_lengths"] = lineage_plot
    summary = _summary(stats)
    comparisons = paired_comparisons(summary) if summary else []
    analysis = length_analysis(summary, easy, hard) if summary else None
    names = [t.name for t in teachers]
    notes = (f"Generation step: {stats.generation_step or '–'}; perplexity from: {stats.perplexity_step or '–'} "
             f"(kept and rejected, before its cut); lengths of the final dataset: {stats.final_step or '–'} "
             "(response tokens as counted by each teacher, or by the tokenizer named for replayed ones).")
    sections = [
        lineage_section(stats, summary),
        paired_section(comparisons),
    ]
    if analysis is not None:
        image = easy_hard_lengths(analysis, out_dir / "eval-lengths-easy-hard.png")
        sections.append(length_section(analysis, image.name if image else None))
    sections += [
        html_table("Records per step (kept of inputs)", names, funnel_rows(stats, teachers)),
        html_table(f"Token length of the final dataset ({stats.final_step or '–'})", names, length_rows(teachers)),
        html_table("Perplexity under the reference model", names, perplexity_rows(teachers)),
        html_table("Acceptance rate per category", names, category_rows(teachers, "acceptance")),
        html_table("Attempts per query, per category", names, category_rows(teachers, "attempts")),
        html_table("Verify scores", names, score_rows(teachers)),
        html_table("Commonest reject reasons", names, reason_rows(stats, teachers), escape=False),
    ]
    images = "".join(f'<img src="{path.name}" alt="{name}">' for name, path in plots.items())
    evaluation = render_html(summary, render_plots(summary, out_dir)) if summary else ""
    page = (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(stats.name)}: teacher comparison</title>"
        f"<style>{_STYLE}</style></head><body>\n<h1>{html.escape(stats.name)}: teacher comparison</h1>\n"
        f"<p class='note'>{html.escape(notes)}</p>\n" + "".join(sections)
        + f"<h2>Plots</h2>\n<div>{images}</div>\n" + evaluation + "</body></html>\n"
    )
    path = out_dir / "report.html"
    with atomic_write(path) as out:
        out.write(page)
    numbers = _numbers(stats, teachers) | {
        "lineages": lineage_numbers(stats, summary),
        "lineage_order": compared_lineages(stats, scores_by_lineage(summary)[1]),
        "paired_differences": paired_numbers(comparisons),
        "student_lengths": analysis.to_json() if analysis else None,
    }
    write_json(out_dir / "report.json", numbers)
    logger.info("report for %d lineages of %d teachers written to %s", len(stats.lineages), len(teachers), path)
    return path
