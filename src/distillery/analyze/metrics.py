"""Scoring math: pass@1 over k samples, the unbiased pass@k estimator, bootstrap intervals (one student, and the
paired difference of two students over the same problems), length statistics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021).

    Computed as a product, 1 - prod_{i=n-c+1..n} (1 - k/i), which stays exact in floating point for n in the
    thousands where the binomials overflow.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """pass@k averaged over problems, each given as (samples, correct)."""
    return float(np.mean([pass_at_k(n, c, k) for n, c in counts]))


def bootstrap_ci(per_problem: Sequence[float], confidence: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over problems (each problem's pass@1 is one observation).

    Problems are the unit that is resampled: the interval says how much the score depends on which problems
    the benchmark happens to contain, the dominant uncertainty for 30-problem sets such as AIME.
    """
    values = np.asarray(per_problem, dtype=float)
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size == 1 or np.all(values == values[0]):
        return float(values[0]), float(values[0])
    result = stats.bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=resamples,
                             method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@dataclass(frozen=True)
class PairedDifference:
    """pass@1 of student A minus student B over the problems both were evaluated on."""

    problems: int
    """Problems in common (the only ones compared)."""
    mean_a: float
    mean_b: float
    difference: float
    """mean_a - mean_b, in [-1, 1]."""
    ci: tuple[float, float]


def paired_difference(a: Mapping[str, float], b: Mapping[str, float], confidence: float = 0.95,
                      resamples: int = 2000, seed: int = 0) -> PairedDifference:
    """Difference of mean per-problem pass@1, A - B, over the problems in both, with a paired bootstrap interval.

    A resample draws problems with replacement and takes both students' scores on each drawn problem; the
    difference of the two means is then the mean of the per-problem differences, so the interval is the
    bootstrap interval of those differences. Pairing removes the problems' own difficulty from the noise: two
    students who pass the same easy problems differ by far less than their separate intervals suggest.
    """
    common = sorted(set(a) & set(b))
    if not common:
        nan = float("nan")
        return PairedDifference(0, nan, nan, nan, (nan, nan))
    scores_a = np.array([a[problem] for problem in common], dtype=float)
    scores_b = np.array([b[problem] for problem in common], dtype=float)
    return PairedDifference(
        problems=len(common), mean_a=float(scores_a.mean()), mean_b=float(scores_b.mean()),
        difference=float((scores_a - scores_b).mean()),
        ci=bootstrap_ci(scores_a - scores_b, confidence=confidence, resamples=resamples, seed=seed))


def median_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float | None:
    """median(numerator) / median(denominator); None when either is empty or the denominator's median is 0."""
    if not len(numerator) or not len(denominator):
        return None
    bottom = float(np.median(denominator))
    return float(np.median(numerator)) / bottom if bottom else None


@dataclass(frozen=True)
class LengthStats:
    """Generated tokens per answer."""

    count: int
    mean: float
    median: float
    p10: float
    p90: float
    max: int

    @classmethod
    def of(cls, lengths: Sequence[int]) -> LengthStats:
        if not lengths:
            return cls(0, float("nan"), float("nan"), float("nan"), float("nan"), 0)
        values = np.asarray(lengths, dtype=float)
        p10, median, p90 = np.percentile(values, [10, 50, 90])
        return cls(int(values.size), float(values.mean()), float(median), float(p10), float(p90), int(values.max()))
