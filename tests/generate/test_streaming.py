"""The streaming loop without an engine in the way: the replay backend (answers known at once) and the real
verifiers, so verification is all the loop waits for. Strategies, seeds, lanes and back-pressure."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from distillery.schema.formats import query_from_messages
from distillery.schema.records import Query, Reference, TestCase
from distillery.generate.progress import GenerationProgress
from distillery.generate.prompts import attempt_seed
from distillery.generate.strategy import check_strategy_table, parse_strategy, strategy_for
from distillery.generate.streaming import StreamingLoop, StreamingSettings
from distillery.generate.verification import VerificationLanes
from distillery.llm.protocol import Sampling
from distillery.llm.replay import ReplayChatModel
from distillery.testing import quickstart_query_records
from distillery.verify import VerifyConfig, build_verifier

SAMPLING = Sampling(max_tokens=64)


def _replay(path: Path, rows: list[tuple[Query, list[str]]]) -> ReplayChatModel:
    with path.open("w") as handle:
        for query, answers in rows:
            for answer in answers:
                messages = [{"role": "user", "content": query.prompt}, {"role": "assistant", "content": answer}]
                handle.write(json.dumps({"messages": messages}) + "\n")
    return ReplayChatModel(path, name="replayed")


def _math_rows() -> list[tuple[Query, list[str]]]:
    """Real MATH-500-style sums from the quickstart sample; attempt k is right where the pattern says 1."""
    patterns = ["1000", "0100", "0010", "0000", "0110", "0011", "0101", "1111"]
    rows = []
    for query, pattern in zip(quickstart_query_records("math"), patterns):
        gold = query.reference.answer
        rows.append((query, [f"The answer is \\boxed{{{gold if bit == '1' else gold + '9'}}}." for bit in pattern]))
    return rows


def _run(model: ReplayChatModel, queries: list[Query], strategy: dict[str, str], lanes: VerificationLanes | None,
         **settings: object) -> tuple[dict[str, object], GenerationProgress, list[str]]:
    config = StreamingSettings(teacher="replayed", sampling=SAMPLING, base_seed=5, max_attempts=4, strategy=strategy,
                               **settings)  # type: ignore[arg-type]
    progress = GenerationProgress(total=len(queries))
    order = []
    traces = {}
    for key, trace in StreamingLoop(model, lanes, config, progress).run((q.id, q) for q in queries):
        order.append(key)
        traces[key] = trace
    return traces, progress, order


def test_strategy_table_is_checked_and_most_specific_wins() -> None:
    table = check_strategy_table({"default": "sequential", "math": "parallel(4)", "r1/math": "parallel(2)",
                                  "r1/default": "parallel(3)"})
    assert strategy_for(table, "r1", "math").samples == 2
    assert strategy_for(table, "qwen", "math").samples == 4
    assert strategy_for(table, "r1", "code").samples == 3
    assert strategy_for(table, "qwen", "code").samples == 1
    assert strategy_for({}, "qwen", "code") == parse_strategy("sequential")
    assert parse_strategy("parallel(4)").wave(2, 4) == [2, 3]
    for bad in ("parallel(0)", "parallel", "greedy"):
        with pytest.raises(ValueError, match="expected 'sequential' or 'parallel"):
            parse_strategy(bad)
    with pytest.raises(ValueError, match="strategy key 'maths'"):
        check_strategy_table({"maths": "sequential"})


def test_sequential_and_parallel_accept_the_same_lowest_passing_attempt(tmp_path: Path) -> None:
    rows = _math_rows()
    queries = [q for q, _ in rows]
    config = VerifyConfig.model_validate({"math": {"workers": 1}})
    results = {}
    with build_verifier(config) as verifier:
        for name, table in (("sequential", {"default": "sequential"}), ("parallel", {"math": "parallel(3)"})):
            lanes = VerificationLanes(verifier, lambda q: config.verifiers[q.category])
            try:
                results[name] = _run(_replay(tmp_path / f"{name}.jsonl", rows), queries, table, lanes, max_in_flight=4)
            finally:
                lanes.close()
    sequential, parallel = results["sequential"][0], results["parallel"][0]
    assert sorted(sequential) == sorted(parallel) == sorted(q.id for q in queries)
    for query, answers in rows:
        expected = next((k for k, a in enumerate(answers) if f"{{{query.reference.answer}}}" in a), None)
        one, wave = sequential[query.id], parallel[query.id]
        assert one.accepted == wave.accepted == expected, query.prompt
        if expected is not None:
            assert one.response == wave.response == answers[expected]
        # Sequential stops at the accepted attempt; parallel(3) records whole waves of 3 (the last one cut at 4).
        assert len(one.attempts) == (expected + 1 if expected is not None else 4)
        assert len(wave.attempts) == (3 if expected is not None and expected < 3 else 4)
        for trace in (one, wave):
            assert [a.index for a in trace.attempts] == list(range(len(trace.attempts)))
            assert all(a.seed == attempt_seed(5, query.id, "replayed", a.index) for a in trace.attempts)
            assert all(a.verifier == "math_verify" for a in trace.attempts)
    assert results["parallel"][1].attempts > results["sequential"][1].attempts
    stats = results["sequential"][1].stats()
    assert stats["loop"] == "streaming" and stats["attempts"] == sum(len(t.attempts) for t in sequential.values())
    assert stats["requests_in_flight_max"] <= 4 and stats["accepted"] == sum(t.accepted is not None for t in sequential.values())


def _slow_code_query(index: int, seconds: float) -> tuple[Query, list[str]]:
    query = query_from_messages({"category": "code", "messages": [
        {"role": "user", "content": f"Print {index} after a pause of {seconds} s."}]})
    query = query.model_copy(update={"reference": Reference(tests=[TestCase(input="", output=f"{index}\n")])})
    return query, [f"```python\nimport time\ntime.sleep({seconds})\nprint({index})\n```"]


def test_slow_code_tests_hold_back_new_queries_but_not_math_verdicts(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Code answers whose test sleeps 2.5 s, queued ahead of math answers: the math lane answers first, and the
    loop stops admitting new queries while `max_verify_queue` answers wait."""
    code_rows = [_slow_code_query(i, 2.5) for i in range(4)]
    math_rows = [(q, [f"\\boxed{{{q.reference.answer}}}"]) for q in quickstart_query_records("math")[:4]]
    rows = code_rows + math_rows
    config = VerifyConfig.model_validate({"math": {"workers": 1}, "code": {"parallelism": 2}})
    with build_verifier(config) as verifier:
        verifier.verify_batch([(math_rows[0][0], "\\boxed{0}")])  # start the math workers (slow on a busy machine)
        lanes = VerificationLanes(verifier, lambda q: config.verifiers[q.category], threads={"code": 2})
        started = time.perf_counter()
        try:
            with caplog.at_level(logging.WARNING):
                traces, progress, order = _run(_replay(tmp_path / "mixed.jsonl", rows), [q for q, _ in rows],
                                               {"default": "sequential"}, lanes, max_in_flight=2, max_verify_queue=4)
        finally:
            lanes.close()
        elapsed = time.perf_counter() - started
    code_ids = {q.id for q, _ in code_rows}
    assert all(traces[i].accepted == 0 and traces[i].attempts[0].verifier == "code_sandbox" for i in code_ids)
    assert all(traces[q.id].accepted == 0 for q, _ in math_rows)
    # Math queries were admitted after the code ones, held back while code answers waited, and yet came out
    # before the last code verdicts: a slow test holds up only its own lane.
    assert {q.id for q, _ in math_rows} <= set(order[:-2]) and set(order[-2:]) <= code_ids, order
    stats = progress.stats()
    assert stats["backpressure_episodes"] >= 1 and stats["backpressure_s"] > 0
    assert stats["verify_queue_max"] <= 4 + 2, "admission stops at the limit; only in-flight answers may add to it"
    assert "verification is behind" in caplog.text
    assert elapsed >= 2 * 2.5, "four 2.5 s tests two at a time"


def test_throughput_counts_from_the_engines_first_request_and_stops_with_the_loop() -> None:
    progress = GenerationProgress(total=1, streaming=True, max_in_flight=4)
    progress.started -= 100  # an engine that took 100 s to load before its first request
    progress.track(0, 0, False)
    progress.track(4, 0, False, backlog=True)
    progress.add_attempt(1000)
    progress.track(4, 0, False, backlog=False)
    progress.track(0, 0, False, backlog=False)
    progress.stop()
    stats = progress.stats()
    assert stats["engine_start_s"] >= 100 and stats["elapsed_s"] >= 100
    assert progress.first_request_at is not None and progress.stopped_at is not None
    assert stats["tokens_per_s"] == round(1000 / (progress.stopped_at - progress.first_request_at), 2)
    assert stats["tokens_per_s"] > 1000 / 100, "the engine's load time is not throughput"
    assert stats["requests_in_flight_mean_until_drain"] == 4
    assert progress.stats() == stats, "stats read after the loop ended do not change"
