"""Matching queries against benchmark items: embedding cosine through FAISS, and exact word n-gram overlap.

FAISS (a GPU index when faiss has GPUs, else exact CPU inner product) proposes the `top_k` nearest benchmark items
of each query; each proposal above the lowest threshold in play, less a small margin, is rescored as a float64 dot
product of the two stored vectors. Decisions therefore never depend on FAISS's batch-size-dependent float32
kernels, which is what lets a many-rank run reproduce a one-rank run exactly.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from distillery.core.records import normalise_text
from distillery.prepare.benchsets import BenchItem
from distillery.prepare.embed import batch_plan, encode_batches

_WORD = re.compile(r"\w+")
RESCORE_MARGIN = 0.02
"""FAISS float32 scores are within ~1e-6 of the exact ones; the margin only keeps borderline pairs in play."""


def word_ngrams(text: str, n: int) -> list[str]:
    words = _WORD.findall(normalise_text(text))
    return [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]


@dataclass(frozen=True)
class Candidate:
    """One (query, benchmark item) pair worth reporting: its cosine and/or a shared n-gram."""

    query_index: int
    item_index: int
    similarity: float
    ngram: str | None = None


class BenchmarkIndex:
    """Benchmark items with their unit embeddings (replicated on every rank) and their word n-grams."""

    def __init__(self, items: Sequence[BenchItem], embeddings: np.ndarray, ngram_words: int, use_gpu: bool = True) -> None:
        if len(items) != len(embeddings):
            raise ValueError(f"{len(items)} benchmark items but {len(embeddings)} embeddings")
        self.items = list(items)
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.ngram_words = ngram_words
        self.ngrams: dict[str, int] = {}
        for index, item in enumerate(self.items):
            for gram in word_ngrams(item.text, ngram_words):
                self.ngrams.setdefault(gram, index)
        index = faiss.IndexFlatIP(self.embeddings.shape[1])
        index.add(self.embeddings)
        self.on_gpu = use_gpu and hasattr(faiss, "index_cpu_to_all_gpus") and faiss.get_num_gpus() > 0
        self.faiss = faiss.index_cpu_to_all_gpus(index) if self.on_gpu else index

    def digest(self) -> str:
        digest = hashlib.sha256()
        for item in self.items:
            digest.update(f"{item.benchmark}\x00{item.item_id}\x00{item.text}\x01".encode())
        return digest.hexdigest()[:16]

    def search(self, vectors: np.ndarray, top_k: int, floor: float) -> list[Candidate]:
        """Pairs with exact cosine >= floor among each vector's top_k FAISS neighbours; query_index is the row."""
        if len(vectors) == 0:
            return []
        k = min(top_k, len(self.items))
        scores, neighbours = self.faiss.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        found = []
        for row, (row_scores, row_items) in enumerate(zip(scores, neighbours)):
            for score, item in zip(row_scores, row_items):
                if item < 0 or score < floor - RESCORE_MARGIN:
                    continue
                exact = float(np.dot(vectors[row].astype(np.float64), self.embeddings[item].astype(np.float64)))
                if exact >= floor:
                    found.append(Candidate(row, int(item), round(exact, 6)))
        return found

    def overlap(self, text: str) -> tuple[int, str] | None:
        """The first benchmark item sharing a word n-gram with `text`, and that n-gram."""
        for gram in word_ngrams(text, self.ngram_words):
            item = self.ngrams.get(gram)
            if item is not None:
                return item, gram
        return None


def find_candidates(encoder: object, index: BenchmarkIndex, texts: Sequence[str], batch_size: int, top_k: int,
                    floor: float, rank: int = 0, world_size: int = 1) -> list[Candidate]:
    """This rank's share of the matches of `texts`: its length-sorted batches embedded and searched (cosine >= floor),
    and its texts' n-gram overlaps; `query_index` indexes `texts`."""
    mine = batch_plan(texts, batch_size)[rank::world_size]
    rows = np.concatenate(mine) if mine else np.zeros(0, dtype=np.int64)
    vectors = encode_batches(encoder, texts, mine, progress=rank == 0)  # type: ignore[arg-type]
    found = [Candidate(int(rows[c.query_index]), c.item_index, c.similarity) for c in index.search(vectors, top_k, floor)]
    for row in rows.tolist():
        hit = index.overlap(texts[row])
        if hit is not None:
            found.append(Candidate(row, hit[0], float("nan"), hit[1]))
    return found
