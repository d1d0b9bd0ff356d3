"""pass@k against brute-force enumeration, bootstrap intervals, length statistics."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distillery.analyze.metrics import (
    LengthStats,
    bootstrap_ci,
    mean_pass_at_k,
    median_ratio,
    paired_difference,
    pass_at_k,
)


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of n samples (c correct) that contain at least one correct sample."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in subset) for subset in subsets) / len(subsets)


def test_pass_at_k_equals_enumeration_on_every_small_case() -> None:
    for n in range(1, 10):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 14).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_matches_enumeration_and_closed_form(case: tuple[int, int, int]) -> None:
    n, c, k = case
    closed_form = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(closed_form, abs=1e-12)
    assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_1_is_share_correct_and_pass_at_k_grows_with_k() -> None:
    assert pass_at_k(64, 16, 1) == pytest.approx(0.25)
    values = [pass_at_k(64, 3, k) for k in (1, 2, 4, 8, 16, 32, 64)]
    assert values == sorted(values) and values[-1] == 1.0 and values[0] == pytest.approx(3 / 64)
    # Large n, where the binomials overflow a float: still exact.
    assert pass_at_k(5000, 1, 1) == pytest.approx(1 / 5000)
    assert pass_at_k(5000, 0, 100) == 0.0
    assert mean_pass_at_k([(4, 4), (4, 0), (4, 2)], 1) == pytest.approx(0.5)


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_impossible_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_bootstrap_interval_contains_mean_and_shrinks_with_more_problems() -> None:
    rng = np.random.default_rng(1)
    small = rng.binomial(4, 0.4, size=30) / 4
    large = rng.binomial(4, 0.4, size=500) / 4
    low_s, high_s = bootstrap_ci(small)
    low_l, high_l = bootstrap_ci(large)
    assert low_s <= small.mean() <= high_s
    assert low_l <= large.mean() <= high_l
    assert high_l - low_l < high_s - low_s
    assert bootstrap_ci(small) == bootstrap_ci(small)  # seeded: the same numbers on a rerun
    assert bootstrap_ci([1.0] * 30) == (1.0, 1.0)
    assert bootstrap_ci([0.5]) == (0.5, 0.5)


def test_bootstrap_interval_covers_the_true_rate_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    covered = 0
    trials = 200
    for _ in range(trials):
        per_problem = rng.binomial(1, 0.3, size=200).astype(float)
        low, high = bootstrap_ci(per_problem, resamples=500, seed=int(rng.integers(1 << 30)))
        covered += low <= 0.3 <= high
    assert 0.88 <= covered / trials <= 0.99


def test_length_stats() -> None:
    stats = LengthStats.of([10, 20, 30, 40, 1000])
    assert (stats.count, stats.mean, stats.median, stats.max) == (5, 220.0, 30.0, 1000)
    assert stats.p10 == pytest.approx(14.0) and stats.p90 == pytest.approx(616.0)
    empty = LengthStats.of([])
    assert empty.count == 0 and math.isnan(empty.mean)


def test_paired_difference_by_hand() -> None:
    a = {"x": 1.0, "y": 1.0, "z": 0.0, "only-a": 1.0}
    b = {"x": 0.0, "y": 1.0, "z": 0.0, "only-b": 0.0}
    result = paired_difference(a, b)
    assert (result.problems, result.mean_a, result.mean_b) == (3, 2 / 3, 1 / 3), "only the problems both took"
    assert result.difference == pytest.approx(1 / 3)
    # Per-problem differences (1, 0, 0): a resample's mean is 0, 1/3, 2/3 or 1 with probability 8/27, 12/27, 6/27,
    # 1/27. The 2.5th percentile is 0; 26/27 < 0.975 of the mass lies at or below 2/3, so the 97.5th is 1.
    assert result.ci == (0.0, 1.0)
    disjoint = paired_difference({"x": 1.0}, {"y": 1.0})
    assert disjoint.problems == 0 and math.isnan(disjoint.difference) and all(math.isnan(v) for v in disjoint.ci)


shares = st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.text("pq0123456789", min_size=1, max_size=3), st.tuples(shares, shares), min_size=1,
                       max_size=25))
def test_paired_difference_is_zero_for_identical_students_and_negates_when_swapped(
        scores: dict[str, tuple[float, float]]) -> None:
    a = {problem: pair[0] for problem, pair in scores.items()}
    b = {problem: pair[1] for problem, pair in scores.items()}
    same = paired_difference(a, dict(a))
    assert same.difference == 0.0 and same.ci[0] <= 0.0 <= same.ci[1]
    forward, backward = paired_difference(a, b), paired_difference(b, a)
    assert forward.difference == pytest.approx(np.mean(list(a.values())) - np.mean(list(b.values())))
    assert backward.difference == pytest.approx(-forward.difference)
    assert backward.ci[0] == pytest.approx(-forward.ci[1], abs=1e-9)
    assert backward.ci[1] == pytest.approx(-forward.ci[0], abs=1e-9)
    assert -1.0 <= forward.ci[0] <= forward.ci[1] <= 1.0


def test_pairing_removes_problem_difficulty_from_the_interval() -> None:
    """Two students who share which problems are easy: the paired interval is far narrower than the two separate
    intervals combined, and it resolves a 5-point gain that the separate intervals cannot."""
    rng = np.random.default_rng(3)
    difficulty = rng.uniform(0, 1, size=200)
    b = {f"p{i}": float(rng.binomial(8, 1 - d) / 8) for i, d in enumerate(difficulty)}
    a = {p: min(1.0, v + (0.25 if i % 5 == 0 else 0.0)) for i, (p, v) in enumerate(b.items())}
    paired = paired_difference(a, b)
    separate = [bootstrap_ci(list(scores.values())) for scores in (a, b)]
    unpaired_half_width = math.hypot(*[(high - low) / 2 for low, high in separate])
    assert (paired.ci[1] - paired.ci[0]) / 2 < 0.5 * unpaired_half_width
    assert paired.ci[0] > 0, "the gain is resolved"
    assert separate[0][0] < separate[1][1], "the separate intervals overlap"


def test_median_ratio() -> None:
    assert median_ratio([10, 20, 30], [5, 10, 15]) == 2.0
    assert median_ratio([3, 1, 2, 100], [4]) == pytest.approx(2.5 / 4)
    assert median_ratio([], [1]) is None and median_ratio([1], []) is None and median_ratio([1], [0, 0]) is None
