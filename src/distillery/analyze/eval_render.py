"""Results tables in the layout of the paper's Table 1 (accuracy) and Table 2 (generation length), as
markdown and as an HTML fragment, plus the length plots; `distillery report` embeds `render_html`
(`render_section`: the same fragment for a run folder)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from distillery.core.store import RunDir, atomic_write, write_json
from distillery.analyze.eval_plots import length_by_correctness, length_histograms
from distillery.analyze.eval_summary import BenchmarkResult, EvalSummary, summarize

Table = tuple[str, list[str], list[list[str]], list[str]]
"""(caption, header, rows, footnotes)."""
_BOLD = ("\x01", "\x02")
"""Bold markers that survive HTML escaping and cannot occur in names."""


def _best(summary: EvalSummary, benchmark: str) -> float | None:
    scores = [r.pass1 for s in summary.students if (r := summary.result(s, benchmark)) is not None]
    return max(scores) if len(scores) > 1 else None


def _samples_note(summary: EvalSummary) -> str:
    parts = []
    for spec in summary.benchmarks:
        ks = sorted({k for s in summary.students if (r := summary.result(s, spec.name)) for k in r.samples_per_problem})
        if ks:
            parts.append(f"{spec.display} {ks[0]}" + (f"-{ks[-1]}" if len(ks) > 1 else ""))
    return "Samples per problem: " + ", ".join(parts) + "." if parts else ""


NO_ANSWER_NOTE = ("no answer: the share of answers in which no final answer was found (scored 0, never compared); "
                  "eval reads only a \\boxed{} answer unless the recipe opts into fallbacks (their share is in "
                  "Details), and a response cut at the token limit has only its box read.")


def score_cell(result: BenchmarkResult, with_pass1: bool = True) -> str:
    """`pass@1 (interval) · no answer N%`, the form every table gives a student's score in."""
    low, high = result.pass1_ci
    score = f"{100 * result.pass1:.1f} " if with_pass1 else ""
    return f"{score}({100 * low:.1f}–{100 * high:.1f}) · no answer {100 * result.no_answer:.1f}%"


def _student_rows(summary: EvalSummary, cell: Callable[[BenchmarkResult, str], str]) -> list[list[str]]:
    """One row per student: its name, then `cell(result, benchmark)` per benchmark ('–' where it has none)."""
    rows = []
    for student in summary.students:
        results = [(summary.result(student, spec.name), spec.name) for spec in summary.benchmarks]
        rows.append([student] + [cell(result, name) if result is not None else "–" for result, name in results])
    return rows


def accuracy_table(summary: EvalSummary, bold: tuple[str, str] = ("**", "**")) -> Table:
    """Table 1: pass@1 (%) per student and benchmark, with its 95% bootstrap interval."""
    header = ["Model"] + [spec.display for spec in summary.benchmarks]

    def cell(result: BenchmarkResult, benchmark: str) -> str:
        value = f"{100 * result.pass1:.1f}"
        if result.pass1 == _best(summary, benchmark):
            value = f"{bold[0]}{value}{bold[1]}"
        return f"{value} {score_cell(result, with_pass1=False)}"

    notes = [_samples_note(summary), "In parentheses: 95% bootstrap interval over problems.", NO_ANSWER_NOTE]
    notes += [f"{spec.display}: {spec.note}" for spec in summary.benchmarks if spec.note]
    notes += _partial_notes(summary)
    return "Accuracy (pass@1, %)", header, _student_rows(summary, cell), [n for n in notes if n]


def length_table(summary: EvalSummary) -> Table:
    """Table 2: average generated tokens per answer, per student and benchmark."""
    header = ["Model"] + [spec.display for spec in summary.benchmarks]
    rows = _student_rows(summary, lambda result, _: f"{result.lengths.mean:,.0f}")
    return "Average generation length (tokens)", header, rows, []


def _fmt(value: float, pattern: str = "{:,.0f}") -> str:
    return "–" if math.isnan(value) else pattern.format(value)


def detail_table(summary: EvalSummary) -> Table:
    """Per student and benchmark: pass@k, length median and spread, correct vs incorrect, truncation."""
    header = ["Model", "Benchmark", "Problems", "k", "pass@k (%)", "Tokens median [p10, p90]",
              "Tokens correct: mean / median", "Tokens incorrect: mean / median", "Truncated (%)", "No answer (%)",
              "Answer by fallback (%)", "Verifier errors"]
    rows = []
    for student in summary.students:
        for spec in summary.benchmarks:
            result: BenchmarkResult | None = summary.result(student, spec.name)
            if result is None:
                continue
            lengths = result.lengths
            rows.append([
                student, spec.display, str(result.problems), str(result.samples_per_problem[0]),
                ", ".join(f"@{k} {100 * v:.1f}" for k, v in result.pass_at_k.items()),
                f"{_fmt(lengths.median)} [{_fmt(lengths.p10)}, {_fmt(lengths.p90)}]",
                f"{_fmt(result.lengths_correct.mean)} / {_fmt(result.lengths_correct.median)}",
                f"{_fmt(result.lengths_incorrect.mean)} / {_fmt(result.lengths_incorrect.median)}",
                f"{100 * result.truncated:.1f}", f"{100 * result.no_answer:.1f}", f"{100 * result.by_fallback:.1f}",
                str(result.verifier_errors),
            ])
    return "Details", header, rows, []


def _partial_notes(summary: EvalSummary) -> list[str]:
    return [f"{student}: only {done} of {total} shards are done; scores are partial."
            for student, (done, total) in summary.shards.items() if done < total]


def _markdown(table: Table) -> str:
    caption, header, rows, notes = table
    lines = [f"**{caption}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines)


def render_markdown(summary: EvalSummary) -> str:
    tables = [accuracy_table(summary), length_table(summary), detail_table(summary)]
    return "\n\n".join(_markdown(t) for t in tables) + "\n"


def _html_table(table: Table) -> str:
    caption, header, rows, notes = table
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell).replace(_BOLD[0], '<b>').replace(_BOLD[1], '</b>')}</td>"
                         for cell in row) + "</tr>"
        for row in rows
    )
    foot = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    return (f'<table class="eval-table"><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>" + (f'<ul class="eval-notes">{foot}</ul>' if foot else ""))


def render_html(summary: EvalSummary, images: list[Path] | None = None) -> str:
    """An HTML fragment (no <html>/<head>): the tables, then the plots by file name (place them beside it)."""
    tables = [accuracy_table(summary, bold=_BOLD), length_table(summary), detail_table(summary)]
    parts = ['<section class="eval"><h2>Evaluation</h2>']
    if summary.models:
        models = "".join(f"<li>{html.escape(s)}: <code>{html.escape(m)}</code></li>" for s, m in summary.models.items())
        parts.append(f'<ul class="eval-models">{models}</ul>')
    parts += [_html_table(t) for t in tables]
    for image in images or []:
        parts.append(f'<figure><img src="{html.escape(image.name)}" alt="{html.escape(image.stem)}"></figure>')
    parts.append("</section>")
    return "\n".join(parts)


def render_plots(summary: EvalSummary, out_dir: Path) -> list[Path]:
    images = length_histograms(summary, out_dir)
    correctness = length_by_correctness(summary, out_dir)
    return images + ([correctness] if correctness else [])


def render_section(run_dir: Path | str, out_dir: Path) -> str:
    """The eval section of a run's report: writes the plots into `out_dir`, returns the HTML fragment."""
    summary = summarize(run_dir)
    if not summary.results:
        return ""
    return render_html(summary, render_plots(summary, out_dir))


def write_results(summary: EvalSummary, out_dir: Path) -> dict[str, Path]:
    """eval.md, eval.html (a standalone page), eval.json (every number) and the plots, under `out_dir`."""
    images = render_plots(summary, out_dir)
    paths = {"markdown": out_dir / "eval.md", "html": out_dir / "eval.html", "json": out_dir / "eval.json"}
    with atomic_write(paths["markdown"]) as out:
        out.write(render_markdown(summary))
    with atomic_write(paths["html"]) as out:
        out.write("<!doctype html><html><head><meta charset=\"utf-8\"><title>Evaluation</title></head><body>\n"
                  + render_html(summary, images) + "\n</body></html>\n")
    write_json(paths["json"], {
        "students": summary.students, "models": summary.models, "shards": summary.shards,
        "benchmarks": [spec.model_dump(mode="json") for spec in summary.benchmarks],
        "results": [{k: v for k, v in asdict(r).items() if k not in ("length_values", "correct_flags", "per_problem")}
                    for r in summary.results.values()],
    })
    return paths | {image.stem: image for image in images}


def main(argv: list[str] | None = None) -> int:
    """`python -m distillery.analyze.eval_render RUN_DIR [OUT_DIR]`: print Table 1 and 2, write the files."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_dir", type=Path, nargs="?", help="defaults to RUN_DIR/eval-report")
    args = parser.parse_args(argv)
    summary = summarize(args.run_dir)
    paths = write_results(summary, args.out_dir or RunDir(args.run_dir).eval_report_dir())
    print(render_markdown(summary))
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
