"""Checkpoint conversion between Hugging Face (Llama, Qwen2) and Megatron-core, sharded for TP x PP.

Megatron's fused QKV weight interleaves the heads by query group: for each KV group g, its query heads, then
its key head, then its value head ([groups, heads_per_group + 2, head_dim, hidden]); tensor parallelism splits
whole groups. `linear_fc1` is [gate; up] of each rank's slice. Row-parallel weights (`linear_proj`,
`linear_fc2`) split the input dimension; embeddings and the output layer split the vocabulary. Pipeline stages
hold consecutive layers, numbered from 0 in each stage; with tied embeddings the last stage keeps its own copy of
the embedding as `output_layer.weight`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from distillery.core.store import atomic_dir
from distillery.train.gpt import ModelShape

Shards = dict[tuple[int, int], dict[str, torch.Tensor]]
"""(tensor rank, pipeline rank) -> that rank's Megatron state dict."""

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "generation_config.json", "chat_template.jinja")


def _check_divisible(shape: ModelShape, tp: int, pp: int) -> None:
    for what, count in (("KV heads", shape.num_kv_heads), ("attention heads", shape.num_heads),
                        ("FFN size", shape.ffn_hidden_size), ("vocabulary", shape.vocab_size)):
        if count % tp:
            raise ValueError(f"{what} ({count}) is not divisible by tensor_parallel={tp}")
    if shape.num_layers % pp:
        raise ValueError(f"layers ({shape.num_layers}) are not divisible by pipeline_parallel={pp}")


def _fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, shape: ModelShape) -> torch.Tensor:
    groups, per_group = shape.num_kv_heads, shape.num_heads // shape.num_kv_heads
    tail = q.shape[1:]
    q_G = q.reshape(groups, per_group, shape.head_dim, *tail)
    k_G = k.reshape(groups, 1, shape.head_dim, *tail)
    v_G = v.reshape(groups, 1, shape.head_dim, *tail)
    return torch.cat([q_G, k_G, v_G], dim=1)


def _split_qkv(fused_G: torch.Tensor, shape: ModelShape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    per_group = shape.num_heads // shape.num_kv_heads
    tail = fused_G.shape[3:]
    q, k, v = torch.split(fused_G, [per_group, 1, 1], dim=1)
    return (q.reshape(shape.num_heads * shape.head_dim, *tail), k.reshape(shape.num_kv_heads * shape.head_dim, *tail),
            v.reshape(shape.num_kv_heads * shape.head_dim, *tail))


def hf_to_megatron(hf: dict[str, torch.Tensor], shape: ModelShape, tp: int, pp: int) -> Shards:
    _check_divisible(shape, tp, pp)
    per_stage = shape.num_layers // pp
    embedding = hf["model.embed_tokens.weight"]
    output = embedding if shape.tie_embeddings else hf["lm_head.weight"]
    shards: Shards = {}
    for pp_rank in range(pp):
        for tp_rank in range(tp):
            sd: dict[str, torch.Tensor] = {}
            if pp_rank == 0:
                sd["embedding.word_embeddings.weight"] = embedding.chunk(tp, dim=0)[tp_rank]
            if pp_rank == pp - 1:
                sd["decoder.final_layernorm.weight"] = hf["model.norm.weight"]
                if not shape.tie_embeddings or pp > 1:
                    sd["output_layer.weight"] = output.chunk(tp, dim=0)[tp_rank]
            for local in range(per_stage):
                src = f"model.layers.{pp_rank * per_stage + local}."
                dst = f"decoder.layers.{local}."
                attn = src + "self_attn."
                qkv = _fuse_qkv(hf[attn + "q_proj.weight"], hf[attn + "k_proj.weight"], hf[attn + "v_proj.weight"],
                                shape)
                sd[dst + "self_attention.linear_qkv.weight"] = (
                    qkv.chunk(tp, dim=0)[tp_rank].reshape(-1, shape.hidden_size))
                if shape.qkv_bias:
                    bias = _fuse_qkv(hf[attn + "q_proj.bias"], hf[attn + "k_proj.bias"], hf[attn + "v_proj.bias"],
                                     shape)
                    sd[dst + "self_attention.linear_qkv.bias"] = bias.chunk(tp, dim=0)[tp_rank].reshape(-1)
                sd[dst + "self_attention.linear_proj.weight"] = hf[attn + "o_proj.weight"].chunk(tp, dim=1)[tp_rank]
                sd[dst + "input_layernorm.weight"] = hf[src + "input_layernorm.weight"]
                sd[dst + "pre_mlp_layernorm.weight"] = hf[src + "post_attention_layernorm.weight"]
                gate = hf[src + "mlp.gate_proj.weight"].chunk(tp, dim=0)[tp_rank]
                up = hf[src + "mlp.up_proj.weight"].chunk(tp, dim=0)[tp_rank]
                sd[dst + "mlp.linear_fc1.weight"] = torch.cat([gate, up], dim=0)
                sd[dst + "mlp.linear_fc2.weight"] = hf[src + "mlp.down_proj.weight"].chunk(tp, dim=1)[tp_rank]
            shards[(tp_rank, pp_rank)] = {name: tensor.clone().contiguous() for name, tensor in sd.items()}
    return shards


def megatron_to_hf(shards: Shards, shape: ModelShape) -> dict[str, torch.Tensor]:
    tp = 1 + max(t for t, _ in shards)
    pp = 1 + max(p for _, p in shards)
    _check_divisible(shape, tp, pp)
    per_stage = shape.num_layers // pp

    def cat(pp_rank: int, name: str, dim: int) -> torch.Tensor:
        return torch.cat([shards[(t, pp_rank)][name] for t in range(tp)], dim=dim)

    hf: dict[str, torch.Tensor] = {"model.embed_tokens.weight": cat(0, "embedding.word_embeddings.weight", 0),
                                   "model.norm.weight": shards[(0, pp - 1)]["decoder.final_layernorm.weight"]}
    if not shape.tie_embeddings:
        hf["lm_head.weight"] = cat(pp - 1, "output_layer.weight", 0)
    for pp_rank in range(pp):
        for local in range(per_stage):
            src = f"decoder.layers.{local}."
            dst = f"model.layers.{pp_rank * per_stage + local}."
            first = shards[(0, pp_rank)]
            per_group = shape.num_heads // shape.num_kv_heads
            qkv = cat(pp_rank, src + "self_attention.linear_qkv.weight", 0)
            q, k, v = _split_qkv(qkv.reshape(shape.num_kv_heads, per_group + 2, shape.head_dim, -1), shape)
            hf.update({dst + "self_attn.q_proj.weight": q, dst + "self_attn.k_proj.weight": k,
                       dst + "self_attn.v_proj.weight": v})
            if shape.qkv_bias:
                bias = cat(pp_rank, src + "self_attention.linear_qkv.bias", 0)
                q, k, v = _split_qkv(bias.reshape(shape.num_kv_heads, per_group + 2, shape.head_dim), shape)
                hf.update({dst + "self_attn.q_proj.bias": q, dst + "self_attn.k_proj.bias": k,
                           dst + "self_attn.v_proj.bias": v})
            hf[dst + "self_attn.o_proj.weight"] = cat(pp_rank, src + "self_attention.linear_proj.weight", 1)
            hf[dst + "input_layernorm.weight"] = first[src + "input_layernorm.weight"]
            hf[dst + "post_attention_layernorm.weight"] = first[src + "pre_mlp_layernorm.weight"]
            fc1 = [shards[(t, pp_rank)][src + "mlp.linear_fc1.weight"].chunk(2, dim=0) for t in range(tp)]
            hf[dst + "mlp.gate_proj.weight"] = torch.cat([gate for gate, _ in fc1], dim=0)
            hf[dst + "mlp.up_proj.weight"] = torch.cat([up for _, up in fc1], dim=0)
            hf[dst + "mlp.down_proj.weight"] = cat(pp_rank, src + "mlp.linear_fc2.weight", 1)
    return {name: tensor.contiguous() for name, tensor in hf.items()}


def load_hf_state(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors Hugging Face folder (single file or sharded with an index)."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(str(folder / name)))
    return state


def save_hf_folder(state: dict[str, torch.Tensor], source: Path, target: Path,
                   dtype: torch.dtype | None = None) -> Path:
    """Write `state` as a Hugging Face folder with `source`'s config and tokenizer, atomically (temp dir + rename)."""
    with atomic_dir(target) as staging:
        config = json.loads((source / "config.json").read_text())
        if dtype is not None:
            config["dtype"] = str(dtype).removeprefix("torch.")
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        for name in TOKENIZER_FILES:
            if (source / name).exists():
                shutil.copy2(source / name, staging / name)
        tensors = {k: (v.to(dtype) if dtype is not None else v).contiguous() for k, v in state.items()}
        save_file(tensors, str(staging / "model.safetensors"), metadata={"format": "pt"})
    return target


def save_shards(shards: Shards, folder: Path, shape: ModelShape) -> None:
    """One file per (tp, pp) rank plus a metadata file, written into a temp dir that is renamed into place."""
    with atomic_dir(folder) as staging:
        for (tp_rank, pp_rank), state in shards.items():
            torch.save(state, staging / shard_file(tp_rank, pp_rank))
        tp = 1 + max(t for t, _ in shards)
        pp = 1 + max(p for _, p in shards)
        (staging / "megatron.json").write_text(json.dumps({"tensor_parallel": tp, "pipeline_parallel": pp,
                                                           "shape": shape.__dict__}, indent=1))


def shard_file(tp_rank: int, pp_rank: int) -> str:
    return f"mp_rank_tp{tp_rank:02d}_pp{pp_rank:03d}.pt"


def load_shards(folder: Path) -> Shards:
    meta = json.loads((folder / "megatron.json").read_text())
    return {(t, p): torch.load(folder / shard_file(t, p), map_location="cpu", weights_only=True)
            for t in range(meta["tensor_parallel"]) for p in range(meta["pipeline_parallel"])}
