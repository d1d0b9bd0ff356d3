"""Scores and lengths of every student on every benchmark of a run, from the eval step's shards.

`summarize(run_dir)` reads `<run>/<eval step>/<lineage>/shard-*.jsonl` (one student per lineage: the model
fine-tuned on that teacher's traces, or on a dataset variant of them, "<teacher>+<variant>") and returns an
`EvalSummary`; `distillery.analyze.eval_render` turns it into the paper's Tables 1 and 2 and length plots.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from distillery.core.store import RunDir, iter_jsonl
from distillery.evaluate.benchmarks import BenchmarkSpec
from distillery.analyze.metrics import LengthStats, bootstrap_ci, mean_pass_at_k
from distillery.evaluate.samples import EvalSample

logger = logging.getLogger(__name__)


@dataclass
class BenchmarkResult:
    """One student on one benchmark."""

    student: str
    benchmark: str
    problems: int
    samples: int
    samples_per_problem: tuple[int, int]
    """Fewest and most samples any problem has (equal once every shard is done)."""
    pass1: float
    """Mean over problems of the share of correct samples (pass@1 averaged over k samples), in [0, 1]."""
    pass1_ci: tuple[float, float]
    pass_at_k: dict[int, float]
    """Unbiased pass@k for k = 1, 2, 4, ... up to the fewest samples of any problem."""
    lengths: LengthStats
    lengths_correct: LengthStats
    lengths_incorrect: LengthStats
    truncated: float
    """Share of answers cut off at max_tokens."""
    verifier_errors: int
    """Answers scored 0 because the verifier timed out or crashed, not because they were wrong."""
    no_answer: float = 0.0
    """Share of answers with no final answer found (scored 0 without a comparison; a cut-off response's unboxed
    claim included)."""
    by_fallback: float = 0.0
    """Share of answers read by a fallback extractor ("the answer is X", a last sentence...), not a box."""
    length_values: list[int] = field(repr=False, default_factory=list)
    correct_flags: list[bool] = field(repr=False, default_factory=list)
    per_problem: dict[str, float] = field(repr=False, default_factory=dict)
    """Problem id -> share of its samples that are correct (what paired comparisons resample)."""


@dataclass
class EvalSummary:
    students: list[str]
    benchmarks: list[BenchmarkSpec]
    results: dict[tuple[str, str], BenchmarkResult]
    """Keyed by (student, benchmark name)."""
    models: dict[str, str] = field(default_factory=dict)
    """Student -> model it was loaded from."""
    shards: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Student -> (shards done, shards in all)."""
    origins: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Student -> (eval step, lineage it was trained on)."""

    def result(self, student: str, benchmark: str) -> BenchmarkResult | None:
        return self.results.get((student, benchmark))

    @property
    def complete(self) -> bool:
        return all(done == total for done, total in self.shards.values())


def score_benchmark(student: str, benchmark: str, samples: Iterable[EvalSample], seed: int = 0) -> BenchmarkResult:
    """pass@1 with its bootstrap interval, pass@k and length statistics of one student's samples."""
    per_problem: dict[str, list[EvalSample]] = defaultdict(list)
    for sample in samples:
        per_problem[sample.problem_id].append(sample)
    if not per_problem:
        raise ValueError(f"no samples for {student} on {benchmark}")
    counts = [(len(group), sum(s.passed for s in group)) for group in per_problem.values()]
    fewest = min(n for n, _ in counts)
    ks = [2**power for power in range(fewest.bit_length()) if 2**power <= fewest]
    flat = [s for group in per_problem.values() for s in group]
    lengths = [s.completion_tokens for s in flat]
    return BenchmarkResult(
        student=student,
        benchmark=benchmark,
        problems=len(per_problem),
        samples=len(flat),
        samples_per_problem=(fewest, max(n for n, _ in counts)),
        pass1=mean_pass_at_k(counts, 1),
        pass1_ci=bootstrap_ci([c / n for n, c in counts], seed=seed),
        pass_at_k={k: mean_pass_at_k(counts, k) for k in ks},
        lengths=LengthStats.of(lengths),
        lengths_correct=LengthStats.of([s.completion_tokens for s in flat if s.passed]),
        lengths_incorrect=LengthStats.of([s.completion_tokens for s in flat if not s.passed]),
        truncated=sum(s.finish_reason == "length" for s in flat) / len(flat),
        verifier_errors=sum(s.verifier_error for s in flat),
        no_answer=sum(s.no_answer for s in flat) / len(flat),
        by_fallback=sum(s.by_fallback for s in flat) / len(flat),
        length_values=lengths,
        correct_flags=[s.passed for s in flat],
        per_problem={problem: c / n for problem, (n, c) in zip(per_problem, counts)},
    )


def summarize_samples(samples_by_student: dict[str, list[EvalSample]], benchmarks: list[BenchmarkSpec]) -> EvalSummary:
    """Score every (student, benchmark) pair that has samples."""
    results: dict[tuple[str, str], BenchmarkResult] = {}
    for student, samples in samples_by_student.items():
        by_benchmark: dict[str, list[EvalSample]] = defaultdict(list)
        for sample in samples:
            by_benchmark[sample.benchmark].append(sample)
        for spec in benchmarks:
            if by_benchmark.get(spec.name):
                results[(student, spec.name)] = score_benchmark(student, spec.name, by_benchmark[spec.name])
    return EvalSummary(students=list(samples_by_student), benchmarks=benchmarks, results=results)


def summarize(run_dir: Path | str) -> EvalSummary:
    """Scores of every eval step of a run, over the shards that are done (see `EvalSummary.shards`)."""
    from distillery.core.runner import load_run_recipe
    from distillery.evaluate.stage import EvalStage

    run = RunDir(run_dir)
    recipe = load_run_recipe(run)
    eval_steps = [spec for spec in recipe.steps if spec.type == EvalStage.name]
    samples: dict[str, list[EvalSample]] = {}
    benchmarks: dict[str, BenchmarkSpec] = {}
    models: dict[str, str] = {}
    shards: dict[str, tuple[int, int]] = {}
    origins: dict[str, tuple[str, str]] = {}
    for spec in eval_steps:
        for lineage in recipe.teachers_of(spec.step):
            assert lineage is not None, "eval runs per teacher"
            stage = recipe.build_stage(spec.step, lineage)
            assert isinstance(stage, EvalStage)
            model = stage.model_path(run)
            student = lineage if len(eval_steps) == 1 else f"{spec.step}/{lineage}"
            models[student], origins[student] = model, (spec.step, lineage)
            done, collected = 0, []
            for shard_index in range(stage.num_shards()):
                paths = run.shard(spec.step, lineage, shard_index, recipe.compress)
                if paths.manifest.exists():
                    done += 1
                    collected.extend(EvalSample.model_validate(row) for row in iter_jsonl(paths.output))
            shards[student] = (done, stage.num_shards())
            samples[student] = collected
            for bench in stage.config.benchmarks:
                benchmarks.setdefault(bench.name, bench)
            if done < stage.num_shards():
                logger.warning("%s: %d of %d eval shards done; scores are partial", student, done, stage.num_shards())
    summary = summarize_samples(samples, list(benchmarks.values()))
    summary.models = models
    summary.shards = shards
    summary.origins = origins
    return summary
