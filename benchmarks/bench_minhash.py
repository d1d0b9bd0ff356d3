"""MinHash near-dedup throughput and recall: our numpy + numba MinHash and LSH against datasketch MinHashLSH.

Both sides get the same texts and parameters: character 5-gram shingles of normalised text, `bands x rows`
permutations, LSH with (bands, rows), candidate pairs kept when their estimated Jaccard is >= the threshold, and
clusters by union-find. The corpus is --texts synthetic queries built from the words of the packaged benchmark files,
of which --dup-share are near copies of another text with about 5% of the words edited (ground truth). Reported:
seconds, texts/s, the speed ratio, the recall of planted copies and the number of unrelated texts merged, for both.

    python benchmarks/bench_minhash.py [--texts 100000] [--bands 16] [--rows 8] [--threshold 0.7] \
        [--benchmarks DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import time
from pathlib import Path

import numpy as np
from datasketch import MinHash, MinHashLSH
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from distillery.schema.records import normalise_text
from distillery.data import benchmarks_dir
from distillery.prepare.minhash import MinHasher, band_keys, cluster

logger = logging.getLogger("bench_minhash")
FILLERS = ("please", "now", "carefully", "exactly", "also", "then", "here", "below")


def vocabulary(benchmarks: Path) -> list[str]:
    words: list[str] = []
    for path in sorted(benchmarks.glob("*/*.jsonl")):
        for line in path.open(encoding="utf-8"):
            row = json.loads(line)
            words += re.findall(r"[A-Za-z]+", row.get("problem") or row.get("question") or row.get("prompt") or "")
    return words


def corpus(words: list[str], texts: int, dup_share: float, seed: int) -> tuple[list[str], np.ndarray]:
    """Texts and, for each, the index of the text it copies (-1 for an original)."""
    rng = random.Random(seed)
    originals = int(texts * (1 - dup_share))
    out = [" ".join(rng.choices(words, k=rng.randint(15, 60))) for _ in range(originals)]
    source = [-1] * originals
    for _ in range(texts - originals):
        base = rng.randrange(originals)
        copy = out[base].split()
        for _ in range(max(1, round(0.05 * len(copy)))):
            position = rng.randrange(len(copy))
            kind = rng.choice(["substitute", "delete", "insert"])
            if kind == "substitute":
                copy[position] = rng.choice(FILLERS)
            elif kind == "delete" and len(copy) > 3:
                del copy[position]
            else:
                copy.insert(position, rng.choice(FILLERS))
        out.append(" ".join(copy))
        source.append(base)
    return out, np.array(source)


def score(labels: np.ndarray, source: np.ndarray) -> tuple[float, int]:
    """(recall of planted copies, texts merged into a cluster holding no text of their own family)."""
    copies = np.flatnonzero(source >= 0)
    recall = float(np.mean(labels[copies] == labels[source[copies]]))
    family = np.where(source >= 0, source, np.arange(len(source)))
    wrong = 0
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) > 1:
            families, counts = np.unique(family[members], return_counts=True)
            wrong += int(len(members) - counts.max())
    return recall, wrong


def ours(texts: list[str], bands: int, rows: int, threshold: float) -> np.ndarray:
    hasher = MinHasher(num_perm=bands * rows, ngram_size=5)
    signatures = hasher.signatures(texts)
    labels, _, _ = cluster(signatures, band_keys(signatures, bands, rows), threshold)
    return labels


def datasketch_labels(texts: list[str], bands: int, rows: int, threshold: float) -> np.ndarray:
    shingles = []
    for text in texts:
        normal = normalise_text(text)
        shingles.append({normal[i:i + 5].encode() for i in range(max(1, len(normal) - 4))})
    hashes = MinHash.bulk(shingles, num_perm=bands * rows, seed=1)
    lsh = MinHashLSH(num_perm=bands * rows, params=(bands, rows))
    for index, minhash in enumerate(tqdm(hashes, desc="datasketch insert", unit="text")):
        lsh.insert(index, minhash)
    left, right = [], []
    for index, minhash in enumerate(tqdm(hashes, desc="datasketch query", unit="text")):
        for other in lsh.query(minhash):
            if other > index and minhash.jaccard(hashes[other]) >= threshold:
                left.append(index)
                right.append(other)
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(len(texts), len(texts)))
    return connected_components(graph, directed=False)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--dup-share", type=float, default=0.1)
    parser.add_argument("--bands", type=int, default=16)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--benchmarks", type=Path, default=benchmarks_dir())
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    texts, source = corpus(vocabulary(args.benchmarks), args.texts, args.dup_share, args.seed)
    logger.info("%d texts (%d planted near copies), mean %.0f characters; bands x rows = %d x %d, threshold %.2f",
                len(texts), int((source >= 0).sum()), np.mean([len(t) for t in texts]), args.bands, args.rows, args.threshold)
    results = {}
    for name, method in (("ours (numba)", ours), ("datasketch", datasketch_labels)):
        started = time.perf_counter()
        labels = method(texts, args.bands, args.rows, args.threshold)
        seconds = time.perf_counter() - started
        recall, wrong = score(labels, source)
        results[name] = seconds
        logger.info("%-14s %8.1f s  %9.0f texts/s  recall %.4f  unrelated merged %d", name, seconds, len(texts) / seconds, recall, wrong)
    logger.info("speed ratio ours / datasketch: %.1fx", results["datasketch"] / results["ours (numba)"])


if __name__ == "__main__":
    main()
