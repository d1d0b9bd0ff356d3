"""Perplexity under the real SmolLM2-135M-Instruct: packed scoring equals a plain transformers forward."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from distillery.filters.perplexity import PerplexityConfig, PerplexityStage, score_key
from distillery.filters.scoring import Document, PackedScorer, plan_passes
from distillery.testing import as_items, make_stage, make_trace, run_stage, shard_context

RESPONSES = [
    ("What is 2 + 3?", "<think>Two plus three is five.</think><answer>5</answer>"),
    ("Name a prime number larger than 10.", "<think>11 has no divisors other than 1 and itself.</think><answer>11</answer>"),
    ("Write a haiku about autumn.", "<think>Five, seven, five syllables.</think><answer>Leaves drift slowly down\nthe cold wind carries them far\nbare trees wait for snow</answer>"),
    ("What is the capital of France?", "<think>France's capital city is Paris.</think><answer>Paris</answer>"),
    ("Sort 3, 1, 2.", "<think>Ascending order.</think><answer>1, 2, 3</answer>"),
    ("Is 91 prime?", "<think>91 = 7 * 13, so it is composite.</think><answer>No</answer>"),
    ("Say hello.", "<think>A greeting.</think><answer>zxq vlorp gnarf blit qq zzt wub</answer>"),
    ("Compute 10 / 4.", "<think>10 divided by 4 is 2.5.</think><answer>2.5</answer>"),
]


@pytest.fixture(scope="module")
def stage_factory(smollm2_dir: Path):
    scorers: dict[int, PackedScorer] = {}

    def build(recipe, **overrides) -> PerplexityStage:
        # float32: the tests compare with an fp32 reference forward (bf16 would be chosen on a CPU with native bf16)
        config = PerplexityConfig(model=str(smollm2_dir), device="cpu", dtype="float32", **overrides)
        stage = make_stage(PerplexityStage, config, recipe.teachers[0])
        key = config.tokens_per_pass
        if key not in scorers:
            scorers[key] = stage.scorer
        stage.__dict__["scorer"] = scorers[key]  # share the loaded model between tests
        return stage

    return build


def _direct_ppl(model: torch.nn.Module, doc: Document) -> float:
    """exp(mean NLL) of the target tokens from one plain, unpacked transformers forward with full logits."""
    ids = torch.tensor([list(doc.context_ids) + list(doc.target_ids)])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    start = len(doc.context_ids)
    targets = ids[0, start:]
    return math.exp(-log_probs[torch.arange(start - 1, ids.shape[1] - 1), targets].mean().item())


def test_perplexity_equals_a_direct_unpacked_forward(recipe, stage_factory, smollm2_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    stage = stage_factory(recipe, tokens_per_pass=4096)
    traces = [make_trace(prompt, response) for prompt, response in RESPONSES]
    scores = stage.score_traces(traces)
    reference = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    for trace in traces:
        doc = stage.document(trace)
        assert doc.context_ids and len(doc.target_ids) == scores[score_key(trace)]["tokens"]
        direct = _direct_ppl(reference, doc)
        assert scores[score_key(trace)]["ppl"] == pytest.approx(direct, rel=1e-4)
    ppls = {prompt: scores[score_key(t)]["ppl"] for (prompt, _), t in zip(RESPONSES, traces)}
    assert ppls["Say hello."] > 3 * ppls["What is the capital of France?"], "gibberish is less likely than a plain answer"


def test_packed_and_one_at_a_time_agree(recipe, stage_factory) -> None:
    packed_stage = stage_factory(recipe, tokens_per_pass=4096)
    docs = [packed_stage.document(make_trace(p, r)) for p, r in RESPONSES]
    passes = plan_passes([len(d) for d in docs], 4096)
    assert len(passes) == 1, "every document shares one forward pass"
    packed = packed_stage.scorer.score(docs)
    alone = [packed_stage.scorer.score([doc])[0] for doc in docs]
    for together, single in zip(packed, alone):
        assert together.tokens == single.tokens
        assert together.ppl == pytest.approx(single.ppl, rel=1e-4)
    reordered = packed_stage.scorer.score(docs[::-1])[::-1]
    assert [s.ppl for s in reordered] == pytest.approx([s.ppl for s in packed], rel=1e-4)


def test_plan_passes_respects_the_budget_and_isolates_long_documents() -> None:
    lengths = [5, 9, 3, 30, 7, 2, 8]
    passes = plan_passes(lengths, 10)
    assert sorted(i for p in passes for i in p) == list(range(len(lengths)))
    assert [3] in passes
    assert all(sum(lengths[i] for i in p) <= 10 for p in passes if p != [3])


def test_percentile_threshold_over_shards_and_scan_resume(recipe, run, stage_factory) -> None:
    stage = stage_factory(recipe, tokens_per_pass=4096, max_percentile=75.0, chunk_traces=3)
    traces = [make_trace(p, r) for p, r in RESPONSES]
    traces.append(make_trace("Unanswered question?", "<think>no</think><answer>?</answer>", accepted=False))
    items = as_items(traces)
    # a scan killed after its first chunk left this checkpoint: the resumed scan must not rescore it
    ctx = shard_context(run, "perplexity", 0, 2)
    ctx.work_dir.mkdir(parents=True)
    planted = {"id": score_key(traces[0]), "ppl": 1.5, "tokens": 7}
    (ctx.work_dir / "perplexity-scan.jsonl").write_text(json.dumps(planted) + "\n" + '{"id": "cut sh')
    outcomes = [o for shard in run_stage(stage, run, [items[0::2], items[1::2]]) for o in shard]
    by_id = {o.key: o for o in outcomes}
    assert by_id[traces[0].query.id].record["ppl"] == 1.5
    assert not (ctx.work_dir / "perplexity-scan.jsonl").exists(), "the checkpoint goes once the shard's scores are written"
    assert by_id[traces[-1].query.id].kind == "rejected" and "no accepted" in by_id[traces[-1].query.id].reason
    scored = {t.query.id: by_id[t.query.id].record["ppl"] for t in traces[:-1]}
    cutoff = float(np.percentile(list(scored.values()), 75.0))
    assert json.loads((run.global_dir("perplexity", "alpha") / "threshold.json").read_text())["cutoff"] == pytest.approx(cutoff)
    for key, ppl in scored.items():
        assert by_id[key].kind == ("rejected" if ppl > cutoff else "kept")
        assert by_id[key].record["metadata"]["ppl_tokens"] > 0
    assert sum(o.kind == "rejected" for o in outcomes) == 1 + 2
    assert "above the cutoff" in next(o.reason for o in outcomes if o.kind == "rejected" and o.record.get("ppl"))


def test_absolute_threshold_without_scan_scores_in_process(recipe, run, stage_factory) -> None:
    stage = stage_factory(recipe, tokens_per_pass=4096, max_ppl=50.0)
    traces = [make_trace(p, r) for p, r in RESPONSES[5:]]
    outcomes = list(stage.process(iter(as_items(traces)), shard_context(run, "perplexity", 0, 1)))
    for outcome in outcomes:
        assert outcome.kind == ("rejected" if outcome.record["ppl"] > 50.0 else "kept")
    assert {o.kind for o in outcomes} == {"kept", "rejected"}
