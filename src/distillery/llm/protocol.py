"""The one interface every text-generation backend implements (vLLM engine, HTTP, transformers, replay).

Teachers, the LLM judge, decontamination's second check and evaluation all talk to a `ChatModel`, so any
backend can serve any of those roles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from distillery.core.recipe import Sampling

Conversation = list[dict[str, str]]
"""OpenAI-style messages: [{"role": "system"|"user"|"assistant", "content": str}, ...]."""


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    latency_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class ChatModel(Protocol):
    name: str

    def chat(self, conversations: list[Conversation], sampling: Sampling, seeds: list[int] | None = None) -> list[Completion]:
        """Answer each conversation once; `seeds[i]` seeds conversation i where the backend supports it."""
        ...

    def close(self) -> None:
        """Release the engine, server connection or model."""
        ...
