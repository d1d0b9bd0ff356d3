"""SFT throughput of the `sft` trainer on one GPU: tokens/s and MFU of a Qwen2-shaped model on packed 32k bins.

Builds a randomly initialised Qwen2.5-0.5B- or 1.5B-shaped Megatron-core model (no weights needed), packs
documents drawn from the paper-like length distribution of bench_packing.py into `--seq`-token bins, and runs
the trainer's own optimizer steps (bf16 autocast, FlexAttention document masks, fused AdamW). Baseline in the
same run: the same bins with plain causal attention over the whole bin (documents see each other), i.e. what the
document mask costs. Prints one JSON object. Under 10 minutes on one H100/H200 with the defaults;
`--preset tiny --seq 1024` runs on a CPU in a minute to check the script.

    python benchmarks/gpu_sft_throughput.py [--preset qwen2-0.5b|qwen2-1.5b|tiny] [--seq 32768] [--steps 5]
    python benchmarks/gpu_sft_throughput.py --preset tiny --seq 1024 --steps 3 --warmup 1   # CPU check
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_packing import paper_lengths

from distillery.train.binpack import best_fit_decreasing
from distillery.train.gpt import ModelShape
from distillery.train.packed_file import write_packed
from distillery.train.parallel import init_distributed, init_megatron, pick_device, shutdown
from distillery.train.trainer import Trainer, TrainSettings

PRESETS = {
    "qwen2-0.5b": {"num_layers": 24, "hidden_size": 896, "ffn_hidden_size": 4864, "num_heads": 14,
                   "num_kv_heads": 2, "head_dim": 64, "vocab_size": 151936, "tie_embeddings": True},
    "qwen2-1.5b": {"num_layers": 28, "hidden_size": 1536, "ffn_hidden_size": 8960, "num_heads": 12,
                   "num_kv_heads": 2, "head_dim": 128, "vocab_size": 151936, "tie_embeddings": True},
    "tiny": {"num_layers": 2, "hidden_size": 64, "ffn_hidden_size": 128, "num_heads": 4, "num_kv_heads": 2,
             "head_dim": 16, "vocab_size": 512, "tie_embeddings": True},
}


def make_shape(preset: str, seq: int) -> ModelShape:
    return ModelShape(model_type="qwen2", rms_norm_eps=1e-6, rope_theta=1e6, qkv_bias=True, max_positions=seq,
                      init_std=0.02, **PRESETS[preset])


def make_bins(path: Path, shape: ModelShape, seq: int, count: int, seed: int) -> float:
    """Write `count` packed bins of random tokens with paper-like document lengths; return packing efficiency."""
    scale = seq / 32768
    lengths = [max(16, int(length * scale)) for length in paper_lengths(count * 12, seed)]
    bins = best_fit_decreasing(lengths, seq)
    bins = sorted(bins, key=lambda b: -sum(lengths[d] for d in b))[:count]
    rng = np.random.default_rng(seed)
    docs = []
    for doc in sorted(d for b in bins for d in b):
        mask = np.ones(lengths[doc], np.uint8)
        mask[: lengths[doc] // 10] = 0
        docs.append((str(doc), rng.integers(0, shape.vocab_size, lengths[doc]).astype(np.int32), mask))
    index = {key: position for position, (key, _, _) in enumerate(docs)}
    bins = [[index[str(d)] for d in b] for b in bins]
    write_packed(path, docs, bins, seq, {"efficiency": 0.0, "tokenizer": "random"})
    return sum(len(d[1]) for d in docs) / (len(bins) * seq)


def run(mode_mask: bool, trainer: Trainer, steps: int, warmup: int) -> dict[str, object]:
    records = [trainer.train_step(np.asarray([step % len(trainer.data)]), document_mask=mode_mask)
               for step in range(warmup + steps)][warmup:]
    tokens_per_s = statistics.median(r["tokens_per_s"] for r in records)
    mfu = [r["mfu"] for r in records if r["mfu"] is not None]
    return {"tokens_per_s": round(tokens_per_s, 1), "step_s": statistics.median(r["step_s"] for r in records),
            "tflops_per_device": round(statistics.median(r["tflops_per_device"] for r in records), 5),
            "mfu": round(statistics.median(mfu), 4) if mfu else None, "loss_last": round(records[-1]["loss"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="qwen2-0.5b")
    parser.add_argument("--seq", type=int, default=32768, help="tokens per packed bin")
    parser.add_argument("--steps", type=int, default=5, help="measured optimizer steps per mode (one bin each)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps first (compilation)")
    parser.add_argument("--recompute", choices=["auto", "on", "off"], default="auto",
                        help="full activation recompute; auto: on for GPUs (32k bins need it), off on CPU")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak per device for MFU (GPUs detected)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = pick_device()
    init_distributed(0, 1, device)
    init_megatron(1, 1, seed=0, device=device)
    shape = make_shape(args.preset, args.seq)
    recompute = args.recompute == "on" or (args.recompute == "auto" and device.type == "cuda")
    settings = TrainSettings(lr=8e-5, min_lr=0.0, warmup_fraction=0.05, epochs=1, global_batch=1, weight_decay=0.0,
                             adam_betas=(0.9, 0.95), grad_clip=1.0, save_every=10**9, keep_checkpoints=1, seed=0,
                             tensor_parallel=1, pipeline_parallel=1, max_steps=None,
                             dtype=torch.bfloat16 if device.type == "cuda" else torch.float32,
                             recompute=recompute, pad_bins=device.type == "cuda", peak_tflops=args.peak_tflops)
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "bins.h5"
        efficiency = make_bins(data, shape, args.seq, args.steps + args.warmup, seed=0)
        trainer = Trainer(settings, shape, None, data, Path(scratch), Path(scratch) / "metrics.jsonl", device,
                          logging.getLogger("gpu_sft_throughput"))
        packed = run(True, trainer, args.steps, args.warmup)
        causal = run(False, trainer, args.steps, args.warmup)
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "preset": args.preset, "parameters": shape.parameter_count(), "seq": args.seq,
        "bin_efficiency": round(efficiency, 4), "recompute": recompute,
        "packed_document_mask": packed, "baseline_causal_whole_bin": causal,
        "tokens_per_s_ratio_vs_baseline":
            round(packed["tokens_per_s"] / causal["tokens_per_s"], 3),  # type: ignore[operator]
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 1) if device.type == "cuda" else None,
    }
    print(json.dumps(report, indent=1))
    shutdown()


if __name__ == "__main__":
    main()
