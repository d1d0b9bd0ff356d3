"""A Megatron-core GPTModel shaped like a Hugging Face Llama or Qwen2 checkpoint.

The model is built for this rank's tensor/pipeline slice (parallel_state must be initialised) with the local
layer spec, RMSNorm, SwiGLU, rotary embeddings and our packed-document core attention (attention.py) in
place of the default one, which cannot take packed sequences without TransformerEngine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

SUPPORTED = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


@dataclass(frozen=True)
class ModelShape:
    """What conversion and model building need from a Hugging Face config."""

    model_type: str
    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    tie_embeddings: bool
    qkv_bias: bool
    max_positions: int
    init_std: float

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> ModelShape:
        model_type = config.get("model_type")
        if model_type not in SUPPORTED:
            raise ValueError(f"model_type {model_type!r} is not supported; expected one of {sorted(SUPPORTED)}")
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ValueError(f"rope scaling {rope!r} is not supported; only plain rotary embeddings")
        heads = int(config["num_attention_heads"])
        return cls(
            model_type=model_type,
            num_layers=int(config["num_hidden_layers"]),
            hidden_size=int(config["hidden_size"]),
            ffn_hidden_size=int(config["intermediate_size"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or int(config["hidden_size"]) // heads),
            vocab_size=int(config["vocab_size"]),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=model_type == "qwen2" or bool(config.get("attention_bias", False)),
            max_positions=int(config.get("max_position_embeddings", 32768)),
            init_std=float(config.get("initializer_range", 0.02)),
        )

    @classmethod
    def from_folder(cls, folder: Path) -> ModelShape:
        import json

        return cls.from_hf_config(json.loads((folder / "config.json").read_text()))

    def parameter_count(self) -> int:
        """Parameters of the whole model (embeddings counted once when tied)."""
        q = self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        attention = self.hidden_size * (q + 2 * kv) + q * self.hidden_size + (q + 2 * kv if self.qkv_bias else 0)
        mlp = 3 * self.hidden_size * self.ffn_hidden_size
        per_layer = attention + mlp + 2 * self.hidden_size
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_embeddings else 2)
        return self.num_layers * per_layer + embeddings + self.hidden_size


RECOMPUTE = ("off", "selective", "full")
"""Activation recompute: none; `selective` recomputes each layer's MLP (its gate, up and product activations are
the largest; FlexAttention already keeps only q, k, v and the output); `full` keeps only the input of every chunk
of `recompute_num_layers` layers and reruns the chunk in backward."""


def recompute_settings(recompute: str, recompute_num_layers: int) -> dict[str, Any]:
    if recompute not in RECOMPUTE:
        raise ValueError(f"recompute must be one of {RECOMPUTE}, got {recompute!r}")
    if recompute == "full":
        return {"recompute_granularity": "full", "recompute_method": "uniform",
                "recompute_num_layers": recompute_num_layers}
    if recompute == "selective":
        return {"recompute_granularity": "selective", "recompute_modules": ["mlp"]}
    return {}


def transformer_config(shape: ModelShape, tensor_parallel: int, pipeline_parallel: int,
                       dtype: torch.dtype, recompute: str = "off", recompute_num_layers: int = 1) -> Any:
    from megatron.core.transformer.transformer_config import TransformerConfig

    return TransformerConfig(
        num_layers=shape.num_layers, hidden_size=shape.hidden_size, ffn_hidden_size=shape.ffn_hidden_size,
        num_attention_heads=shape.num_heads, num_query_groups=shape.num_kv_heads, kv_channels=shape.head_dim,
        normalization="RMSNorm", layernorm_epsilon=shape.rms_norm_eps, gated_linear_unit=True,
        activation_func=F.silu, add_bias_linear=False, add_qkv_bias=shape.qkv_bias,
        hidden_dropout=0.0, attention_dropout=0.0, init_method_std=shape.init_std,
        tensor_model_parallel_size=tensor_parallel, pipeline_model_parallel_size=pipeline_parallel,
        params_dtype=dtype, pipeline_dtype=dtype, bf16=dtype == torch.bfloat16,
        use_cpu_initialization=True, variable_seq_lengths=pipeline_parallel > 1, moe_token_dispatcher_type="alltoall",
        bias_activation_fusion=False, masked_softmax_fusion=False, persist_layer_norm=False,
        bias_dropout_fusion=False, apply_rope_fusion=False, gradient_accumulation_fusion=False,
        cross_entropy_loss_fusion=False, **recompute_settings(recompute, recompute_num_layers),
    )


def layer_spec() -> Any:
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    from distillery.train.attention import PackedDocumentAttention

    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    spec.submodules.self_attention.submodules.core_attention = PackedDocumentAttention
    return spec


def build_model(shape: ModelShape, tensor_parallel: int, pipeline_parallel: int, dtype: torch.dtype,
                device: torch.device, recompute: str = "off", recompute_num_layers: int = 1) -> Any:
    """This rank's slice of the model, on `device`."""
    recompute_settings(recompute, recompute_num_layers)
    if recompute != "off" and device.type != "cuda":
        logger.warning("activation recompute %r requested, but megatron-core 0.16 recompute saves CUDA RNG states, "
                       "which a CPU lacks: on CPU every activation is kept for backward (no recompute; memory grows "
                       "with the bin length)", recompute)
        recompute = "off"
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    config = transformer_config(shape, tensor_parallel, pipeline_parallel, dtype, recompute, recompute_num_layers)
    # With several stages the last one keeps its own copy of a tied embedding as the output layer (the trainer
    # sums the two gradients); Megatron's own tying syncs the copies with CUDA-only code at construction.
    tie = shape.tie_embeddings and pipeline_parallel == 1
    model = GPTModel(
        config=config, transformer_layer_spec=layer_spec(), vocab_size=shape.vocab_size,
        max_sequence_length=shape.max_positions,
        pre_process=parallel_state.is_pipeline_first_stage(), post_process=parallel_state.is_pipeline_last_stage(),
        parallel_output=True, share_embeddings_and_output_weights=tie,
        position_embedding_type="rope", rotary_base=int(shape.rope_theta), rotary_percent=1.0,
    )
    return model.to(device)


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a converted shard; only Megatron's `_extra_state` buffers may be absent from it."""
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("_extra_state")]
    if missing or result.unexpected_keys:
        raise ValueError(f"checkpoint does not match the model: missing {missing[:5]}, unexpected "
                         f"{result.unexpected_keys[:5]}")

