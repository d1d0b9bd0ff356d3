"""Replayed answers carry token counts: a released file has none, so the student's tokenizer counts them."""

from __future__ import annotations

import json
from pathlib import Path

from distillery.core.teachers import TeacherConfig
from distillery.generate.stage import GenerateConfig
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


def test_the_teachers_tokenizer_wins_over_the_steps() -> None:
    own = TeacherConfig(name="r1", model="dump.jsonl", backend="replay", options={"tokenizer": "/models/teacher-tok"})
    bare = TeacherConfig(name="r1", model="dump.jsonl", backend="replay")
    served = TeacherConfig(name="r1", model="r1", backend="openai", options={"base_url": "http://x/v1"})
    assert counting_tokenizer(own, "/models/student") == "/models/teacher-tok"
    assert with_counting_tokenizer(bare, "/models/student").options == {"tokenizer": "/models/student"}
    assert counting_tokenizer(served, "/models/student") is None, "a served model reports its own counts"
    assert with_counting_tokenizer(served, "/models/student") is served
    assert GenerateConfig().replay_tokenizer == "smollm2", "the embedded student, the default of every student field"
