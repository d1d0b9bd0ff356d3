"""A `ChatModel` over an OpenAI-compatible HTTP server (`vllm serve`, SGLang, a hosted API).

Requests of one call are sent concurrently (up to `concurrency` in flight) so the server batches them; each
carries its seed, which vLLM honours per request. Transient failures are retried by the `openai` client.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

from openai import OpenAI

from distillery.llm.protocol import Completion, Conversation, Sampling

logger = logging.getLogger(__name__)


class OpenAIChatModel:
    """Chat completions from `<base_url>/chat/completions` for the served model name `model`."""

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key: str = "EMPTY",
        concurrency: int = 64,
        timeout_s: float = 600.0,
        max_retries: int = 3,
        name: str | None = None,
    ) -> None:
        self.model = model
        self.name = name or model
        self.concurrency = concurrency
        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="openai-chat")

    def _one(self, conversation: Conversation, sampling: Sampling, seed: int | None) -> Completion:
        started = time.perf_counter()
        response = self.client.chat.completions.create(
            model=self.model,
            messages=conversation,  # type: ignore[arg-type]
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            seed=seed,
        )
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            text=choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason,
            latency_s=time.perf_counter() - started,
        )

    def chat(self, conversations: list[Conversation], sampling: Sampling, seeds: list[int] | None = None) -> list[Completion]:
        if seeds is not None and len(seeds) != len(conversations):
            raise ValueError(f"{len(seeds)} seeds for {len(conversations)} conversations")
        futures = [
            self._pool.submit(self._one, conversation, sampling, seeds[i] if seeds is not None else None)
            for i, conversation in enumerate(conversations)
        ]
        return [future.result() for future in futures]

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.client.close()
