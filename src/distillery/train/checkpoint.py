"""Training checkpoints in a shard's work directory: one file per rank, a marker written last.

    <work>/checkpoints/step-00000040/tp00-pp000-dp000.pt  model, optimizer, scheduler, RNG of one rank
    <work>/checkpoints/step-00000040/done.json       written by rank 0 after every rank has saved

A checkpoint without its marker (a kill during saving) is ignored and later removed; the newest marked one is
where a re-run task resumes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


def rank_file(tp_rank: int, pp_rank: int, dp_rank: int) -> str:
    return f"tp{tp_rank:02d}-pp{pp_rank:03d}-dp{dp_rank:03d}.pt"


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def latest_checkpoint(root: Path) -> Path | None:
    done = sorted(p.parent for p in root.glob("step-*/done.json"))
    return done[-1] if done else None


def save_checkpoint(root: Path, step: int, tp_rank: int, pp_rank: int, dp_rank: int, state: dict[str, Any],
                    meta: dict[str, Any], keep: int) -> Path:
    """Collective: every rank saves its file, then rank 0 marks the checkpoint done and prunes old ones."""
    target = step_dir(root, step)
    target.mkdir(parents=True, exist_ok=True)
    path = target / rank_file(tp_rank, pp_rank, dp_rank)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    dist.barrier()
    if dist.get_rank() == 0:
        marker = target / "done.json"
        marker.with_suffix(".tmp").write_text(json.dumps({"step": step, **meta}))
        os.replace(marker.with_suffix(".tmp"), marker)
        finished = sorted(p.parent for p in root.glob("step-*/done.json"))
        for old in finished[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        for partial in root.glob("step-*"):
            if not (partial / "done.json").exists() and partial != target:
                shutil.rmtree(partial, ignore_errors=True)
    dist.barrier()
    return target


def load_rank_state(checkpoint: Path, tp_rank: int, pp_rank: int, dp_rank: int) -> dict[str, Any]:
    return torch.load(checkpoint / rank_file(tp_rank, pp_rank, dp_rank), map_location="cpu", weights_only=False)
