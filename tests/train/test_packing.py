"""Packing invariants: chat-template loss masks, bin packing, the HDF5 layout, and the pack stage end to end."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from distillery.cli import main
from distillery.core.runner import load_run_recipe, run_task
from distillery.core.store import Manifest, iter_jsonl
from distillery.testing import finish_shard
from distillery.train.binpack import (
    best_fit_decreasing,
    greedy_sequential,
    packing_efficiency,
    share,
    sharded_best_fit,
    windowed_best_fit,
)
from distillery.train.chat_tokens import render_conversation, tokenize_conversation, tokenize_rendered, trace_messages
from distillery.train.packed_file import PackedDataset, PackedReader, write_packed


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir)


def test_loss_mask_is_exactly_the_last_assistant_turn(tokenizer) -> None:
    messages = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Earlier answer, not trained."},
                {"role": "user", "content": "What is 3 plus 4?"},
                {"role": "assistant", "content": "<think>3 plus 4 is 7.</think><answer>7</answer>"}]
    sample = tokenize_conversation(tokenizer, messages)
    assert sample.tokens.tolist() == tokenizer(tokenizer.apply_chat_template(messages, tokenize=False),
                                               add_special_tokens=False)["input_ids"]
    trained = tokenizer.decode(sample.tokens[sample.loss_mask == 1])
    assert trained == "<think>3 plus 4 is 7.</think><answer>7</answer><|im_end|>\n"
    # the mask is one contiguous run at the end: nothing before the last turn is trained on
    first = int(np.argmax(sample.loss_mask))
    assert sample.loss_mask[first:].all() and not sample.loss_mask[:first].any()
    assert "Earlier answer" in tokenizer.decode(sample.tokens[:first])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 100), min_size=0, max_size=200), st.integers(100, 300))
def test_best_fit_decreasing_places_every_document_once_within_capacity(lengths, capacity) -> None:
    for packer in (best_fit_decreasing, greedy_sequential):
        bins = packer(lengths, capacity)
        placed = sorted(doc for b in bins for doc in b)
        assert placed == list(range(len(lengths)))
        assert all(sum(lengths[d] for d in b) <= capacity for b in bins)
    # never fewer bins than the area allows (BFD can lose to arrival order on a lucky instance: [11, 41, 52, 11, 31,
    # 53] at 104 is 3 bins against greedy's 2; the long-tail test below compares the two where it matters)
    assert len(best_fit_decreasing(lengths, capacity)) >= -(-sum(lengths) // capacity)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 100), min_size=1, max_size=9), st.integers(100, 300))
def test_best_fit_decreasing_keeps_its_worst_case_guarantee_against_the_optimum(lengths, capacity) -> None:
    """BFD uses at most 11/9 OPT + 6/9 bins (Johnson's bound), OPT found exactly on small instances (the area
    bound is not OPT: four 92s and a 48 in bins of 139 need 5 bins, not 3)."""
    assert len(best_fit_decreasing(lengths, capacity)) <= 11 / 9 * _optimal_bins(lengths, capacity) + 6 / 9 + 1e-9


def _optimal_bins(lengths: list[int], capacity: int) -> int:
    """The fewest bins that hold every length (exhaustive search; small instances only)."""
    items = sorted(lengths, reverse=True)

    def fits(index: int, loads: list[int]) -> bool:
        if index == len(items):
            return True
        tried: set[int] = set()
        for slot, load in enumerate(loads):
            if load + items[index] <= capacity and load not in tried:
                tried.add(load)
                loads[slot] += items[index]
                if fits(index + 1, loads):
                    return True
                loads[slot] -= items[index]
        return False

    bins = -(-sum(items) // capacity)
    while not fits(0, [0] * bins):
        bins += 1
    return bins


def test_best_fit_decreasing_beats_greedy_on_a_long_tail() -> None:
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(7.8, 0.9, 3000).astype(int), 1, 32768).tolist()
    bfd = packing_efficiency(lengths, best_fit_decreasing(lengths, 32768), 32768)
    greedy = packing_efficiency(lengths, greedy_sequential(lengths, 32768), 32768)
    assert bfd > 0.98 and bfd > greedy + 0.05


def _paper_lengths(count: int, cap: int = 32768) -> list[int]:
    """Log-normal with the paper's ~3.8k-token mean and a tail to the cap (over the cap: dropped, as pack does)."""
    lengths = np.maximum(np.random.default_rng(1).lognormal(np.log(3800) - 0.9**2 / 2, 0.9, count), 64).astype(int)
    return lengths[lengths <= cap].tolist()


def test_windowed_packing_keeps_bins_inside_their_window_and_costs_under_one_percent_at_32k() -> None:
    lengths, capacity, window_bins = _paper_lengths(25_000), 32768, 256
    bins = windowed_best_fit(lengths, capacity, window_bins * capacity)
    assert sorted(doc for bin_ in bins for doc in bin_) == list(range(len(lengths)))
    assert all(sum(lengths[doc] for doc in bin_) <= capacity for bin_ in bins)
    window_of, window, tokens = [], 0, 0
    for length in lengths:  # a window closes once it holds window_bins bins' worth of tokens
        window_of.append(window)
        tokens += length
        if tokens >= window_bins * capacity:
            window, tokens = window + 1, 0
    assert all(len({window_of[doc] for doc in bin_}) == 1 for bin_ in bins), "no bin mixes two windows"
    assert window >= 5
    windowed = packing_efficiency(lengths, bins, capacity)
    whole = packing_efficiency(lengths, best_fit_decreasing(lengths, capacity), capacity)
    assert windowed >= 0.99 and whole - windowed < 0.01, (windowed, whole)
    # eight pack tasks, each over its own share: every document once, no bin across two tasks, still >= 99%
    sharded = sharded_best_fit(lengths, capacity, window_bins * capacity, 8)
    assert sorted(doc for bin_ in sharded for doc in bin_) == list(range(len(lengths)))
    task_of = {doc: task for task in range(8) for doc in share(len(lengths), 8, task)}
    assert all(len({task_of[doc] for doc in bin_}) == 1 for bin_ in sharded)
    assert packing_efficiency(lengths, sharded, capacity) >= 0.99
    assert abs(packing_efficiency(lengths, sharded, capacity) - windowed) < 0.005


def test_shares_split_evenly_and_cover_everything_once() -> None:
    for total, parts in ((40, 5), (1000, 63), (3, 3), (7, 2)):
        shares = [share(total, parts, index) for index in range(parts)]
        assert [i for part in shares for i in part] == list(range(total))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


def _check_file_invariants(reader: PackedReader) -> None:
    assert reader.cu_seqlens[0] == 0
    assert reader.cu_seqlens[-1] == reader.total_tokens == sum(len(reader[b].tokens) for b in range(len(reader)))
    for bin_index in range(len(reader)):
        packed = reader[bin_index]
        assert len(packed.tokens) <= reader.attrs["capacity"]
        starts = packed.cu_seqlens[:-1]
        # positions restart at every document and count up inside it
        assert (packed.position_ids[starts] == 0).all()
        for start, end in zip(packed.cu_seqlens[:-1], packed.cu_seqlens[1:]):
            assert packed.position_ids[start:end].tolist() == list(range(end - start))
        labels, weights = packed.labels()
        # no target crosses a document boundary: the last token of each document predicts nothing
        assert (weights[packed.cu_seqlens[1:] - 1] == 0).all()
        targets = np.flatnonzero(weights)
        assert (labels[targets] == packed.tokens[targets + 1]).all()
        doc_of = np.searchsorted(packed.cu_seqlens, np.arange(len(packed.tokens)), side="right") - 1
        assert (doc_of[targets] == doc_of[targets + 1]).all()


def test_write_packed_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(1)
    docs = []
    for index in range(30):
        length = int(rng.integers(3, 40))
        mask = np.zeros(length, np.uint8)
        mask[int(rng.integers(1, length)):] = 1
        docs.append((f"doc{index}", rng.integers(0, 1000, length).astype(np.int32), mask))
    bins = best_fit_decreasing([len(d[1]) for d in docs], 64)
    write_packed(tmp_path / "p.h5", docs, bins, 64, {"efficiency": 0.5})
    reader = PackedReader(tmp_path / "p.h5")
    assert len(reader) == len(bins)
    _check_file_invariants(reader)
    by_key = {key: (tokens, mask) for key, tokens, mask in docs}
    for bin_index in range(len(reader)):
        packed = reader[bin_index]
        for key, start, end in zip(reader.documents(bin_index), packed.cu_seqlens[:-1], packed.cu_seqlens[1:]):
            assert packed.tokens[start:end].tolist() == by_key[key][0].tolist()
            assert packed.loss_mask[start:end].tolist() == by_key[key][1].tolist()
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("window_bins", [256, 1], ids=["one-window", "a-window-per-bin"])
def test_pack_stage_end_to_end(tmp_path, traces, tokenizer, make_run, make_trace, window_bins) -> None:
    long_trace = make_trace(999, random.Random(3))
    long_trace["attempts"][0]["response"] = "word " * 400
    no_answer = make_trace(998, random.Random(4))
    no_answer["accepted"] = None
    records = traces + [long_trace, no_answer, {"query": {"id": "broken"}}]
    run = make_run(tmp_path / "run", records, {"pack": {"max_tokens": 300, "window_bins": window_bins}})
    result = run_task(str(run.root), "pack", "t1", "task", 0)
    stats = result["stats"]
    assert result["inputs"] == len(records)
    assert (result["kept"], result["rejected"], result["quarantined"]) == (len(traces), 2, 1)
    assert stats["over_cap"] == 1
    rejected = {row["key"]: row["reason"] for row in iter_jsonl(run.shard("pack", "t1", 0).rejected)}
    assert "max_tokens" in rejected[long_trace["query"]["id"]]
    reader = PackedReader(run.packed("pack", "t1", 0))
    _check_file_invariants(reader)
    assert sorted(reader.doc_ids) == sorted(t["query"]["id"] for t in traces)
    assert stats["efficiency"] == pytest.approx(reader.total_tokens / (len(reader) * 300))
    assert stats["efficiency"] > (0.8 if window_bins > 1 else 0.5)
    # masked tokens of every document are exactly its last assistant turn
    by_key = {t["query"]["id"]: t for t in traces}
    for bin_index in range(len(reader)):
        packed = reader[bin_index]
        for key, start, end in zip(reader.documents(bin_index), packed.cu_seqlens[:-1], packed.cu_seqlens[1:]):
            trained = tokenizer.decode(packed.tokens[start:end][packed.loss_mask[start:end] == 1])
            assert trained == by_key[key]["attempts"][0]["response"] + "<|im_end|>\n"
    # a second run finds the manifest and does nothing
    assert run_task(str(run.root), "pack", "t1", "task", 0)["elapsed_s"] == result["elapsed_s"]


def test_batched_tokenization_equals_one_by_one(tokenizer, traces) -> None:
    conversations = [trace_messages(trace) for trace in traces[:9]]
    batched = tokenize_rendered(tokenizer, [render_conversation(tokenizer, c) for c in conversations])
    for conversation, sample in zip(conversations, batched):
        single = tokenize_conversation(tokenizer, conversation)
        assert sample.tokens.tolist() == single.tokens.tolist()
        assert sample.loss_mask.tolist() == single.loss_mask.tolist()


def test_sharded_pack_holds_every_trace_once_and_reruns_only_a_lost_shard(tmp_path, traces, make_run) -> None:
    records = traces + [{"query": {"id": "broken"}}]  # the last input shard's: quarantined by the second pack task
    run = make_run(tmp_path / "run", records, {"pack": {"max_tokens": 300, "input_shards_per_task": 2}},
                   num_shards=4)
    assert main(["run", str(run.root / "recipe.yaml")]) == 0
    manifests = [Manifest.load(run.shard("pack", "t1", shard).manifest) for shard in (0, 1)]
    assert not run.shard("pack", "t1", 2).manifest.exists()  # four input shards, two per task: two tasks
    assert [m.stats["input_shards"] for m in manifests] == [[0, 2], [2, 4]]
    assert [m.quarantined for m in manifests] == [0, 1]
    readers = [PackedReader(run.packed("pack", "t1", shard)) for shard in (0, 1)]
    for reader in readers:
        _check_file_invariants(reader)
    # each task holds exactly the traces of its own input shards; together every kept trace exactly once
    halves = [traces[:share(len(records), 4, 2).start], traces[share(len(records), 4, 2).start:]]
    assert [sorted(r.doc_ids) for r in readers] == [sorted(t["query"]["id"] for t in half) for half in halves]
    assert [m.kept for m in manifests] == [len(half) for half in halves]
    # sft's view: the files one after the other, each in its bin order
    dataset = PackedDataset([run.packed("pack", "t1", shard) for shard in (0, 1)])
    assert len(dataset) == sum(map(len, readers)) and dataset.document_count == len(traces)
    assert [dataset.documents(b) for b in range(len(dataset))] == \
        [r.documents(b) for r in readers for b in range(len(r))]
    last = dataset[len(dataset) - 1]
    assert last.tokens.tolist() == readers[1][len(readers[1]) - 1].tokens.tolist()
    with pytest.raises(IndexError):
        dataset[len(dataset)]
    for reader in (*readers, dataset):
        reader.close()
    # a lost task: resume packs that one again, the same bytes, and leaves the other alone
    kept_mtime = run.shard("pack", "t1", 0).manifest.stat().st_mtime_ns
    run.shard("pack", "t1", 1).manifest.unlink()
    run.packed("pack", "t1", 1).unlink()
    assert main(["resume", str(run.root)]) == 0
    assert run.shard("pack", "t1", 0).manifest.stat().st_mtime_ns == kept_mtime
    again = Manifest.load(run.shard("pack", "t1", 1).manifest)
    assert (again.sha256, again.output_ids_digest) == (manifests[1].sha256, manifests[1].output_ids_digest)
    # an input shard that changed makes only the task that packs it stale
    last = share(len(records), 4, 3)
    finish_shard(run, "traces", "t1", 3, records[last.start:last.stop - 3], recipe=load_run_recipe(run))
    assert main(["resume", str(run.root)]) == 0
    assert run.shard("pack", "t1", 0).manifest.stat().st_mtime_ns == kept_mtime
    assert Manifest.load(run.shard("pack", "t1", 1).manifest).kept == manifests[1].kept - 2  # 2 traces + broken
