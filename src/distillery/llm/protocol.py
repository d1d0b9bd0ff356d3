"""The one interface every text-generation backend implements (vLLM engine, HTTP, transformers, replay).

Teachers, the LLM judge, decontamination's second check and evaluation all talk to a `ChatModel` built from a
`ModelSpec` by `distillery.llm.build_chat_model`, so any backend can serve any of those roles. `ModelSpec` and
`Sampling` are recipe types and live in `distillery.core.teachers`; they are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from distillery.core.teachers import Backend, ModelSpec, Sampling

__all__ = ["Backend", "ChatModel", "Completion", "Conversation", "ModelSpec", "Sampling", "StreamingChatModel"]

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


def answered(compute: Callable[[], Completion], *expected: type[Exception]) -> Future[Completion]:
    """A future already resolved with `compute()`, or with one of the `expected` errors it raised: the streaming
    loop's way in for a backend whose answer is known at once (replay, synthetic)."""
    future: Future[Completion] = Future()
    try:
        future.set_result(compute())
    except expected as error:
        future.set_exception(error)
    return future


class SubmitsOneByOne:
    """`submit_many` and `set_backlog` for a backend whose requests go out one by one (HTTP, replay)."""

    submit: Callable[[Conversation, Sampling, int | None], Future[Completion]]
    """The backend's own one-request submit."""

    def submit_many(self, requests: list[tuple[Conversation, int | None]],
                    sampling: Sampling) -> list[Future[Completion]]:
        return [self.submit(conversation, sampling, seed) for conversation, seed in requests]

    def set_backlog(self, waiting: bool) -> None:
        """Nothing to record: such a backend does not observe its engine's steps."""
