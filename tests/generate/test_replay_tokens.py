"""Replayed answers carry token counts: a released file has none, so the student's tokenizer counts them."""

from __future__ import annotations

import json
from pathlib import Path

from distillery.core.recipe import parse_recipe
from distillery.generate.token_count import counting_tokenizer, with_counting_tokenizer
from distillery.llm.protocol import Sampling
from distillery.llm.replay import ReplayChatModel
from distillery.models import load_tokenizer


def test_replay_counts_answer_tokens_with_the_embedded_student_by_default(tmp_path: Path) -> None:
    answers = ["<think>\n2 + 2 = 4\n</think>\n\nIt is 4.", "Four."]
    path = tmp_path / "dump.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": a}]}) + "\n"
                            for i, a in enumerate(answers)))
    model = ReplayChatModel(path)
    completions = model.chat([[{"role": "user", "content": "q0"}], [{"role": "user", "content": "q1"}]], Sampling())
    tokenizer = load_tokenizer("smollm2")
    assert model.tokenizer == "smollm2"
    assert [c.completion_tokens for c in completions] == [len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers]
    assert all(c.completion_tokens > 0 for c in completions)


def _recipe(steps: dict, options: dict | None = None, backend: str = "replay"):
    return parse_recipe({"name": "t", "run_dir": "/tmp/unused", "teachers": [
        {"name": "r1", "model": "dump.jsonl", "backend": backend, "options": options or {}}], "steps": steps}, check_paths=False)


def test_the_counting_tokenizer_is_the_students_then_the_reference_models() -> None:
    full = {"generate": {}, "perplexity": {"model": "/models/Qwen2.5-32B-ref"}, "structure": {"tokenizer": "/models/student-tok"},
            "pack": {"student": "/models/Qwen2.5-32B"}}
    cases = [(full, "/models/Qwen2.5-32B"),
             ({k: v for k, v in full.items() if k != "pack"}, "/models/student-tok"),
             ({"generate": {}, "perplexity": {"model": "/models/Qwen2.5-32B-ref"}}, "/models/Qwen2.5-32B-ref"),
             ({"generate": {}}, "smollm2")]
    for steps, expected in cases:
        recipe = _recipe(steps)
        assert counting_tokenizer(recipe.teachers[0], recipe) == expected
        assert with_counting_tokenizer(recipe.teachers[0], recipe).options == {"tokenizer": expected}
    own = _recipe(full, {"tokenizer": "/models/teacher-tok"})
    assert counting_tokenizer(own.teachers[0], own) == "/models/teacher-tok"
    served = _recipe(full, {"base_url": "http://x/v1"}, backend="openai")
    assert counting_tokenizer(served.teachers[0], served) is None, "a served model reports its own counts"
    assert with_counting_tokenizer(served.teachers[0], served) is served.teachers[0]
