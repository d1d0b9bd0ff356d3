"""Reward model (chat): a transformers sequence-classification model scores (prompt, answer); a
configurable function maps its raw reward to [0, 1]."""

from __future__ import annotations

import math

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distillery.schema.records import Query
from distillery.schema.responses import parse_response
from distillery.verify.config import RewardSettings
from distillery.verify.verdict import SettingsVerifier, Verdict

NAME = "reward_model"


def map_reward(reward: float, settings: RewardSettings) -> float:
    """sigmoid((r - shift) / scale), or (r - low) / (high - low) clipped to [0, 1]."""
    if settings.mapping == "sigmoid":
        return 1.0 / (1.0 + math.exp(-(reward - settings.shift) / settings.scale))
    return min(1.0, max(0.0, (reward - settings.low) / (settings.high - settings.low)))


class RewardVerifier(SettingsVerifier[RewardSettings]):
    """One raw reward per pair: the single logit, or for two labels the second minus the first."""

    name = NAME
    section = "reward"

    def __init__(self, settings: RewardSettings, threshold: float) -> None:
        if not settings.model:
            raise ValueError("reward.model is not set")
        super().__init__(settings, threshold)
        self.tokenizer = AutoTokenizer.from_pretrained(settings.model)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(settings.model).eval()
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        if self.model.config.num_labels not in (1, 2):
            raise ValueError(f"reward model {settings.model} has {self.model.config.num_labels} labels; expected 1 or 2")

    def _text(self, query: Query, answer: str) -> str:
        if self.tokenizer.chat_template:
            conversation = [{"role": "user", "content": query.prompt}, {"role": "assistant", "content": answer}]
            return self.tokenizer.apply_chat_template(conversation, tokenize=False)
        return f"{query.prompt}\n\n{answer}"

    def rewards(self, texts: list[str]) -> list[float]:
        """Raw rewards, `batch_size` texts per forward pass."""
        rewards: list[float] = []
        for start in range(0, len(texts), self.settings.batch_size):
            batch = self.tokenizer(
                texts[start:start + self.settings.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.settings.max_length,
            )
            with torch.inference_mode():
                logits_BL = self.model(**batch).logits.float()
            reward_B = logits_BL[:, 0] if logits_BL.shape[1] == 1 else logits_BL[:, 1] - logits_BL[:, 0]
            rewards.extend(reward_B.tolist())
        return rewards

    def verify_batch(self, pairs: list[tuple[Query, str]]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(pairs)
        texts, slots = [], []
        for slot, (query, response) in enumerate(pairs):
            answer = parse_response(response).answer
            if not answer:
                verdicts[slot] = Verdict.failed(self.name, "empty answer", structure=parse_response(response).problem)
                continue
            texts.append(self._text(query, answer))
            slots.append(slot)
        for slot, reward in zip(slots, self.rewards(texts) if texts else []):
            score = map_reward(reward, self.settings)
            verdicts[slot] = Verdict(score=score, passed=score >= self.threshold, verifier=self.name, details={"reward": reward})
        return [verdict for verdict in verdicts if verdict is not None]

    def close(self) -> None:
        """Drop the model."""
        del self.model
