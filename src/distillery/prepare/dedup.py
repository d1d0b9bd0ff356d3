"""`dedup` (exact) and `near_dedup` (MinHash LSH): corpus-wide duplicate removal in two passes.

scan: every shard writes a summary of its queries (text hashes, or MinHash signatures and band keys) under the
stage's global directory. merge: one task groups duplicates across all shards and picks the survivor of each group
deterministically (the smallest query id), then writes, per shard, the keys to drop and why. process: every shard
drops exactly those. The result depends only on the corpus, never on the shard count or the order of tasks.
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator

from distillery.schema.records import Query, normalise_text
from distillery.core.stage import ConfigT, Item, Outcome, ShardContext, StageConfig, TwoPassStage, register
from distillery.core.store import atomic_write, read_json, write_json
from distillery.prepare.minhash import (MinHasher, band_keys, bucket_pairs, components, estimated_jaccard,
                                       unique_pairs, valid_rows)


def dedup_text(query: Query) -> str:
    """What two queries must share to be duplicates: the normalised text of every non-assistant turn."""
    return "\n".join(f"{m.role}: {normalise_text(m.content)}" for m in query.messages if m.role != "assistant")


def invalid_reason(item: Item) -> str | None:
    """Why an item is not a usable query (quarantined by `process`, skipped by `scan`), or None."""
    if item.record is None:
        return f"unreadable input: {item.problem}"
    try:
        query = Query.model_validate(item.record)
    except ValidationError as error:
        return f"invalid query: {error.errors()[0]['msg']}"
    if not any(m.role == "user" for m in query.messages):
        return "invalid query: no user message"
    return None


def parse_items(items: Iterable[Item]) -> Iterator[tuple[Item, Query]]:
    """The items that are usable queries, parsed."""
    for item in items:
        if invalid_reason(item) is None:
            yield item, Query.model_validate(item.record)


def _drops_path(ctx: ShardContext, shard_index: int) -> Path:
    return ctx.summary_file("drops", shard_index)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_write(path, mode="wb") as out:
        np.savez(out, **arrays)


class DropListStage(TwoPassStage[ConfigT]):
    """Shared `process`: drop the keys that `merge` listed for this shard, keep the rest."""

    def write_drops(self, ctx: ShardContext, shards: np.ndarray, keys: np.ndarray, reasons: list[str]) -> None:
        by_shard: dict[int, dict[str, str]] = {index: {} for index in range(ctx.num_shards)}
        for shard, key, reason in zip(shards.tolist(), keys.tolist(), reasons):
            by_shard[shard][key] = reason
        for index, drops in by_shard.items():
            write_json(_drops_path(ctx, index), drops)

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        drops: dict[str, str] = read_json(_drops_path(ctx, ctx.shard_index))
        for item in items:
            problem = invalid_reason(item)
            if problem is not None:
                yield Outcome.quarantined(item, problem)
                continue
            reason = drops.get(item.key)
            yield Outcome.rejected(item, reason) if reason else Outcome.kept(item, item.record)  # type: ignore[arg-type]


class ExactDedupConfig(StageConfig):
    """No options: two queries are exact duplicates when their normalised non-assistant turns are equal."""


@register
class ExactDedupStage(DropListStage[ExactDedupConfig]):
    name = "dedup"
    Config = ExactDedupConfig

    def scan(self, items: Iterable[Item], ctx: ShardContext) -> None:
        keys, digests = [], []
        for item, query in parse_items(items):
            keys.append(item.key)
            digests.append(hashlib.sha256(dedup_text(query).encode()).digest()[:16])
        _save_npz(ctx.summary_file("exact", ctx.shard_index, ".npz"), keys=np.array(keys, dtype=str),
                  digests=np.array(digests, dtype="S16"))

    def merge(self, ctx: ShardContext) -> dict[str, Any]:
        """Holds each query's 16-byte digest; ids are read back only for digests that repeat."""
        paths = [ctx.summary_file("exact", index, ".npz") for index in range(ctx.num_shards)]
        parts = []
        for path in paths:
            with np.load(path) as part:
                parts.append(part["digests"])
        digests = np.concatenate(parts)
        offsets = np.r_[0, np.cumsum([len(part) for part in parts])]
        _, inverse, counts = np.unique(digests, return_inverse=True, return_counts=True)
        repeated = np.flatnonzero(counts[inverse] > 1)
        keys = _scan_rows(paths, offsets, repeated, "keys")
        shards = _shard_of(offsets, repeated)
        order, first, survivor = _survivors(digests[repeated], keys, shards)
        losers = order[~first]
        reasons = [f"exact_duplicate: same normalised text as {keys[s]}" for s in survivor[~first]]
        self.write_drops(ctx, shards[losers], keys[losers], reasons)
        ctx.logger.info("exact dedup: %d queries, %d duplicates dropped", offsets[-1], len(losers))
        return {"queries": int(offsets[-1]), "duplicates": len(losers), "groups": len(counts)}


class NearDedupConfig(StageConfig):
    ngram_size: int = Field(5, ge=1, description="Shingle length, in units of `unit`.")
    unit: Literal["char", "word"] = Field("char", description="Shingles of characters (robust for short queries) or words.")
    bands: int = Field(16, ge=1, description="LSH bands; more bands find pairs of lower similarity.")
    rows: int = Field(8, ge=1, description="Signature values per band; more rows make buckets stricter.")
    jaccard_threshold: float = Field(0.7, gt=0, le=1, description="Estimated Jaccard at or above which a candidate pair is a duplicate.")
    seed: int = Field(1, description="Seed of the MinHash permutations (every shard must use the same).")

    @model_validator(mode="after")
    def _enough(self) -> NearDedupConfig:
        if self.bands * self.rows < 16:
            raise ValueError(f"bands x rows = {self.bands * self.rows}: use at least 16 permutations")
        return self

    def hasher(self) -> MinHasher:
        return MinHasher(num_perm=self.bands * self.rows, ngram_size=self.ngram_size, unit=self.unit, seed=self.seed)


@register
class NearDedupStage(DropListStage[NearDedupConfig]):
    name = "near_dedup"
    Config = NearDedupConfig

    def scan(self, items: Iterable[Item], ctx: ShardContext) -> None:
        config = self.config
        keys, texts = [], []
        for item, query in parse_items(items):
            keys.append(item.key)
            texts.append(dedup_text(query))
        signatures = config.hasher().signatures(texts)
        _save_npz(ctx.summary_file("minhash", ctx.shard_index, ".npz"), keys=np.array(keys, dtype=str),
                  signatures=signatures)

    def merge(self, ctx: ShardContext) -> dict[str, Any]:
        """Holds a few bytes per query, not its signature: each band's keys are written to a column file shard by
        shard and paired one band at a time; signatures and ids are read back only for queries that pair."""
        config = self.config
        paths = [ctx.summary_file("minhash", index, ".npz") for index in range(ctx.num_shards)]
        with tempfile.TemporaryDirectory(prefix="distillery-bands-") as scratch:  # TMPDIR: node-local scratch
            columns = [Path(scratch) / f"band-{band:03d}.u64" for band in range(config.bands)]
            sizes, valid = _write_band_columns(paths, columns, config.bands, config.rows)
            found = [bucket_pairs(np.fromfile(column, dtype=np.uint64), valid) for column in columns]
        offsets = np.r_[0, np.cumsum(sizes)]
        left, right = unique_pairs([pair[0] for pair in found], [pair[1] for pair in found])
        members = np.unique(np.r_[left, right])
        signatures = _scan_rows(paths, offsets, members, "signatures")  # row i is the signature of members[i]
        at = functools.partial(np.searchsorted, members)
        similar = estimated_jaccard(signatures, at(left), at(right)) >= config.jaccard_threshold
        left, right = left[similar], right[similar]
        labels = components(int(offsets[-1]), left, right)
        grouped = np.flatnonzero(np.bincount(labels)[labels] > 1)
        keys = _scan_rows(paths, offsets, grouped, "keys")
        shards = _shard_of(offsets, grouped)
        order, first, survivor = _survivors(labels[grouped], keys, shards)
        losers, their_survivors = order[~first], survivor[~first]
        similarity = estimated_jaccard(signatures, at(grouped[losers]), at(grouped[their_survivors]))
        reasons = [f"near_duplicate: of {keys[s]} (estimated Jaccard {j:.2f})" for s, j in zip(their_survivors, similarity)]
        self.write_drops(ctx, shards[losers], keys[losers], reasons)
        ctx.logger.info("near dedup: %d queries, %d verified pairs, %d dropped", offsets[-1], len(left), len(losers))
        return {"queries": int(offsets[-1]), "verified_pairs": len(left), "duplicates": len(losers),
                "clusters_with_duplicates": len(np.unique(labels[grouped][losers]))}


def _write_band_columns(paths: list[Path], columns: list[Path], bands: int, rows: int) -> tuple[list[int], np.ndarray]:
    """Each shard's band keys appended to one file per band; (queries per shard, whether each has shingles)."""
    sizes, valid = [], []
    outs = [column.open("wb") for column in columns]
    try:
        for path in paths:
            with np.load(path) as part:
                signatures = part["signatures"]
            sizes.append(len(signatures))
            valid.append(valid_rows(signatures))
            keys = band_keys(signatures, bands, rows)
            for band, out in enumerate(outs):
                np.ascontiguousarray(keys[:, band]).tofile(out)
    finally:
        for out in outs:
            out.close()
    return sizes, np.concatenate(valid) if valid else np.zeros(0, bool)


def _shard_of(offsets: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The shard holding each global row number (`offsets`: each shard's first row, then the total)."""
    return np.searchsorted(offsets, index, side="right") - 1


def _survivors(group: np.ndarray, keys: np.ndarray, shards: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ordered by (group, id, shard); whether each is its group's first (the survivor: the smallest id); and
    each row's survivor."""
    order = np.lexsort((shards, keys, group))
    ordered = group[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]][:len(order)]  # none when nothing repeats
    return order, first, order[np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))]


def _scan_rows(paths: list[Path], offsets: np.ndarray, index: np.ndarray, name: str) -> np.ndarray:
    """Array `name` of the scans at the sorted global row numbers `index`, reading only the shards that hold them."""
    shard_of = _shard_of(offsets, index)
    parts = []
    for shard in np.unique(shard_of):
        with np.load(paths[shard]) as part:
            parts.append(part[name][index[shard_of == shard] - offsets[shard]])
    if parts:
        return np.concatenate(parts)
    with np.load(paths[0]) as part:
        return part[name][:0]
