"""A `ChatModel` that answers from already-generated traces instead of a model, for re-verification.

Reads either format, one JSON object per line (`.jsonl` or `.jsonl.gz`):
- AM-Thinking-v1-Distilled: `{"system": ..., "conversations": [{"from": "human"|"assistant", "value": ...,
  "info": {...}}, ...]}`; the last assistant turn is the answer, its `info` (think_content, verify_score,
  model_name, ...) travels along in `Completion.extra["info"]`.
- OpenAI messages: `{"messages": [{"role": ..., "content": ...}, ...]}` ending with the assistant turn.

A stored answer is found by the normalised text of the conversation's user turns, so the teacher's system
prompt does not need to match the file's. A file may hold several answers to one prompt: the n-th request
for a prompt gets the n-th answer, and `available` says how many there are, which bounds regeneration.
A file carries no token counts: answers are counted with the tokenizer of `tokenizer` (a model reference;
`generate` passes its `replay_tokenizer`, the student's, see `distillery.generate.token_count`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Self

from distillery.schema.records import normalise_text
from distillery.core.store import iter_jsonl
from distillery.llm.options import check_options
from distillery.llm.protocol import Completion, Conversation, ModelSpec, Sampling, SubmitsOneByOne, answered
from distillery.models import EMBEDDED, load_tokenizer

logger = logging.getLogger(__name__)

_AM_ROLES = {"human": "user", "user": "user", "assistant": "assistant", "gpt": "assistant", "system": "system"}


class ReplayFormatError(ValueError):
    """A line of the replay file is in neither supported format."""


def prompt_key(conversation: Conversation) -> str:
    """What a stored answer is looked up by: the normalised user turns, in order."""
    return "\x1e".join(normalise_text(m["content"]) for m in conversation if m["role"] == "user")


def parse_replay_row(row: dict[str, Any]) -> tuple[Conversation, str, dict[str, Any]]:
    """(prompt conversation, stored answer, info) of one line in either format."""
    if "conversations" in row:
        turns = [{"role": _AM_ROLES.get(t.get("from", ""), ""), "content": t.get("value", ""), "info": t.get("info") or {}}
                 for t in row["conversations"]]
    elif "messages" in row:
        turns = [{"role": m.get("role", ""), "content": m.get("content", ""), "info": {}} for m in row["messages"]]
    else:
        raise ReplayFormatError(f"expected 'conversations' (AM format) or 'messages' (OpenAI), got keys {sorted(row)}")
    if not turns or turns[-1]["role"] != "assistant":
        raise ReplayFormatError("the last turn must be the assistant's answer")
    prompt = [{"role": t["role"], "content": t["content"]} for t in turns[:-1]]
    if not any(m["role"] == "user" for m in prompt):
        raise ReplayFormatError("no user turn before the answer")
    return prompt, turns[-1]["content"], turns[-1]["info"]


class ReplayChatModel(SubmitsOneByOne):
    """Serves the answers of a released or earlier-generated dataset as if a teacher had written them."""

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> Self:
        check_options(spec, cls, spec.options, {"path", "name"})
        return cls(spec.model, name=spec.name, **spec.options)

    def __init__(self, path: str | Path, tokenizer: str = EMBEDDED, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or self.path.name
        self.tokenizer = tokenizer
        """The model reference whose tokenizer counts the answers' tokens (a file has no counts of its own)."""
        self._answers: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        self._served: dict[str, int] = defaultdict(int)
        for line_number, row in enumerate(iter_jsonl(self.path), start=1):
            try:
                prompt, answer, info = parse_replay_row(row)
            except ReplayFormatError as error:
                raise ReplayFormatError(f"{self.path}:{line_number}: {error}") from None
            self._answers[prompt_key(prompt)].append((answer, info))
        logger.info("replay %s: %d prompts, %d answers", self.path, len(self._answers),
                    sum(len(a) for a in self._answers.values()))

    def available(self, conversation: Conversation) -> int:
        """How many stored answers this conversation has: the most attempts replay can give it."""
        return len(self._answers.get(prompt_key(conversation), ()))

    def chat(self, conversations: list[Conversation], sampling: Sampling, seeds: list[int] | None = None) -> list[Completion]:
        """The next unserved stored answer of each conversation; a KeyError names one that has none left."""
        served_answers = []
        for conversation in conversations:
            key = prompt_key(conversation)
            stored = self._answers.get(key, [])
            served = self._served[key]
            if served >= len(stored):
                raise KeyError(f"{self.path} has {len(stored)} answer(s) for this prompt and all were served: "
                               f"{conversation[-1]['content'][:80]!r}")
            self._served[key] = served + 1
            served_answers.append(stored[served])
        if not served_answers:
            return []
        counts = load_tokenizer(self.tokenizer)([a for a, _ in served_answers], add_special_tokens=False)["input_ids"]
        return [Completion(text=answer, completion_tokens=len(ids), finish_reason="stop", extra={"info": info} if info else {})
                for (answer, info), ids in zip(served_answers, counts)]

    def submit(self, conversation: Conversation, sampling: Sampling, seed: int | None) -> Future[Completion]:
        return answered(lambda: self.chat([conversation], sampling)[0], KeyError)

    def engine_stats(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        self._answers.clear()
