"""pass@k against brute-force enumeration, bootstrap intervals, length statistics."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distillery.evaluate.metrics import LengthStats, bootstrap_ci, mean_pass_at_k, pass_at_k


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
