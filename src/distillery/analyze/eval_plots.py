"""Length plots of an evaluation: generated tokens per benchmark, per correct/incorrect answer, and each
student's easy and hard benchmark side by side (PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from distillery.analyze.student_lengths import LengthAnalysis
from distillery.analyze.eval_summary import EvalSummary


def length_histograms(summary: EvalSummary, out_dir: Path) -> list[Path]:
    """One PNG per benchmark: distribution of generated tokens, one curve per student, dashed at the mean."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in summary.benchmarks:
        results = [r for s in summary.students if (r := summary.result(s, spec.name)) is not None]
        if not results:
            continue
        longest = max(max(r.length_values) for r in results)
        bins = np.linspace(0, max(longest, 1), 41)
        figure, axes = plt.subplots(figsize=(6.4, 3.6))
        for index, result in enumerate(results):
            color = f"C{index}"
            axes.hist(result.length_values, bins=bins, histtype="step", linewidth=1.5, color=color,
                      label=f"{result.student} (mean {result.lengths.mean:,.0f})")
            axes.axvline(result.lengths.mean, color=color, linestyle="--", linewidth=1)
        axes.set_title(f"{spec.display}: generated tokens per answer")
        axes.set_xlabel("generated tokens")
        axes.set_ylabel("answers")
        axes.legend(fontsize="small")
        figure.tight_layout()
        path = out_dir / f"eval-lengths-{spec.name}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    return paths


def length_by_correctness(summary: EvalSummary, out_dir: Path) -> Path | None:
    """Box plots of generated tokens of correct and incorrect answers, per benchmark and student."""
    cells = [(spec, student, summary.result(student, spec.name)) for spec in summary.benchmarks
             for student in summary.students]
    cells = [(spec, student, result) for spec, student, result in cells if result is not None]
    if not cells:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(max(6.4, 1.3 * len(cells)), 3.8))
    for index, (_, _, result) in enumerate(cells):
        for offset, wanted, color in ((-0.2, True, "C2"), (0.2, False, "C3")):
            values = [n for n, ok in zip(result.length_values, result.correct_flags) if ok == wanted]
            if values:
                axes.boxplot([values], positions=[index + offset], widths=0.35, patch_artist=True, showfliers=True,
                             boxprops={"facecolor": color, "alpha": 0.6}, medianprops={"color": "black"},
                             flierprops={"markersize": 3})
    axes.set_xticks(np.arange(len(cells)), [f"{spec.display}\n{student}" for spec, student, _ in cells],
                    fontsize="small")
    axes.set_xlim(-0.6, len(cells) - 0.4)
    axes.set_ylabel("generated tokens")
    axes.set_title("Generated tokens of correct (green) and incorrect (red) answers")
    figure.tight_layout()
    path = out_dir / "eval-lengths-correctness.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def easy_hard_lengths(analysis: LengthAnalysis, path: Path) -> Path | None:
    """Per student, box plots of generated tokens on the easy (blue) and the hard (orange) benchmark side by side,
    on a log axis; the number above each pair is the ratio of medians hard / easy."""
    students = [s.student for s in analysis.students]
    if not students:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(max(6.4, 1.4 * len(students)), 4.0))
    for index, row in enumerate(analysis.students):
        for offset, benchmark, color in ((-0.2, analysis.easy, "C0"), (0.2, analysis.hard, "C1")):
            values = analysis.values.get((row.student, benchmark))
            if values:
                axes.boxplot([np.maximum(values, 1)], positions=[index + offset], widths=0.35, patch_artist=True,
                             boxprops={"facecolor": color, "alpha": 0.6}, medianprops={"color": "black"},
                             flierprops={"markersize": 3})
        if row.median_ratio is not None:
            axes.annotate(f"×{row.median_ratio:.2f}", (index, 1.0), xycoords=("data", "axes fraction"),
                          ha="center", va="bottom", fontsize="small")
    axes.set_yscale("log")
    axes.set_xticks(np.arange(len(students)), students, fontsize="small", rotation=20 if len(students) > 4 else 0)
    axes.set_xlim(-0.6, len(students) - 0.4)
    axes.set_ylabel("generated tokens")
    axes.set_title(f"Generated tokens: {analysis.easy} (blue) vs {analysis.hard} (orange)", pad=16)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
