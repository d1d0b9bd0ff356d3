"""The corpus-wide n-gram filter: exact catches of planted repetitions, bounded-memory counting."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from distillery.schema.records import Trace
from distillery.filters import ngram_counts
from distillery.filters.ngram import NgramConfig, NgramStage
from distillery.filters.ngram_counts import (
    SpillingCounter,
    count_hashes,
    merge_counts,
    read_counts,
    words,
    write_counts,
)
from distillery.testing import as_items, make_stage, make_trace, run_stage

N = 20
LIMIT = 20


def _sentence(rng: random.Random, vocabulary: list[str], length: int) -> str:
    return " ".join(rng.choice(vocabulary) for _ in range(length))


def _corpus(seed: int = 7) -> tuple[list[Trace], set[str], set[str]]:
    """Clean random-word traces, plus planted repetitions: a phrase in 21 traces (over the limit), another in
    exactly 20 (at the limit: kept), and one trace that loops a phrase 21 times."""
    rng = random.Random(seed)
    vocabulary = [f"w{index}" for index in range(3000)]
    over = _sentence(rng, vocabulary, 26)
    at_limit = _sentence(rng, vocabulary, 30)
    loop = _sentence(rng, vocabulary, N)
    traces, planted, boundary = [], set(), set()
    for index in range(90):
        body = [_sentence(rng, vocabulary, rng.randint(40, 120)), _sentence(rng, vocabulary, rng.randint(40, 120))]
        if index % 4 == 0 and len([t for t in planted if t != "loop"]) < 21:
            body.insert(1, over)
            planted.add(f"q{index}")
        elif index % 4 == 1 and len(boundary) < 20:
            body.insert(1, at_limit)
            boundary.add(f"q{index}")
        traces.append(make_trace(f"q{index}", "<think>" + " ".join(body) + "</think><answer>1</answer>"))
    traces.append(make_trace("loop", "<think>" + " ".join([loop] * 21) + "</think><answer>2</answer>"))
    planted.add("loop")
    return traces, planted, boundary


def _brute_force_rejects(traces: list[Trace]) -> set[str]:
    """Traces with a word n-gram occurring more than LIMIT times in the corpus, by plain Python counting."""
    grams = {t.query.prompt: [tuple(w[i : i + N]) for w in [words(t.response)] for i in range(len(w) - N + 1)] for t in traces}
    counts = Counter(g for gs in grams.values() for g in gs)
    return {prompt for prompt, gs in grams.items() if any(counts[g] > LIMIT for g in gs)}


def test_planted_repetitions_are_caught_exactly(recipe, run) -> None:
    traces, planted, boundary = _corpus()
    assert len([p for p in planted if p != "loop"]) == 21 and len(boundary) == 20
    expected = _brute_force_rejects(traces)
    assert expected == planted, "the fixture plants exactly these repetitions"
    items = as_items(traces)
    shards = [items[0::3], items[1::3], items[2::3]]
    stage = make_stage(NgramStage, NgramConfig(n=N, limit=LIMIT, num_buckets=4, spill_at=700), recipe.teachers[0])
    outcomes = [o for shard in run_stage(stage, run, shards) for o in shard]
    prompt_of = {i.key: i.record["query"]["messages"][0]["content"] for i in items}
    rejected = {prompt_of[o.key] for o in outcomes if o.kind == "rejected"}
    assert rejected == planted
    assert all(o.kind == "kept" for o in outcomes if prompt_of[o.key] not in planted)
    loop_outcome = next(o for o in outcomes if prompt_of[o.key] == "loop")
    hit = loop_outcome.record["metadata"]["ngram_hits"][0]
    assert hit["count"] == 21 and len(hit["ngram"].split()) == N
    planted_outcome = next(o for o in outcomes if o.kind == "rejected" and prompt_of[o.key] != "loop")
    assert {h["count"] for h in planted_outcome.record["metadata"]["ngram_hits"]} == {21}
    assert "seen more than 20 times" in planted_outcome.reason
    assert (run.global_dir("ngram", "alpha") / "frequent.bin").stat().st_size == 16 * 8  # 7 windows of the 26-word phrase + the loop's
    assert not list(run.stage_dir("ngram", "alpha").glob("_work/*/ngram-runs/*.bin")), "spilled runs are cleaned up"


def test_clean_sample_has_no_false_positives(recipe, run) -> None:
    traces, planted, _ = _corpus(seed=11)
    clean = [t for t in traces if t.query.prompt not in planted]
    stage = make_stage(NgramStage, NgramConfig(n=N, limit=LIMIT), recipe.teachers[0])
    outcomes = run_stage(stage, run, [as_items(clean)])[0]
    assert [o.kind for o in outcomes] == ["kept"] * len(clean)


def test_count_once_per_trace_ignores_loops_within_one_trace(recipe, run) -> None:
    traces, planted, _ = _corpus()
    stage = make_stage(NgramStage, NgramConfig(n=N, limit=LIMIT, count="traces"), recipe.teachers[0])
    outcomes = run_stage(stage, run, [as_items(traces)])[0]
    prompt_of = {t.query.id: t.query.prompt for t in traces}
    assert {prompt_of[o.key] for o in outcomes if o.kind == "rejected"} == planted - {"loop"}


def test_untraceable_and_unaccepted_items_are_accounted_for(recipe, run) -> None:
    traces = [make_trace("a", "<think>x</think><answer>1</answer>"), make_trace("b", "", accepted=False)]
    items = as_items(traces)
    items.append(type(items[0])(position=2, key="bad", record={"query": {}}, where="test:2"))
    stage = make_stage(NgramStage, NgramConfig(n=3, limit=1), recipe.teachers[0])
    kinds = {o.key: o.kind for o in run_stage(stage, run, [items])[0]}
    assert kinds == {traces[0].query.id: "kept", traces[1].query.id: "rejected", "bad": "quarantined"}


def test_token_unit_uses_the_tokenizer(recipe, run, smollm2_dir: Path) -> None:
    phrase = "The derivative of a constant is always zero, as every calculus student learns early."
    traces = [make_trace(f"q{i}", f"<think>Step {i}. {phrase} Done {i}.</think><answer>{i}</answer>") for i in range(4)]
    traces.append(make_trace("solo", "<think>Entirely different words appear only here.</think><answer>5</answer>"))
    stage = make_stage(NgramStage, NgramConfig(n=8, limit=3, unit="token", tokenizer=str(smollm2_dir)), recipe.teachers[0])
    outcomes = run_stage(stage, run, [as_items(traces)])[0]
    kinds = {o.key: o.kind for o in outcomes}
    assert [kinds[t.query.id] for t in traces] == ["rejected"] * 4 + ["kept"]
    hit_text = next(o for o in outcomes if o.kind == "rejected").record["metadata"]["ngram_hits"][0]["ngram"]
    assert hit_text in f". {phrase} Done"


@pytest.mark.parametrize(("num_buckets", "bucket_entries"), [(1, None), (8, None), (256, None), (1, 64)])
def test_merge_of_spilled_runs_matches_exact_counts(tmp_path: Path, num_buckets: int, bucket_entries: int | None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """(1, 64): runs holding more than 64 entries a bucket are merged in more buckets than asked for."""
    if bucket_entries:
        monkeypatch.setattr(ngram_counts, "MAX_BUCKET_ENTRIES", bucket_entries)
    rng = np.random.default_rng(num_buckets)
    batches = [rng.integers(0, 2**64 - 1, size=rng.integers(1, 400), dtype=np.uint64, endpoint=True) for _ in range(30)]
    pool = np.concatenate(batches)
    batches = [rng.choice(pool, size=b.size) for b in batches]  # many repeats across batches
    counter = SpillingCounter(tmp_path / "runs", spill_at=500)
    for batch in batches:
        counter.add(batch)
    assert len(counter.runs) >= 3
    counter.finish(tmp_path / "shard.bin", num_buckets)
    expected = Counter(np.concatenate(batches).tolist())
    merged = read_counts(tmp_path / "shard.bin")
    assert np.all(np.diff(merged["hash"].astype(np.float64)) >= 0) and np.all(merged["hash"][1:] != merged["hash"][:-1])
    assert dict(zip(merged["hash"].tolist(), merged["count"].tolist())) == dict(expected)
    write_counts(tmp_path / "other.bin", count_hashes(batches[0]))
    distinct, kept = merge_counts([tmp_path / "shard.bin", tmp_path / "other.bin"], tmp_path / "frequent.bin", num_buckets, min_count=4)
    expected.update(batches[0].tolist())
    frequent = read_counts(tmp_path / "frequent.bin")
    assert distinct == len(expected)
    assert dict(zip(frequent["hash"].tolist(), frequent["count"].tolist())) == {h: c for h, c in expected.items() if c >= 4}
    assert kept == frequent.size
