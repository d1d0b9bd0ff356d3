"""Read a run directory into compact per-lineage numbers for the report (streamed: no trace is kept whole).

A lineage is a teacher's own data (named after the teacher) or a dataset variant derived from it
("<teacher>+<variant>"), each with its own folder in every step it passes through. Which step is which is read
from the data, not from step names: the first step whose records are traces is generation (its kept and
rejected records are every query a teacher tried: acceptance and attempts), the first step whose traces carry a
perplexity gives the perplexity distribution (kept and rejected: the view before the cut), and the kept records
of a lineage's last trace step are its final dataset, the one pack turns into training data (for a variant: the
variants step's output).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distillery.core.lineage import Lineage, order_lineages
from distillery.core.stage import reason_kind
from distillery.core.store import RunDir, iter_jsonl, read_json


@dataclass
class CategoryStats:
    queries: int = 0
    accepted: int = 0
    attempts: int = 0
    """Attempts over all queries of the category."""


@dataclass
class StepCounts:
    inputs: int = 0
    kept: int = 0
    rejected: int = 0
    quarantined: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass
class LineageStats:
    name: str
    categories: dict[str, CategoryStats] = field(default_factory=lambda: defaultdict(CategoryStats))
    accepted_scores: list[float] = field(default_factory=list)
    """Verify score of each accepted attempt (generation step)."""
    attempt_scores: list[float] = field(default_factory=list)
    """Verify score of every attempt (generation step)."""
    ppl: list[float] = field(default_factory=list)
    final_lengths: list[int] = field(default_factory=list)
    """Response tokens of each trace in the final dataset."""
    counted_with: list[str] = field(default_factory=list)
    """Whose tokenizer counted those tokens: "teacher", or the model a replay teacher's answers were counted with."""
    funnel: dict[str, StepCounts] = field(default_factory=dict)
    final_step: str | None = None
    """The lineage's last trace step: its final dataset."""
    final_categories: Counter[str] = field(default_factory=Counter)
    """Category of each trace in the final dataset."""
    final_ppl: list[float] = field(default_factory=list)
    """Perplexity of each trace in the final dataset that carries one."""
    final_figures: dict[str, float] = field(default_factory=dict)
    """Numbers the final step's manifests report (their `stats`), summed over shards: for a variant, what its rule
    says about itself (e.g. queries that would need new attempts)."""

    @property
    def teacher(self) -> str:
        return Lineage.parse(self.name).teacher

    @property
    def variant(self) -> str | None:
        return Lineage.parse(self.name).variant


@dataclass
class RunStats:
    run_dir: Path
    name: str
    steps: list[str]
    lineages: dict[str, LineageStats]
    """Every lineage with a finished shard, teachers' own data and variants alike."""
    generation_step: str | None = None
    perplexity_step: str | None = None
    final_step: str | None = None
    eval_steps: list[str] = field(default_factory=list)
    teacher_order: list[str] = field(default_factory=list)
    """Teachers in recipe order."""

    def ordered(self) -> list[LineageStats]:
        """Lineages grouped under their teacher: its own data, then its variants."""
        return [self.lineages[name] for name in order_lineages(self.lineages, self.teacher_order)]

    @property
    def teachers(self) -> dict[str, LineageStats]:
        """The teachers' own lineages, in recipe order."""
        return {stats.name: stats for stats in self.ordered() if stats.variant is None}


def step_order(run: RunDir) -> tuple[str, list[str], list[str], list[str]]:
    """(run name, step names in recipe order, names of eval steps, teacher names); without a recipe, steps by
    directory age and no teachers."""
    if run.recipe.exists():
        recipe = yaml.safe_load(run.recipe.read_text(encoding="utf-8")) or {}
        steps = recipe.get("steps") or {}
        evals = [name for name, body in steps.items() if (body or {}).get("type", name) == "eval"]
        teachers = [str(t["name"]) for t in recipe.get("teachers") or [] if isinstance(t, dict) and "name" in t]
        return str(recipe.get("name", run.root.name)), list(steps), evals, teachers
    dirs = [p for p in run.root.iterdir() if p.is_dir() and any(p.rglob("shard-*.done.json"))]
    dirs.sort(key=lambda p: min(m.stat().st_mtime for m in p.rglob("shard-*.done.json")))
    return run.root.name, [p.name for p in dirs], [], []


def _teacher_dirs(step_dir: Path) -> Iterator[tuple[str | None, Path]]:
    if any(step_dir.glob("shard-*.done.json")):
        yield None, step_dir
    for sub in sorted(p for p in step_dir.iterdir() if p.is_dir() and not p.name.startswith("_")):
        if sub.name not in ("rejected", "quarantine") and any(sub.glob("shard-*.done.json")):
            yield sub.name, sub


def _kept_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("shard-*.jsonl*") if p.name.endswith((".jsonl", ".jsonl.gz")))


def _is_trace(record: dict[str, Any] | None) -> bool:
    return bool(record) and "teacher" in record and "attempts" in record  # type: ignore[operator]


def _records(directory: Path, rejected_too: bool) -> Iterator[dict[str, Any]]:
    for path in _kept_files(directory):
        yield from iter_jsonl(path)
    if rejected_too:
        for path in sorted((directory / "rejected").glob("shard-*.jsonl")):
            for row in iter_jsonl(path):
                if row.get("record"):
                    yield row["record"]


def _first_record(directory: Path) -> dict[str, Any] | None:
    return next(_records(directory, rejected_too=True), None)


def collect(run_dir: Path) -> RunStats:
    run = RunDir(run_dir)
    name, steps, eval_steps, teacher_order = step_order(run)
    lineages: dict[str, LineageStats] = {}
    trace_steps: dict[str, dict[str, Path]] = {}
    for step in steps:
        step_dir = run.root / step
        if not step_dir.is_dir():
            continue
        for lineage, directory in _teacher_dirs(step_dir):
            counts = StepCounts()
            for manifest_path in sorted(directory.glob("shard-*.done.json")):
                manifest = read_json(manifest_path)
                counts.inputs += manifest["inputs"]
                counts.kept += manifest["kept"]
                counts.rejected += manifest["rejected"]
                counts.quarantined += manifest["quarantined"]
            for path in sorted((directory / "rejected").glob("shard-*.jsonl")):
                counts.reasons.update(reason_kind(row.get("reason", "")) for row in iter_jsonl(path))
            if lineage is not None:
                lineages.setdefault(lineage, LineageStats(lineage)).funnel[step] = counts
                if _is_trace(_first_record(directory)):
                    trace_steps.setdefault(step, {})[lineage] = directory
    stats = RunStats(run.root, name, steps, lineages, eval_steps=eval_steps, teacher_order=teacher_order)
    ordered = [s for s in steps if s in trace_steps]
    if not ordered:
        return stats
    stats.generation_step = ordered[0]
    for lineage, directory in trace_steps[ordered[0]].items():
        _read_generation(lineages[lineage], directory)
    for lineage, lineage_stats in lineages.items():
        final = [step for step in ordered if lineage in trace_steps[step]]
        if final:
            _read_final(lineage_stats, final[-1], trace_steps[final[-1]][lineage])
    base_finals = [t.final_step for t in stats.teachers.values() if t.final_step]
    stats.final_step = base_finals[0] if base_finals else None
    for step in ordered:
        if any((_first_record(d) or {}).get("ppl") is not None for d in trace_steps[step].values()):
            stats.perplexity_step = step
            for lineage, directory in trace_steps[step].items():
                lineages[lineage].ppl = [r["ppl"] for r in _records(directory, rejected_too=True)
                                         if r.get("ppl") is not None]
            break
    return stats


def _read_final(stats: LineageStats, step: str, directory: Path) -> None:
    stats.final_step = step
    for manifest_path in sorted(directory.glob("shard-*.done.json")):
        for key, value in (read_json(manifest_path).get("stats") or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                stats.final_figures[key] = stats.final_figures.get(key, 0) + value
    counted_with = set()
    for record in _records(directory, rejected_too=False):
        stats.final_lengths.append(_length(record))
        stats.final_categories[record["query"]["category"]] += 1
        if record.get("ppl") is not None:
            stats.final_ppl.append(float(record["ppl"]))
        counted_with.add((record.get("metadata") or {}).get("tokens_counted_with", "teacher"))
    stats.counted_with = sorted(counted_with)


def _length(record: dict[str, Any]) -> int:
    """Response tokens as the teacher counted them (the accepted attempt's count when the trace has none)."""
    if record.get("response_tokens"):
        return int(record["response_tokens"])
    accepted = record.get("accepted")
    return int(record["attempts"][accepted].get("completion_tokens", 0)) if accepted is not None else 0


def _read_generation(stats: LineageStats, directory: Path) -> None:
    for record in _records(directory, rejected_too=True):
        category = stats.categories[record["query"]["category"]]
        category.queries += 1
        category.attempts += len(record["attempts"])
        stats.attempt_scores.extend(a["score"] for a in record["attempts"] if a.get("score") is not None)
        accepted = record.get("accepted")
        if accepted is not None:
            category.accepted += 1
            score = record["attempts"][accepted].get("score")
            if score is not None:
                stats.accepted_scores.append(score)
