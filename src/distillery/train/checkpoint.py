"""Training checkpoints in a shard's work directory: one file per model-parallel rank, a marker written last.

    <work>/checkpoints/step-00000040/tp00-pp000.pt   model, optimizer, scheduler, RNG of one TP x PP rank
    <work>/checkpoints/step-00000040/done.json       written by rank 0 after every file is on disk

Data-parallel replicas hold identical weights and optimizer state (their gradients are all-reduced), so only
data-parallel rank 0 writes, and a resumed job may run with a different data-parallel size. The marker records
a fingerprint of the training config and data: a checkpoint of another config is never resumed (it is removed).
A checkpoint without its marker (a kill during saving) is ignored and later removed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


def rank_file(tp_rank: int, pp_rank: int) -> str:
    return f"tp{tp_rank:02d}-pp{pp_rank:03d}.pt"


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def _marker(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / "done.json").read_text())


def latest_checkpoint(root: Path, fingerprint: str) -> Path | None:
    """Newest finished checkpoint made with this fingerprint."""
    done = sorted(p.parent for p in root.glob("step-*/done.json") if _marker(p.parent)["fingerprint"] == fingerprint)
    return done[-1] if done else None


def save_checkpoint(root: Path, step: int, tp_rank: int, pp_rank: int, dp_rank: int, state: dict[str, Any],
                    meta: dict[str, Any], keep: int) -> Path:
    """Collective: data-parallel rank 0 of every TP x PP position saves its file, then rank 0 marks the
    checkpoint done and removes older ones, unfinished ones and those of other fingerprints."""
    target = step_dir(root, step)
    if dp_rank == 0:
        target.mkdir(parents=True, exist_ok=True)
        path = target / rank_file(tp_rank, pp_rank)
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
    dist.barrier()
    if dist.get_rank() == 0:
        marker = target / "done.json"
        marker.with_suffix(".tmp").write_text(json.dumps({"step": step, **meta}))
        os.replace(marker.with_suffix(".tmp"), marker)
        finished = [p.parent for p in root.glob("step-*/done.json")]
        current = sorted(p for p in finished if _marker(p).get("fingerprint") == meta["fingerprint"])
        for old in current[:-keep] + [p for p in finished if p not in current]:
            shutil.rmtree(old, ignore_errors=True)
        for partial in root.glob("step-*"):
            if not (partial / "done.json").exists() and partial != target:
                shutil.rmtree(partial, ignore_errors=True)
    dist.barrier()
    return target


def load_rank_state(checkpoint: Path, tp_rank: int, pp_rank: int, layout: dict[str, int]) -> dict[str, Any]:
    """This rank's state; `layout` (tensor_parallel, pipeline_parallel) must be the checkpoint's."""
    marker = _marker(checkpoint)
    saved = {key: marker[key] for key in layout}
    if saved != layout:
        raise ValueError(f"{checkpoint} was saved with {saved}, this job runs {layout}: resume with the same "
                         "tensor and pipeline parallel sizes (data parallel may change)")
    return torch.load(checkpoint / rank_file(tp_rank, pp_rank), map_location="cpu", weights_only=False)
