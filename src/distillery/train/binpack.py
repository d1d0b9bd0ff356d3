"""Packing documents of known lengths into bins of a fixed token capacity.

`best_fit_decreasing` places each document, longest first, into the fullest bin that still has room
(ties: the lowest bin index); like first-fit-decreasing it uses at most 11/9 OPT + 6/9 bins. Open bins are
kept sorted by free space, so a placement is a binary search. `greedy_sequential` (fill in input order, start a
new bin when the next document does not fit) and padding each document to the capacity are the baselines the
benchmark compares against.

`WindowedPacker` packs a stream in consecutive windows of at least `window_tokens` tokens, so a packer holds one
window, never the corpus. Its cost: each window's last bins are filled only from that window, about one partly
empty bin per window (at most 1 / (window_tokens / capacity) of the slots; benchmarks/bench_packing.py measures it).
`pack` runs several tasks per lineage, each over a contiguous `share` of its input's shards: each task's last
window is partly empty too, about one more such bin per task (`sharded_best_fit`; the benchmark measures it).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

import numpy as np


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bins as lists of document indices; every length must be in [1, capacity]."""
    lengths_N = np.asarray(lengths, dtype=np.int64)
    if lengths_N.size and (lengths_N.min() < 1 or lengths_N.max() > capacity):
        raise ValueError(f"document lengths must be in [1, {capacity}]")
    order = np.argsort(-lengths_N, kind="stable")
    bins: list[list[int]] = []
    free_sorted: list[tuple[int, int]] = []  # (free tokens, bin index), ascending
    for doc in order.tolist():
        length = int(lengths_N[doc])
        slot = bisect.bisect_left(free_sorted, (length, -1))
        if slot == len(free_sorted):
            bins.append([doc])
            free = capacity - length
            bin_index = len(bins) - 1
        else:
            free, bin_index = free_sorted.pop(slot)
            bins[bin_index].append(doc)
            free -= length
        if free > 0:
            bisect.insort(free_sorted, (free, bin_index))
    return bins


def greedy_sequential(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Baseline: documents in input order, a new bin whenever the next one does not fit the current bin."""
    bins: list[list[int]] = []
    used = capacity
    for doc, length in enumerate(lengths):
        if not 1 <= length <= capacity:
            raise ValueError(f"document lengths must be in [1, {capacity}]")
        if used + length > capacity:
            bins.append([])
            used = 0
        bins[-1].append(doc)
        used += length
    return bins


def packing_efficiency(lengths: Sequence[int], bins: list[list[int]], capacity: int) -> float:
    """Fraction of the bins' token slots holding real tokens (1.0 = no padding)."""
    if not bins:
        return 1.0
    return float(np.sum(np.asarray(lengths, dtype=np.int64))) / (len(bins) * capacity)


class WindowedPacker:
    """Best-fit decreasing over consecutive windows of documents: `add` each length in order; a window closes when
    its documents reach `window_tokens` tokens (then `add` returns its bins, as indices into the window), and
    `flush` closes the last one."""

    def __init__(self, capacity: int, window_tokens: int) -> None:
        self.capacity = capacity
        self.window_tokens = window_tokens
        self._lengths: list[int] = []
        self._tokens = 0

    def add(self, length: int) -> list[list[int]] | None:
        self._lengths.append(length)
        self._tokens += length
        return self.flush() if self._tokens >= self.window_tokens else None

    def flush(self) -> list[list[int]]:
        bins = best_fit_decreasing(self._lengths, self.capacity)
        self._lengths, self._tokens = [], 0
        return bins


def windowed_best_fit(lengths: Iterable[int], capacity: int, window_tokens: int) -> list[list[int]]:
    """What `WindowedPacker` makes of a whole sequence of lengths, as bins of indices into it."""
    packer = WindowedPacker(capacity, window_tokens)
    bins: list[list[int]] = []
    start = 0
    for index, length in enumerate(lengths):
        window = packer.add(length)
        if window is not None:
            bins.extend([start + doc for doc in bin_] for bin_ in window)
            start = index + 1
    bins.extend([start + doc for doc in bin_] for bin_ in packer.flush())
    return bins


def share(total: int, parts: int, index: int) -> range:
    """The contiguous share of `total` items that part `index` of `parts` takes: shares differ by at most one."""
    return range(index * total // parts, (index + 1) * total // parts)


def sharded_best_fit(lengths: Sequence[int], capacity: int, window_tokens: int, shards: int) -> list[list[int]]:
    """What `shards` pack tasks make of `lengths`, each packing its contiguous `share` with a `WindowedPacker`:
    their bins, as indices into `lengths`."""
    bins: list[list[int]] = []
    for index in range(shards):
        part = share(len(lengths), shards, index)
        bins.extend([part.start + doc for doc in bin_]
                    for bin_ in windowed_best_fit(lengths[part.start:part.stop], capacity, window_tokens))
    return bins
