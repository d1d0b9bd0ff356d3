"""Checkpoint bytes and save seconds of the `sft` trainer on the quickstart's student (SmolLM2-135M-Instruct).

Runs the trainer as the quickstart configures it (one 1k-token bin per step, fp32 on CPU), from the converted
SmolLM2 weights, for `--steps` steps with a checkpoint after every step, on random tokens. Every checkpoint before
the last is mid-plan (weights, AdamW moments, trainer state: what a resumed job needs); the last ends the plan.
Prints one JSON object: bytes and save seconds of each kind, and the final checkpoint's ratio to the mid-plan
one measured in the same run (the baseline).

    python benchmarks/bench_checkpoint.py [--steps 2] [--seq 1024]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from distillery.models.smollm2 import ensure_hf_folder
from distillery.train.convert import hf_to_megatron, load_hf_state, save_shards
from distillery.train.gpt import ModelShape
from distillery.train.packed_file import write_packed
from distillery.train.parallel import init_distributed, init_megatron, shutdown
from distillery.train.trainer import Trainer, TrainSettings


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps, each followed by a checkpoint (>= 2)")
    parser.add_argument("--seq", type=int, default=1024, help="tokens per bin (the quickstart packs 1k bins)")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2: a mid-plan checkpoint is the baseline")
    logging.basicConfig(level=logging.WARNING)
    device = torch.device("cpu")
    init_distributed(0, 1, device)
    init_megatron(1, 1, seed=0, device=device)
    model_dir = ensure_hf_folder()
    shape = ModelShape.from_folder(model_dir)
    settings = TrainSettings(lr=1e-5, min_lr=0.0, warmup_fraction=0.0, epochs=1, global_batch=1, weight_decay=0.01,
                             adam_betas=(0.9, 0.95), grad_clip=1.0, save_every=1, keep_checkpoints=args.steps,
                             seed=0, tensor_parallel=1, pipeline_parallel=1, max_steps=args.steps,
                             dtype=torch.float32, recompute="off", pad_bins=False, peak_tflops=None)
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        rng = np.random.default_rng(0)
        docs = [(f"doc-{i}", rng.integers(0, shape.vocab_size, args.seq).astype(np.int32),
                 np.ones(args.seq, np.uint8)) for i in range(args.steps)]
        write_packed(scratch / "bins.h5", docs, [[i] for i in range(args.steps)], args.seq,
                     {"efficiency": 1.0, "tokenizer": "random"})
        save_shards(hf_to_megatron(load_hf_state(model_dir), shape, 1, 1), scratch / "initial", shape)
        trainer = Trainer(settings, shape, scratch / "initial", [scratch / "bins.h5"], scratch / "work",
                          scratch / "metrics.jsonl", device, logging.getLogger("bench_checkpoint"), fingerprint="bench")
        trainer.train()
        trainer.data.close()
        saved = sorted((scratch / "work" / "checkpoints").glob("step-*"))
        sizes = [{"step": json.loads((p / "meta.json").read_text())["step"], "bytes": folder_bytes(p),
                  "save_s": json.loads((p / "meta.json").read_text())["save_s"]} for p in saved]
    shutdown()
    mid, final = sizes[:-1], sizes[-1]
    mid_bytes = float(np.median([s["bytes"] for s in mid]))
    mid_seconds = float(np.median([s["save_s"] for s in mid]))
    flags = Path("/proc/cpuinfo").read_text()
    print(json.dumps({
        "cpu": cpu_name(), "avx512f": " avx512f " in flags, "avx512_bf16": "avx512_bf16" in flags,
        "model": model_dir.name, "parameters": shape.parameter_count(), "checkpoints": sizes,
        "mid_plan": {"bytes": int(mid_bytes), "save_s": mid_seconds},
        "final": {"bytes": final["bytes"], "save_s": final["save_s"]},
        "final_to_mid_plan": {"bytes": round(final["bytes"] / mid_bytes, 3),
                              "save_s": round(final["save_s"] / mid_seconds, 3)},
    }, indent=1))


if __name__ == "__main__":
    main()
