"""Where one rank's Megatron tensors sit inside the model's Hugging Face-named global tensors.

A checkpoint stores every tensor under its Hugging Face name with its global shape, each tensor-parallel rank
writing its slice (`torch.distributed.checkpoint` records the offsets). A job with any other TP, PP or DP size
then reads exactly the slices it needs, and the final checkpoint already is the Hugging Face state dict.

The slices (see convert.py for the Megatron layout): the fused QKV of a rank holds whole query groups, so its
queries, keys and values are contiguous row blocks of `q_proj`, `k_proj`, `v_proj`; `linear_fc1` is the rank's
row block of `gate_proj` stacked on its block of `up_proj`; row-parallel weights split columns; embeddings and
the output layer split the vocabulary; norms are whole on every rank.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from distillery.train.convert import _fuse_qkv, _split_qkv
from distillery.train.gpt import ModelShape


@dataclass(frozen=True)
class Piece:
    """This rank's slice of a global tensor: split along `dim` over the TP group, or whole (`dim` None)."""

    local: torch.Tensor
    dim: int | None


@dataclass(frozen=True)
class RankLayout:
    shape: ModelShape
    tensor_parallel: int
    pipeline_parallel: int
    pp_rank: int

    @property
    def first_layer(self) -> int:
        return self.pp_rank * (self.shape.num_layers // self.pipeline_parallel)

    def _local_shape(self) -> ModelShape:
        return replace(self.shape, num_heads=self.shape.num_heads // self.tensor_parallel,
                       num_kv_heads=self.shape.num_kv_heads // self.tensor_parallel)

    def to_global(self, state: dict[str, torch.Tensor]) -> dict[str, Piece]:
        """Megatron state of this rank -> its pieces of the Hugging Face tensors.

        With tied embeddings under pipeline parallelism the last stage's `output_layer.weight` is a copy of the
        embedding (kept equal by the trainer): it is not stored.
        """
        local_shape = self._local_shape()
        pieces: dict[str, Piece] = {}
        for name, tensor in state.items():
            if name == "embedding.word_embeddings.weight":
                pieces["model.embed_tokens.weight"] = Piece(tensor, 0)
            elif name == "output_layer.weight":
                if not self.shape.tie_embeddings:
                    pieces["lm_head.weight"] = Piece(tensor, 0)
            elif name == "decoder.final_layernorm.weight":
                pieces["model.norm.weight"] = Piece(tensor, None)
            else:
                pieces.update(self._layer_pieces(name, tensor, local_shape))
        return pieces

    def _layer_pieces(self, name: str, tensor: torch.Tensor, local_shape: ModelShape) -> dict[str, Piece]:
        _, _, index, rest = name.split(".", 3)
        prefix = f"model.layers.{self.first_layer + int(index)}."
        per_group = local_shape.num_heads // local_shape.num_kv_heads
        if rest.startswith("self_attention.linear_qkv."):
            kind = rest.rsplit(".", 1)[1]
            tail = tensor.shape[1:]
            q, k, v = _split_qkv(tensor.reshape(local_shape.num_kv_heads, per_group + 2, local_shape.head_dim, *tail),
                                 local_shape)
            return {prefix + f"self_attn.{proj}.{kind}": Piece(part, 0)
                    for proj, part in (("q_proj", q), ("k_proj", k), ("v_proj", v))}
        if rest == "mlp.linear_fc1.weight":
            gate, up = tensor.chunk(2, dim=0)
            return {prefix + "mlp.gate_proj.weight": Piece(gate, 0), prefix + "mlp.up_proj.weight": Piece(up, 0)}
        simple = {"self_attention.linear_proj.weight": ("self_attn.o_proj.weight", 1),
                  "mlp.linear_fc2.weight": ("mlp.down_proj.weight", 1),
                  "input_layernorm.weight": ("input_layernorm.weight", None),
                  "pre_mlp_layernorm.weight": ("post_attention_layernorm.weight", None)}
        if rest not in simple:
            raise ValueError(f"no Hugging Face name for Megatron tensor {name!r}")
        target, dim = simple[rest]
        return {prefix + target: Piece(tensor, dim)}

    def from_global(self, pieces: dict[str, torch.Tensor], like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loaded pieces (local slices, keyed by Hugging Face name) -> a Megatron state shaped like `like`."""
        local_shape = self._local_shape()
        state: dict[str, torch.Tensor] = {}
        for name, template in like.items():
            if name == "embedding.word_embeddings.weight":
                state[name] = pieces["model.embed_tokens.weight"]
            elif name == "output_layer.weight":
                state[name] = pieces["model.embed_tokens.weight" if self.shape.tie_embeddings else "lm_head.weight"]
            elif name == "decoder.final_layernorm.weight":
                state[name] = pieces["model.norm.weight"]
            else:
                _, _, index, rest = name.split(".", 3)
                prefix = f"model.layers.{self.first_layer + int(index)}."
                if rest.startswith("self_attention.linear_qkv."):
                    kind = rest.rsplit(".", 1)[1]
                    q, k, v = (pieces[prefix + f"self_attn.{proj}.{kind}"] for proj in ("q_proj", "k_proj", "v_proj"))
                    state[name] = _fuse_qkv(q, k, v, local_shape).reshape(template.shape)
                elif rest == "mlp.linear_fc1.weight":
                    state[name] = torch.cat([pieces[prefix + "mlp.gate_proj.weight"],
                                             pieces[prefix + "mlp.up_proj.weight"]], dim=0)
                else:
                    [(target, _)] = self._layer_pieces(name, template, local_shape).items()
                    state[name] = pieces[target]
        return state

    def requests(self, like: dict[str, torch.Tensor]) -> dict[str, Piece]:
        """The pieces this rank reads to rebuild a state shaped like `like` (the tied output copy included)."""
        pieces = self.to_global(like)
        if self.shape.tie_embeddings and "output_layer.weight" in like:
            pieces["model.embed_tokens.weight"] = Piece(like["output_layer.weight"], 0)
        return pieces
