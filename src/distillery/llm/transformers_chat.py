"""A `ChatModel` on plain transformers: the teacher backend where vLLM is unavailable, and the LLM judge.

Sampling is done per request with its own `torch.Generator`, so a request's answer depends on its seed and
not on which other requests share its batch. The sampling step runs as a logits processor inside
`generate` (which then picks the sampled token greedily), keeping transformers' batching and KV cache.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Self

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

from distillery.hardware import choose_dtype
from distillery.llm.options import check_options
from distillery.llm.protocol import Completion, Conversation, ModelSpec, Sampling
from distillery.models import resolve_model

logger = logging.getLogger(__name__)



class _SeededSampler(LogitsProcessor):
    """Temperature + top-p sampling with one generator per row; leaves only the sampled token finite."""

    def __init__(self, generators: Sequence[torch.Generator], temperature: float, top_p: float) -> None:
        self.generators = generators
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.LongTensor, scores_BV: torch.FloatTensor) -> torch.FloatTensor:
        if self.temperature == 0:
            return scores_BV
        probs_BV = torch.softmax(scores_BV.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_BV, order_BV = torch.sort(probs_BV, descending=True, dim=-1)
            outside_BV = sorted_BV.cumsum(dim=-1) - sorted_BV > self.top_p
            sorted_BV = sorted_BV.masked_fill(outside_BV, 0.0)
            probs_BV = torch.zeros_like(probs_BV).scatter(-1, order_BV, sorted_BV)
        chosen = [torch.multinomial(row_V, 1, generator=gen).item() for row_V, gen in zip(probs_BV, self.generators)]
        out_BV = torch.full_like(scores_BV, float("-inf"))
        out_BV[torch.arange(len(chosen)), torch.tensor(chosen)] = 0.0
        return out_BV


class TransformersChatModel:
    """Chat completions from a local Hugging Face causal LM folder, formatted with its chat template."""

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> Self:
        check_options(spec, cls, spec.options, {"model_path", "name"})
        return cls(resolve_model(spec.model), name=spec.name, **spec.options)

    def __init__(
        self,
        model_path: str,
        device: str = "cpu",
        dtype: str = "auto",
        max_batch: int = 8,
        name: str | None = None,
        num_threads: int | None = None,
    ) -> None:
        """`num_threads` sets torch's intra-op threads for the whole process (1 is much faster on a shared,
        oversubscribed CPU); None leaves torch's default."""
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.name = name or str(model_path).rstrip("/").rsplit("/", 1)[-1]
        self.device = device
        self.max_batch = max_batch
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        chosen = choose_dtype(f"transformers {self.name}", device, dtype).dtype
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, chosen)).to(device).eval()
        eos = self.model.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self.stop_ids = sorted({*eos_ids, self.tokenizer.eos_token_id} - {None})
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 2048))

    def chat(
        self, conversations: list[Conversation], sampling: Sampling, seeds: list[int] | None = None
    ) -> list[Completion]:
        """Answer each conversation once; batches of `max_batch`, one generator per request."""
        if seeds is not None and len(seeds) != len(conversations):
            raise ValueError(f"{len(seeds)} seeds for {len(conversations)} conversations")
        seeds = seeds if seeds is not None else list(range(len(conversations)))
        completions: list[Completion] = []
        for start in range(0, len(conversations), self.max_batch):
            stop = start + self.max_batch
            completions.extend(self._chat_batch(conversations[start:stop], sampling, seeds[start:stop]))
        return completions

    def _chat_batch(self, conversations: list[Conversation], sampling: Sampling, seeds: list[int]) -> list[Completion]:
        started = time.perf_counter()
        prompts = [self.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        prompt_lengths = batch["attention_mask"].sum(dim=1).tolist()
        max_new = max(1, min(sampling.max_tokens, self.context_length - batch["input_ids"].shape[1]))
        generators = [torch.Generator(device=self.device).manual_seed(int(seed)) for seed in seeds]
        sampler = _SeededSampler(generators, sampling.temperature, sampling.top_p)
        with torch.inference_mode():
            output_BT = self.model.generate(
                **batch,
                do_sample=False,
                max_new_tokens=max_new,
                logits_processor=LogitsProcessorList([sampler]),
                eos_token_id=self.stop_ids,
                pad_token_id=self.tokenizer.pad_token_id,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        latency = (time.perf_counter() - started) / len(conversations)
        generated_BT = output_BT[:, batch["input_ids"].shape[1]:].tolist()
        completions = []
        for tokens, prompt_tokens in zip(generated_BT, prompt_lengths):
            end = next((i for i, token in enumerate(tokens) if token in self.stop_ids), None)
            kept = tokens if end is None else tokens[: end + 1]
            completions.append(
                Completion(
                    text=self.tokenizer.decode(kept, skip_special_tokens=True),
                    prompt_tokens=int(prompt_tokens),
                    completion_tokens=len(kept),
                    finish_reason="length" if end is None else "stop",
                    latency_s=latency,
                )
            )
        return completions

    def close(self) -> None:
        """Drop the model so its memory can be reclaimed."""
        del self.model
        self.model = None
