"""Model inputs of one packed bin, and the token-weighted loss over a micro-batch of bins."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from megatron.core.packed_seq_params import PackedSeqParams

from distillery_kernels import linear_logprobs, linear_nll_sum
from distillery.train.packed_file import PackedBin


@dataclass
class PackedInputs:
    tokens_1T: torch.Tensor
    position_ids_1T: torch.Tensor
    labels_1T: torch.Tensor
    weights_T: torch.Tensor
    """1.0 where the label is trained on."""
    packed: PackedSeqParams | None
    """Document boundaries (THD); None runs the bin as one causal sequence."""

    @property
    def loss_tokens(self) -> int:
        return int(self.weights_T.sum().item())


def packed_inputs(bin_: PackedBin, device: torch.device, pad_to: int | None = None) -> PackedInputs:
    """Tensors for GPTModel.forward in THD layout; `pad_to` appends one masked filler document (static shapes)."""
    tokens, positions, cu_seqlens = bin_.tokens, bin_.position_ids, bin_.cu_seqlens
    labels, weights = bin_.labels()
    if pad_to is not None and pad_to > len(tokens):
        extra = pad_to - len(tokens)
        tokens = np.concatenate([tokens, np.zeros(extra, tokens.dtype)])
        labels = np.concatenate([labels, np.zeros(extra, labels.dtype)])
        weights = np.concatenate([weights, np.zeros(extra, weights.dtype)])
        positions = np.concatenate([positions, np.arange(extra, dtype=positions.dtype)])
        cu_seqlens = np.concatenate([cu_seqlens, [pad_to]])
    cu_seqlens_t = torch.as_tensor(cu_seqlens, dtype=torch.int32, device=device)
    max_len = int(np.diff(cu_seqlens).max())
    packed = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu_seqlens_t, cu_seqlens_kv=cu_seqlens_t,
                             max_seqlen_q=max_len, max_seqlen_kv=max_len)

    def as_1T(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array.astype(np.int64), device=device)[None]

    return PackedInputs(as_1T(tokens), as_1T(positions), as_1T(labels),
                        torch.as_tensor(weights, dtype=torch.float32, device=device), packed)


def token_losses(model: torch.nn.Module, inputs: PackedInputs) -> torch.Tensor:
    """Per-token cross-entropy [T] of the next-token labels, 0 where `weights_T` is 0 (differentiable).

    With one tensor-parallel rank it comes from the final hidden states and the output weight through
    `distillery_kernels.linear_logprobs` (fused kernel on a GPU, torch reference on CPU); under tensor
    parallelism Megatron's vocabulary-parallel cross-entropy runs on its sharded logits.
    """
    if model.config.tensor_model_parallel_size > 1:
        loss_1T = model(inputs.tokens_1T, inputs.position_ids_1T, attention_mask=None, labels=inputs.labels_1T,
                        packed_seq_params=inputs.packed)
        return loss_1T[0].float() * (inputs.weights_T > 0)
    hidden_TH, weight_VH = _head_inputs(model, inputs)
    return -linear_logprobs(hidden_TH, weight_VH, inputs.labels_1T[0], inputs.weights_T > 0).logprobs_T


def weighted_loss_sum(model: torch.nn.Module, inputs: PackedInputs) -> torch.Tensor:
    """sum_t weights_t * cross-entropy_t: the micro-batch's training loss before normalisation.

    With one tensor-parallel rank through `distillery_kernels.linear_nll_sum`, which on a GPU makes the head's
    gradients during the forward (three matmuls, no [T, V] logits); else the sum of `token_losses`.
    """
    if model.config.tensor_model_parallel_size > 1:
        return (token_losses(model, inputs) * inputs.weights_T).sum()
    hidden_TH, weight_VH = _head_inputs(model, inputs)
    return linear_nll_sum(hidden_TH, weight_VH, inputs.labels_1T[0], inputs.weights_T).loss


def _head_inputs(model: torch.nn.Module, inputs: PackedInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Final hidden states [T, H] and the output weight [V, H], cast to the autocast dtype if autocast is on."""
    hidden_TH = _final_hidden_states(model, inputs)[:, 0]
    weight_VH = (model.shared_embedding_or_output_weight() if model.share_embeddings_and_output_weights
                 else model.output_layer.weight)
    device_type = hidden_TH.device.type
    if torch.is_autocast_enabled(device_type):  # a custom kernel is not autocast: cast as F.linear would
        dtype = torch.get_autocast_dtype(device_type)
        hidden_TH, weight_VH = hidden_TH.to(dtype), weight_VH.to(dtype)
    return hidden_TH, weight_VH


def _final_hidden_states(model: torch.nn.Module, inputs: PackedInputs) -> torch.Tensor:
    """The decoder's output [T, 1, H], final norm applied: what GPTModel returns when it has no post-process."""
    post_process = model.post_process
    model.post_process = False
    try:
        return model(inputs.tokens_1T, inputs.position_ids_1T, attention_mask=None, packed_seq_params=inputs.packed)
    finally:
        model.post_process = post_process
