"""Corpus-wide n-gram counts in bounded memory: 64-bit hashes, sorted runs on disk, merged bucket by bucket.

At the paper's scale (1.89M traces x ~4k tokens, ~7.5e9 n-grams) neither the n-grams nor a Python dict of
them fit in memory. Each n-gram becomes one 64-bit hash (a polynomial hash over per-unit 64-bit hashes);
a shard counts its hashes in memory until `spill_at` of them have accumulated, then writes a sorted
(hash, count) run to disk. Runs are merged by hash range ("buckets": the hash's top bits): only one bucket
of every run is in memory at a time, so merging costs about total / num_buckets entries of memory. The
global merge does the same over every shard's counts and keeps only hashes above the limit, which is small.

A run file is a raw little-endian array of `COUNT_DTYPE`, sorted by hash, read through a memory map.
Two different n-grams share a hash with probability ~2^-64 per pair; a collision matters only when it lifts
a rare n-gram over the limit, which at paper scale is not expected to happen once.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from distillery.schema.records import normalise_text
from distillery.core.store import atomic_write

COUNT_DTYPE = np.dtype([("hash", "<u8"), ("count", "<u8")])
_WORD = re.compile(r"\w+")
_POLY = np.uint64(0x9E3779B97F4A7C15)
_MIX_A = np.uint64(0xBF58476D1CE4E5B9)
_MIX_B = np.uint64(0x94D049BB133111EB)


def mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads any 64-bit values uniformly (so top bits make even buckets)."""
    x = values.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= _MIX_A
    x ^= x >> np.uint64(27)
    x *= _MIX_B
    x ^= x >> np.uint64(31)
    return x


def words(text: str) -> list[str]:
    """Word units: runs of letters and digits of the NFKC, case-folded text (punctuation ignored)."""
    return _WORD.findall(normalise_text(text))


class WordHasher:
    """Stable 64-bit hashes of words (blake2b; Python's `hash` is salted per process), memoised."""

    def __init__(self) -> None:
        self._cache: dict[str, int] = {}

    def __call__(self, units: Sequence[str]) -> np.ndarray:
        cache = self._cache
        out = np.empty(len(units), dtype=np.uint64)
        for index, unit in enumerate(units):
            value = cache.get(unit)
            if value is None:
                value = cache[unit] = int.from_bytes(hashlib.blake2b(unit.encode(), digest_size=8).digest(), "little")
            out[index] = value
        return out


def token_hashes(token_ids: Sequence[int]) -> np.ndarray:
    return mix64(np.asarray(token_ids, dtype=np.uint64) + _POLY)


def ngram_hashes(unit_hashes: np.ndarray, n: int) -> np.ndarray:
    """Hash of every length-n window: mix(sum_j u[i+j] * P^(n-1-j)) mod 2^64; empty if fewer than n units."""
    windows = unit_hashes.size - n + 1
    if windows <= 0:
        return np.empty(0, dtype=np.uint64)
    acc = np.zeros(windows, dtype=np.uint64)
    for offset in range(n):
        acc *= _POLY
        acc += unit_hashes[offset : offset + windows]
    return mix64(acc)


def count_hashes(hashes: np.ndarray) -> np.ndarray:
    """Sorted unique hashes with their multiplicities, as a `COUNT_DTYPE` array."""
    unique, counts = np.unique(hashes, return_counts=True)
    out = np.empty(unique.size, dtype=COUNT_DTYPE)
    out["hash"], out["count"] = unique, counts
    return out


def read_counts(path: Path) -> np.ndarray:
    """A run file as a read-only memory map (an empty array for an empty file)."""
    if path.stat().st_size == 0:
        return np.empty(0, dtype=COUNT_DTYPE)
    return np.memmap(path, dtype=COUNT_DTYPE, mode="r")


def write_counts(path: Path, counts: np.ndarray) -> None:
    with atomic_write(path, "wb") as out:
        out.write(np.ascontiguousarray(counts).tobytes())


def _bucket_slices(hashes: np.ndarray, num_buckets: int) -> list[slice]:
    shift = 64 - (num_buckets.bit_length() - 1)
    bounds = np.array([b << shift for b in range(1, num_buckets)], dtype=np.uint64) if num_buckets > 1 else np.empty(0, np.uint64)
    cuts = [0, *np.searchsorted(hashes, bounds).tolist(), hashes.size]
    return [slice(lo, hi) for lo, hi in itertools.pairwise(cuts)]


def _sum_by_hash(parts: list[np.ndarray]) -> np.ndarray:
    joined = np.concatenate(parts) if parts else np.empty(0, dtype=COUNT_DTYPE)
    if joined.size == 0:
        return joined
    joined = joined[np.argsort(joined["hash"], kind="stable")]
    starts = np.flatnonzero(np.r_[True, joined["hash"][1:] != joined["hash"][:-1]])
    out = np.empty(starts.size, dtype=COUNT_DTYPE)
    out["hash"] = joined["hash"][starts]
    out["count"] = np.add.reduceat(joined["count"], starts)
    return out


MAX_BUCKET_ENTRIES = 1 << 22
"""At most this many (hash, count) entries of all runs together in one bucket (64 MiB): a larger corpus is merged in
more buckets than asked for, so the merge's memory does not grow with it."""


def _read_slice(path: Path, part: slice) -> np.ndarray:
    """Entries `part` of a run file, read into memory: a memory map's touched pages would stay resident (and count
    in the task's peak RSS) until the merge ends, one bucket of every run after another."""
    count = part.stop - part.start
    if count == 0:
        return np.empty(0, dtype=COUNT_DTYPE)
    return np.fromfile(path, dtype=COUNT_DTYPE, count=count, offset=part.start * COUNT_DTYPE.itemsize)


def merge_counts(runs: Sequence[Path], out_path: Path, num_buckets: int = 256, min_count: int = 1) -> tuple[int, int]:
    """Sum the counts of sorted runs into one sorted run holding hashes counted at least `min_count` times.

    Memory holds one bucket of every run at a time: `num_buckets` of them, or more when the runs hold over
    `MAX_BUCKET_ENTRIES` entries a bucket. Returns (distinct hashes seen, hashes written).
    """
    if num_buckets < 1 or num_buckets & (num_buckets - 1):
        raise ValueError(f"num_buckets must be a power of two, got {num_buckets}")
    total = sum(path.stat().st_size for path in runs) // COUNT_DTYPE.itemsize
    while total > num_buckets * MAX_BUCKET_ENTRIES:
        num_buckets *= 2
    slices = [_bucket_slices(read_counts(path)["hash"], num_buckets) for path in runs]
    distinct = written = 0
    with atomic_write(out_path, "wb") as out:
        for bucket in range(num_buckets):
            summed = _sum_by_hash([_read_slice(path, s[bucket]) for path, s in zip(runs, slices)])
            distinct += summed.size
            kept = summed[summed["count"] >= min_count]
            written += kept.size
            out.write(kept.tobytes())
    return distinct, written


class SpillingCounter:
    """Counts n-gram hashes of one shard, spilling sorted runs to `work_dir` every `spill_at` hashes."""

    def __init__(self, work_dir: Path, spill_at: int) -> None:
        self.work_dir = work_dir
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.spill_at = spill_at
        self.runs: list[Path] = []
        self._pending: list[np.ndarray] = []
        self._pending_size = 0
        self.total = 0

    def add(self, hashes: np.ndarray) -> None:
        self._pending.append(hashes)
        self._pending_size += hashes.size
        self.total += hashes.size
        if self._pending_size >= self.spill_at:
            self._spill()

    def _spill(self) -> None:
        path = self.work_dir / f"run-{len(self.runs):05d}.bin"
        joined = np.concatenate(self._pending) if self._pending else np.empty(0, dtype=np.uint64)
        write_counts(path, count_hashes(joined))
        self.runs.append(path)
        self._pending, self._pending_size = [], 0

    def finish(self, out_path: Path, num_buckets: int) -> int:
        """Write the shard's merged counts to `out_path`; return its distinct hashes."""
        self._spill()
        distinct, _ = merge_counts(self.runs, out_path, num_buckets)
        for path in self.runs:
            path.unlink()
        return distinct


def lookup(table: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Counts of `hashes` in a sorted count table (0 where absent)."""
    if table.size == 0 or hashes.size == 0:
        return np.zeros(hashes.size, dtype=np.uint64)
    index = np.minimum(np.searchsorted(table["hash"], hashes), table.size - 1)
    found = table["hash"][index] == hashes
    return np.where(found, table["count"][index], np.uint64(0))

