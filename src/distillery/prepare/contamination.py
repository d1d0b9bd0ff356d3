"""Candidate (query, benchmark item) pairs with their evidence: cosine, shared content n-grams, fingerprint overlap.

Three proposers feed the candidates of a query: FAISS's `top_k` nearest benchmark items (a GPU index when faiss
has GPUs, else exact CPU inner product), every item sharing a non-boilerplate word n-gram with the query, and every
item whose rarer fingerprint tokens the query carries (fingerprint.py). Each candidate then gets the same evidence
whatever proposed it. Cosines are recomputed as float64 dot products of the two stored vectors, so decisions never
depend on FAISS's float32 kernels, and FAISS searches each fixed embedding batch on its own, so that its proposals
do not depend on how many batches a rank holds: a many-rank run reproduces a one-rank run exactly.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from distillery.prepare.benchsets import BenchItem
from distillery.prepare.boilerplate import STOCK_PHRASES, Boilerplate
from distillery.prepare.embed import batch_plan, encode_batches
from distillery.prepare.fingerprint import FingerprintIndex, fingerprint

SHORT_ITEM_WORDS = 6
"""Fewest content words of an item whose whole content counts as one n-gram when it is shorter than ngram_words."""
FINGERPRINT_PROPOSAL = 0.5
"""An item is proposed when the query carries this share of the weight of its rarer fingerprint tokens."""


@dataclass(frozen=True)
class Candidate:
    """One (query, benchmark item) pair and its evidence; `query_index` indexes the scanned texts."""

    query_index: int
    item_index: int
    similarity: float
    """Exact cosine of the two embeddings."""
    ngram: str | None = None
    """One shared n-gram of non-boilerplate words (None: none shared)."""
    ngram_count: int = 0
    """How many distinct such n-grams the two share."""
    numbers: float = math.nan
    """Weighted share of the item's numbers found in the query (nan: the item has too few numbers to tell)."""
    content: float = 0.0
    """Weighted share of the item's whole fingerprint found in the query."""
    reverse: float = 0.0
    """Weighted share of the query's fingerprint found in the item."""
    info: float = 0.0
    """Weight of the shared fingerprint tokens."""
    rare: int = 0
    """Distinct shared tokens (not variable names) that few benchmark items have."""
    rank: int | None = None
    """The item's place among the query's FAISS top_k nearest (0: the nearest); None: not among them."""
    shared: int = 0
    """Distinct fingerprint tokens the two share."""


@dataclass(frozen=True)
class IndexSettings:
    ngram_words: int = 13
    boilerplate_words: int = 6
    boilerplate_items: int = 3
    stock_phrases: tuple[str, ...] = STOCK_PHRASES


class BenchmarkIndex:
    """Benchmark items with their unit embeddings (replicated on every rank), content n-grams and fingerprints."""

    def __init__(self, items: Sequence[BenchItem], embeddings: np.ndarray, settings: IndexSettings | None = None,
                 use_gpu: bool = True) -> None:
        if len(items) != len(embeddings):
            raise ValueError(f"{len(items)} benchmark items but {len(embeddings)} embeddings")
        self.items = list(items)
        self.settings = settings = settings or IndexSettings()
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        texts = [item.text for item in self.items]
        self.boilerplate = Boilerplate(texts, settings.boilerplate_words, settings.boilerplate_items,
                                       settings.stock_phrases)
        self.ngrams: dict[str, list[int]] = defaultdict(list)
        self.short_lengths: set[int] = set()
        for index, text in enumerate(texts):
            for gram in dict.fromkeys(self._item_ngrams(text)):
                self.ngrams[gram].append(index)
        self.fingerprints = FingerprintIndex(texts)
        index = faiss.IndexFlatIP(self.embeddings.shape[1])
        index.add(self.embeddings)
        self.on_gpu = use_gpu and hasattr(faiss, "index_cpu_to_all_gpus") and faiss.get_num_gpus() > 0
        self.faiss = faiss.index_cpu_to_all_gpus(index) if self.on_gpu else index

    def digest(self) -> str:
        digest = hashlib.sha256()
        for item in self.items:
            digest.update(f"{item.benchmark}\x00{item.item_id}\x00{item.text}\x01".encode())
        return digest.hexdigest()[:16]

    def content_ngrams(self, text: str, lengths: Iterable[int] = ()) -> list[str]:
        """Word n-grams of `text` once its boilerplate words are taken out, and its runs of each of `lengths` words."""
        words = self.boilerplate.content_words(text)
        return [" ".join(words[i:i + n]) for n in (self.settings.ngram_words, *lengths)
                for i in range(len(words) - n + 1)]

    def _item_ngrams(self, text: str) -> list[str]:
        """An item's content n-grams; an item with fewer content words than that (but SHORT_ITEM_WORDS or more)
        is one gram of all of them, so that a query quoting a short problem whole still matches."""
        grams = self.content_ngrams(text)
        words = self.boilerplate.content_words(text)
        if not grams and len(words) >= SHORT_ITEM_WORDS:
            self.short_lengths.add(len(words))
            return [" ".join(words)]
        return grams

    def nearest(self, vectors: np.ndarray, top_k: int) -> list[list[int]]:
        """For each vector, its FAISS top_k items."""
        if len(vectors) == 0:
            return []
        _, neighbours = self.faiss.search(np.ascontiguousarray(vectors, dtype=np.float32), min(top_k, len(self.items)))
        return [[int(item) for item in row if item >= 0] for row in neighbours]

    def shared_ngrams(self, text: str) -> dict[int, tuple[int, str]]:
        """Items sharing a content n-gram with `text`: item -> (distinct shared n-grams, the first of them)."""
        found: dict[int, tuple[int, str]] = {}
        for gram in dict.fromkeys(self.content_ngrams(text, sorted(self.short_lengths))):
            for item in self.ngrams.get(gram, ()):
                count, first = found.get(item, (0, gram))
                found[item] = (count + 1, first)
        return found

    def candidates(self, row: int, text: str, vector: np.ndarray, proposed: Sequence[int]) -> list[Candidate]:
        """Evidence for every item proposed by FAISS, by a shared content n-gram or by the fingerprint index."""
        tokens = fingerprint(text)
        grams = self.shared_ngrams(text)
        by_print = self.fingerprints.matches(tokens, FINGERPRINT_PROPOSAL)
        exact = {item: float(np.dot(vector.astype(np.float64), self.embeddings[item].astype(np.float64)))
                 for item in {*proposed, *grams, *by_print}}
        found = []
        for item in sorted(exact):
            comparison = self.fingerprints.compare(tokens, item)
            count, gram = grams.get(item, (0, None))
            found.append(Candidate(row, item, round(exact[item], 6), gram, count, round(comparison.numbers, 6),
                                   round(comparison.content, 6), round(comparison.reverse, 6),
                                   round(comparison.info, 4), comparison.rare,
                                   proposed.index(item) if item in proposed else None, comparison.shared))
        return found


def find_candidates(encoder: object, index: BenchmarkIndex, texts: Sequence[str], batch_size: int, top_k: int,
                    rank: int = 0, world_size: int = 1) -> list[Candidate]:
    """This rank's share of the candidates of `texts`: its length-sorted batches embedded and searched, and each of
    its texts' n-gram and fingerprint proposals; `query_index` indexes `texts`."""
    mine = batch_plan(texts, batch_size)[rank::world_size]
    rows = np.concatenate(mine) if mine else np.zeros(0, dtype=np.int64)
    vectors = encode_batches(encoder, texts, mine, progress=rank == 0)  # type: ignore[arg-type]
    starts = np.cumsum([0] + [len(batch) for batch in mine])
    proposals = [p for start, end in itertools.pairwise(starts) for p in index.nearest(vectors[start:end], top_k)]
    found: list[Candidate] = []
    for position, (row, proposed) in enumerate(zip(rows.tolist(), proposals)):
        found += index.candidates(row, texts[row], vectors[position], proposed)
    return found
