"""Per-GPU memory of the `sft` step, from the model shape and the layout: what `distillery plan` prints.

The arithmetic follows what the trainer runs: fp32 weights and gradients (bf16 autocast), AdamW's two fp32
moments sharded over data-parallel ranks by ZeRO-1 (optimizer.py), bf16 weight copies that autocast makes,
and activations of packed bins of `seq` tokens in bf16 with an fp32 residual stream. There is no sequence
parallelism (it needs TransformerEngine or Apex), so norms and residuals are whole on every tensor-parallel rank;
FlexAttention keeps no seq x seq scores. Under 1F1B the first stage holds min(p, m) micro-batches in flight.
It is an estimate (allocator slack, communication buffers and the CUDA context, a few GiB, come on top).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from distillery.train.gpt import ModelShape
from distillery.train.pipeline import bubble_share

GIB = 2**30

KNOWN_SHAPES = {
    # name in the student path -> (layers, hidden, ffn, heads, kv heads, vocab, tied), from the published configs
    "qwen2.5-72b": (80, 8192, 29568, 64, 8, 152064, False),
    "qwen2.5-32b": (64, 5120, 27648, 40, 8, 152064, False),
    "qwen2.5-14b": (48, 5120, 13824, 40, 8, 152064, False),
    "qwen2.5-7b": (28, 3584, 18944, 28, 4, 152064, False),
    "qwen2.5-1.5b": (28, 1536, 8960, 12, 2, 151936, True),
    "smollm2": (30, 576, 1536, 9, 3, 49152, True),  # SmolLM2-135M-Instruct, the embedded student
}


def student_shape(student: str) -> ModelShape | None:
    """The student's shape: its config.json when the folder is here, else a known Qwen2.5 size named in the path."""
    folder = Path(student)
    if (folder / "config.json").exists():
        return ModelShape.from_hf_config(json.loads((folder / "config.json").read_text()))
    name = folder.name.lower()
    for key in sorted(KNOWN_SHAPES, key=len, reverse=True):
        if key in name:
            layers, hidden, ffn, heads, kv, vocab, tied = KNOWN_SHAPES[key]
            return ModelShape(model_type="qwen2", num_layers=layers, hidden_size=hidden, ffn_hidden_size=ffn,
                              num_heads=heads, num_kv_heads=kv, head_dim=hidden // heads, vocab_size=vocab,
                              rms_norm_eps=1e-6, rope_theta=1e6, tie_embeddings=tied, qkv_bias=True,
                              max_positions=32768, init_std=0.02)
    return None


@dataclass(frozen=True)
class Layout:
    tensor_parallel: int
    pipeline_parallel: int
    data_parallel: int
    recompute: str
    recompute_num_layers: int
    sharded_optimizer: bool = True


def _layer_parameters(shape: ModelShape) -> int:
    q, kv = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    return shape.hidden_size * (2 * q + 2 * kv) + 3 * shape.hidden_size * shape.ffn_hidden_size


def _layer_activation_bytes(shape: ModelShape, seq: int, tp: int, keep_mlp: bool) -> float:
    """Saved for backward by one layer of one micro-batch (no recompute inside the layer)."""
    h, f = shape.hidden_size, shape.ffn_hidden_size
    q, kv = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    whole = 12 * seq * h  # two fp32 norm inputs and two bf16 norm outputs, on every TP rank
    attention = seq * (4 * (q + kv) + 2 * kv + 2 * q) / tp  # fp32 rotated q and k, bf16 v and attention output
    mlp = 8 * seq * f / tp  # bf16 gate+up output, silu(gate), their product
    return whole + attention + (mlp if keep_mlp else 0.0)


def memory_rows(shape: ModelShape, layout: Layout, seq: int, micro_batches: int) -> dict[str, float]:
    """Bytes per GPU on the busiest stage (the first holds most activations, the last the logits)."""
    tp, pp, dp = layout.tensor_parallel, layout.pipeline_parallel, layout.data_parallel
    stage_layers = shape.num_layers // pp
    embedding = shape.vocab_size * shape.hidden_size / tp
    layers = stage_layers * _layer_parameters(shape) / tp
    params = layers + embedding * (2 if pp == 1 and not shape.tie_embeddings else 1)
    in_flight = min(pp, micro_batches)
    full_layer = _layer_activation_bytes(shape, seq, tp, keep_mlp=True)
    if layout.recompute == "full":
        chunk = layout.recompute_num_layers
        activations = in_flight * -(-stage_layers // chunk) * 4 * seq * shape.hidden_size + chunk * full_layer
    elif layout.recompute == "selective":
        activations = in_flight * stage_layers * _layer_activation_bytes(shape, seq, tp, keep_mlp=False) + full_layer
    else:
        activations = in_flight * stage_layers * full_layer
    return {
        "weights (fp32)": 4 * params,
        "gradients (fp32)": 4 * params,
        "AdamW moments (fp32)": 8 * params / (dp if layout.sharded_optimizer else 1),
        "bf16 weight copies (autocast)": 2 * params,
        f"activations ({layout.recompute} recompute, {in_flight} in flight)": activations,
        "logits and loss (last stage)": 10 * seq * shape.vocab_size / tp,
    }


def memory_table(shape: ModelShape, layout: Layout, seq: int, global_batch: int, gpu_gib: float) -> str:
    micro_batches = max(1, global_batch // layout.data_parallel)
    rows = memory_rows(shape, layout, seq, micro_batches)
    total = sum(rows.values()) / GIB
    bubble = bubble_share(layout.pipeline_parallel, micro_batches)
    lines = [(f"per-GPU memory of sft at {seq} tokens per bin: {shape.parameter_count() / 1e9:.1f}B parameters, "
              f"TP={layout.tensor_parallel} PP={layout.pipeline_parallel} DP={layout.data_parallel}, "
              f"{micro_batches} micro-batches per step, bubble {bubble:.1%}")]
    lines += [f"  {name:<44} {value / GIB:7.1f} GiB" for name, value in rows.items()]
    verdict = "fits" if total <= gpu_gib else "DOES NOT FIT"
    lines.append(f"  {'total':<44} {total:7.1f} GiB of {gpu_gib:.0f} GiB: {verdict}")
    return "\n".join(lines)


def layout_options(shape: ModelShape, world: int, seq: int, global_batch: int, gpu_gib: float, recompute: str,
                   recompute_num_layers: int) -> str:
    """Every TP x PP x DP split of `world` GPUs that divides the model: total memory and bubble, to re-lay a recipe."""
    lines = ["  other layouts of the same GPUs (TP within a node):"]
    for tp in (1, 2, 4, 8):
        for pp in (1, 2, 4, 8):
            if world % (tp * pp) or shape.num_layers % pp or shape.num_kv_heads % tp or shape.num_heads % tp:
                continue
            layout = Layout(tp, pp, world // (tp * pp), recompute, recompute_num_layers)
            micro = max(1, global_batch // layout.data_parallel)
            total = sum(memory_rows(shape, layout, seq, micro).values()) / GIB
            lines.append(f"    TP={tp} PP={pp} DP={layout.data_parallel}: {total:6.1f} GiB, bubble "
                         f"{bubble_share(pp, micro):5.1%}{'' if total <= gpu_gib else '  (over)'}")
    return "\n".join(lines)
