"""The public labelled contamination set loads and is labelled consistently; the bundled multilingual embedder
(bundled-e5) places a human translation of a benchmark item nearer to it than to other benchmark items, computes in
float32, and its shipped benchmark vectors are the ones it computes."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from distillery.core.recipe import load_recipe
from distillery.hardware import dtype_stats
from distillery.prepare import bundled_vectors
from distillery.prepare.benchsets import BenchmarkSource, load_benchmarks
from distillery.prepare.cascade import findings_by_query
from distillery.prepare.contamination import BenchmarkIndex, find_candidates
from distillery.prepare.decontaminate import DecontaminateConfig
from distillery.prepare.embed import BUNDLED_E5, load_encoder
from distillery.testing import public_contamination

SET = Path(__file__).resolve().parents[1] / "data" / "decontamination"


def test_set_loads_with_every_kind_in_both_splits_and_copies_naming_index_items() -> None:
    rows = public_contamination.load(SET)
    items = load_benchmarks([public_contamination.index_source(SET)], None)
    by_id = {item.item_id: item.text for item in items}
    assert len(by_id) == len(items) == 150
    kinds = collections.Counter((row.split, row.kind) for row in rows)
    for split in public_contamination.SPLITS:
        for kind in public_contamination.CONTAMINATED + public_contamination.CLEAN:
            assert kinds[split, kind] >= 20, (split, kind, kinds)
    assert {row.lang for row in rows if row.kind == "translation"} == {
        "bn", "de", "es", "fr", "ja", "ru", "sw", "te", "th", "zh"}
    splits_of_source = collections.defaultdict(set)
    for row in rows:
        splits_of_source[row.source].add(row.split)
        assert row.text.strip() and row.text not in by_id.values()
        assert (row.item_id is None) == (row.kind == "fresh")
    assert all(len(splits) == 1 for splits in splits_of_source.values())
    assert len({row.id for row in rows}) == len(rows)


def test_bundled_embedder_ranks_a_translation_nearest_its_benchmark_item() -> None:
    rows = [row for row in public_contamination.load(SET) if row.kind == "translation" and row.split == "calibration"]
    items = load_benchmarks([public_contamination.index_source(SET)], None)[:40]
    ids = [item.item_id for item in items]
    chosen = [next(row for row in rows if row.lang == lang and row.item_id in ids) for lang in ("de", "zh", "sw")]
    encoder = load_encoder(BUNDLED_E5)
    bench = encoder.encode([item.text for item in items])
    queries = encoder.encode([row.text for row in chosen])
    assert bench.shape == (40, 384) and np.allclose(np.linalg.norm(bench, axis=1), 1, atol=1e-4)
    for row, vector in zip(chosen, queries):
        scores = bench @ vector
        assert ids[int(np.argmax(scores))] == row.item_id, (row.id, row.lang)


def test_quickstart_decontaminate_step_validates_and_bundled_e5_computes_in_float32(
        monkeypatch: pytest.MonkeyPatch) -> None:
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)
    config = load_recipe(repo / "jobs" / "quickstart.yaml").step("decontaminate").config
    assert config.model is None and config.judge is None and config.threshold == DecontaminateConfig().threshold
    e5 = DecontaminateConfig(model=BUNDLED_E5, threshold=0.92, fingerprint_cosine=0.89)
    assert load_encoder(e5.model, e5.device, e5.dtype).get_embedding_dimension() == 384
    assert dtype_stats()["embeddings"]["dtype"] == "float32"
    with pytest.raises(ValidationError, match="bundled embedder computes in float32"):
        DecontaminateConfig(model=BUNDLED_E5, dtype="bfloat16")
    assert DecontaminateConfig(model="/models/bge-m3", dtype="bfloat16").dtype == "bfloat16"


def test_shipped_benchmark_vectors_are_the_ones_the_bundled_embedder_computes() -> None:
    items = load_benchmarks([BenchmarkSource(name="aime25")], None)[:3]
    texts = [item.text for item in items] + ["A problem in no packaged benchmark."]
    e5 = load_encoder(BUNDLED_E5)
    shipped = bundled_vectors.lookup(texts, bundled_vectors.shipped_for(BUNDLED_E5, e5))
    assert sorted(shipped) == [0, 1, 2]
    assert np.array_equal(np.stack([shipped[n] for n in range(3)]), e5.encode(texts[:3]))


def test_the_default_embedder_uses_shipped_vectors_in_float32_on_the_cpu_only() -> None:
    items = load_benchmarks([BenchmarkSource(name="aime25")], None)[:3]
    texts = [item.text for item in items]
    assert bundled_vectors.shipped_for(None, load_encoder(None, "cpu", "bfloat16")) is None
    assert bundled_vectors.shipped_for("/models/bge-m3", load_encoder(BUNDLED_E5)) is None
    minilm = load_encoder(None, "cpu", "float32")
    path = bundled_vectors.shipped_for(None, minilm)
    shipped = bundled_vectors.lookup(texts, path)
    assert sorted(shipped) == [0, 1, 2]
    computed = minilm.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert np.abs(np.stack([shipped[n] for n in range(3)]) - computed).max() < 1e-5


def test_bundled_e5_finds_a_translation_by_its_common_numbers_and_not_a_fresh_problem_sharing_two() -> None:
    """MGSM's Chinese translation of GSM8K test-0066 shares only its common numbers with it (four, written 四, and
    5), at a cosine below fingerprint_cosine, but its item is its nearest; two fresh problems (GSM8K test-0240 and train-1420, not in the
    index) carry both numbers of MATH-500's number_theory/342 (54 and 6), an item the embedder does not put near."""
    rows = {row.id: row for row in public_contamination.load(SET)}
    originals = [item for item in load_benchmarks([public_contamination.index_source(SET)], None)
                 if item.item_id == "test-0066"]
    items = load_benchmarks([BenchmarkSource(name="math500")], None) + originals
    config = DecontaminateConfig(model=BUNDLED_E5, threshold=0.92, fingerprint_cosine=0.89)
    encoder = load_encoder(config.model)
    vectors = bundled_vectors.embed_items(encoder, [item.text for item in items], config.batch_size,
                                          bundled_vectors.shipped_for(config.model, encoder))
    index = BenchmarkIndex(items, vectors, config.index_settings(), use_gpu=False)
    queries = [rows[name].text for name in (
        "translation-zh-gsm8k-test-0066", "fresh-en-gsm8k-test-0240", "fresh-en-gsm8k-train-1420")]
    found = find_candidates(encoder, index, queries, config.batch_size, config.top_k)
    coincidence = next(n for n, item in enumerate(items) if item.item_id == "test/number_theory/342.json")
    assert {c.query_index for c in found if c.item_index == coincidence} == {1, 2}, "both fresh ones are proposed"
    contaminated = findings_by_query(found, config.rules())["contaminated"]
    assert {query: set(found) for query, found in contaminated.items() if found} == {0: {len(items) - 1}}
