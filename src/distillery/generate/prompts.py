"""What a teacher is sent: its system prompt followed by the query's own turns, and each attempt's seed."""

from __future__ import annotations

import hashlib

from distillery.schema.records import Query
from distillery.llm.protocol import Conversation

THINK_ANSWER_PROMPT = (
    "You are a helpful assistant. Think through the problem step by step before you answer. "
    "Write your reasoning inside <think> </think> tags and then your final response inside <answer> </answer> "
    "tags, like this: <think> reasoning here </think> <answer> answer here </answer>. "
    "For a question with one final result, put it in \\boxed{} inside the answer."
)
"""The default system prompt: the <think>/<answer> layout the distilled traces are stored in."""


def build_conversation(query: Query, system_prompt: str | None) -> Conversation:
    """The teacher's system prompt (default: `THINK_ANSWER_PROMPT`; "" for none), then the query's turns.

    A query that brings its own system turn keeps it and gets no teacher system prompt.
    """
    turns = [{"role": m.role, "content": m.content} for m in query.messages]
    prompt = THINK_ANSWER_PROMPT if system_prompt is None else system_prompt
    if prompt and not any(turn["role"] == "system" for turn in turns):
        turns.insert(0, {"role": "system", "content": prompt})
    return turns


def attempt_seed(base_seed: int, query_id: str, teacher: str, attempt: int) -> int:
    """A 31-bit seed fixed by (recipe seed, query, teacher, attempt): reruns and resumed shards reuse it."""
    digest = hashlib.sha256(f"{base_seed}\x00{query_id}\x00{teacher}\x00{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
