"""`decontaminate`: drop queries that are (near) copies of evaluation benchmark items, with an audit of every match.

scan (per shard, optionally as MPI ranks): embed the shard's queries in fixed length-sorted batches split among the
ranks, search them against the replicated benchmark index, check exact word n-gram overlap, gather on rank 0, and
there ask the LLM judge about grey-zone pairs. merge: write `<stage>/audit.jsonl` (one row per match: query id,
benchmark, item id, cosine or n-gram, judge verdict) and `<stage>/summary.json` (per benchmark), and the drop list of
each shard. process: drop what merge listed.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from distillery.core.recipe import InputPath, OutputPath
from distillery.core.stage import Item, ShardContext, StageConfig, register
from distillery.core.store import atomic_write, iter_jsonl, write_json, write_jsonl
from distillery.prepare.benchsets import BUILTIN, BenchmarkSource, load_benchmarks
from distillery.prepare.contamination import BenchmarkIndex, Candidate, find_candidates
from distillery.prepare.dedup import DropListStage, parse_items
from distillery.prepare.embed import DEFAULT_MODEL, batch_plan, encode_batches, load_encoder
from distillery.prepare.judge import JudgeConfig, build_judge, judge_pairs
from distillery.prepare.ranks import communicator


class DecontaminateConfig(StageConfig):
    benchmarks: list[BenchmarkSource] = Field(
        default_factory=lambda: [BenchmarkSource(name=name) for name in BUILTIN],
        description="Benchmarks to match against (default: aime24, aime25, math500, livecodebench, ifeval).")
    benchmarks_dir: InputPath | None = Field(
        None, description="Folder of the local benchmark files; default $DISTILLERY_BENCHMARKS, else the packaged copy.")
    model: str | None = Field(None, description="Sentence-transformers model folder or hub id (BAAI/bge-m3 on clusters); None: bundled all-MiniLM-L6-v2.")
    device: str = Field("auto", description="Embedding device: auto (cuda when present), cpu or cuda.")
    batch_size: int = Field(64, ge=1, description="Texts per embedding batch (batches, not texts, are split among ranks).")
    threshold: float = Field(0.9, gt=0, le=1, description="Cosine at or above which a query is dropped.")
    top_k: int = Field(10, ge=1, description="Nearest benchmark items examined per query.")
    ngram_words: int = Field(13, ge=1, description="A shared run of this many words with a benchmark item drops the query.")
    judge: JudgeConfig | None = Field(None, description="LLM second check for the grey zone; None disables it.")
    grey_threshold: float | None = Field(None, gt=0, le=1, description="Lowest cosine sent to the judge (e.g. 0.75); needs `judge`.")
    cache_dir: OutputPath | None = Field(None, description="Where benchmark embeddings are cached; default the stage's global directory.")

    @model_validator(mode="after")
    def _grey_zone(self) -> DecontaminateConfig:
        if (self.judge is None) != (self.grey_threshold is None):
            raise ValueError("`judge` and `grey_threshold` go together: set both for the second check, or neither")
        if self.grey_threshold is not None and self.grey_threshold >= self.threshold:
            raise ValueError(f"grey_threshold {self.grey_threshold} must be below threshold {self.threshold}")
        return self


def _matches_path(ctx: ShardContext, shard_index: int) -> Path:
    return ctx.global_dir / f"matches-{shard_index:05d}.jsonl"


@register
class DecontaminateStage(DropListStage):
    name = "decontaminate"
    Config = DecontaminateConfig
    kind = "gpu"

    @property
    def cfg(self) -> DecontaminateConfig:
        return self.config  # type: ignore[return-value]

    def _benchmark_index(self, ctx: ShardContext, encoder: Any, comm: Any | None) -> BenchmarkIndex:
        """Rank 0 embeds the benchmarks (or reads the cache) and broadcasts the vectors: the index is replicated."""
        items = load_benchmarks(self.cfg.benchmarks, self.cfg.benchmarks_dir)
        embeddings = None
        if ctx.rank == 0:
            texts = [item.text for item in items]
            key = hashlib.sha256(json.dumps([self.cfg.model or DEFAULT_MODEL, self.cfg.batch_size,
                                             [(i.benchmark, i.item_id, i.text) for i in items]]).encode()).hexdigest()[:16]
            cache = (self.cfg.cache_dir or ctx.global_dir) / f"benchmarks-{key}.npy"
            if cache.exists():
                embeddings = np.load(cache)
            else:
                ctx.logger.info("embedding %d benchmark items", len(items))
                plan = batch_plan(texts, self.cfg.batch_size)
                embeddings = np.empty((len(texts), encoder.get_embedding_dimension()), dtype=np.float32)
                embeddings[np.concatenate(plan)] = encode_batches(encoder, texts, plan, progress=True)
                with atomic_write(cache, mode="wb") as out:
                    np.save(out, embeddings)
        if comm is not None:
            embeddings = comm.bcast(embeddings, root=0)
        return BenchmarkIndex(items, embeddings, self.cfg.ngram_words)

    def scan(self, items: Iterable[Item], ctx: ShardContext) -> None:
        comm = communicator(ctx)
        keys, texts = [], []
        for item, query in parse_items(items):
            keys.append(item.key)
            texts.append(query.prompt)
        encoder = load_encoder(self.cfg.model, self.cfg.device)
        index = self._benchmark_index(ctx, encoder, comm)
        found = find_candidates(encoder, index, texts, self.cfg.batch_size, self.cfg.top_k,
                                self.cfg.grey_threshold or self.cfg.threshold, ctx.rank, ctx.world_size)
        gathered = comm.gather(found, root=0) if comm is not None else [found]
        if ctx.rank == 0:
            candidates = [c for part in gathered for c in part]
            write_jsonl(_matches_path(ctx, ctx.shard_index), self._decide(candidates, keys, texts, index, ctx))
        if comm is not None:
            comm.Barrier()

    def _decide(self, candidates: list[Candidate], keys: list[str], texts: list[str], index: BenchmarkIndex,
                ctx: ShardContext) -> list[dict[str, Any]]:
        """Audit rows: every match at or above the threshold, every n-gram hit, and each judged grey-zone pair."""
        by_query: dict[int, list[Candidate]] = defaultdict(list)
        for candidate in candidates:
            by_query[candidate.query_index].append(candidate)
        rows: list[dict[str, Any]] = []
        grey: list[tuple[int, Candidate]] = []
        for query_index in sorted(by_query, key=lambda q: keys[q]):
            found = sorted(by_query[query_index], key=lambda c: (c.ngram is not None, -np.nan_to_num(c.similarity), c.item_index))
            sure = [c for c in found if c.ngram is not None or c.similarity >= self.cfg.threshold]
            for candidate in sure:
                rows.append(self._row(keys[query_index], candidate, index, "ngram" if candidate.ngram else "embedding"))
            if not sure:
                grey.append((query_index, found[0]))
        if grey:
            judge = build_judge(self.cfg.judge)  # type: ignore[arg-type]
            try:
                verdicts = judge_pairs(judge, [(texts[q], index.items[c.item_index].text) for q, c in grey], self.cfg.judge)  # type: ignore[arg-type]
            finally:
                judge.close()
            for (query_index, candidate), (verdict, reply) in zip(grey, verdicts):
                rows.append(self._row(keys[query_index], candidate, index, "judge", verdict, reply))
        ctx.logger.info("decontaminate shard %d: %d queries, %d audit rows, %d judged", ctx.shard_index, len(keys), len(rows), len(grey))
        return rows

    @staticmethod
    def _row(key: str, candidate: Candidate, index: BenchmarkIndex, method: str, verdict: str | None = None,
             reply: str | None = None) -> dict[str, Any]:
        item = index.items[candidate.item_index]
        return {"query_id": key, "benchmark": item.benchmark, "item_id": item.item_id, "method": method,
                "similarity": None if np.isnan(candidate.similarity) else candidate.similarity, "ngram": candidate.ngram,
                "judge_verdict": verdict, "judge_reply": reply, "dropped": method != "judge" or verdict == "same"}

    def merge(self, ctx: ShardContext) -> dict[str, Any]:
        audit = [dict(row, shard=shard) for shard in range(ctx.num_shards) for row in iter_jsonl(_matches_path(ctx, shard))]
        audit.sort(key=lambda r: (r["query_id"], r["method"], r["benchmark"], r["item_id"]))
        stage_dir = ctx.run.stage_dir(ctx.stage, ctx.teacher)
        write_jsonl(stage_dir / "audit.jsonl", audit)
        reasons: dict[str, tuple[int, str]] = {}
        for row in audit:
            if row["dropped"] and row["query_id"] not in reasons:
                evidence = f"cosine {row['similarity']:.4f}" if row["method"] != "ngram" else f"shared {self.cfg.ngram_words}-gram {row['ngram']!r}"
                reasons[row["query_id"]] = (row["shard"], f"contaminated: {row['benchmark']} item {row['item_id']} by "
                                                          f"{row['method']} ({evidence})")
        keys = list(reasons)
        self.write_drops(ctx, np.array([reasons[k][0] for k in keys], dtype=np.int64), np.array(keys, dtype=str),
                         [reasons[k][1] for k in keys])
        summary = self._summary(audit, reasons)
        write_json(stage_dir / "summary.json", summary)
        ctx.logger.info("decontaminate: %d queries dropped; %s", len(reasons), summary["benchmarks"])
        return {"dropped": len(reasons), "audit_rows": len(audit)}

    def _summary(self, audit: list[dict[str, Any]], reasons: dict[str, tuple[int, str]]) -> dict[str, Any]:
        per: dict[str, dict[str, Any]] = {s.name: {"dropped_queries": set(), "matches": Counter(), "judge": Counter()}
                                          for s in self.cfg.benchmarks}
        for row in audit:
            entry = per[row["benchmark"]]
            entry["matches"][row["method"]] += 1
            if row["method"] == "judge":
                entry["judge"][row["judge_verdict"]] += 1
            if row["dropped"] and reasons[row["query_id"]][1].startswith(f"contaminated: {row['benchmark']} "):
                entry["dropped_queries"].add(row["query_id"])
        return {
            "model": self.cfg.model or DEFAULT_MODEL, "threshold": self.cfg.threshold, "grey_threshold": self.cfg.grey_threshold,
            "ngram_words": self.cfg.ngram_words, "dropped_queries": len(reasons),
            "benchmarks": {name: {"dropped_queries": len(e["dropped_queries"]), "matches": dict(sorted(e["matches"].items())),
                                  "judge_verdicts": dict(sorted(e["judge"].items()))} for name, e in per.items()},
        }
