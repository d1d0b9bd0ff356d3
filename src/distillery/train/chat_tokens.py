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


NO_TRAINED_TOKENS = "the last assistant turn has no tokens"


@dataclass(frozen=True)
class TokenizedSample:
    tokens: np.ndarray
    """int32 token ids of the whole conversation."""
    loss_mask: np.ndarray
    """uint8, 1 on tokens of the last assistant turn (its content and end-of-turn marker)."""

    def __len__(self) -> int:
        return len(self.tokens)


def render_conversation(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, int]:
    """The conversation as text, and the character offset where the last assistant turn's content starts."""
    if not messages or messages[-1]["role"] != "assistant":
        raise TemplateError("the conversation must end with an assistant turn")
    full_text = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt_text = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    if not full_text.startswith(prompt_text):
        raise TemplateError("the rendered prompt is not a prefix of the rendered conversation")
    return full_text, len(prompt_text)


def tokenize_rendered(tokenizer: Any, rendered: list[tuple[str, int]]) -> list[TokenizedSample]:
    """Tokenize rendered conversations in one batch (the fast tokenizer spreads a batch over its threads).

    A sample whose last turn rendered to no tokens comes back with an all-zero mask for the caller to reject.
    """
    if not rendered:
        return []
    encoded = tokenizer([text for text, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
    samples = []
    for ids, offsets, (_, boundary) in zip(encoded["input_ids"], encoded["offset_mapping"], rendered):
        starts = np.asarray([start for start, _ in offsets], dtype=np.int64)
        loss_mask = (starts >= boundary).astype(np.uint8)
        samples.append(TokenizedSample(np.asarray(ids, dtype=np.int32), loss_mask))
    return samples


def tokenize_conversation(tokenizer: Any, messages: list[dict[str, str]]) -> TokenizedSample:
    """Render `messages` (the last one an assistant turn) and mask every token before that turn's content."""
    sample = tokenize_rendered(tokenizer, [render_conversation(tokenizer, messages)])[0]
    if not sample.loss_mask.any():
        raise TemplateError(NO_TRAINED_TOKENS)
    return sample


def trace_messages(trace: dict[str, Any]) -> list[dict[str, str]]:
    """The query's messages followed by the accepted response as the assistant turn."""
    from distillery.schema.records import Trace

    parsed = Trace.model_validate(trace)
    if parsed.accepted is None:
        raise TemplateError("trace has no accepted response")
    messages = [m.model_dump() for m in parsed.query.messages]
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    return messages + [{"role": "assistant", "content": parsed.response}]
