"""A `ChatModel` over an OpenAI-compatible HTTP server (`vllm serve`, SGLang, a hosted API).

Requests run on one asyncio event loop in a background thread, as many at once as the adaptive limit allows
(llm/adaptive.py: it rises while the server keeps up and backs off when it is overloaded, never above
`concurrency`), so the server batches them; each carries its seed, which vLLM honours per request. `submit` is
the streaming loop's way in (one request, a future back); `chat` sends a list and waits for all of it (the batch
loop).

A request that fails in transit is retried with exponential backoff and jitter, for as long as `retry_for_s`
allows: a dropped or refused connection (a restarting server), a timeout, HTTP 408/409/429 and every 5xx.
Other 4xx answers are the request's own fault and fail at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, Self

import httpx
import openai
from openai import AsyncOpenAI

from distillery.llm.adaptive import AdaptiveConcurrency
from distillery.llm.options import BackendConfigError, check_options
from distillery.llm.server_metrics import WAITING, parse_metrics, server_root
from distillery.llm.protocol import Completion, Conversation, ModelSpec, Sampling, SubmitsOneByOne

logger = logging.getLogger(__name__)

RETRIED_STATUS = {408, 409, 429}
OVERLOAD_STATUS = {429, 502, 503, 504}


def is_transient(error: BaseException) -> bool:
    """Worth retrying: the connection failed or timed out, or the server said it is busy or broken."""
    if isinstance(error, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code in RETRIED_STATUS or error.status_code >= 500
    return False


def is_overload(error: BaseException) -> bool:
    """The server (or its gateway) is past what it can take: fewer requests in flight, not just a retry."""
    if isinstance(error, openai.APIConnectionError):  # includes APITimeoutError
        return True
    return isinstance(error, openai.APIStatusError) and error.status_code in OVERLOAD_STATUS


def _completion_tokens(response: Any) -> int:
    return response.usage.completion_tokens if response.usage else 1


class OpenAIChatModel(SubmitsOneByOne):
    """Chat completions from `<base_url>/chat/completions` for the served model name `model`."""

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> Self:
        """`base_url` is required; the API key is read from the environment variable `api_key_env` names (keys
        never go in recipes)."""
        options = dict(spec.options)
        if "base_url" not in options:
            raise BackendConfigError(f"teacher {spec.name!r} (openai): options.base_url is required")
        key_variable = options.pop("api_key_env", None)
        check_options(spec, cls, options, {"model", "name", "api_key"})
        if key_variable is not None:
            if key_variable not in os.environ:
                raise BackendConfigError(f"teacher {spec.name!r} (openai): environment variable {key_variable} is "
                                         "not set")
            options["api_key"] = os.environ[key_variable]
        return cls(spec.model, name=spec.name, **options)

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key: str = "EMPTY",
        concurrency: int = 64,
        adaptive: bool = True,
        timeout_s: float = 600.0,
        max_retries: int = 12,
        retry_for_s: float = 900.0,
        backoff_s: float = 0.5,
        queue_probe_s: float = 1.0,
        name: str | None = None,
    ) -> None:
        """`max_retries` and `retry_for_s` bound the retries of one request (both must allow another);
        backoff doubles from `backoff_s` up to 30 s. `concurrency` is the most requests in flight; with
        `adaptive` off, exactly that many. An adaptive client reads the server's queue from its /metrics every
        `queue_probe_s` seconds (0: never; a server without vLLM's figures is judged by latency)."""
        self.model = model
        self.name = name or model
        self.concurrency = concurrency
        self.adaptive = adaptive
        self.max_retries = max_retries
        self.retry_for_s = retry_for_s
        self.backoff_s = backoff_s
        self.retries = 0
        self.queue_probe_s = queue_probe_s
        self._probe: asyncio.Task[None] | None = None
        """Retries so far (all requests): the shard's count of transient failures."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-chat", daemon=True)
        self._thread.start()
        self.client: AsyncOpenAI = self._call(self._make_client(base_url, api_key, timeout_s)).result()

    async def _make_client(self, base_url: str, api_key: str, timeout_s: float) -> AsyncOpenAI:
        start = 4 if self.adaptive else self.concurrency
        self.limit = AdaptiveConcurrency(self.concurrency, is_overload, start=min(start, self.concurrency),
                                         floor=1 if self.adaptive else self.concurrency)
        if self.adaptive and self.queue_probe_s > 0:
            self._probe = asyncio.ensure_future(self._probe_queue(server_root(base_url)))
        return AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)

    async def _probe_queue(self, root: str) -> None:
        """Feed the server's queue length to the adaptive limit; stop if the server has no such figure."""
        async with httpx.AsyncClient(timeout=5.0) as http:
            while True:
                try:
                    response = await http.get(f"{root}/metrics")
                    if response.status_code == 404 or (response.is_success and WAITING not in response.text):
                        self.limit.observe_queue(None)
                        return
                    if response.is_success:
                        self.limit.observe_queue(parse_metrics(response.text).get(WAITING))
                except httpx.HTTPError:
                    pass  # down or restarting: the last reading stands, failed requests speak for themselves
                await asyncio.sleep(self.queue_probe_s)

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    async def _one(self, conversation: Conversation, sampling: Sampling, seed: int | None) -> Completion:
        started: list[float] = []  # when the first attempt got a slot: latency counts from there, retries included

        async def send() -> Any:
            started[:] = started or [time.perf_counter()]
            return await self.client.chat.completions.create(
                model=self.model,
                messages=conversation,  # type: ignore[arg-type]
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                seed=seed,
            )

        for attempt in range(self.max_retries + 1):
            try:
                response = await self.limit.run(send, _completion_tokens)
                break
            except openai.APIError as error:
                waited = time.perf_counter() - started[0]
                if not is_transient(error) or attempt == self.max_retries or waited >= self.retry_for_s:
                    raise
                delay = min(30.0, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
                self.retries += 1
                logger.warning("%s: %s (%s); retry %d in %.1fs", self.name, type(error).__name__, error, attempt + 1, delay)
                await asyncio.sleep(delay)
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            text=choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason,
            latency_s=time.perf_counter() - started[0],
        )

    def submit(self, conversation: Conversation, sampling: Sampling, seed: int | None) -> Future[Completion]:
        """Send one request; it waits for a free slot of the concurrency limit on the event loop, not here."""
        return self._call(self._one(conversation, sampling, seed))

    def chat(self, conversations: list[Conversation], sampling: Sampling, seeds: list[int] | None = None) -> list[Completion]:
        if seeds is not None and len(seeds) != len(conversations):
            raise ValueError(f"{len(seeds)} seeds for {len(conversations)} conversations")
        futures = [self.submit(c, sampling, seeds[i] if seeds is not None else None) for i, c in enumerate(conversations)]
        return [future.result() for future in futures]

    def engine_stats(self) -> dict[str, float]:
        """The server's engine is not observed from here (its own /metrics has KV-cache use); the client's
        retries and its concurrency limit are."""
        return {"transient_retries": float(self.retries), **self.limit.stats()}

    def close(self) -> None:
        if self._loop.is_closed():
            return
        if self._probe is not None:
            self._loop.call_soon_threadsafe(self._probe.cancel)
        self._call(self.client.close()).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
