"""PNG plots comparing teachers: one figure per quantity, every teacher overlaid (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from distillery.analyze.collect import LineageStats

SHORT_TOKENS = 1024
LONG_TOKENS = 10240


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _log_bins(values: Sequence[float], count: int = 40) -> np.ndarray:
    low = max(min(values), 1.0)
    high = max(max(values), low * 1.01)
    return np.geomspace(low, high, count)


def _share_histograms(axis: plt.Axes, data: list[tuple[str, list[float]]]) -> None:
    """One step histogram per teacher on shared log bins, each normalised to a share of its traces."""
    bins = _log_bins([v for _, values in data for v in values])
    for teacher, values in data:
        axis.hist(values, bins=bins, histtype="step", linewidth=1.6, label=teacher, weights=np.full(len(values), 1 / len(values)))


def length_histogram(teachers: list[LineageStats], path: Path) -> Path | None:
    data = [(t.name, t.final_lengths) for t in teachers if t.final_lengths]
    if not data:
        return None
    figure, axis = plt.subplots(figsize=(7, 4))
    _share_histograms(axis, data)
    axis.set(xscale="log", xlabel="response tokens", ylabel="share of traces", title="Token length of accepted responses")
    for mark in (SHORT_TOKENS, LONG_TOKENS):
        axis.axvline(mark, color="grey", linestyle=":", linewidth=1)
    axis.legend()
    return _save(figure, path)


def length_cdf(teachers: list[LineageStats], path: Path) -> Path | None:
    data = [(t.name, np.sort(t.final_lengths)) for t in teachers if t.final_lengths]
    if not data:
        return None
    figure, axis = plt.subplots(figsize=(7, 4))
    for teacher, values in data:
        axis.step(values, np.arange(1, values.size + 1) / values.size, where="post", label=teacher)
    axis.set(xscale="log", xlabel="response tokens", ylabel="share of traces <= x", title="Token length CDF", ylim=(0, 1.02))
    for mark in (SHORT_TOKENS, LONG_TOKENS):
        axis.axvline(mark, color="grey", linestyle=":", linewidth=1)
    axis.legend()
    return _save(figure, path)


def perplexity_histogram(teachers: list[LineageStats], path: Path) -> Path | None:
    data = [(t.name, t.ppl) for t in teachers if t.ppl]
    if not data:
        return None
    figure, axis = plt.subplots(figsize=(7, 4))
    _share_histograms(axis, data)
    axis.set(xscale="log", xlabel="perplexity under the reference model", ylabel="share of traces", title="Perplexity")
    axis.legend()
    return _save(figure, path)


def verify_scores(teachers: list[LineageStats], path: Path) -> Path | None:
    data = [(t.name, t.attempt_scores) for t in teachers if t.attempt_scores]
    if not data:
        return None
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.hist([values for _, values in data], bins=np.linspace(0, 1, 11), label=[name for name, _ in data])
    axis.set(xlabel="verify score of each attempt", ylabel="attempts", title="Verify scores")
    axis.legend()
    return _save(figure, path)


def per_category(teachers: list[LineageStats], path: Path, quantity: str) -> Path | None:
    """Grouped bars per category: quantity is 'acceptance' (share accepted) or 'attempts' (mean per query)."""
    categories = sorted({c for t in teachers for c in t.categories})
    if not categories:
        return None
    figure, axis = plt.subplots(figsize=(max(6, 1.2 * len(categories) * len(teachers)), 4))
    width = 0.8 / max(len(teachers), 1)
    for offset, teacher in enumerate(teachers):
        values = []
        for category in categories:
            stats = teacher.categories.get(category)
            if stats is None or not stats.queries:
                values.append(0.0)
            elif quantity == "acceptance":
                values.append(stats.accepted / stats.queries)
            else:
                values.append(stats.attempts / stats.queries)
        axis.bar(np.arange(len(categories)) + offset * width, values, width, label=teacher.name)
    axis.set_xticks(np.arange(len(categories)) + width * (len(teachers) - 1) / 2, categories)
    if quantity == "acceptance":
        axis.set(ylabel="accepted share", title="Acceptance rate per category", ylim=(0, 1.05))
    else:
        axis.set(ylabel="attempts per query", title="Attempts per category")
    axis.legend()
    return _save(figure, path)


def lineage_lengths(lineages: list[LineageStats], path: Path) -> Path | None:
    """Box plots of the final dataset's token lengths, one per lineage, coloured by teacher (variants beside
    their teacher's own data); None unless some lineage is a variant."""
    data = [lineage for lineage in lineages if lineage.final_lengths]
    if not any(lineage.variant is not None for lineage in data):
        return None
    colors = {teacher: f"C{index}" for index, teacher in enumerate(dict.fromkeys(d.teacher for d in data))}
    figure, axis = plt.subplots(figsize=(max(6, 1.0 * len(data)), 4))
    for index, lineage in enumerate(data):
        axis.boxplot([np.maximum(lineage.final_lengths, 1)], positions=[index], widths=0.6, patch_artist=True,
                     boxprops={"facecolor": colors[lineage.teacher], "alpha": 0.6}, medianprops={"color": "black"},
                     flierprops={"markersize": 3})
    axis.set_xticks(np.arange(len(data)), [d.name for d in data], rotation=20 if len(data) > 4 else 0,
                    fontsize="small")
    axis.set(yscale="log", ylabel="response tokens", title="Token length of each lineage's final dataset")
    return _save(figure, path)


def all_plots(teachers: list[LineageStats], out_dir: Path) -> dict[str, Path]:
    """Write every plot that has data; return {name: path}."""
    made = {
        "lengths_hist": length_histogram(teachers, out_dir / "lengths_hist.png"),
        "lengths_cdf": length_cdf(teachers, out_dir / "lengths_cdf.png"),
        "perplexity": perplexity_histogram(teachers, out_dir / "perplexity.png"),
        "verify_scores": verify_scores(teachers, out_dir / "verify_scores.png"),
        "acceptance": per_category(teachers, out_dir / "acceptance.png", "acceptance"),
        "attempts": per_category(teachers, out_dir / "attempts.png", "attempts"),
    }
    return {name: path for name, path in made.items() if path is not None}
