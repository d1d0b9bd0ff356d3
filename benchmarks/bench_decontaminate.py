"""Decontamination throughput against a bare `SentenceTransformer.encode` of the same texts.

Queries are --queries texts drawn from the packaged benchmark files (half of them copies of MATH-500/AIME problems
with a few words changed, half LiveCodeBench and IFEval prompts, so both long and short texts and real matches
occur). The benchmark index (AIME 2024/2025 and MATH-500, by default) is built first and not timed. Timed, on the
same loaded model and texts, alternating --repeats times and keeping the fastest of each:
- bare: `model.encode(texts, batch_size, normalize_embeddings=True)`;
- ours: `find_candidates` (the decontaminate stage's scan: fixed length-sorted batches, FAISS search, exact
  rescoring, content 13-grams without boilerplate, fingerprint proposals and comparisons).
Prints texts/s of both and the ratio ours / bare (1.0 = no overhead over embedding). Compare ratios within a run.

    python benchmarks/bench_decontaminate.py [--queries 2000] [--batch-size 64] [--model PATH] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

import numpy as np

from distillery.data import benchmarks_dir
from distillery.prepare.benchsets import BenchmarkSource, load_benchmarks
from distillery.prepare.cascade import classify
from distillery.prepare.contamination import BenchmarkIndex, IndexSettings, find_candidates
from distillery.prepare.decontaminate import DecontaminateConfig
from distillery.prepare.embed import batch_plan, encode_batches, load_encoder

logger = logging.getLogger("bench_decontaminate")


def queries(benchmarks: Path, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    math = [json.loads(line)["problem"] for name in ("math500", "aime24", "aime25")
            for line in (benchmarks / name / f"{name}.jsonl").open()]
    other = [json.loads(line)["question"] for line in (benchmarks / "livecodebench" / "lcb_v5_public_tests.jsonl").open()]
    other += [json.loads(line)["prompt"] for line in (benchmarks / "ifeval" / "ifeval.jsonl").open()]
    texts = []
    for _ in range(count // 2):
        words = rng.choice(math).split()
        words[rng.randrange(len(words))] = "exactly"
        texts.append(" ".join(words))
    texts += [rng.choice(other) for _ in range(count - len(texts))]
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default=None, help="sentence-transformers model; default the bundled all-MiniLM-L6-v2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--benchmarks", type=Path, default=benchmarks_dir())
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    encoder = load_encoder(args.model, args.device)
    items = load_benchmarks([BenchmarkSource(name=n) for n in ("aime24", "aime25", "math500")], args.benchmarks)
    bench_texts = [item.text for item in items]
    plan = batch_plan(bench_texts, args.batch_size)
    embeddings = np.empty((len(items), encoder.get_embedding_dimension()), dtype=np.float32)
    started = time.perf_counter()
    embeddings[np.concatenate(plan)] = encode_batches(encoder, bench_texts, plan)
    index = BenchmarkIndex(items, embeddings, IndexSettings())
    logger.info("benchmark index: %d items in %.1f s (untimed below); device %s", len(items), time.perf_counter() - started,
                encoder.device)
    texts = queries(args.benchmarks, args.queries, seed=0)
    rules = DecontaminateConfig().rules()
    best = {"bare": float("inf"), "ours": float("inf")}
    matched = 0
    for _ in range(args.repeats):
        started = time.perf_counter()
        encoder.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False)
        best["bare"] = min(best["bare"], time.perf_counter() - started)
        started = time.perf_counter()
        found = find_candidates(encoder, index, texts, args.batch_size, top_k=10)
        best["ours"] = min(best["ours"], time.perf_counter() - started)
        matched = len({c.query_index for c in found if classify(c, rules) is not None})
    logger.info("%d queries, mean %.0f characters; %d with a finding (cascade defaults, no judge)", len(texts),
                np.mean([len(t) for t in texts]), matched)
    for name, seconds in best.items():
        logger.info("%-5s %7.2f s  %7.0f texts/s", name, seconds, len(texts) / seconds)
    logger.info("throughput ratio ours / bare encode: %.3f", best["bare"] / best["ours"])


if __name__ == "__main__":
    main()
