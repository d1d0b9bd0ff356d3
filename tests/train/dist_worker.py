"""One rank of a multi-process training test over gloo: `python dist_worker.py SPEC RANK WORLD`.

SPEC (JSON): student (HF folder), data (packed file), work and out (folders), tensor_parallel, pipeline_parallel,
settings (TrainSettings overrides), mode: "train" (up to stop_at), "grads" (one step, gradients dumped),
"kill_in_save" (train to stop_at, then die by SIGKILL inside the next checkpoint's write), "bubble" (a sleeping
stage timed under 1F1B, no model). Rank 0 writes metrics.jsonl to out; every rank may dump a .pt file there.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

DEFAULTS: dict[str, Any] = {
    "lr": 1e-3, "min_lr": 0.0, "warmup_fraction": 0.0, "epochs": 1, "global_batch": 4, "weight_decay": 0.01,
    "adam_betas": (0.9, 0.95), "grad_clip": 1.0, "save_every": 1000, "keep_checkpoints": 2, "seed": 0,
    "max_steps": None, "recompute": "off", "pad_bins": False, "peak_tflops": 1.0,
}


class Sleep(torch.autograd.Function):
    """A stage whose forward takes `seconds` and backward twice that: compute time without CPU contention."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, seconds: float) -> torch.Tensor:
        ctx.seconds = seconds
        time.sleep(seconds)
        return x * 2.0

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        time.sleep(2 * ctx.seconds)
        return grad * 2.0, None


def bubble(spec: dict[str, Any], rank: int, world: int) -> dict[str, Any]:
    """Bubble share of this stage: 1F1B over m micro-batches, and each micro-batch alone (the old schedule)."""
    from distillery.train.pipeline import StageLinks, Timeline, run_1f1b

    links = StageLinks(rank, world, (rank - 1) % world, (rank + 1) % world)
    seconds, count = spec["seconds"], spec["micro_batches"]
    weight = torch.ones(4, requires_grad=True)

    def forward(index: int, received: torch.Tensor | None) -> torch.Tensor:
        x = weight * 1.0 if received is None else received
        return Sleep.apply(x, seconds)

    def loss_of(index: int, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return output.sum(), output.sum()

    run_1f1b(links, [(4,)] * 2, forward, loss_of, torch.device("cpu"))  # gloo connects pairs on first use
    shares = {}
    for name, groups in (("1f1b", [count]), ("one_at_a_time", [1] * count)):
        timeline = Timeline()
        dist.barrier()
        start = time.perf_counter()
        for group in groups:
            run_1f1b(links, [(4,)] * group, forward, loss_of, torch.device("cpu"), timeline)
        dist.barrier()
        shares[name] = 1.0 - timeline.busy() / (time.perf_counter() - start)
    return shares


def main(spec_path: str, rank: int, world: int) -> None:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format=f"rank{rank} %(name)s %(message)s")
    from distillery.train.parallel import init_distributed, init_megatron, shutdown

    device = torch.device("cpu")
    init_distributed(rank, world, device)
    if spec["mode"] == "bubble":
        (out / f"bubble-{rank}.json").write_text(json.dumps(bubble(spec, rank, world)))
        dist.destroy_process_group()
        return
    from distillery.train.gpt import ModelShape
    from distillery.train.optimizer import state_elements
    from distillery.train.trainer import Trainer, TrainSettings

    tp, pp = spec["tensor_parallel"], spec["pipeline_parallel"]
    init_megatron(tp, pp, seed=0, device=device)
    shape = ModelShape.from_folder(Path(spec["student"]))
    settings = TrainSettings(**{**DEFAULTS, **spec.get("settings", {})}, tensor_parallel=tp, pipeline_parallel=pp,
                             dtype=torch.float32)
    initial = Path(spec["initial"]) if spec.get("initial") else None
    trainer = Trainer(settings, shape, initial, [Path(spec["data"])], Path(spec["work"]), out / "metrics.jsonl", device,
                      logging.getLogger("worker"), fingerprint="test")
    groups = trainer.groups
    tag = f"tp{groups.tp_rank}-pp{groups.pp_rank}-dp{groups.dp_rank}"
    if spec["mode"] == "grads":
        trainer.train_step(trainer.plan[0])
        torch.save({name: param.grad.clone() for name, param in trainer.model.named_parameters()},
                   out / f"grads-{tag}.pt")
    else:
        summary = trainer.train(stop_at=spec.get("stop_at"))
        if spec["mode"] == "kill_in_save":
            from torch.distributed.checkpoint import FileSystemWriter

            write_data = FileSystemWriter.write_data

            def write_then_die(self: Any, plan: Any, planner: Any) -> Any:
                result = write_data(self, plan, planner)
                result.wait()
                os.kill(os.getpid(), signal.SIGKILL)

            FileSystemWriter.write_data = write_then_die  # type: ignore[method-assign]
            trainer.train(stop_at=spec["stop_at"] + 1)
        weights = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}
        torch.save({"weights": weights, "state_elements": state_elements(trainer.optimizer), "summary": summary},
                   out / f"final-{tag}.pt")
    trainer.data.close()
    shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
