"""Length plots of an evaluation: generated tokens per benchmark and per correct/incorrect answer (PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from distillery.evaluate.summary import EvalSummary


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
