"""Pipeline-parallel forward and backward of one micro-batch, stage to stage over point-to-point messages.

Megatron-core's own schedules hard-code CUDA, so this is a plain schedule of our own: each micro-batch goes
forward through the stages (activations sent to the next stage), the last stage computes the loss, and the
gradient of each stage's input goes back to the previous one. Stages work one after another within a
micro-batch (no interleaving), which splits the model's memory across stages at the price of a pipeline
bubble. Every stage knows the micro-batch's token count from the packed file, so messages carry no shapes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist


class StageLinks:
    """This rank's place in its pipeline: global ranks of the previous and next stage."""

    def __init__(self) -> None:
        from megatron.core import parallel_state

        self.first = parallel_state.is_pipeline_first_stage()
        self.last = parallel_state.is_pipeline_last_stage()
        self.previous = parallel_state.get_pipeline_model_parallel_prev_rank()
        self.next = parallel_state.get_pipeline_model_parallel_next_rank()


def pipeline_forward_backward(model: torch.nn.Module, links: StageLinks, tokens: int, hidden_size: int,
                              device: torch.device, run_stage: Callable[[], torch.Tensor],
                              loss_of: Callable[[torch.Tensor], torch.Tensor], scale: float) -> torch.Tensor:
    """Forward and backward of one micro-batch on this stage; returns the weighted loss sum (0 off the last stage).

    `run_stage` calls the model on the micro-batch (its input tensor is set here on later stages);
    `loss_of` turns the last stage's output into the weighted loss sum, which is divided by `scale` for backward.
    """
    received: torch.Tensor | None = None
    if not links.first:
        received = torch.empty(tokens, 1, hidden_size, device=device, dtype=torch.float32)
        dist.recv(received, src=links.previous)
        received.requires_grad_(True)
    model.set_input_tensor(received)
    output = run_stage()
    if links.last:
        weighted = loss_of(output)
        (weighted / scale).backward()
        result = weighted.detach()
    else:
        dist.send(output.detach().float().contiguous(), dst=links.next)
        output_grad = torch.empty(output.shape, device=device, dtype=torch.float32)
        dist.recv(output_grad, src=links.next)
        output.backward(output_grad.to(output.dtype))
        result = torch.zeros((), device=device)
    if received is not None:
        assert received.grad is not None
        dist.send(received.grad.float().contiguous(), dst=links.previous)
    return result
