"""`build_chat_model`: the one way to build a `ChatModel` (a teacher, the eval student, either judge) from a
`ModelSpec`: the backend it asks for, built from its `options`.

`model` may be `smollm2`, the embedded SmolLM2-135M-Instruct. Options per backend (anything else is an error
naming the teacher):
- vllm: passed to `vllm.LLM` (tensor_parallel_size, pipeline_parallel_size, max_model_len, dtype, ...).
- openai: base_url (required), api_key_env (name of the environment variable holding the key; keys never
  go in recipes), concurrency, adaptive, timeout_s, max_retries, retry_for_s, backoff_s, queue_probe_s.
- transformers: device, dtype, max_batch.
- replay: tokenizer (a Hugging Face folder, or `smollm2`, used to count answer tokens; `generate` defaults it to
  its `replay_tokenizer`, the student's).
- synthetic: length_scale and the profile fields of `distillery.synth.teachers.TeacherProfile`; `model` names
  the profile (a rehearsal's stand-in for a paper teacher, answering `distillery synth` queries).
"""

from __future__ import annotations

from typing import Protocol

from distillery.core.registry import LazyRegistry
from distillery.llm.options import BackendConfigError
from distillery.llm.protocol import ChatModel, ModelSpec


class ChatBackend(Protocol):
    """A backend class: builds its `ChatModel` from a spec, checking the spec's options."""

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ChatModel: ...


BACKENDS: LazyRegistry[type[ChatBackend]] = LazyRegistry("backend", {
    "vllm": "distillery.llm.vllm_engine:VLLMChatModel",
    "openai": "distillery.llm.openai_http:OpenAIChatModel",
    "transformers": "distillery.llm.transformers_chat:TransformersChatModel",
    "replay": "distillery.llm.replay:ReplayChatModel",
    "synthetic": "distillery.llm.synthetic:SyntheticChatModel",
})
"""Backend name -> class, imported on first use; each is built with `from_spec(spec)`."""


HEAVY_IMPORTS: dict[str, tuple[str, ...]] = {
    "vllm": ("vllm",),
    "transformers": ("torch", "transformers"),
}
"""Backend name -> the third-party modules building its model imports (a local run preloads them)."""


def build_chat_model(spec: ModelSpec) -> ChatModel:
    """Construct the `ChatModel` a spec names; imports only the backend it uses."""
    if spec.backend not in BACKENDS:
        raise BackendConfigError(f"teacher {spec.name!r}: unknown backend {spec.backend!r}; expected one of "
                                 f"{BACKENDS.names()}")
    return BACKENDS.get(spec.backend).from_spec(spec)


__all__ = ["BACKENDS", "HEAVY_IMPORTS", "BackendConfigError", "build_chat_model"]
