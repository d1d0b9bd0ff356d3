"""MinHash signatures, LSH band keys and clustering of near-duplicates.

Shingles are character or word n-grams of normalised text. Each shingle gets a 64-bit rolling hash (words are
first hashed with CRC32, so hashes agree across processes and shards), mixed by splitmix64, computed as numpy
array operations. Permutation k is the multiply-shift hash `(a_k * x + b_k) mod 2**64 >> 32`; the minimum over a
text's shingles is one fused numba loop per text (parallel over texts), because the same in numpy materialises a
shingles x permutations array and was no faster than datasketch (see `benchmarks/bench_minhash.py`).
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from distillery.schema.records import normalise_text

_WORD = re.compile(r"\w+")
_PRIME = np.uint64(1_099_511_628_211)
_EMPTY = np.uint32(0xFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


@functools.cache
def _min_hashes_kernel():
    """The compiled kernel, built on first use: importing numba (llvmlite) in every task that merely parses a
    recipe breaks vLLM's kernel registration in the same process."""
    import numba

    @numba.njit(parallel=True, cache=True, nogil=True)
    def min_hashes(hashes: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        """out[d, k] = min over shingles s of text d of ((a[k] * hashes[s] + b[k]) mod 2**64) >> 32."""
        shift = np.uint64(32)
        for doc in numba.prange(len(offsets) - 1):
            for position in range(offsets[doc], offsets[doc + 1]):
                value = hashes[position]
                for k in range(len(a)):
                    permuted = np.uint32((a[k] * value + b[k]) >> shift)
                    out[doc, k] = min(out[doc, k], permuted)

    return min_hashes


@dataclass(frozen=True)
class MinHasher:
    """MinHash over n-gram shingles; `bands * rows` of the `num_perm` values form the LSH band keys."""

    num_perm: int = 128
    ngram_size: int = 5
    unit: Literal["char", "word"] = "char"
    seed: int = 1

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        object.__setattr__(self, "_a", rng.integers(1, 2**63, self.num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1))
        object.__setattr__(self, "_b", rng.integers(0, 2**63, self.num_perm, dtype=np.uint64))

    def _tokens(self, text: str) -> np.ndarray:
        text = normalise_text(text)
        if self.unit == "char":
            codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.uint64)
        else:
            codes = np.fromiter((zlib.crc32(w.encode()) for w in _WORD.findall(text)), dtype=np.uint64)
        if 0 < len(codes) < self.ngram_size:
            codes = np.concatenate([codes, np.zeros(self.ngram_size - len(codes), dtype=np.uint64)])
        return codes

    def shingle_hashes(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(64-bit hash of every shingle of every text, number of shingles of each text)."""
        tokens = [self._tokens(t) for t in texts]
        lengths = np.array([len(t) for t in tokens], dtype=np.int64)
        counts = np.maximum(lengths - self.ngram_size + 1, 0)
        codes = np.concatenate(tokens) if tokens else np.zeros(0, dtype=np.uint64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(texts) else np.zeros(0, np.int64)
        shingle_offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(texts) else starts
        positions = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(starts - shingle_offsets, counts)
        hashes = np.zeros(len(positions), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for offset in range(self.ngram_size):
                hashes = hashes * _PRIME + codes[positions + offset]
        return _splitmix64(hashes), counts

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """uint32 signatures, shape (len(texts), num_perm); a text with no shingle gets all 0xFFFFFFFF."""
        hashes, counts = self.shingle_hashes(texts)
        signatures = np.full((len(texts), self.num_perm), _EMPTY, dtype=np.uint32)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        _min_hashes_kernel()(hashes, offsets, self._a, self._b, signatures)
        return signatures


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """uint64 key per (text, band): a hash of the band's `rows` signature values; shape (n, bands)."""
    if bands * rows > signatures.shape[1]:
        raise ValueError(f"bands x rows = {bands * rows} exceeds the {signatures.shape[1]} permutations")
    keys = np.zeros((signatures.shape[0], bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for row in range(rows):
            keys = keys * _PRIME + signatures[:, row::rows][:, :bands].astype(np.uint64)
    return _splitmix64(keys)


def estimated_jaccard(signatures: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Share of equal signature values of each (left[i], right[i]) pair."""
    return (signatures[left] == signatures[right]).mean(axis=1)


def valid_rows(signatures: np.ndarray) -> np.ndarray:
    """Texts that had shingles (an empty text's signature is all sentinel values and never pairs)."""
    return ~(signatures == _EMPTY).all(axis=1)


def bucket_pairs(column: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of texts sharing a bucket of one band (`column`: that band's key per text): each member with the
    bucket's first member and with the member before it (every pair of a bucket of up to three; linear beyond)."""
    index = np.flatnonzero(valid)
    column = column[index]
    order = np.argsort(column, kind="stable")
    sorted_keys = column[order]
    new_group = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    group_first = np.maximum.accumulate(np.where(new_group, np.arange(len(order)), 0))
    members = np.flatnonzero(~new_group)
    return (np.concatenate([index[order[group_first[members]]], index[order[members - 1]]]),
            np.concatenate([index[order[members]], index[order[members]]]))


def unique_pairs(lefts: list[np.ndarray], rights: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every unordered pair once, as (smaller index, larger index)."""
    if not lefts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    left, right = np.concatenate(lefts), np.concatenate(rights)
    pairs = np.unique(np.stack([np.minimum(left, right), np.maximum(left, right)], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected-component label of each of `n` texts under the pairs (left[i], right[i])."""
    from scipy.sparse import coo_matrix  # scipy is loaded by the merge that clusters, not by every recipe load
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def cluster(signatures: np.ndarray, keys: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Connected components of LSH candidate pairs whose estimated Jaccard is >= threshold, all in memory.

    Returns (component label per text, verified pair lefts, verified pair rights). Texts without shingles never
    join a component.
    """
    valid = valid_rows(signatures)
    found = [bucket_pairs(keys[:, band], valid) for band in range(keys.shape[1])]
    left, right = unique_pairs([pair[0] for pair in found], [pair[1] for pair in found])
    similar = estimated_jaccard(signatures, left, right) >= threshold
    left, right = left[similar], right[similar]
    return components(signatures.shape[0], left, right), left, right
