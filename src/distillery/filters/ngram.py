"""The `ngram` filter: drop traces that contain an n-gram repeated too often across the teacher's corpus.

The paper drops responses containing a 20-gram seen more than 20 times: loops, boilerplate and templated
filler. Three phases (see `ngram_counts` for the memory bound):
- scan (per shard): hash every n-gram of every accepted response, write the shard's sorted counts to
  `_global/counts/shard-NNNNN.bin`;
- merge (once): sum every shard's counts bucket by bucket, keep the hashes above the limit in
  `_global/frequent.bin`;
- process (per shard): reject each trace with a frequent n-gram, naming the offending n-grams and their
  corpus counts in the rejected record (`metadata.ngram_hits`) and the manifest (`stats.offending_ngrams`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from functools import cached_property
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from distillery.schema.records import Trace
from distillery.core.stage import Item, Outcome, ShardContext, StageConfig, TwoPassStage, register
from distillery.filters.ngram_counts import (
    COUNT_DTYPE,
    SpillingCounter,
    WordHasher,
    lookup,
    merge_counts,
    ngram_hashes,
    token_hashes,
    words,
)
from distillery.filters.traces import accepted_traces, screen_traces
from distillery.models import load_tokenizer


class NgramConfig(StageConfig):
    n: int = Field(20, ge=1, description="N-gram length in units.")
    limit: int = Field(20, ge=1, description="Drop traces containing an n-gram counted more than this many times.")
    unit: Literal["word", "token"] = Field("word", description="word: letter/digit runs of the normalised text; token: tokenizer ids.")
    tokenizer: str = Field("smollm2", description="Tokenizer for unit=token: a model folder or hub id, or 'smollm2' (the embedded model).")
    count: Literal["occurrences", "traces"] = Field("occurrences", description="Count every occurrence, or each n-gram once per trace.")
    num_buckets: int = Field(256, ge=1, description="Hash ranges merged one at a time (a power of two); more when a bucket "
                                                    "would hold over 4M entries, so a merge holds at most ~64 MiB.")
    spill_at: int = Field(16_000_000, ge=1, description="N-gram hashes a scan holds in memory before spilling a sorted run to disk.")
    show_ngrams: int = Field(5, ge=1, description="Offending n-grams named per rejected trace.")

    @field_validator("num_buckets")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError("must be a power of two")
        return value


@register
class NgramStage(TwoPassStage[NgramConfig]):
    name = "ngram"
    Config = NgramConfig
    per_teacher = True
    config: NgramConfig

    @property
    def tokenizer(self) -> Any:
        return load_tokenizer(self.config.tokenizer)

    @cached_property
    def _word_hasher(self) -> WordHasher:
        return WordHasher()

    def units(self, trace: Trace) -> tuple[list[Any], np.ndarray]:
        """The response's units (words or token ids) and their 64-bit hashes."""
        if self.config.unit == "word":
            units: list[Any] = words(trace.response)
            return units, self._word_hasher(units)
        ids = self.tokenizer(trace.response, add_special_tokens=False)["input_ids"]
        return ids, token_hashes(ids)

    def render(self, units: list[Any], start: int) -> str:
        window = units[start : start + self.config.n]
        return " ".join(window) if self.config.unit == "word" else self.tokenizer.decode(window)

    def trace_ngrams(self, trace: Trace) -> tuple[list[Any], np.ndarray]:
        units, hashes = self.units(trace)
        return units, ngram_hashes(hashes, self.config.n)

    def scan(self, items: Iterable[Item], ctx: ShardContext) -> None:
        runs_dir = ctx.work_dir / "ngram-runs"
        for stale in runs_dir.glob("run-*.bin"):
            stale.unlink()
        counter = SpillingCounter(runs_dir, self.config.spill_at)
        for _, trace in accepted_traces(items):
            hashes = self.trace_ngrams(trace)[1]
            counter.add(np.unique(hashes) if self.config.count == "traces" else hashes)
        distinct = counter.finish(ctx.summary_file("counts", ctx.shard_index, ".bin"), self.config.num_buckets)
        ctx.logger.info("ngram scan: %d n-grams, %d distinct, %d spilled runs", counter.total, distinct, len(counter.runs))

    def merge(self, ctx: ShardContext) -> dict[str, Any]:
        shards = ctx.summary_files("counts")
        distinct, frequent = merge_counts(shards, ctx.step_file("frequent.bin"), self.config.num_buckets,
                                          min_count=self.config.limit + 1)
        ctx.logger.info("ngram merge: %d distinct n-grams over %d shards, %d above the limit", distinct, len(shards), frequent)
        return {"distinct_ngrams": distinct, "frequent_ngrams": frequent}

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        frequent = np.fromfile(ctx.step_file("frequent.bin"), dtype=COUNT_DTYPE)
        offending: Counter[str] = Counter()  # offending n-gram -> its corpus count
        for entry in screen_traces(items):
            if isinstance(entry, Outcome):
                yield entry
                continue
            item, trace = entry
            units, hashes = self.trace_ngrams(trace)
            counts = lookup(frequent, hashes)
            hit_positions = np.flatnonzero(counts)
            if hit_positions.size == 0:
                yield Outcome.kept(item, item.record or {})
                continue
            _, first = np.unique(hashes[hit_positions], return_index=True)
            hits = [{"ngram": self.render(units, int(hit_positions[i])), "count": int(counts[hit_positions[i]])}
                    for i in sorted(first)]
            hits.sort(key=lambda hit: -hit["count"])
            for hit in hits:
                offending[hit["ngram"]] = hit["count"]
            trace.metadata["ngram_hits"] = hits[: self.config.show_ngrams]
            reason = (f"{len(hits)} distinct {self.config.n}-gram(s) seen more than {self.config.limit} times in the "
                      f"corpus, e.g. {hits[0]['ngram']!r} ({hits[0]['count']}x)")
            yield Outcome.rejected(item, reason, trace.model_dump(mode="json"))
        ctx.stats["offending_ngrams"] = dict(offending.most_common(20))
