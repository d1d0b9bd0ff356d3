"""The grey-zone second check: an LLM judges whether a query and a benchmark item are the same problem.

Any `ChatModel` can judge (distillery.llm.protocol); the recipe picks a backend and a model. Decoding is greedy and
seeded, so a verdict is reproducible. A reply that is neither yes nor no counts as "unclear" and keeps the query.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from distillery.llm.build import build_chat_model
from distillery.llm.protocol import ChatModel, ModelSpec, Sampling

PROMPT = (
    "Decide whether two problems are the same problem. They are the same if they ask the same question about the "
    "same objects and quantities, even when worded or formatted differently. Changing any number, object or the "
    "question asked makes them different.\n\nProblem A:\n{query}\n\nProblem B:\n{item}\n\n"
    "Are Problem A and Problem B the same problem? Answer with one word: yes or no."
)
_VERDICT = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
Verdict = Literal["same", "different", "unclear"]


class JudgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["transformers"] = Field("transformers", description="ChatModel backend of the judge.")
    model: str = Field(description="Model folder or hub id of the judge (e.g. a Qwen2.5-7B-Instruct folder).")
    device: str = Field("cpu", description="Device of the judge model.")
    max_chars: int = Field(2000, ge=100, description="Each problem is cut to this many characters in the prompt.")
    max_tokens: int = Field(4, ge=1, description="Tokens the judge may answer with.")
    batch_size: int = Field(8, ge=1, description="Pairs judged per batch.")


def build_judge(config: JudgeConfig) -> ChatModel:
    spec = ModelSpec(name="contamination-judge", model=config.model, backend=config.backend,
                     options={"device": config.device, "max_batch": config.batch_size})
    return build_chat_model(spec)


def parse_verdict(reply: str) -> Verdict:
    match = _VERDICT.search(reply)
    if match is None:
        return "unclear"
    return "same" if match.group(1).lower() == "yes" else "different"


def judge_pairs(model: ChatModel, pairs: list[tuple[str, str]], config: JudgeConfig) -> list[tuple[Verdict, str]]:
    """(verdict, raw reply) for each (query text, benchmark text) pair."""
    if not pairs:
        return []
    conversations = [[{"role": "user", "content": PROMPT.format(query=q[:config.max_chars], item=b[:config.max_chars])}]
                     for q, b in pairs]
    sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=config.max_tokens)
    replies = model.chat(conversations, sampling, seeds=[0] * len(pairs))
    return [(parse_verdict(reply.text), reply.text.strip()) for reply in replies]
