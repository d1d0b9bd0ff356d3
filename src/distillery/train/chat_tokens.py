"""Tokenize a trace with the student's chat template and mark the tokens that carry loss.

Only the last assistant turn is trained on: the prompt, the system turn and any earlier assistant turns of a
multi-turn query are context. The boundary is found in text (the rendered conversation without its last turn,
with the generation prompt, must be a prefix of the whole rendering) and mapped to tokens through the fast
tokenizer's offsets, so tokens are exactly those of one tokenisation of the full conversation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


class TemplateError(ValueError):
    """The chat template does not render the conversation as a prefix plus the last assistant turn."""


@dataclass(frozen=True)
class TokenizedSample:
    tokens: np.ndarray
    """int32 token ids of the whole conversation."""
    loss_mask: np.ndarray
    """uint8, 1 on tokens of the last assistant turn (its content and end-of-turn marker)."""

    def __len__(self) -> int:
        return len(self.tokens)


def tokenize_conversation(tokenizer: Any, messages: list[dict[str, str]]) -> TokenizedSample:
    """Render `messages` (the last one an assistant turn) and mask every token before that turn's content."""
    if not messages or messages[-1]["role"] != "assistant":
        raise TemplateError("the conversation must end with an assistant turn")
    full_text = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt_text = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    if not full_text.startswith(prompt_text):
        raise TemplateError("the rendered prompt is not a prefix of the rendered conversation")
    encoded = tokenizer(full_text, add_special_tokens=False, return_offsets_mapping=True)
    tokens = np.asarray(encoded["input_ids"], dtype=np.int32)
    starts = np.asarray([start for start, _ in encoded["offset_mapping"]], dtype=np.int64)
    loss_mask = (starts >= len(prompt_text)).astype(np.uint8)
    if not loss_mask.any():
        raise TemplateError("the last assistant turn has no tokens")
    return TokenizedSample(tokens, loss_mask)


def trace_messages(trace: dict[str, Any]) -> list[dict[str, str]]:
    """The query's messages followed by the accepted response as the assistant turn."""
    from distillery.core.records import Trace

    parsed = Trace.model_validate(trace)
    if parsed.accepted is None:
        raise TemplateError("trace has no accepted response")
    messages = [m.model_dump() for m in parsed.query.messages]
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    return messages + [{"role": "assistant", "content": parsed.response}]
