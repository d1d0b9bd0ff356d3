"""Core attention for packed sequences without TransformerEngine: documents never attend to each other.

Megatron-core hands core attention q/k/v in THD layout ([tokens, heads, head_dim]) with the document
boundaries in `PackedSeqParams.cu_seqlens_q` once rotary embeddings have been applied per document. On GPU
the mask is a FlexAttention block mask (document-causal, skipping whole blocks across documents); on CPU it is
an explicit block-diagonal causal boolean mask for SDPA. Unpacked input ([seq, batch, heads, head_dim]) gets
plain causal attention.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.utils import divide


def document_ids(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Index of the document each of `total` packed tokens belongs to."""
    positions = torch.arange(total, device=cu_seqlens.device, dtype=cu_seqlens.dtype)
    return torch.searchsorted(cu_seqlens[1:], positions, right=True)


def block_diagonal_causal_mask(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """[total, total] boolean mask, True where query i may attend key j (same document, j <= i)."""
    doc_T = document_ids(cu_seqlens, total)
    same_doc_TT = doc_T[:, None] == doc_T[None, :]
    return torch.tril(same_doc_TT)


@lru_cache(maxsize=1)
def _compiled_flex_attention() -> Any:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_document_attention(q_HTD: torch.Tensor, k_GTD: torch.Tensor, v_GTD: torch.Tensor,
                            cu_seqlens: torch.Tensor, scale: float, compiled: bool = True) -> torch.Tensor:
    """Document-causal attention with FlexAttention; `compiled=False` runs it eagerly (tests on CPU)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    total = q_HTD.shape[1]
    doc_T = document_ids(cu_seqlens, total)

    def document_causal(batch: Any, head: Any, q_index: Any, kv_index: Any) -> Any:
        return (doc_T[q_index] == doc_T[kv_index]) & (q_index >= kv_index)

    block_mask = create_block_mask(document_causal, None, None, total, total, device=q_HTD.device, _compile=compiled)
    enable_gqa = q_HTD.shape[0] != k_GTD.shape[0]
    attend = _compiled_flex_attention() if compiled else flex_attention
    out_1HTD = attend(q_HTD[None], k_GTD[None], v_GTD[None], block_mask=block_mask, scale=scale, enable_gqa=enable_gqa)
    return out_1HTD[0]


class PackedDocumentAttention(MegatronModule):
    """Drop-in for Megatron's core attention (same constructor and forward signature)."""

    def __init__(self, config: TransformerConfig, layer_number: int, attn_mask_type: AttnMaskType,
                 attention_type: str, attention_dropout: float | None = None, softmax_scale: float | None = None,
                 cp_comm_type: str | None = None, pg_collection: Any = None) -> None:
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError("PackedDocumentAttention does not support context parallelism")
        if (attention_dropout if attention_dropout is not None else config.attention_dropout) != 0.0:
            raise ValueError("PackedDocumentAttention has no attention dropout (SFT runs without it)")
        from megatron.core import parallel_state

        tp_size = pg_collection.tp.size() if pg_collection is not None else (
            parallel_state.get_tensor_model_parallel_world_size())
        self.heads_per_partition = divide(config.num_attention_heads, tp_size)
        self.groups_per_partition = divide(config.num_query_groups, tp_size)
        self.softmax_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(config.kv_channels)

    def _expand_groups(self, kv_GTD: torch.Tensor) -> torch.Tensor:
        return kv_GTD.repeat_interleave(self.heads_per_partition // self.groups_per_partition, dim=0)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
                attn_mask_type: AttnMaskType | None = None, attention_bias: Any = None,
                packed_seq_params: PackedSeqParams | None = None) -> torch.Tensor:
        if attention_bias is not None:
            raise ValueError("attention bias is not supported")
        # under autocast rotary embeddings leave q and k in fp32 while v is bf16: attend in v's precision
        query, key = query.to(value.dtype), key.to(value.dtype)
        if packed_seq_params is None:
            # [s, b, h, d] -> [b, h, s, d]: one causal sequence per batch row
            q_BHSD, k_BGSD, v_BGSD = (t.permute(1, 2, 0, 3) for t in (query, key, value))
            repeat = self.heads_per_partition // self.groups_per_partition
            out_BHSD = F.scaled_dot_product_attention(q_BHSD, k_BGSD.repeat_interleave(repeat, dim=1),
                                                      v_BGSD.repeat_interleave(repeat, dim=1), is_causal=True,
                                                      scale=self.softmax_scale)
            seq, batch = query.shape[0], query.shape[1]
            return out_BHSD.permute(2, 0, 1, 3).reshape(seq, batch, -1)
        cu_seqlens = packed_seq_params.cu_seqlens_q
        total = query.shape[0]
        q_HTD, k_GTD, v_GTD = (t.transpose(0, 1) for t in (query, key, value))
        if query.is_cuda:
            out_HTD = flex_document_attention(q_HTD, k_GTD, v_GTD, cu_seqlens, self.softmax_scale)
        else:
            mask_TT = block_diagonal_causal_mask(cu_seqlens, total)
            out_HTD = F.scaled_dot_product_attention(q_HTD, self._expand_groups(k_GTD), self._expand_groups(v_GTD),
                                                     attn_mask=mask_TT, scale=self.softmax_scale)
        return out_HTD.transpose(0, 1).reshape(total, -1)
