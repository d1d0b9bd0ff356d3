"""Process groups and Megatron-core's parallel state, on GPU (NCCL) or CPU (gloo).

megatron-core 0.16.1 assumes CUDA in a few places; on CPU (platform.md): `torch.cuda.current_device` must
answer "cpu", the RNG tracker is replaced by the inference tracker (no CUDA RNG states), and every fused
kernel is off (see `gpt.transformer_config`).
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_distributed(rank: int, world_size: int, device: torch.device, timeout_s: int = 1800) -> None:
    """Join the process group (once per process).

    Several ranks rendezvous through MASTER_ADDR/MASTER_PORT, which the launcher sets (the SLURM executor, or a
    test's spawner); a single rank without them gets a private loopback address.
    """
    if dist.is_initialized():
        return
    if world_size == 1 and "MASTER_ADDR" not in os.environ:
        init_method = f"tcp://127.0.0.1:{_free_port()}"
    else:
        init_method = "env://"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s))


def init_megatron(tensor_parallel: int, pipeline_parallel: int, seed: int, device: torch.device) -> None:
    """Model-parallel groups and RNG tracker; data parallel size is whatever remains of the world."""
    from megatron.core import parallel_state
    from megatron.core import tensor_parallel as mtp

    if device.type == "cpu":
        torch.cuda.current_device = lambda: "cpu"  # type: ignore[assignment,return-value]
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=tensor_parallel,
                                             pipeline_model_parallel_size=pipeline_parallel)
    torch.manual_seed(seed)
    if device.type == "cuda":
        mtp.model_parallel_cuda_manual_seed(seed)
    else:
        mtp.random.initialize_rng_tracker(inference_rng_tracker=True, force_reset=True)


def shutdown() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
