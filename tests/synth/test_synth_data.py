"""The synthetic corpus is deterministic per seed, goes through the real ingest, and its teachers' answers are
judged by the real verifiers as they were written: Math-Verify, the code sandbox, the IFEval checker, the
multiple-choice verifier."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from distillery.generate.normalise import normalise_response
from distillery.ingest.rows import query_from_row
from distillery.llm.build import build_chat_model
from distillery.llm.protocol import ModelSpec, Sampling
from distillery.synth.tasks import MIX, category_counts, make_task, task_from_prompt
from distillery.synth.teachers import PROFILES, answer, final_answer, lay_out
from distillery.synth.write import write_queries
from distillery.verify import VerifyConfig, build_verifier


def test_corpus_is_deterministic_per_seed_and_in_the_paper_mix(tmp_path: Path) -> None:
    first, again, other = (write_queries(tmp_path / name, 300, seed) for name, seed in
                           (("a", 5), ("b", 5), ("c", 6)))
    assert first == again == other == category_counts(300)
    assert sum(first.values()) == 300
    assert first["chat"] > first["math"] > first["code"] > first["science"] > first["instruction_following"] >= 1
    for category in MIX:
        assert (tmp_path / "a" / f"{category}.jsonl").read_bytes() == (tmp_path / "b" / f"{category}.jsonl").read_bytes()
        assert (tmp_path / "a" / f"{category}.jsonl").read_bytes() != (tmp_path / "c" / f"{category}.jsonl").read_bytes()


def test_a_prompt_rebuilds_its_task_and_rows_go_through_the_real_ingest() -> None:
    for category in MIX:
        task = make_task(11, category, 3)
        query = query_from_row(task.row(), "auto", None, "synth", {})
        assert query.category == category
        assert task_from_prompt(query.prompt) == task
    code = query_from_row(make_task(11, "code", 0).row(), "auto", None, "synth", {})
    assert code.reference.fn_name == "combine_0" and len(code.reference.tests) == 2
    instructions = query_from_row(make_task(11, "instruction_following", 0).row(), "auto", None, "synth", {})
    assert len(instructions.reference.instructions) >= 2
    with pytest.raises(ValueError, match="not a synthetic prompt"):
        task_from_prompt("What is 2 + 2?")


def test_the_same_attempt_gets_the_same_answer_and_a_retry_a_new_draw() -> None:
    task = make_task(0, "math", 7)
    profile = PROFILES["deepseek-r1"]
    assert answer(task, profile, "deepseek-r1", 42, 2048, 0.0625) == answer(task, profile, "deepseek-r1", 42, 2048, 0.0625)
    drawn = {answer(task, profile, "deepseek-r1", seed, 2048, 0.0625).text for seed in range(5)}
    assert len(drawn) == 5


def test_profiles_are_shaped_like_the_paper_am_shortest_r1_longest() -> None:
    task = make_task(0, "math", 1)
    medians = {}
    for name, profile in PROFILES.items():
        lengths = sorted(answer(task, profile, name, seed, 2048, 0.0625).tokens for seed in range(400))
        medians[name] = lengths[200]
    assert medians["am-thinking-v1"] < medians["qwen3-235b-a22b"] < medians["deepseek-r1"]


@pytest.mark.parametrize("category", ["math", "code", "science", "instruction_following", "chat", "general"])
def test_right_and_wrong_answers_are_judged_as_written_by_the_real_verifiers(category: str) -> None:
    config = VerifyConfig(verifiers={"chat": "ifeval", "general": "ifeval"})
    pairs, written = [], []
    rng = random.Random(0)
    for index in range(2 if category == "code" else 6):
        task = make_task(3, category, index)
        query = query_from_row(task.row(), "auto", None, "synth", {})
        for correct in (True, False):
            response = lay_out("Some reasoning first.", final_answer(task, correct, rng), "tagged")
            pairs.append((query, response))
            written.append(correct)
    with build_verifier(config) as verifier:
        verdicts = verifier.verify_batch(pairs)
        names = {verifier.verifier_name(query) for query, _ in pairs}
    expected = {"math": "math", "code": "code", "science": "choice"}.get(category, "ifeval")
    assert names == {expected}
    assert [v.passed for v in verdicts] == written, [v.details for v in verdicts]


def test_each_layout_normalises_and_its_degenerate_form_is_caught() -> None:
    for layout in ("tagged", "r1", "qwen3"):
        good = normalise_response(lay_out("Think.", "The answer is (A).", layout), layout)
        assert good.problem == "" and "<answer>" in good.text
        broken = normalise_response(lay_out("Think.", "The answer is (A).", layout, broken=True), layout)
        assert broken.problem, layout


def test_the_synthetic_backend_answers_through_the_chat_model_interface() -> None:
    model = build_chat_model(ModelSpec(name="r1", model="deepseek-r1", backend="synthetic",
                                       options={"length_scale": 0.0625, "loop_rate": 1.0, "untagged_rate": 0.0}))
    prompt = make_task(1, "math", 2).prompt
    completion = model.submit([{"role": "user", "content": prompt}], Sampling(max_tokens=4096), 9).result()
    assert completion.extra["synthetic"]["degenerate"] == "loop"
    sentence = completion.text.split("\n\n")[-2].split(". ")[0]
    assert completion.text.count(sentence) >= 30
    with pytest.raises(Exception, match="unknown synthetic teacher profile"):
        build_chat_model(ModelSpec(name="x", model="gpt-9", backend="synthetic"))
