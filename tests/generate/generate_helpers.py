"""Helpers shared by the generation tests: the bundled quickstart queries and a call-recording model wrapper.

Named uniquely (not `conftest`) so that importing it cannot pick up another test area's conftest module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import distillery
from distillery.core.formats import query_from_messages
from distillery.core.records import Query
from distillery.llm.protocol import ChatModel, Completion, Conversation, Sampling

QUICKSTART_QUERIES = Path(distillery.__file__).parent / "data" / "quickstart" / "queries.jsonl"


def quickstart_queries(category: str | None = None) -> list[Query]:
    text = QUICKSTART_QUERIES.read_text(encoding="utf-8")
    queries = [query_from_messages(json.loads(line)) for line in text.splitlines() if line.strip()]
    return [q for q in queries if category is None or q.category == category]


@dataclass
class RecordingModel:
    """Passes every call to a real model and remembers what each call carried; `close` leaves the model open
    so one engine can serve a whole test module."""

    inner: ChatModel
    calls: list[tuple[list[Conversation], list[int] | None]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    def chat(self, conversations: list[Conversation], sampling: Sampling, seeds: list[int] | None = None) -> list[Completion]:
        self.calls.append((conversations, seeds))
        return self.inner.chat(conversations, sampling, seeds)

    def close(self) -> None:
        """The module fixture closes the real engine."""
