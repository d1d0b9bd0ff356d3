"""Packed log-likelihood scoring of documents under a causal language model.

Several documents share one forward pass: their tokens are concatenated into one row, position ids restart
at 0 for every document, and attention is causal *within* each document only (block-diagonal causal), done
by running scaled-dot-product attention once per document segment. No L x L mask is ever built, so a 32k
row costs what its documents cost, not 32k^2. Only target tokens (a trace's response, not its prompt) are
scored, by `distillery_kernels.linear_logprobs` from the final hidden states (the fused Triton kernel on a GPU,
the chunked torch reference on CPU), so the full (tokens x vocabulary) logit matrix never exists either.

For a document with context c_1..c_m and target t_1..t_k:
    NLL = -(1/k) * sum_j log p(t_j | c_1..c_m, t_1..t_{j-1}),   perplexity = exp(NLL).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from distillery.core.console import progress_bar

from distillery.hardware import choose_dtype
from distillery.hardware import resolve_device as device_name
from distillery_kernels import linear_logprobs

ATTENTION_NAME = "distillery_document_sdpa"


@dataclass(frozen=True)
class Document:
    """One scored sequence: `context_ids` condition the model and are not scored; `target_ids` are scored."""

    context_ids: tuple[int, ...]
    target_ids: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.context_ids) + len(self.target_ids)


@dataclass(frozen=True)
class DocumentScore:
    nll_sum: float
    """Sum of negative log-likelihoods (nats) over the scored target tokens."""
    tokens: int
    """Target tokens scored (all of them, unless the document has no context: then its first is unscorable)."""

    @property
    def mean_nll(self) -> float:
        return self.nll_sum / self.tokens if self.tokens else float("nan")

    @property
    def ppl(self) -> float:
        return math.exp(self.mean_nll) if self.tokens else float("nan")


def document_causal_attention(
    module: torch.nn.Module,
    query_BHLD: torch.Tensor,
    key_BKLD: torch.Tensor,
    value_BKLD: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seq_lens_q: torch.Tensor | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """Causal attention restricted to each document of a packed row (a transformers attention function).

    `cu_seq_lens_q` holds the cumulative document boundaries [0, l_1, l_1 + l_2, ..., L] of the single
    packed row, as in flash-attention's varlen interface; without it the row is one causal document.
    Returns the output as (batch, length, heads, head_dim), the layout transformers expects.
    """
    if attention_mask is not None:
        raise ValueError("document attention takes no attention mask: pack documents instead of padding them")
    length = query_BHLD.shape[2]
    bounds = [0, length] if cu_seq_lens_q is None else [int(b) for b in cu_seq_lens_q.tolist()]
    if bounds[-1] != length or (cu_seq_lens_q is not None and query_BHLD.shape[0] != 1):
        raise ValueError(f"document boundaries {bounds[:3]}...{bounds[-1]} do not describe one packed row of {length}")
    out_BHLD = torch.empty_like(query_BHLD)
    for start, end in itertools.pairwise(bounds):
        out_BHLD[:, :, start:end] = F.scaled_dot_product_attention(
            query_BHLD[:, :, start:end],
            key_BKLD[:, :, start:end],
            value_BKLD[:, :, start:end],
            is_causal=True,
            scale=scaling,
            enable_gqa=key_BKLD.shape[1] != query_BHLD.shape[1],
        )
    return out_BHLD.transpose(1, 2).contiguous(), None


def register_document_attention() -> str:
    """Make `document_causal_attention` selectable as `attn_implementation=ATTENTION_NAME`."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, document_causal_attention)
    return ATTENTION_NAME


def plan_passes(lengths: Sequence[int], tokens_per_pass: int) -> list[list[int]]:
    """Group document indices into forward passes of at most `tokens_per_pass` tokens (first-fit decreasing).

    A document longer than the budget gets a pass of its own; it is never split.
    """
    order = sorted(range(len(lengths)), key=lambda index: -lengths[index])
    passes: list[list[int]] = []
    room: list[int] = []
    for index in order:
        for slot, free in enumerate(room):
            if lengths[index] <= free:
                passes[slot].append(index)
                room[slot] -= lengths[index]
                break
        else:
            passes.append([index])
            room.append(max(tokens_per_pass - lengths[index], 0))
    return passes


def resolve_device(device: str) -> torch.device:
    return torch.device(device_name(device))


class PackedScorer:
    """Scores documents with a causal LM, packing several into each forward pass."""

    def __init__(self, model_dir: Path | str, device: str = "auto", dtype: str = "auto",
                 tokens_per_pass: int = 8192, logits_chunk: int = 512, model_kwargs: dict[str, Any] | None = None) -> None:
        """`model_kwargs` go to `from_pretrained` (config overrides such as `num_hidden_layers` for benchmarks)."""
        from transformers import AutoModelForCausalLM

        self.device = resolve_device(device)
        self.dtype = choose_dtype("perplexity reference", self.device.type, dtype).dtype
        self.tokens_per_pass = tokens_per_pass
        self.logits_chunk = logits_chunk
        self.model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=getattr(torch, self.dtype), attn_implementation=register_document_attention(), **(model_kwargs or {})
        ).to(self.device).eval()
        if getattr(self.model.config, "final_logit_softcapping", None):
            raise ValueError(f"{model_dir}: logit soft-capping is not supported by the chunked scorer")
        self.decoder = self.model.get_decoder()
        self.lm_head = self.model.get_output_embeddings()
        if getattr(self.lm_head, "bias", None) is not None:
            raise ValueError(f"{model_dir}: an output head with a bias is not supported by the fused scorer")

    @torch.inference_mode()
    def score(self, documents: Sequence[Document], progress: bool = False) -> list[DocumentScore]:
        """Score every document; the result is in input order."""
        passes = plan_passes([len(doc) for doc in documents], self.tokens_per_pass)
        scores: list[DocumentScore | None] = [None] * len(documents)
        for indices in progress_bar(passes, desc="perplexity passes", unit="pass", disable=not progress):
            for index, result in zip(indices, self._score_pass([documents[i] for i in indices])):
                scores[index] = result
        return [s for s in scores if s is not None]

    def _score_pass(self, documents: Sequence[Document]) -> list[DocumentScore]:
        ids: list[int] = []
        positions: list[int] = []
        bounds = [0]
        predictor_rows: list[int] = []
        target_ids: list[int] = []
        for doc in documents:
            start = len(ids)
            ids.extend(doc.context_ids)
            ids.extend(doc.target_ids)
            positions.extend(range(len(doc)))
            bounds.append(len(ids))
            first_target = start + len(doc.context_ids)
            for position in range(max(first_target, start + 1), len(ids)):
                predictor_rows.append(position - 1)
                target_ids.append(ids[position])
        device = self.device
        input_ids_1L = torch.tensor([ids], device=device)
        position_ids_1L = torch.tensor([positions], device=device)
        cu_seq_lens = torch.tensor(bounds, device=device, dtype=torch.int32)
        hidden_1LD = self.decoder(
            input_ids=input_ids_1L, position_ids=position_ids_1L, use_cache=False,
            cu_seq_lens_q=cu_seq_lens, cu_seq_lens_k=cu_seq_lens,
            max_length_q=max(len(d) for d in documents), max_length_k=max(len(d) for d in documents),
        ).last_hidden_state
        # row r predicts token r + 1; a document's predictor rows lie inside it, so its bounds group them
        rows_N = torch.tensor(predictor_rows, device=device, dtype=torch.long)
        targets_L = torch.zeros(len(ids), device=device, dtype=torch.long).index_put_(
            (rows_N,), torch.tensor(target_ids, device=device, dtype=torch.long))
        mask_L = torch.zeros(len(ids), device=device, dtype=torch.bool).index_fill_(0, rows_N, True)
        scored = linear_logprobs(hidden_1LD[0], self.lm_head.weight, targets_L, mask_L, cu_seq_lens,
                                 chunk_tokens=self.logits_chunk)
        return [DocumentScore(float(total), int(count))
                for total, count in zip(scored.nll_sum_D.tolist(), scored.tokens_D.tolist())]
