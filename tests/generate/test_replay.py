"""Replay: released traces (AM-Thinking-v1-Distilled and OpenAI-messages files built here) come back as the
same traces, re-verified by the real verifiers instead of trusting the scores stored in the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from distillery.cli import main
from distillery.schema.formats import query_from_am
from distillery.schema.records import Trace
from distillery.core.store import Manifest, RunDir, iter_jsonl
from distillery.llm.replay import ReplayChatModel, ReplayFormatError


def _am_row(question: str, answer: str, info: dict, claimed_score: float = 1.0) -> dict:
    think, final = "Let me work it out carefully.", answer
    return {
        "system": "You are a helpful assistant.",
        "conversations": [
            {"from": "human", "value": question, "info": {"source": "unit", **info}},
            {"from": "assistant", "value": f"<think>\n{think}\n</think>\n<answer>\n{final}\n</answer>",
             "info": {"think_content": think, "answer_content": final, "verify_score": claimed_score,
                      "model_name": "released-teacher", "ppl": 2.5}},
        ],
    }


SUM = "What is 2 + 3? Put the final answer in \\boxed{}."
PRODUCT = "What is 7 * 6? Put the final answer in \\boxed{}."
DIFFERENCE = "What is 10 - 4? Put the final answer in \\boxed{}."
NO_COMMA = "Name two fruits. Do not use any commas."
ECHO = "Read two integers from standard input and print their sum."

AM_ROWS = [
    _am_row(SUM, "The sum is \\boxed{5}.", {"category": "math", "ground_truth": "5"}),
    # The file claims 1.0, but 41 is wrong: a fresh verdict must reject it.
    _am_row(PRODUCT, "The product is \\boxed{41}.", {"category": "math", "ground_truth": "42"}),
    # Two stored answers for one prompt: the first is wrong, the regenerated second attempt is right.
    _am_row(DIFFERENCE, "It is \\boxed{5}.", {"category": "math", "ground_truth": "6"}),
    _am_row(DIFFERENCE, "It is \\boxed{6}.", {"category": "math", "ground_truth": "6"}),
    _am_row(NO_COMMA, "Apples and pears.", {"category": "instruction_following", "instruction_constrain": json.dumps(
        {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]})}),
    _am_row(ECHO, "```python\na, b = map(int, input().split())\nprint(a + b)\n```", {"category": "code", "test_case": json.dumps(
        {"inputs": ["1 2\n", "5 -5\n"], "outputs": ["3\n", "0\n"], "fn_name": None})}),
]

# The same prompts as an OpenAI-messages dump from another teacher; it never answered the code task.
MESSAGES_ROWS = [
    {"messages": [{"role": "user", "content": SUM}, {"role": "assistant", "content": "\\boxed{6}"}]},
    {"messages": [{"role": "user", "content": PRODUCT}, {"role": "assistant", "content": "7 * 6 = \\boxed{42}"}]},
    {"messages": [{"role": "user", "content": DIFFERENCE}, {"role": "assistant", "content": "\\boxed{6}"}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": NO_COMMA},
                  {"role": "assistant", "content": "Apples, pears."}]},
]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def replay_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One real run: ingest the AM file, then `generate` with two replay teachers (AM file, messages file)."""
    tmp = tmp_path_factory.mktemp("replay")
    am_file = _write_jsonl(tmp / "released.jsonl", AM_ROWS)
    messages_file = _write_jsonl(tmp / "other.jsonl", MESSAGES_ROWS)
    recipe = {
        "name": "replay", "run_dir": str(tmp / "run"), "num_shards": 1,
        "teachers": [{"name": "released", "model": str(am_file), "backend": "replay"},
                     {"name": "other", "model": str(messages_file), "backend": "replay"}],
        "steps": {"ingest": {"inputs": [{"path": str(am_file), "format": "am"}]},
                  "generate": {"max_attempts": 3, "batch_size": 2,
                               "verify": {"math": {"workers": 1}, "code": {"parallelism": 1}}}},
    }
    recipe_path = tmp / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert main(["run", str(recipe_path)]) == 0
    return tmp / "run", am_file


def _traces(run_dir: Path, teacher: str) -> tuple[dict[str, Trace], dict[str, dict]]:
    shard = RunDir(run_dir).shard("generate", teacher, 0)
    kept = {t.query.prompt: t for t in (Trace.model_validate(r) for r in iter_jsonl(shard.output))}
    rejected = {r["record"]["query"]["messages"][-1]["content"]: r for r in iter_jsonl(shard.rejected)}
    return kept, rejected


def test_am_replay_gives_the_released_traces_with_fresh_verdicts(replay_run: tuple[Path, Path]) -> None:
    run_dir, am_file = replay_run
    kept, rejected = _traces(run_dir, "released")
    assert set(kept) == {SUM, DIFFERENCE, NO_COMMA, ECHO}
    assert set(rejected) == {PRODUCT}
    released = {}
    for row in AM_ROWS:
        query, trace = query_from_am(row)
        released.setdefault(query.prompt, (query, trace))
    for prompt in (SUM, NO_COMMA, ECHO):
        trace, (query, original) = kept[prompt], released[prompt]
        assert trace.query.id == query.id
        assert trace.accepted == 0 and len(trace.attempts) == 1
        assert (trace.response, trace.think, trace.answer) == (original.response, original.think, original.answer)
        assert trace.attempts[0].score == 1.0 and trace.attempts[0].verifier != "released"
        assert trace.attempts[0].details["backend"]["info"]["model_name"] == "released-teacher"
    assert kept[ECHO].attempts[0].verifier.startswith("code")
    # The stale score in the file said 1.0; the math verifier says 41 != 42.
    product = Trace.model_validate(rejected[PRODUCT]["record"])
    assert rejected[PRODUCT]["reason"] == "no attempt reached 0.9 after 1 attempts"
    assert product.attempts[0].score == 0.0 and product.attempts[0].details["backend"]["info"]["verify_score"] == 1.0
    # Two stored answers: the wrong first one is recorded, the second is accepted.
    difference = kept[DIFFERENCE]
    assert [a.score for a in difference.attempts] == [0.0, 1.0] and difference.accepted == 1
    assert difference.answer == "It is \\boxed{6}."
    assert len({a.seed for a in difference.attempts}) == 2


def test_messages_replay_and_a_prompt_without_an_answer(replay_run: tuple[Path, Path]) -> None:
    run_dir, _ = replay_run
    kept, rejected = _traces(run_dir, "other")
    assert set(kept) == {PRODUCT, DIFFERENCE}
    assert rejected[SUM]["reason"] == "no attempt reached 0.9 after 1 attempts"
    assert rejected[NO_COMMA]["reason"] == "no attempt reached 0.9 after 1 attempts"
    assert Trace.model_validate(rejected[NO_COMMA]["record"]).attempts[0].verifier == "ifeval"
    assert rejected[ECHO]["reason"] == "the replay backend has no answer for this query"
    manifest = Manifest.load(RunDir(run_dir).shard("generate", "other", 0).manifest)
    assert manifest.reconciles() and (manifest.kept, manifest.rejected) == (2, 3)
    assert manifest.stats["acceptance_by_category"]["math"] == {"done": 3, "accepted": 2, "rate": 0.6667}


def test_replay_file_errors_name_the_line(tmp_path: Path) -> None:
    bad = _write_jsonl(tmp_path / "bad.jsonl", [MESSAGES_ROWS[0], {"prompt": "no conversation here"}])
    with pytest.raises(ReplayFormatError, match=r"bad.jsonl:2: expected 'conversations'"):
        ReplayChatModel(bad)
    unanswered = _write_jsonl(tmp_path / "unanswered.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(ReplayFormatError, match="last turn must be the assistant"):
        ReplayChatModel(unanswered)
