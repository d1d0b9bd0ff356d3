"""The one LLM service: the `ChatModel` protocol, sampling, the backends (vLLM engine, OpenAI-compatible HTTP,
transformers, replay of a released dataset) and `build_chat_model`, used by teachers, the eval student and judges."""

from distillery.llm.build import BackendConfigError, build_chat_model
from distillery.llm.protocol import ChatModel, Completion, Conversation, ModelSpec, Sampling

__all__ = ["BackendConfigError", "ChatModel", "Completion", "Conversation", "ModelSpec", "Sampling", "build_chat_model"]
