"""Recall of the decontamination cascade per kind of copy on the labelled set, against the old single cut, per encoder.

The labelled set is tests/prepare/data/contamination_set.jsonl (tests/prepare/contamination_set.py says how it was
made): paraphrases, translations, light edits, formatting changes and wrapped copies of real benchmark items, the
items' wording with other numbers (template reuse), and fresh problems sharing boilerplate with the benchmarks. The
index holds every packaged benchmark (AIME 2024/2025, MATH-500, LiveCodeBench, IFEval). For each encoder, in one run:
- benchmark items embedded per second (the long LiveCodeBench texts included);
- `cascade`: the stage's rules with their defaults (no judge): a query is removed when a rule finds it contaminated;
- `baseline`: the old cut, cosine >= threshold or any shared 13-gram (no boilerplate, no fingerprint);
- `top-k`: share of copies whose source item is among the FAISS top-k (what the judge could ever see).
Prints, per kind, the share removed (recall for copies, false removals for the rest), whether the audit names the
right item, and the rows the cascade gets wrong.

    python benchmarks/bench_contamination_recall.py [--models default PATH ...] [--cache DIR] [--top-k 10]
"""

from __future__ import annotations

import argparse
import collections
import logging
import time
from pathlib import Path

import numpy as np

from distillery.data import benchmarks_dir
from distillery.prepare.benchsets import BUILTIN, BenchmarkSource, load_benchmarks
from distillery.prepare.cascade import findings_by_query
from distillery.prepare.contamination import BenchmarkIndex, IndexSettings, find_candidates
from distillery.prepare.decontaminate import DecontaminateConfig
from distillery.prepare.embed import batch_plan, encode_batches, load_encoder
from distillery.testing import contamination_set

LABELLED_SET = Path(__file__).resolve().parents[1] / "tests" / "prepare" / "data" / "contamination_set.jsonl"

logger = logging.getLogger("bench_contamination_recall")


def embed_items(encoder: object, texts: list[str], batch_size: int, cache: Path | None) -> tuple[np.ndarray, float]:
    """Embeddings of the benchmark texts and texts/s (nan when read from the cache)."""
    if cache is not None and cache.exists():
        return np.load(cache), float("nan")
    plan = batch_plan(texts, batch_size)
    started = time.perf_counter()
    vectors = np.empty((len(texts), encoder.get_embedding_dimension()), dtype=np.float32)  # type: ignore[attr-defined]
    vectors[np.concatenate(plan)] = encode_batches(encoder, texts, plan)  # type: ignore[arg-type]
    rate = len(texts) / (time.perf_counter() - started)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, vectors)
    return vectors, rate


def evaluate(model: str, args: argparse.Namespace, rows: list[contamination_set.Row]) -> None:
    config = DecontaminateConfig(device=args.device, top_k=args.top_k, model=None if model == "default" else model)
    encoder = load_encoder(config.model, config.device)
    items = load_benchmarks([BenchmarkSource(name=name) for name in BUILTIN], args.benchmarks)
    cache = args.cache / f"{Path(model).name}-{len(items)}.npy" if args.cache else None
    vectors, rate = embed_items(encoder, [item.text for item in items], config.batch_size, cache)
    ids = {(item.benchmark, item.item_id): index for index, item in enumerate(items)}
    texts = [row.text for row in rows]
    cascade = BenchmarkIndex(items, vectors, config.index_settings())
    found = find_candidates(encoder, cascade, texts, config.batch_size, config.top_k)
    plain = BenchmarkIndex(items, vectors, IndexSettings(config.ngram_words, config.boilerplate_words, 10**9, ()))
    old = find_candidates(encoder, plain, texts, config.batch_size, config.top_k)
    rules = config.rules()
    table = findings_by_query(found, rules)
    removed, reuse = table["contaminated"], table["template_reuse"]
    baseline = {c.query_index for c in old if c.ngram_count or c.similarity >= config.threshold}
    nearest = {row: set(items) for row, items in enumerate(cascade.nearest(
        encode_batches(encoder, texts, [np.arange(len(texts))]), config.top_k))}
    logger.info("\n== %s: %s benchmark items embedded at %.1f texts/s", model, len(items), rate)
    logger.info("%-18s %4s %8s %8s %8s %7s %8s", "kind", "rows", "cascade", "baseline", "top-k", "named", "reuse")
    by_kind: dict[str, list[int]] = collections.defaultdict(list)
    for position, row in enumerate(rows):
        by_kind[row.kind].append(position)
    for kind, positions in by_kind.items():
        source = {p: ids.get((rows[p].benchmark, rows[p].item_id)) for p in positions}
        has_source = source[positions[0]] is not None
        hit = np.mean([source[p] in nearest[p] for p in positions]) if has_source else float("nan")
        named = np.mean([source[p] in removed[p] for p in positions]) if has_source else float("nan")
        logger.info("%-18s %4d %8.3f %8.3f %8.3f %7.3f %8.3f", kind, len(positions),
                    np.mean([bool(removed[p]) for p in positions]), np.mean([p in baseline for p in positions]), hit,
                    named, np.mean([bool(reuse[p]) and not removed[p] for p in positions]))
    copies = [p for p, row in enumerate(rows) if row.contaminated]
    clean = [p for p, row in enumerate(rows) if not row.contaminated]
    logger.info("recall on %d copies: cascade %.3f, baseline %.3f; false removals of %d clean rows: cascade %d, "
                "baseline %d", len(copies), np.mean([bool(removed[p]) for p in copies]),
                np.mean([p in baseline for p in copies]), len(clean), sum(bool(removed[p]) for p in clean),
                sum(p in baseline for p in clean))
    for position, row in enumerate(rows):
        if row.contaminated != bool(removed[position]):
            evidence = [c for c in found if c.query_index == position]
            logger.info("  wrong: %s %s %s -> %s %s", row.kind, row.lang, row.item_id,
                        sorted(items[i].item_id for i in removed[position]),
                        [(items[c.item_index].item_id, c.similarity, c.ngram_count, c.numbers, c.content, c.reverse,
                          c.info, c.rare) for c in evidence if c.item_index in {ids.get((row.benchmark, row.item_id)),
                                                                                 *removed[position]}])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["default"],
                        help="'default' (bundled all-MiniLM-L6-v2) and/or sentence-transformers folders")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--cache", type=Path, default=None, help="folder to keep benchmark embeddings in between runs")
    parser.add_argument("--benchmarks", type=Path, default=benchmarks_dir())
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = contamination_set.load(LABELLED_SET)
    for model in args.models:
        evaluate(model, args, rows)


if __name__ == "__main__":
    main()
