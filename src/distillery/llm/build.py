"""`build_chat_model`: the one way to build a `ChatModel` (a teacher, the eval student, either judge) from a
`ModelSpec`: the backend it asks for, built from its `options`.

`model` may be `smollm2`, the embedded SmolLM2-135M-Instruct. Options per backend (anything else is an error
naming the teacher):
- vllm: passed to `vllm.LLM` (tensor_parallel_size, pipeline_parallel_size, max_model_len, dtype, ...).
- openai: base_url (required), api_key_env (name of the environment variable holding the key; keys never
  go in recipes), concurrency, timeout_s, max_retries, retry_for_s, backoff_s.
- transformers: device, dtype, max_batch.
- replay: tokenizer (a Hugging Face folder, or `smollm2`, used to count answer tokens; `generate` defaults it to
  its `replay_tokenizer`, the student's).
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from distillery.llm.protocol import ChatModel, ModelSpec
from distillery.models import resolve_model


class BackendConfigError(ValueError):
    """A teacher's backend options cannot build its model."""


def _check_options(teacher: ModelSpec, factory: Any, options: dict[str, Any], reserved: set[str]) -> None:
    accepted = set(inspect.signature(factory).parameters) - reserved
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise BackendConfigError(f"teacher {teacher.name!r} ({teacher.backend}): unknown option(s) {unknown}; "
                                 f"expected some of {sorted(accepted)}")


def build_chat_model(teacher: ModelSpec) -> ChatModel:
    """Construct the `ChatModel` a spec names; imports only the backend it uses."""
    options = dict(teacher.options)
    if teacher.backend == "vllm":
        from distillery.llm.vllm_engine import VLLMChatModel

        return VLLMChatModel(resolve_model(teacher.model), options, name=teacher.name)
    if teacher.backend == "openai":
        from distillery.llm.openai_http import OpenAIChatModel

        if "base_url" not in options:
            raise BackendConfigError(f"teacher {teacher.name!r} (openai): options.base_url is required")
        key_variable = options.pop("api_key_env", None)
        _check_options(teacher, OpenAIChatModel, options, {"model", "name", "api_key"})
        if key_variable is not None:
            if key_variable not in os.environ:
                raise BackendConfigError(f"teacher {teacher.name!r} (openai): environment variable {key_variable} is not set")
            options["api_key"] = os.environ[key_variable]
        return OpenAIChatModel(teacher.model, name=teacher.name, **options)
    if teacher.backend == "transformers":
        from distillery.llm.transformers_chat import TransformersChatModel

        _check_options(teacher, TransformersChatModel, options, {"model_path", "name"})
        return TransformersChatModel(resolve_model(teacher.model), name=teacher.name, **options)
    if teacher.backend == "replay":
        from distillery.llm.replay import ReplayChatModel

        _check_options(teacher, ReplayChatModel, options, {"path", "name"})
        return ReplayChatModel(teacher.model, name=teacher.name, **options)
    raise BackendConfigError(f"teacher {teacher.name!r}: unknown backend {teacher.backend!r}")
