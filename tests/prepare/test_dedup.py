"""Exact and MinHash near dedup through the real runner: labelled recall, no false removals, shard-count invariance."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest

from distillery.schema.records import make_query
from distillery.core.store import Manifest
from distillery.prepare.minhash import MinHasher, band_keys, cluster
from distillery.testing import labelled
from distillery.testing.prepare import (
    items_of,
    kept_ids,
    query_context,
    query_record,
    query_row,
    rejected,
    run_recipe,
    write_rows,
)

STEPS = {"clean": {}, "dedup": {}, "near_dedup": {}}


@pytest.fixture(scope="module")
def labelled_set(benchmarks_dir: Path) -> list[labelled.Labelled]:
    return labelled.build(benchmarks_dir)


def _ids(rows: list[labelled.Labelled]) -> list[str]:
    return [make_query(r.category, [{"role": "user", "content": r.text}]).id for r in rows]


@pytest.mark.slow
def test_labelled_set_recall_and_no_false_removal_across_shard_counts(tmp_path: Path, labelled_set: list[labelled.Labelled]) -> None:
    inputs = write_rows(tmp_path / "labelled.jsonl", (query_row(r.text, r.category) for r in labelled_set))
    three = run_recipe(tmp_path, "three", inputs, STEPS, num_shards=3)
    one = run_recipe(tmp_path, "one", inputs, STEPS, num_shards=1)
    assert kept_ids(three, "near_dedup") == kept_ids(one, "near_dedup")
    assert {**rejected(three, "dedup"), **rejected(three, "near_dedup")} == {**rejected(one, "dedup"), **rejected(one, "near_dedup")}

    ids = _ids(labelled_set)
    cleaned = set(kept_ids(three, "clean"))
    kept = set(kept_ids(three, "near_dedup"))
    exact, near = rejected(three, "dedup"), rejected(three, "near_dedup")
    parent = {loser: reason.split(" of ")[-1].split(" as ")[-1].split()[0] for loser, reason in {**exact, **near}.items()}

    def root(query_id: str) -> str:
        while query_id in parent:
            query_id = parent[query_id]
        return query_id

    caught = collections.defaultdict(list)
    groups = collections.defaultdict(set)
    for row, query_id in zip(labelled_set, ids):
        if row.base is None or query_id not in cleaned or ids[row.base] not in cleaned:
            continue  # dropped by clean (a picture it refers to) or merged by ingest (an edit that changed nothing)
        caught[row.kind].append(root(query_id) == root(ids[row.base]))
        groups[ids[row.base]].update({query_id, ids[row.base]})
    recall = {kind: float(np.mean(flags)) for kind, flags in caught.items()}
    unrelated = [query_id for row, query_id in zip(labelled_set, ids) if row.kind == "unrelated" and query_id in cleaned]
    false_removals = [query_id for query_id in unrelated if query_id not in kept]
    print(f"caught share per kind: {recall}; unrelated removed {len(false_removals)} of {len(unrelated)}")
    assert recall["exact"] == 1.0 and recall["formatting"] == 1.0
    assert recall["edits"] >= 0.95
    assert not false_removals
    copy_groups = {base: members for base, members in groups.items() if len(members) > 2}
    assert all(members & kept for members in copy_groups.values()), "a copied problem keeps a member"
    assert all(reason.startswith("exact_duplicate") for reason in exact.values())
    assert all(reason.startswith("near_duplicate") for reason in near.values())
    assert all(root(m) == min(m2 for m2 in members if root(m2) == root(m)) for members in copy_groups.values()
               for m in members), "the survivor of a cluster is its smallest id"
    for step in ("dedup", "near_dedup"):
        for manifest_path in three.stage_dir(step).glob("shard-*.done.json"):
            assert Manifest.load(manifest_path).reconciles()


def test_survivor_is_the_smallest_id_whatever_the_order(tmp_path: Path) -> None:
    base = ("Compute the number of lattice points, that is points with two integer coordinates, that lie on the "
            "circle x^2 + y^2 = 25 in the plane, and explain why no other points qualify.")
    texts = [base, base.replace("Compute", "Find"), base.replace("in the plane", "in the Cartesian plane")]
    ids = [make_query("math", [{"role": "user", "content": t}]).id for t in texts]
    for order, name in ((texts, "forward"), (texts[::-1], "backward")):
        run = run_recipe(tmp_path, name, write_rows(tmp_path / f"{name}.jsonl", (query_row(t) for t in order)),
                         {"near_dedup": {}}, num_shards=2)
        assert kept_ids(run, "near_dedup") == [min(ids)]


def test_empty_and_tiny_texts_never_cluster_by_accident() -> None:
    hasher = MinHasher(num_perm=64, ngram_size=5)
    signatures = hasher.signatures(["", "", "ab", "ab", "a completely ordinary sentence about numbers"])
    labels, _, _ = cluster(signatures, band_keys(signatures, 8, 8), 0.7)
    assert labels[0] != labels[1], "two empty texts have no shingles and must not be duplicates"
    assert labels[2] == labels[3]
    with pytest.raises(ValueError, match="exceeds"):
        band_keys(signatures, 16, 8)


@pytest.mark.parametrize("stage_type", ["dedup", "near_dedup"])
def test_bad_records_are_quarantined_and_counts_reconcile(tmp_path: Path, stage_type: str) -> None:
    from distillery.core.recipe import parse_recipe

    text = "Find every prime p such that p + 2 and p + 4 are also prime, and prove there are no others."
    records = [query_record(text), query_record(text, category="general"), query_record("Name three noble gases."),
               None, {"id": "broken", "category": "math", "messages": [{"role": "user", "content": 7}]},
               {**query_record("x"), "id": "system-only", "messages": [{"role": "system", "content": "Be brief."}]}]
    stage = parse_recipe({"name": "t", "run_dir": str(tmp_path / "run"), "steps": {stage_type: {}}}, check_paths=False).build_stage(stage_type)
    ctx = query_context(tmp_path, stage_type)
    ctx.global_dir.mkdir(parents=True)
    stage.scan(items_of(records), ctx)  # type: ignore[attr-defined]
    stats = stage.merge(ctx)  # type: ignore[attr-defined]
    outcomes = sorted(stage.process(items_of(records), ctx), key=lambda o: o.position)  # type: ignore[attr-defined]
    assert len(outcomes) == len(records) and stats["duplicates"] == 1
    kinds = [o.kind for o in outcomes]
    assert kinds.count("kept") == 2 and kinds.count("rejected") == 1 and kinds[3:] == ["quarantined"] * 3
    survivor = min(records[0]["id"], records[1]["id"])  # type: ignore[index]
    assert next(o for o in outcomes if o.kind == "rejected").reason.split()[-1 if stage_type == "dedup" else 2] == survivor


def test_near_dedup_merge_drops_what_clustering_the_whole_corpus_in_memory_drops(tmp_path: Path) -> None:
    """The merge pairs one band column at a time and reads signatures back only for queries that pair: the same
    drops as `cluster` over every signature at once, across shards."""
    from distillery.prepare.dedup import NearDedupConfig, dedup_text

    rng = np.random.default_rng(7)
    words = [f"w{i}" for i in range(400)]
    texts = []
    for family in range(60):
        base = " ".join(rng.choice(words, 30))
        texts.append(f"Problem {family}: {base}")
        for copy in range(int(rng.integers(0, 4))):
            edited = base.split()
            edited[int(rng.integers(0, 30))] = f"x{copy}"
            texts.append(f"Problem {family}: {' '.join(edited)}")
    rng.shuffle(texts)
    run = run_recipe(tmp_path, "bands", write_rows(tmp_path / "q.jsonl", (query_row(t) for t in texts)),
                     {"near_dedup": {}}, num_shards=4)

    queries = [make_query("math", [{"role": "user", "content": t}]) for t in texts]
    config = NearDedupConfig()
    signatures = config.hasher().signatures([dedup_text(q) for q in queries])
    labels, _, _ = cluster(signatures, band_keys(signatures, config.bands, config.rows), config.jaccard_threshold)
    families: dict[int, list[str]] = collections.defaultdict(list)
    for query, label in zip(queries, labels):
        families[int(label)].append(query.id)
    expected = {query_id for members in families.values() for query_id in members if query_id != min(members)}
    assert len(expected) > 30, "too few near duplicates to compare the merges"
    assert set(rejected(run, "near_dedup")) == expected


def test_a_corpus_without_duplicates_keeps_everything(tmp_path: Path) -> None:
    texts = [f"Problem {n}: how many ways are there to arrange {n} distinct books on {n + 3} shelves?" for n in range(12)]
    run = run_recipe(tmp_path, "distinct", write_rows(tmp_path / "q.jsonl", (query_row(t) for t in texts)),
                     {"dedup": {}, "near_dedup": {"jaccard_threshold": 0.99}}, num_shards=2)
    assert len(kept_ids(run, "near_dedup")) == len(texts)
    assert not rejected(run, "dedup") and not rejected(run, "near_dedup")
