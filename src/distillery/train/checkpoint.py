"""Training checkpoints that any TP x PP x DP layout can resume: `torch.distributed.checkpoint`, atomic, last N.

    <work>/checkpoints/step-00000040/.metadata, __*_*.distcp   every tensor under its Hugging Face name, global shape
    <work>/checkpoints/step-00000040/trainer.pt                scheduler, step, data position, RNG (rank 0)
    <work>/checkpoints/step-00000040/meta.json                 layout, fingerprint, moments or not, save time

Tensors: `model/<name>` (weights) and `optim/exp_avg/<name>`, `optim/exp_avg_sq/<name>` (AdamW moments, only in
a checkpoint inside the plan: meta.json's `moments`), each rank writing its tensor-parallel slice (layout.py);
data-parallel replicas write once (DCP deduplicates equal slices), and under ZeRO each moment is written by the
one data-parallel rank that owns it. A reader asks for the slices of its own layout, whatever the writer's was.

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

from distillery.train.convert import shard_file
from distillery.train.distributed import ParallelGroups
from distillery.train.gpt import ModelShape, load_state
from distillery.train.layout import Piece, RankLayout
from distillery.train.optimizer import MOMENTS, get_moments, owned_parameters, set_moments

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


class CheckpointManager:
    """One training's checkpoints: where they live (`<work>/checkpoints`), what goes in them, restore-or-initialise,
    the newest `keep` kept, and the trained weights for export.

    A checkpoint inside the plan holds the weights, the AdamW moments and the trainer state (step, scheduler, data
    position, RNG). The one at the plan's end holds no moments: nothing resumes training from a finished training
    (the fingerprint covers the config, so a longer plan starts afresh), and the moments are two thirds of its bytes.
    Restoring it loads the weights and the step (the plan's end), so a job killed before its manifest still
    exports; a checkpoint without moments inside the plan is never resumed.
    """

    def __init__(self, work_dir: Path, fingerprint: str, keep: int, plan_steps: int, *, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler: Any, shape: ModelShape, groups: ParallelGroups,
                 meta: dict[str, Any], device: torch.device, logger: logging.Logger) -> None:
        """`meta` is recorded in meta.json beside the layout and fingerprint."""
        self.root = work_dir / "checkpoints"
        self.fingerprint = fingerprint
        self.keep = keep
        self.plan_steps = plan_steps
        self.groups = groups
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.meta = {**groups.layout, "fingerprint": fingerprint, **meta}
        self.device = device
        self.logger = logger
        self.rank_layout = RankLayout(shape, groups.tp_size, groups.pp_size, groups.pp_rank)
        self.tp_mesh = None
        if groups.tp_size > 1:
            from torch.distributed.device_mesh import DeviceMesh

            self.tp_mesh = DeviceMesh.from_group(groups.tp_group, device.type)
        self.save_seconds: list[float] = []

    def latest(self) -> Path | None:
        return latest_checkpoint(self.root, self.fingerprint)

    def _names(self) -> dict[torch.nn.Parameter, str]:
        return {param: name for name, param in self.model.named_parameters()}

    def _read(self, checkpoint: Path, prefix: str, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This rank's Megatron tensors shaped like `like`, from the global tensors under `prefix`."""
        requests = {prefix + name: piece for name, piece in self.rank_layout.requests(like).items()}
        pieces = load_tensors(checkpoint, requests, self.tp_mesh, self.groups.tp_size)
        return self.rank_layout.from_global({name.removeprefix(prefix): t for name, t in pieces.items()}, like)

    def _write(self, prefix: str, state: dict[str, torch.Tensor]) -> dict[str, Piece]:
        return {prefix + name: piece for name, piece in self.rank_layout.to_global(state).items()}

    def restore_or_initialise(self, initial_shards: Path | None) -> int:
        """Newest checkpoint (of any layout), else the converted student (None keeps Megatron's random init);
        returns the step to continue from."""
        checkpoint = self.latest()
        if checkpoint is None:
            if initial_shards is not None:
                shard = initial_shards / shard_file(self.groups.tp_rank, self.groups.pp_rank)
                load_state(self.model, torch.load(shard, map_location="cpu", weights_only=True))
            return 0
        state, saved = load_trainer_state(checkpoint), read_meta(checkpoint)
        step = int(state["step"])
        if state["data"]["plan_steps"] != self.plan_steps:
            raise ValueError(f"{checkpoint} was saved in a plan of {state['data']['plan_steps']} steps, this job has "
                             f"{self.plan_steps}: the data or batch size changed")
        has_moments = saved.get("moments", True)
        if not has_moments and 0 < step < self.plan_steps:
            raise ValueError(f"{checkpoint} holds no optimizer state, yet its step {step} is inside the plan of "
                             f"{self.plan_steps} steps: training cannot resume from it")
        names = self._names()
        params = {name: param.detach() for param, name in names.items()}
        load_state(self.model, self._read(checkpoint, "model/", params))
        if has_moments:
            owned = {names[p]: params[names[p]] for p in owned_parameters(self.optimizer)}
            moments = {moment: self._read(checkpoint, f"optim/{moment}/", owned) for moment in MOMENTS}
            set_moments(self.optimizer, moments, names, step)
        self.scheduler.load_state_dict(state["scheduler"])
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
            group["lr"] = lr  # the scheduler's state does not reach the optimizer's groups by itself
        torch.set_rng_state(state["rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.logger.info("resumed from %s at step %d of %d (saved as TP=%d PP=%d DP=%d, running TP=%d PP=%d DP=%d)",
                         checkpoint, step, self.plan_steps, saved["tensor_parallel"], saved["pipeline_parallel"],
                         saved["data_parallel"], *self.groups.layout.values())
        return step

    def save(self, step: int, data_position: dict[str, int]) -> Path:
        """Collective: weights from data-parallel rank 0, each AdamW moment (inside the plan) from the rank that
        owns it, the trainer state from rank 0."""
        started = time.perf_counter()
        has_moments = 0 < step < self.plan_steps
        names = self._names()
        tensors: dict[str, Piece] = {}
        if self.groups.dp_rank == 0:
            tensors.update(self._write("model/", {name: param.detach() for param, name in names.items()}))
        if has_moments:
            for moment, by_name in get_moments(self.optimizer, names).items():
                tensors.update(self._write(f"optim/{moment}/", by_name))
        trainer_state = None
        if dist.get_rank() == 0:
            trainer_state = {
                "step": step, "scheduler": self.scheduler.state_dict(), "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                "data": {"plan_steps": self.plan_steps, **data_position}}
        target = save_checkpoint(self.root, step, tensors, trainer_state, {**self.meta, "moments": has_moments},
                                 self.keep, self.tp_mesh, self.groups.tp_size)
        self.save_seconds.append(time.perf_counter() - started)
        return target

    def trained_weights(self) -> dict[str, torch.Tensor]:
        """The newest checkpoint's weights as whole Hugging Face tensors, in one process (the export)."""
        checkpoint = self.latest()
        if checkpoint is None:
            raise FileNotFoundError(f"no checkpoint of this training in {self.root}")
        return load_full(checkpoint, "model/")
