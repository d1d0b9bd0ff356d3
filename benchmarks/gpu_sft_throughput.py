"""SFT throughput of the `sft` trainer on one GPU: tokens/s and MFU of a Qwen2.5-1.5B-shaped model on packed 32k bins.

Builds a randomly initialised Qwen2.5-1.5B- (or 0.5B-) shaped Megatron-core model (no weights needed), TP=1,
packs documents drawn from the paper-like length distribution of bench_packing.py into `--seq`-token bins (a
tenth of each document is a masked prompt), and runs the trainer's own optimizer steps (bf16 autocast,
FlexAttention document masks, fused AdamW, full recompute). Baseline in the same run: plain SDPA causal attention
over one `--seq`-token document per step, the shape of the platform's anchor (transformers + SDPA, one 32k
document: 0.36 MFU, 20.1k tokens/s on an H200). Reported per mode: `tokens_per_s` and `mfu` over trained tokens
(padding and masked prompts left out), `mfu_documents` over every document token (the anchor's definition).
Target: packed `mfu_documents` >= 0.45. Prints one JSON object. Under 5 minutes on one H100/H200 with the
defaults; `--preset tiny --seq 1024` runs on a CPU in a minute to check the script.

    python benchmarks/gpu_sft_throughput.py [--preset qwen2-1.5b|qwen2-0.5b|tiny] [--seq 32768] [--steps 4]
    python benchmarks/gpu_sft_throughput.py --preset tiny --seq 1024 --steps 2 --warmup 1   # CPU check
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
from distillery.train.packed_file import PackedDataset, write_packed
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


def _document(rng: np.random.Generator, shape: ModelShape, key: str, length: int
              ) -> tuple[str, np.ndarray, np.ndarray]:
    mask = np.ones(length, np.uint8)
    mask[: length // 10] = 0
    return key, rng.integers(0, shape.vocab_size, length).astype(np.int32), mask


def make_bins(path: Path, shape: ModelShape, seq: int, count: int, seed: int) -> float:
    """Write `count` packed bins of random tokens with paper-like document lengths; return packing efficiency."""
    scale = seq / 32768
    lengths = [max(16, int(length * scale)) for length in paper_lengths(count * 12, seed)]
    bins = best_fit_decreasing(lengths, seq)
    bins = sorted(bins, key=lambda b: -sum(lengths[d] for d in b))[:count]
    rng = np.random.default_rng(seed)
    docs = [_document(rng, shape, str(doc), lengths[doc]) for doc in sorted(d for b in bins for d in b)]
    index = {key: position for position, (key, _, _) in enumerate(docs)}
    bins = [[index[str(d)] for d in b] for b in bins]
    write_packed(path, docs, bins, seq, {"efficiency": 0.0, "tokenizer": "random"})
    return sum(len(d[1]) for d in docs) / (len(bins) * seq)


def make_single_documents(path: Path, shape: ModelShape, seq: int, count: int, seed: int) -> None:
    """`count` bins of one `seq`-token document each: the plain SDPA baseline."""
    rng = np.random.default_rng(seed)
    docs = [_document(rng, shape, f"whole-{i}", seq) for i in range(count)]
    write_packed(path, docs, [[i] for i in range(count)], seq, {"efficiency": 1.0, "tokenizer": "random"})


def run(mode_mask: bool, trainer: Trainer, steps: int, warmup: int) -> dict[str, object]:
    records = [trainer.train_step(np.asarray([step % len(trainer.data)]), document_mask=mode_mask)
               for step in range(warmup + steps)][warmup:]

    def median(key: str) -> float | None:
        values = [r[key] for r in records if r[key] is not None]
        return round(statistics.median(values), 4) if values else None

    return {"tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in records), 1),
            "document_tokens_per_s": round(statistics.median(r["document_tokens_per_s"] for r in records), 1),
            "step_s": median("step_s"), "tflops_per_device": median("tflops_per_device"), "mfu": median("mfu"),
            "mfu_documents": median("mfu_documents"), "loss_last": round(records[-1]["loss"], 4),
            "masked_tokens_per_step": median("masked_tokens"), "padding_tokens_per_step": median("padding_tokens")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="qwen2-1.5b")
    parser.add_argument("--seq", type=int, default=32768, help="tokens per packed bin")
    parser.add_argument("--steps", type=int, default=4, help="measured optimizer steps per mode (one bin each)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps first (compilation)")
    parser.add_argument("--recompute", choices=["auto", "off", "selective", "full"], default="auto",
                        help="activation recompute; auto: full on GPUs (32k bins need it), off on CPU")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak per device for MFU (GPUs detected)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = pick_device()
    init_distributed(0, 1, device)
    init_megatron(1, 1, seed=0, device=device)
    shape = make_shape(args.preset, args.seq)
    recompute = args.recompute if args.recompute != "auto" else ("full" if device.type == "cuda" else "off")
    settings = TrainSettings(lr=8e-5, min_lr=0.0, warmup_fraction=0.05, epochs=1, global_batch=1, weight_decay=0.0,
                             adam_betas=(0.9, 0.95), grad_clip=1.0, save_every=10**9, keep_checkpoints=1, seed=0,
                             tensor_parallel=1, pipeline_parallel=1, max_steps=None,
                             dtype=torch.bfloat16 if device.type == "cuda" else torch.float32,
                             recompute=recompute, pad_bins=device.type == "cuda", peak_tflops=args.peak_tflops)
    logger = logging.getLogger("gpu_sft_throughput")
    count = args.steps + args.warmup
    with tempfile.TemporaryDirectory() as scratch:
        packed_file, whole_file = Path(scratch) / "bins.h5", Path(scratch) / "whole.h5"
        efficiency = make_bins(packed_file, shape, args.seq, count, seed=0)
        make_single_documents(whole_file, shape, args.seq, count, seed=1)
        trainer = Trainer(settings, shape, None, [packed_file], Path(scratch) / "a", Path(scratch) / "a.jsonl", device,
                          logger)
        packed = run(True, trainer, args.steps, args.warmup)
        trainer.data.close()
        # the same trainer and weights on one whole document per step, plain SDPA causal attention
        trainer.data = PackedDataset([whole_file])
        whole = run(False, trainer, args.steps, args.warmup)
        trainer.data.close()
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "preset": args.preset, "parameters": shape.parameter_count(), "seq": args.seq,
        "bin_efficiency": round(efficiency, 4), "recompute": recompute,
        "packed_flex_document_mask": packed, "baseline_sdpa_one_document": whole,
        "document_tokens_per_s_ratio_vs_baseline":
            round(packed["document_tokens_per_s"] / whole["document_tokens_per_s"], 3),  # type: ignore[operator]
        "target_packed_mfu_documents": 0.45,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 1) if device.type == "cuda" else None,
    }
    print(json.dumps(report, indent=1))
    shutdown()


if __name__ == "__main__":
    main()
