"""What a teacher is sent and which seed each attempt gets (no engine needed)."""

from __future__ import annotations

import pytest

from distillery.core.recipe import TeacherConfig
from distillery.schema.records import make_query
from distillery.generate.prompts import THINK_ANSWER_PROMPT, attempt_seed, build_conversation
from distillery.llm.build import BackendConfigError, build_chat_model
from distillery.testing import quickstart_query_records


def test_seeds_are_fixed_by_recipe_seed_query_teacher_and_attempt() -> None:
    seeds = {(base, query, teacher, attempt): attempt_seed(base, query, teacher, attempt)
             for base in (0, 1) for query in ("q1", "q2") for teacher in ("a", "b") for attempt in range(4)}
    assert len(set(seeds.values())) == len(seeds), "every coordinate must change the seed"
    assert all(0 <= seed < 2**31 for seed in seeds.values())
    assert attempt_seed(0, "q1", "a", 2) == seeds[(0, "q1", "a", 2)], "a rerun reuses the same seed"


def test_conversation_gets_the_teacher_system_prompt_unless_the_query_has_one() -> None:
    query = make_query("math", [{"role": "user", "content": "What is 1 + 1?"}])
    assert build_conversation(query, None) == [{"role": "system", "content": THINK_ANSWER_PROMPT},
                                               {"role": "user", "content": "What is 1 + 1?"}]
    assert build_conversation(query, "") == [{"role": "user", "content": "What is 1 + 1?"}]
    own = make_query("chat", [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}])
    assert build_conversation(own, "Teacher prompt")[0] == {"role": "system", "content": "Be terse."}
    assert len(build_conversation(own, "Teacher prompt")) == 2


def test_quickstart_sample_covers_three_checkable_categories() -> None:
    queries = quickstart_query_records()
    by_category = {c: [q for q in queries if q.category == c] for c in {q.category for q in queries}}
    assert set(by_category) == {"math", "code", "instruction_following"} and 24 <= len(queries) <= 40
    assert len({q.id for q in queries}) == len(queries)
    assert all(q.reference.answer for q in by_category["math"])
    assert all(q.reference.tests and q.reference.fn_name is None for q in by_category["code"])
    assert all(q.reference.instructions for q in by_category["instruction_following"])


def test_unknown_backend_options_name_the_teacher() -> None:
    with pytest.raises(BackendConfigError, match=r"teacher 'old' \(replay\): unknown option\(s\) \['temperature'\]"):
        build_chat_model(TeacherConfig(name="old", model="x.jsonl", backend="replay", options={"temperature": 1}))
