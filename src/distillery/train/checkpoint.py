"""Training checkpoints that any TP x PP x DP layout can resume: `torch.distributed.checkpoint`, atomic, last N.

    <work>/checkpoints/step-00000040/.metadata, __*_*.distcp   every tensor under its Hugging Face name, global shape
    <work>/checkpoints/step-00000040/trainer.pt                scheduler, step, data position, RNG (rank 0)
    <work>/checkpoints/step-00000040/meta.json                 layout, fingerprint, save time

Tensors: `model/<name>` (weights) and `optim/exp_avg/<name>`, `optim/exp_avg_sq/<name>` (AdamW moments), each
rank writing its tensor-parallel slice (layout.py); data-parallel replicas write once (DCP deduplicates equal
slices), and under ZeRO each moment is written by the one data-parallel rank that owns it. A reader asks for
the slices of its own layout, whatever the writer's was.

Every rank writes into `.step-XXXXXXXX.partial`; once all are done rank 0 writes meta.json and renames the folder
to `step-XXXXXXXX`: a step folder is complete or absent, so a save killed mid-write leaves the previous checkpoint
the newest. Leftover partial folders and checkpoints of another fingerprint are removed at the next save.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from distillery.train.layout import Piece

logger = logging.getLogger(__name__)


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def _partial_dir(root: Path, step: int) -> Path:
    return root / f".step-{step:08d}.partial"


def read_meta(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / "meta.json").read_text())


def latest_checkpoint(root: Path, fingerprint: str) -> Path | None:
    """Newest complete checkpoint made with this fingerprint."""
    done = sorted(p for p in root.glob("step-*") if (p / "meta.json").exists()
                  and read_meta(p)["fingerprint"] == fingerprint)
    return done[-1] if done else None


def _as_saved(pieces: dict[str, Piece], mesh: Any, tp: int) -> dict[str, Any]:
    """Pieces as DCP values: a DTensor over the TP group for split tensors, the tensor itself for whole ones."""
    from torch.distributed.tensor import DTensor, Shard

    out: dict[str, Any] = {}
    for name, piece in pieces.items():
        if piece.dim is None or tp == 1:
            out[name] = piece.local
            continue
        size = list(piece.local.shape)
        size[piece.dim] *= tp
        global_shape = torch.Size(size)
        out[name] = DTensor.from_local(piece.local, mesh, [Shard(piece.dim)], run_check=False, shape=global_shape,
                                       stride=torch.empty(global_shape, device="meta").stride())
    return out


def save_checkpoint(root: Path, step: int, tensors: dict[str, Piece], trainer_state: dict[str, Any] | None,
                    meta: dict[str, Any], keep: int, tp_mesh: Any, tp: int) -> Path:
    """Collective over the world. `tensors`: what this rank writes (it may be empty); `trainer_state`: rank 0's."""
    started = time.perf_counter()
    partial, target = _partial_dir(root, step), step_dir(root, step)
    if dist.get_rank() == 0:
        for leftover in root.glob(".step-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        partial.mkdir(parents=True)
        torch.save(trainer_state, partial / "trainer.pt")
    dist.barrier()
    dcp.save(_as_saved(tensors, tp_mesh, tp), checkpoint_id=str(partial))
    dist.barrier()
    if dist.get_rank() == 0:
        elapsed = time.perf_counter() - started
        (partial / "meta.json").write_text(json.dumps({"step": step, **meta, "save_s": round(elapsed, 3)}))
        if target.exists():  # a resumed run saving a step again: the old copy goes only once the new one is in
            stale = root / f".step-{step:08d}.stale"
            os.replace(target, stale)
        os.replace(partial, target)
        _prune(root, meta["fingerprint"], keep)
        logger.info("checkpoint %s saved in %.2f s", target, elapsed)
    dist.barrier()
    return target


def _prune(root: Path, fingerprint: str, keep: int) -> None:
    """Keep the newest `keep` of this fingerprint; a step folder without meta.json is an older format's."""
    complete = sorted(p for p in root.glob("step-*") if (p / "meta.json").exists())
    for legacy in root.glob("step-*"):
        if legacy not in complete:
            shutil.rmtree(legacy, ignore_errors=True)
    current = [p for p in complete if read_meta(p)["fingerprint"] == fingerprint]
    for old in current[:-keep] + [p for p in complete if p not in current]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step-*.stale"):
        shutil.rmtree(stale, ignore_errors=True)


def saved_names(checkpoint: Path) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """Every stored tensor, its global shape and dtype."""
    metadata = dcp.FileSystemReader(str(checkpoint)).read_metadata()
    return {name: (item.size, item.properties.dtype) for name, item in metadata.state_dict_metadata.items()
            if hasattr(item, "size")}


def load_tensors(checkpoint: Path, requests: dict[str, Piece], tp_mesh: Any, tp: int) -> dict[str, torch.Tensor]:
    """Read this rank's slices (shaped like the requests' tensors) from a checkpoint of any layout.

    Each rank reads on its own (`no_dist`): loading needs no collective, so ranks may ask for different tensors.
    """
    missing = sorted(set(requests) - set(saved_names(checkpoint)))
    if missing:
        raise ValueError(f"{checkpoint} lacks {len(missing)} tensors this model needs, e.g. {missing[:3]}: "
                         "it was saved for another model shape")
    targets = _as_saved({name: Piece(torch.empty_like(p.local), p.dim) for name, p in requests.items()}, tp_mesh, tp)
    dcp.load(targets, checkpoint_id=str(checkpoint), no_dist=True)
    return {name: value.to_local() if hasattr(value, "to_local") else value for name, value in targets.items()}


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    return torch.load(checkpoint / "trainer.pt", map_location="cpu", weights_only=False)


def load_full(checkpoint: Path, prefix: str) -> dict[str, torch.Tensor]:
    """Whole tensors under `prefix` (e.g. the trained model's Hugging Face state), in one process."""
    names = {name: size for name, size in saved_names(checkpoint).items() if name.startswith(prefix)}
    state = {name: torch.empty(size, dtype=dtype) for name, (size, dtype) in names.items()}
    dcp.load(state, checkpoint_id=str(checkpoint), no_dist=True)
    return {name.removeprefix(prefix): tensor for name, tensor in state.items()}
