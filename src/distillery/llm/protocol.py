"""The one interface every text-generation backend implements (vLLM engine, HTTP, transformers, replay).

Teachers, the LLM judge, decontamination's second check and evaluation all talk to a `ChatModel` built from a
`ModelSpec` by `distillery.llm.build_chat_model`, so any backend can serve any of those roles.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import Field

from distillery.core.config import StrictModel

Backend = Literal["vllm", "openai", "transformers", "replay", "synthetic"]

Conversation = list[dict[str, str]]
"""OpenAI-style messages: [{"role": "system"|"user"|"assistant", "content": str}, ...]."""


class Sampling(StrictModel):
    temperature: float = Field(0.6, ge=0, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(32768, ge=1, description="Most tokens generated per answer.")


class ModelSpec(StrictModel):
    """Which model to talk to and through which backend: all `build_chat_model` needs."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Short name, used in paths and reports.")
    model: str = Field(description="Model folder, hub id, served model name, or a dataset file for replay.")
    backend: Backend = Field("vllm", description="Generation backend.")
    options: dict[str, Any] = Field(default_factory=dict, description="Backend options (tensor_parallel_size, base_url, ...).")


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


@runtime_checkable
class StreamingChatModel(ChatModel, Protocol):
    """A backend that takes requests one at a time while others run: what the streaming loop feeds.

    `submit` and `submit_many` return at once; each future resolves when its answer is complete (or fails with
    the error that stopped it). The caller bounds how many are in flight, and hands over whole groups with
    `submit_many` so an engine can add them in one step.
    """

    def submit(self, conversation: Conversation, sampling: Sampling, seed: int | None) -> Future[Completion]:
        ...

    def submit_many(self, requests: list[tuple[Conversation, int | None]],
                    sampling: Sampling) -> list[Future[Completion]]:
        """(conversation, seed) pairs, one future each, in order."""
        ...

    def set_backlog(self, waiting: bool) -> None:
        """Whether the caller still has requests to send (an engine's starvation counts only then)."""
        ...

    def engine_stats(self) -> dict[str, float]:
        """What the engine reports now (`kv_cache_usage` in [0, 1], ...); empty when it reports nothing."""
        ...


class SubmitsOneByOne:
    """`submit_many` and `set_backlog` for a backend whose requests go out one by one (HTTP, replay)."""

    def submit(self, conversation: Conversation, sampling: Sampling, seed: int | None) -> Future[Completion]:
        raise NotImplementedError

    def submit_many(self, requests: list[tuple[Conversation, int | None]],
                    sampling: Sampling) -> list[Future[Completion]]:
        return [self.submit(conversation, sampling, seed) for conversation, seed in requests]

    def set_backlog(self, waiting: bool) -> None:
        """Nothing to record: such a backend does not observe its engine's steps."""
